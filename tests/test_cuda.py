"""What only a GPU can show: streams, devices, CPU-vs-CUDA agreement, reduced precision, the
im2col chunking and direct fallbacks, and a converted seed model training on CUDA.

The rest of the suite also runs on CUDA through the `device` fixture; everything here is
skipped (and counted as skipped) when no GPU is visible.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnext
from cnnext import functional as CF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
ALGOS = ["direct", "im2col"]


def conv_case(device, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 19, 17, generator=g).to(device, dtype)
    w = torch.randn(12, 4, 3, 3, generator=g).to(device, dtype)
    b = torch.randn(12, generator=g).to(device, dtype)
    return x, w, b, dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1), groups=2)


@pytest.mark.parametrize("algo", ALGOS)
def test_cpu_and_cuda_agree(algo):
    x, w, b, kw = conv_case("cpu")
    tensors = [t.clone().requires_grad_() for t in (x, w, b)]
    cuda_tensors = [t.detach().cuda().requires_grad_() for t in (x, w, b)]
    out_cpu = CF.conv2d(*tensors, **kw, algo=algo)
    out_gpu = CF.conv2d(*cuda_tensors, **kw, algo=algo)
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out_cpu)
    for a, c in zip(torch.autograd.grad(out_cpu, tensors, grad), torch.autograd.grad(out_gpu, cuda_tensors, grad.cuda())):
        torch.testing.assert_close(c.cpu(), a, rtol=1e-4, atol=1e-3)
    xp = torch.randn(3, 4, 13, 11)
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        v_cpu, i_cpu = CF.max_pool2d(xp, **kwargs, return_indices=True)
        v_gpu, i_gpu = CF.max_pool2d(xp.cuda(), **kwargs, return_indices=True)
        assert torch.equal(v_gpu.cpu(), v_cpu) and torch.equal(i_gpu.cpu(), i_cpu)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_reduced_precision_within_tolerance(algo, dtype, tol):
    """float16/bfloat16 accumulate in float32: relative error of the output stays within `tol`."""
    x, w, b, kw = conv_case("cuda", dtype)
    out = CF.conv2d(x, w, b, **kw, algo=algo)
    ref = F.conv2d(x.double(), w.double(), b.double(), **kw)
    assert out.dtype == dtype
    assert ((out.double() - ref).norm() / ref.norm()).item() < tol


def test_follows_the_current_stream():
    """Work queued on a side stream behind a long kernel still sees its inputs finished."""
    x, w, b, kw = conv_case("cuda")
    expected = CF.conv2d(x, w, b, **kw, algo="direct")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        big = torch.randn(4096, 4096, device="cuda")
        for _ in range(8):
            big = big @ big / 64  # keeps the side stream busy
        x2 = x * 1.0
        outs = [CF.conv2d(x2, w, b, **kw, algo=a) for a in ALGOS]
        pooled = CF.max_pool2d(x2, 2)
    torch.cuda.current_stream().wait_stream(side)
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 2))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    x, w, b, kw = conv_case("cuda:1")
    for algo in ALGOS:
        out = CF.conv2d(x, w, b, **kw, algo=algo)
        assert out.device == torch.device("cuda:1")
        torch.testing.assert_close(out, F.conv2d(x, w, b, **kw), rtol=1e-4, atol=1e-4)


def test_im2col_chunks_and_direct_fallback(monkeypatch):
    """A tiny im2col workspace forces row-band chunks; the direct kernels' generic fallback is exact too."""
    x, w, b, kw = conv_case("cuda", torch.float64)
    ref = F.conv2d(x, w, b, **kw)
    monkeypatch.setenv("CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES", "4096")
    monkeypatch.setenv("CNNEXT_CUDA_DIRECT_GENERIC", "1")
    for algo in ALGOS:
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, **kw, algo=algo), (xs[:2, :, :7, :6], ws, bs))
        torch.testing.assert_close(CF.conv2d(x, w, b, **kw, algo=algo), ref)


def test_pool_backward_is_deterministic_without_overlap():
    x = torch.randn(16, 32, 64, 64, device="cuda", requires_grad=True)
    grads = []
    for _ in range(3):
        (g,) = torch.autograd.grad(CF.max_pool2d(x, 2).sum(), x)
        grads.append(g)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("algo", ALGOS)
def test_converted_seed_model_trains_like_torch(algo):
    from cnnext.models import build_model

    torch_model = build_model("cnn_pad", layers="torch", seed=3).cuda().eval()
    ours = cnnext.convert(torch_model, algo=algo)
    opt_t = torch.optim.Adam(torch_model.parameters(), lr=1e-3)
    opt_c = torch.optim.Adam(ours.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(64, 1, 28, 28, generator=g).cuda()
        y = torch.randint(0, 10, (64,), generator=g).cuda()
        losses = []
        for model, opt in ((torch_model, opt_t), (ours, opt_c)):
            opt.zero_grad()
            loss = F.nll_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[0])


def test_integer_inputs_are_rejected_on_cuda():
    """PyTorch's CUDA convolution and pooling kernels take floating types only (its CPU ones take integers, as
    cnnext's do: tests/test_integer.py); cnnext's CUDA ops reject integers too, naming the dtype."""
    x = torch.arange(2 * 3 * 6 * 6, device="cuda").view(2, 3, 6, 6)
    w = torch.ones(4, 3, 3, 3, dtype=torch.int64, device="cuda")
    calls = [lambda f: f.conv2d(x, w), lambda f: f.conv1d(x[:, :, 0], w[..., 0]), lambda f: f.max_pool2d(x, 2),
             lambda f: f.avg_pool2d(x, 2), lambda f: f.max_pool2d(x.int(), 2), lambda f: f.conv2d(x.byte(), w.byte())]
    for call in calls:
        with pytest.raises(Exception):
            call(F)
        with pytest.raises(TypeError, match="(Long|Int|Byte).*CPU only"):
            call(CF)
