"""avg_pool2d and adaptive_avg_pool2d: values and gradients against PyTorch (every border rule),
gradcheck/gradgradcheck, error parity, opcheck, modules and convert()."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnext
import cnnext.models
from cnnext import functional as CF

ops = torch.ops.cnnext


def random_avg_config(rng: np.random.Generator) -> dict:
    kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
    return dict(
        kernel_size=kernel,
        stride=None if rng.integers(0, 4) == 0 else (int(rng.integers(1, 5)), int(rng.integers(1, 5))),
        padding=(int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1))),
        ceil_mode=bool(rng.integers(0, 2)),
        count_include_pad=bool(rng.integers(0, 2)),
        divisor_override=None if rng.integers(0, 3) else int(rng.integers(1, 10)),
    )


def random_input(rng: np.random.Generator, gen: torch.Generator, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(N, C, H, W) or unbatched (C, H, W), contiguous, channels_last or not contiguous in any format."""
    shape = (int(rng.integers(0, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 15)), int(rng.integers(1, 15)))
    layout = rng.integers(0, 3)
    if layout == 2:
        x = torch.randn(shape[:-1] + (2 * shape[-1],), generator=gen, dtype=dtype).to(device)[..., ::2]
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
        if layout == 1:
            x = x.to(memory_format=torch.channels_last)
    return x[0] if rng.integers(0, 4) == 0 and shape[0] > 0 else x


def tolerances(dtype: torch.dtype) -> dict:
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


def compare(fn, ref_fn, x: torch.Tensor, gen: torch.Generator, msg: str) -> None:
    """Values and input gradients of fn(x) and ref_fn(x); both reject the same inputs.

    The reference runs on the CPU whatever x's device: torch's own CUDA avg_pool2d backward is wrong for
    channels_last inputs with padding in the torch releases before pytorch/pytorch#188345."""
    x = x.detach().requires_grad_()
    x_ref = x.detach().cpu().requires_grad_()
    try:
        ref = ref_fn(x_ref)
    except RuntimeError:
        with pytest.raises((ValueError, RuntimeError)):
            fn(x)
        return
    out = fn(x)
    tol = tolerances(x.dtype)
    assert out.device == x.device
    torch.testing.assert_close(out.cpu(), ref, **tol, msg=lambda m: f"{msg}: {m}")
    if ref.numel() == 0:
        return
    grad = torch.randn(ref.shape, generator=gen, dtype=x.dtype)
    (got,) = torch.autograd.grad(out, x, grad.to(x.device))
    (want,) = torch.autograd.grad(ref, x_ref, grad)
    torch.testing.assert_close(got.cpu(), want, **tol, msg=lambda m: f"{msg} (grad): {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_avg_pool2d_matches_torch_on_random_configs(device, rng, dtype):
    """120 random configurations per dtype (every argument, unbatched, channels_last, strided
    inputs): same values and gradients as F.avg_pool2d; what torch rejects is rejected."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(120):
        cfg = random_avg_config(rng)
        x = random_input(rng, gen, dtype, device)
        compare(lambda t: CF.avg_pool2d(t, **cfg), lambda t: F.avg_pool2d(t, **cfg), x, gen, f"{cfg} {tuple(x.shape)}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adaptive_avg_pool2d_matches_torch_on_random_configs(device, rng, dtype):
    """120 random output sizes per dtype (smaller, equal, larger than the input, non-divisible,
    None): same values and gradients as F.adaptive_avg_pool2d."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(120):
        x = random_input(rng, gen, dtype, device)
        size = [None if rng.integers(0, 6) == 0 else int(rng.integers(1, 18)) for _ in range(2)]
        output_size = size[0] if rng.integers(0, 4) == 0 and size[0] is not None else tuple(size)
        compare(lambda t: CF.adaptive_avg_pool2d(t, output_size), lambda t: F.adaptive_avg_pool2d(t, output_size), x,
                gen, f"{output_size} {tuple(x.shape)}")


AVG_GRID = [
    dict(kernel_size=k, stride=s, padding=p, ceil_mode=c, count_include_pad=i, divisor_override=d)
    for k, s, p, c, i, d in itertools.product([(3, 2)], [1, 2, (3, 1)], [0, 1], [False, True], [True, False],
                                              [None, 3])
]


@pytest.mark.parametrize("cfg", AVG_GRID, ids=str)
def test_avg_pool2d_gradcheck(cfg):
    """Gradients (float64) over the grid of stride, padding, ceil_mode, count_include_pad and
    divisor_override, on a 7 x 6 input whose size no stride divides evenly."""
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: CF.avg_pool2d(t, **cfg), (x,), fast_mode=True)


@pytest.mark.parametrize("cfg", AVG_GRID[::7], ids=str)
def test_avg_pool2d_gradgradcheck(cfg):
    """Second derivatives: the backward op is differentiable (its derivative is the forward op)."""
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: CF.avg_pool2d(t, **cfg), (x,), fast_mode=True)


@pytest.mark.parametrize("output_size", [1, (2, 3), (5, 4), (6, 6), (9, 13), (None, 2), (3, None)], ids=str)
def test_adaptive_avg_pool2d_gradcheck(output_size):
    """Gradients and second derivatives (float64) for output sizes that divide the 6 x 5 input,
    do not, exceed it, and keep one side (None); and an unbatched input."""
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda t: CF.adaptive_avg_pool2d(t, output_size)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(fn, (x[0].detach().requires_grad_(),), fast_mode=True)


def test_unbatched_avg_pool2d_gradcheck():
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: CF.avg_pool2d(t, 3, 2, 1, ceil_mode=True), (x,), fast_mode=True)


def test_border_rules_by_hand():
    """A 1 x 1 x 3 x 3 input of ones, kernel 2, stride 2, padding 1, ceil_mode: corner windows hold one
    input position; the divisor is 4 with count_include_pad, 1 without, 3 when overridden."""
    x = torch.ones(1, 1, 3, 3)
    assert CF.avg_pool2d(x, 2, 2, 1, count_include_pad=True).flatten().tolist() == [0.25, 0.5, 0.5, 1.0]
    assert CF.avg_pool2d(x, 2, 2, 1, count_include_pad=False).flatten().tolist() == [1.0] * 4
    assert CF.avg_pool2d(x, 2, 2, 1, divisor_override=3).flatten().tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 4 / 3])
    # ceil_mode on a 4 x 4 input, kernel 3, stride 2, no padding: the last window hangs past the input by one
    # and counts only its 2 x 2 (x 3) input positions, also with count_include_pad (there is no padding to count).
    y = torch.arange(16.0).view(1, 1, 4, 4)
    out = CF.avg_pool2d(y, 3, 2, 0, ceil_mode=True, count_include_pad=True)
    assert out.flatten().tolist() == F.avg_pool2d(y, 3, 2, 0, ceil_mode=True).flatten().tolist()
    assert out[0, 0, 1, 1].item() == (10 + 11 + 14 + 15) / 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_types_accumulate_in_float32(device, dtype):
    """A large window of a 16-bit type: summed in float32, rounded once, as torch does (within one ulp)."""
    x = torch.randn(2, 3, 32, 32, dtype=torch.float32).to(device)
    for fn, ref in [(lambda t: CF.avg_pool2d(t, 8, 4, 2), lambda t: F.avg_pool2d(t, 8, 4, 2)),
                    (lambda t: CF.adaptive_avg_pool2d(t, 1), lambda t: F.adaptive_avg_pool2d(t, 1)),
                    (lambda t: CF.adaptive_avg_pool2d(t, (5, 3)), lambda t: F.adaptive_avg_pool2d(t, (5, 3)))]:
        out = fn(x.to(dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref(x.to(dtype).float()).to(dtype).float(), rtol=1e-2, atol=1e-2)
        xg = x.to(dtype).requires_grad_()
        (g,) = torch.autograd.grad(fn(xg).sum(), xg)
        xr = x.double().requires_grad_()
        (gr,) = torch.autograd.grad(ref(xr).sum(), xr)
        torch.testing.assert_close(g.double(), gr, rtol=1e-2, atol=1e-3)


def test_global_average_fast_path_values():
    """Output 1 x 1 is the plane mean, for planes from 1 element to beyond the vector width."""
    for h, w in [(1, 1), (3, 3), (6, 6), (7, 11), (64, 65)]:
        x = torch.randn(3, 5, h, w, dtype=torch.float64)
        torch.testing.assert_close(CF.adaptive_avg_pool2d(x, 1), x.mean((2, 3), keepdim=True))


def test_backward_is_deterministic():
    x = torch.randn(4, 8, 19, 17, requires_grad=True)
    grads = []
    for _ in range(2):
        (g,) = torch.autograd.grad(CF.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x, torch.ones(4, 8, 19, 17))
        grads.append(g)
    assert torch.equal(grads[0], grads[1])


AVG_ERRORS = [
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=(2, 2, 2)), "kernel_size"),
    (dict(kernel_size=2, stride=0), "stride"),
    (dict(kernel_size=2, padding=-1), "padding"),
    (dict(kernel_size=3, padding=2), "padding"),
    (dict(kernel_size=2, divisor_override=0), "divisor_override"),
    (dict(kernel_size=9), "too small"),
]


@pytest.mark.parametrize("kwargs,match", AVG_ERRORS, ids=[m for _, m in AVG_ERRORS])
def test_avg_pool2d_errors_match_torch(kwargs, match):
    """What F.avg_pool2d rejects, cnnext rejects with a message naming the argument."""
    x = torch.randn(1, 2, 5, 5)
    with pytest.raises(Exception):
        F.avg_pool2d(x, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        CF.avg_pool2d(x, **kwargs)


@pytest.mark.parametrize("bad", [
    (torch.randn(5, 5), 2, "input"),
    (torch.randn(1, 2, 0, 5), 2, "input"),
    (torch.randn(1, 2, 5, 5), (2, 3, 4), "output_size"),
    (torch.randn(1, 2, 5, 5), (-1, 3), "output_size"),
    (torch.randn(1, 2, 5, 5).long(), 2, "input"),
], ids=["2-D", "empty height", "3 sizes", "negative", "int64"])
def test_adaptive_avg_pool2d_errors_match_torch(bad):
    x, output_size, match = bad
    with pytest.raises(Exception):
        F.adaptive_avg_pool2d(x, output_size)
    with pytest.raises((ValueError, TypeError), match=match):
        CF.adaptive_avg_pool2d(x, output_size)


def test_empty_batch_and_zero_output_size():
    x = torch.randn(0, 3, 5, 5, requires_grad=True)
    assert CF.avg_pool2d(x, 2).shape == F.avg_pool2d(x, 2).shape
    y = torch.randn(2, 3, 5, 5)
    assert CF.adaptive_avg_pool2d(y, (0, 2)).shape == F.adaptive_avg_pool2d(y, (0, 2)).shape


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_opcheck(layout):
    """torch.library.opcheck on every new op (schema, fake kernel incl. layout, autograd registration)."""
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64).to(memory_format=layout).requires_grad_()
    g = torch.randn(2, 3, 4, 3, dtype=torch.float64).to(memory_format=layout)
    geometry = ([3, 2], [2, 2], [1, 0], True, False, None)
    torch.library.opcheck(ops.avg_pool2d, (x, *geometry))
    torch.library.opcheck(ops.avg_pool2d, (x, [2, 2], [1, 2], [1, 1], False, True, 5))
    torch.library.opcheck(ops.avg_pool2d_backward, (g, [2, 3, 7, 6], *geometry))
    torch.library.opcheck(ops.adaptive_avg_pool2d, (x, [4, 5]))
    torch.library.opcheck(ops.adaptive_avg_pool2d, (x, [1, 1]))
    torch.library.opcheck(ops.adaptive_avg_pool2d_backward, (g, [2, 3, 7, 6]))


def test_modules_are_drop_in():
    pool = cnnext.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=None)
    ref = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    assert isinstance(pool, nn.AvgPool2d) and repr(pool) == repr(ref)
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(pool(x), ref(x))
    adaptive = cnnext.AdaptiveAvgPool2d((None, 3))
    assert isinstance(adaptive, nn.AdaptiveAvgPool2d)
    torch.testing.assert_close(adaptive(x), nn.AdaptiveAvgPool2d((None, 3))(x))


def test_convert_covers_pooling_and_cifar_bn_runs_on_cnnext():
    model = cnnext.models.build_model("cifar_bn", layers="cnnext")
    kinds = {type(m) for m in model.modules()}
    assert cnnext.AdaptiveAvgPool2d in kinds and nn.AdaptiveAvgPool2d not in kinds - {cnnext.AdaptiveAvgPool2d}
    ref = cnnext.models.build_model("cifar_bn", layers="torch").eval()
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    fused = cnnext.fuse(model)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-4, atol=1e-5)


FUNC_CASES = {
    "avg_pool2d": (lambda t: CF.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                   lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    "adaptive_avg_pool2d": (lambda t: CF.adaptive_avg_pool2d(t, (4, 3)), lambda t: F.adaptive_avg_pool2d(t, (4, 3))),
}


@pytest.mark.parametrize("name", FUNC_CASES)
def test_torch_func_vmap_jvp_and_double_backward(name):
    """vmap (batching rules of the ops and their backward ops), forward-mode jvp and the gradient of a
    gradient (through the backward op) agree with torch's pooling."""
    fn, ref = FUNC_CASES[name]
    x = torch.randn(3, 2, 2, 7, 6, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(fn)(x), torch.stack([fn(s) for s in x]))
    per_sample = torch.func.vmap(torch.func.grad(lambda t: fn(t).square().sum()))(x)
    torch.testing.assert_close(per_sample, torch.stack([torch.func.grad(lambda t: ref(t).square().sum())(s) for s in x]))
    tangent = torch.randn_like(x[0])
    _, out_tangent = torch.func.jvp(fn, (x[0],), (tangent,))
    torch.testing.assert_close(out_tangent, ref(tangent))
    xg = x[0].clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(xg).square().sum(), xg, create_graph=True)
    (gg,) = torch.autograd.grad(g.sin().sum(), xg)
    xr = x[0].clone().requires_grad_()
    (gr,) = torch.autograd.grad(ref(xr).square().sum(), xr, create_graph=True)
    (ggr,) = torch.autograd.grad(gr.sin().sum(), xr)
    torch.testing.assert_close(gg, ggr)
