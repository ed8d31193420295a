"""torch.autocast: cnnext's layers follow PyTorch's policy (convolution in the lower precision, max-pool in its
input's dtype), so mixed dtypes behave as with torch's layers: output dtypes, values and gradient dtypes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnext
from cnnext.models import build_model

LOW = {"cpu": [torch.bfloat16, torch.float16], "cuda": [torch.float16, torch.bfloat16]}
"""The lower precisions per device, its autocast default first."""


def _grads(out: torch.Tensor, tensors, grad: torch.Tensor):
    return torch.autograd.grad(out, tensors, grad.to(out.dtype))


@pytest.mark.parametrize("low", [0, 1])
@pytest.mark.parametrize("in_dtype", [torch.float32, "low"])
def test_conv2d_runs_in_the_autocast_dtype(device, low, in_dtype):
    """fp32 or low-precision activations into fp32 parameters: the output is in the autocast dtype, its values
    are torch's, and each gradient comes back in its tensor's own dtype."""
    dtype = LOW[device][low]
    x = torch.randn(2, 6, 9, 8, device=device, dtype=dtype if in_dtype == "low" else in_dtype, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    geometry = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    with torch.autocast(device, dtype=dtype):
        out = cnnext.functional.conv2d(x, w, b, **geometry)
        ref = F.conv2d(x, w, b, **geometry)
    assert out.dtype == ref.dtype == dtype
    # One rounding to the low precision each; the accumulation orders differ (cuDNN's, oneDNN's, cnnext's).
    rtol = 1.6e-2 if dtype == torch.bfloat16 else 1e-3  # torch.testing's defaults for the dtype
    torch.testing.assert_close(out, ref, rtol=rtol, atol=1e-3 * ref.abs().max().item())
    grad = torch.randn(ref.shape, device=device)
    got, want = _grads(out, (x, w, b), grad), _grads(ref, (x, w, b), grad)
    for g, r, t in zip(got, want, (x, w, b)):
        assert g.dtype == r.dtype == t.dtype
        # The weight and bias gradients sum over the batch and plane in the low precision.
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-2 * r.abs().max().item())


def test_conv2d_leaves_float64_alone():
    """As for torch's layers, float64 is not lowered."""
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu"):
        out = cnnext.functional.conv2d(x, w)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.conv2d(x, w))


def test_the_op_itself_autocasts():
    """torch.ops.cnnext.conv2d (what exported programs and traced graphs call) casts too, to whatever dtype the
    autocast region sets."""
    x, w, b = torch.randn(1, 3, 6, 6), torch.randn(2, 3, 3, 3), torch.randn(2)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            out = torch.ops.cnnext.conv2d(x, w, b, [1, 1], [1, 0, 1, 0], [1, 1], 1, "auto")
        assert out.dtype == dtype
        torch.testing.assert_close(out, F.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=(1, 0)))


def test_registered_for_cpu_and_cuda_autocast():
    """conv2d has a kernel at both autocast keys (the CUDA one is reached by CUDA tensors only); max_pool2d has
    none, so it falls through and runs in its input's dtype."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    assert has("cnnext::conv2d", "AutocastCPU") and has("cnnext::conv2d", "AutocastCUDA")
    assert not has("cnnext::max_pool2d", "AutocastCPU") and not has("cnnext::max_pool2d", "AutocastCUDA")


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_max_pool2d_keeps_its_input_dtype(device, in_dtype):
    x = torch.randn(2, 3, 9, 9, device=device, dtype=in_dtype, requires_grad=True)
    with torch.autocast(device):
        out, idx = cnnext.functional.max_pool2d(x, 3, 2, padding=1, ceil_mode=True, return_indices=True)
        ref, ref_idx = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True, return_indices=True)
    assert out.dtype == ref.dtype == in_dtype
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    grad = torch.randn_like(ref)
    (got,), (want,) = _grads(out, (x,), grad), _grads(ref, (x,), grad)
    assert got.dtype == in_dtype and torch.equal(got, want)


@pytest.mark.parametrize("name", ["lenet", "cnn_pad", "cnn_small", "cifar_bn"])
def test_seed_model_trains_under_autocast_as_torch(name):
    """A training step of each seed model under torch.autocast("cpu"), on float32 and on bfloat16 input: the
    output dtype and the parameter-gradient dtypes of the model on torch's layers, and errors against the
    float64 truth no larger than that model's (3x plus a hair: the two round at different places)."""
    ours, theirs = build_model(name, layers="cnnext"), build_model(name, layers="torch")
    exact = copy.deepcopy(theirs).double()
    for model in (ours, theirs, exact):  # training mode, but the same (no) dropout masks for all three
        for dropout in (m for m in model.modules() if isinstance(m, nn.Dropout)):
            dropout.eval()
    channels, size = (3, 32) if name == "cifar_bn" else (1, 28)
    for in_dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(4, channels, size, size).to(in_dtype)
        results = []
        for model, dtype in ((ours, torch.bfloat16), (theirs, torch.bfloat16), (exact, None)):
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                out = model(x if dtype else x.double())
            out.double().square().sum().backward()
            results.append([out, *(p.grad for p in model.parameters())])
        ours_out, *ours_grads = results[0]
        theirs_out, *theirs_grads = results[1]
        assert ours_out.dtype == theirs_out.dtype
        assert [g.dtype for g in ours_grads] == [g.dtype for g in theirs_grads] == [torch.float32] * len(ours_grads)
        for got, want, truth in zip(*results):
            error, torch_error = (got.double() - truth).abs().max(), (want.double() - truth).abs().max()
            assert error <= 3 * torch_error + 1e-3 * truth.abs().max()


def test_mixed_dtypes_outside_autocast_still_raise():
    """Outside autocast torch's layers refuse a bf16 activation into fp32 weights; so does cnnext, by name."""
    conv = cnnext.Conv2d(3, 4, 3)
    with pytest.raises(TypeError, match="weight"):
        conv(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError):
        nn.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8, dtype=torch.bfloat16))


def test_torch_func_under_autocast_as_torch():
    """grad, per-sample vmap(grad) and jvp inside an autocast region give torch's dtypes and values."""
    from torch.func import grad, jvp, vmap

    torch.manual_seed(0)
    x, w, b, t = torch.randn(4, 3, 10, 10), torch.randn(5, 3, 3, 3), torch.randn(5), torch.randn(4, 3, 10, 10)

    def loss(conv, w, x):
        return conv(x, w, b, padding=1).float().square().sum()

    with torch.autocast("cpu", torch.bfloat16):
        results = []
        for conv in (F.conv2d, cnnext.functional.conv2d):
            per_sample = vmap(grad(lambda w, x: loss(conv, w, x[None])), in_dims=(None, 0))(w, x)
            output, tangent = jvp(lambda x: conv(x, w, b, padding=1), (x,), (t,))
            results.append((grad(lambda w: loss(conv, w, x))(w), per_sample, output, tangent))
    for want, got in zip(*results):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2 * want.float().abs().max().item())
