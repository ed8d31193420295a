"""conv1d (a conv2d of height 1): values and all gradients against torch, argument forms, the seed
notebook's 1-D example, gradcheck, errors, Conv1d and convert()."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnext
from cnnext import functional as CF

ALGOS = ["direct", "im2col"]


def random_conv1d_config(rng: np.random.Generator) -> dict:
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cin, cout = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
        kernel, stride, dilation = int(rng.integers(1, 8)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
        choice = rng.integers(0, 4)
        padding = "same" if choice == 0 and stride == 1 else "valid" if choice == 1 else int(rng.integers(0, 4))
        length = int(rng.integers(1, 40))
        pad = padding if isinstance(padding, int) else 0
        if padding != "same" and length + 2 * pad < dilation * (kernel - 1) + 1:
            continue
        if rng.integers(0, 3) == 0:  # the tuple forms
            stride, dilation = (stride,), (dilation,)
            padding = (padding,) if isinstance(padding, int) else padding
        return dict(batch=int(rng.integers(0, 3)), unbatched=bool(rng.integers(0, 4) == 0), cin=cin, cout=cout,
                    length=length, kernel=kernel, bias=bool(rng.integers(0, 2)), strided=bool(rng.integers(0, 3) == 0),
                    kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_on_random_configs(device, rng, dtype):
    """100 random configurations per dtype (both algorithms): output and the gradients of input, weight and
    bias equal F.conv1d's."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for i in range(100):
        cfg = random_conv1d_config(rng)
        shape = (cfg["cin"], cfg["length"]) if cfg["unbatched"] else (cfg["batch"], cfg["cin"], cfg["length"])
        if cfg["strided"]:
            x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype, generator=gen).to(device)[..., ::2]
        else:
            x = torch.randn(shape, dtype=dtype, generator=gen).to(device)
        x.requires_grad_()
        w = torch.randn(cfg["cout"], cfg["cin"] // cfg["kwargs"]["groups"], cfg["kernel"], dtype=dtype,
                        generator=gen).to(device).requires_grad_()
        b = torch.randn(cfg["cout"], dtype=dtype, generator=gen).to(device).requires_grad_() if cfg["bias"] else None
        out = CF.conv1d(x, w, b, **cfg["kwargs"], algo=ALGOS[i % 2])
        ref = F.conv1d(x, w, b, **cfg["kwargs"])
        torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{cfg}: {m}")
        if ref.numel() == 0:
            continue
        grad = torch.randn(ref.shape, dtype=dtype, generator=gen).to(device)
        leaves = [t for t in (x, w, b) if t is not None]
        for got, want in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref, leaves, grad)):
            torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{cfg} (grad): {m}")


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                    dict(groups=2, padding=2, stride=(3,))], ids=str)
def test_gradcheck(kwargs):
    x = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // kwargs.get("groups", 1), 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = lambda *t: CF.conv1d(*t, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b), fast_mode=True)
    assert torch.autograd.gradcheck(fn, (x[0].detach().requires_grad_(), w, b), fast_mode=True)


def test_seed_notebook_example():
    """The course's 1-D example: the signal 1..9 and the kernel [2, 1, 2], with padding "same", "valid" and
    padding=2, stride=2, in float32 (the course's integer tensors: tests/test_integer.py)."""
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, -1)
    w = torch.tensor([[[2.0, 1.0, 2.0]]])
    assert CF.conv1d(x, w, padding="same").flatten().tolist() == [5, 10, 15, 20, 25, 30, 35, 40, 25]
    assert CF.conv1d(x, w, padding="valid").flatten().tolist() == [10, 15, 20, 25, 30, 35, 40]
    assert CF.conv1d(x, w, padding=2, stride=2).flatten().tolist() == [2, 10, 20, 30, 40, 18]
    for kwargs in [dict(padding="same"), dict(padding="valid"), dict(padding=2, stride=2)]:
        assert torch.equal(CF.conv1d(x, w, **kwargs), F.conv1d(x, w, **kwargs))


ERRORS = [
    (lambda x, w: CF.conv1d(x[0, 0], w), lambda x, w: F.conv1d(x[0, 0], w), "input"),
    (lambda x, w: CF.conv1d(x, w[0]), lambda x, w: F.conv1d(x, w[0]), "weight"),
    (lambda x, w: CF.conv1d(x, w, stride=0), lambda x, w: F.conv1d(x, w, stride=0), "stride"),
    (lambda x, w: CF.conv1d(x, w, stride=(1, 1)), lambda x, w: F.conv1d(x, w, stride=(1, 1)), "stride"),
    (lambda x, w: CF.conv1d(x, w, padding=-1), lambda x, w: F.conv1d(x, w, padding=-1), "padding"),
    (lambda x, w: CF.conv1d(x, w, padding="same", stride=2), lambda x, w: F.conv1d(x, w, padding="same", stride=2),
     "same"),
    (lambda x, w: CF.conv1d(x, w, padding="full"), lambda x, w: F.conv1d(x, w, padding="full"), "padding"),
    (lambda x, w: CF.conv1d(x, w, dilation=0), lambda x, w: F.conv1d(x, w, dilation=0), "dilation"),
    (lambda x, w: CF.conv1d(x, w, groups=2), lambda x, w: F.conv1d(x, w, groups=2), "groups|channels"),
]


@pytest.mark.parametrize("case", ERRORS, ids=[m for *_, m in ERRORS])
def test_errors_match_torch(case):
    fn, ref, match = case
    x, w = torch.randn(2, 3, 10), torch.randn(4, 3, 3)
    with pytest.raises(Exception):
        ref(x, w)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=match):
        fn(x, w)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_conv1d_module_is_drop_in(padding_mode):
    torch.manual_seed(0)
    ref = nn.Conv1d(3, 4, 5, stride=2, padding=2, dilation=1, padding_mode=padding_mode)
    torch.manual_seed(0)
    mod = cnnext.Conv1d(3, 4, 5, stride=2, padding=2, dilation=1, padding_mode=padding_mode, algo="im2col")
    assert isinstance(mod, nn.Conv1d) and "algo='im2col'" in repr(mod)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 3, 17)
    torch.testing.assert_close(mod(x), ref(x), rtol=1e-5, atol=1e-5)


def test_convert_model_mixing_all_layer_kinds():
    """A model with every layer kind cnnext covers (and ones it does not): converted types, same
    outputs and input gradients; the original untouched by a copy, re-typed in place otherwise."""
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.Unflatten(1, (1, 4)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2, 1, 1, count_include_pad=False),
        nn.AdaptiveAvgPool2d((3, None)), nn.Flatten(),
    )
    x = torch.randn(3, 2, 9, requires_grad=True)
    ref = model(x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    converted = cnnext.convert(model)
    assert [type(m) for m in converted] == [
        cnnext.Conv1d, nn.Unflatten, cnnext.Conv2d, nn.ReLU, cnnext.MaxPool2d, cnnext.AvgPool2d,
        cnnext.AdaptiveAvgPool2d, nn.Flatten]
    assert type(model[0]) is nn.Conv1d
    out = converted(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
    weight = model[0].weight
    assert cnnext.convert(model, inplace=True, algo="direct") is model
    assert type(model[0]) is cnnext.Conv1d and model[0].algo == "direct" and model[0].weight is weight
