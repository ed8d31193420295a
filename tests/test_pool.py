"""max_pool2d: values, indices (exactly PyTorch's), gradients, NaN and ceil_mode rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnext import functional as CF


def random_pool_config(rng: np.random.Generator) -> dict:
    kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
    return dict(
        kernel_size=kernel,
        stride=None if rng.integers(0, 4) == 0 else (int(rng.integers(1, 6)), int(rng.integers(1, 6))),
        padding=(int(rng.integers(0, kernel[0] // 2 + 1)), int(rng.integers(0, kernel[1] // 2 + 1))),
        dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        ceil_mode=bool(rng.integers(0, 2)),
    )


def random_input(rng: np.random.Generator, gen: torch.Generator, device: str) -> torch.Tensor:
    shape = (int(rng.integers(0, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 17)), int(rng.integers(1, 17)))
    layout = rng.integers(0, 3)
    if layout == 2:  # not contiguous in any format
        return torch.randn(shape[:-1] + (2 * shape[-1],), generator=gen).to(device)[..., ::2]
    x = torch.randn(shape, generator=gen).to(device)
    return x.to(memory_format=torch.channels_last) if layout == 1 else x


def reference_grad(indices: torch.Tensor, grad: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """max_pool2d's input gradient from PyTorch's indices, computed by scatter.

    Not PyTorch's own backward: a window with no element inside the input (padding plus dilation) gets an index
    past the plane, and torch 2.13's CPU backward writes there, corrupting the heap. Such indices are skipped, as
    cnnext does.
    """
    plane = input_shape[-1] * input_shape[-2]
    flat_idx = indices.reshape(-1, indices.shape[-1] * indices.shape[-2])
    flat_grad = grad.reshape(flat_idx.shape)
    inside = (flat_idx >= 0) & (flat_idx < plane)
    out = torch.zeros(flat_idx.shape[0], plane + 1, dtype=grad.dtype, device=grad.device)
    out.scatter_add_(1, torch.where(inside, flat_idx, plane), torch.where(inside, flat_grad, 0))
    return out[:, :plane].reshape(input_shape)


def test_matches_torch_on_random_configs(device, rng):
    """200 random configurations: values and indices identical to F.max_pool2d's, same gradient;
    configurations PyTorch rejects are rejected too."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    compared = 0
    while compared < 200:
        cfg = random_pool_config(rng)
        x = random_input(rng, gen, device).requires_grad_()
        try:
            ref, ref_idx = F.max_pool2d(x, **cfg, return_indices=True)
        except RuntimeError:
            with pytest.raises((ValueError, RuntimeError)):
                CF.max_pool2d(x, **cfg, return_indices=True)
            continue
        out, idx = CF.max_pool2d(x, **cfg, return_indices=True)
        assert torch.equal(out, ref), cfg
        assert torch.equal(idx, ref_idx), cfg
        grad = torch.randn(ref.shape, generator=gen).to(device)
        (got,) = torch.autograd.grad(out, x, grad)
        want = reference_grad(ref_idx, grad, x.shape)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6, msg=lambda m: f"{cfg}: {m}")
        compared += 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
        dict(kernel_size=3, stride=2, ceil_mode=True),
        dict(kernel_size=2, stride=1),  # overlapping windows: gradients accumulate
    ],
)
@pytest.mark.parametrize("unbatched", [False, True])
def test_gradcheck(kwargs, unbatched, device):
    shape = (3, 7, 8) if unbatched else (2, 3, 7, 8)
    # Distinct values, so the maximum (and the gradient) is locally well defined.
    x = (torch.randperm(int(np.prod(shape)), device=device).reshape(shape).double() / 10).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: CF.max_pool2d(t, **kwargs), (x,))


def test_nan_and_infinity_follow_torch(device):
    x = torch.randn(2, 2, 6, 6, device=device)
    x[0, 0, 1, 1] = float("nan")
    x[0, 0, 4, 4] = float("nan")
    x[0, 0, 4, 5] = float("nan")  # two NaNs in one window: PyTorch reports the later one
    x[1, 1] = float("-inf")
    x[1, 0, :3, :3] = 5.0  # ties: the first in scan order wins
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
        out, idx = CF.max_pool2d(x, **kwargs, return_indices=True)
        ref, ref_idx = F.max_pool2d(x, **kwargs, return_indices=True)
        assert torch.equal(out.isnan(), ref.isnan())
        assert torch.equal(out.nan_to_num(), ref.nan_to_num())
        assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes(dtype, device):
    x = torch.randn(2, 3, 9, 9, device=device).to(dtype).requires_grad_()
    out, idx = CF.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert out.dtype == dtype and torch.equal(out, ref) and torch.equal(idx, ref_idx)
    grad = torch.randn_like(ref)
    got, want = torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(ref, x, grad)[0]
    if device == "cuda":
        # 3x3 windows of stride 2 overlap: an element may be the maximum of up to four windows. The CUDA backward
        # adds their gradients with atomics, in arrival order, torch's gathers them in window order, so such
        # sums may differ in the last bit.
        torch.testing.assert_close(got, want)
    else:
        assert torch.equal(got, want)


def test_module_matches_torch_module(device):
    from torch import nn

    import cnnext

    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, return_indices=True)):
        ours, theirs = cnnext.MaxPool2d(**kwargs), nn.MaxPool2d(**kwargs)
        assert isinstance(ours, nn.MaxPool2d) and repr(ours) == repr(theirs)
        x = torch.randn(4, 3, 11, 10, device=device)
        got, want = ours(x), theirs(x)
        if kwargs.get("return_indices"):
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        else:
            assert torch.equal(got, want)


def test_opcheck():
    ops = torch.ops.cnnext
    x = torch.randn(2, 3, 9, 8)
    for ceil_mode in (False, True):
        args = (x, [3, 2], [2, 2], [1, 0], [1, 2], ceil_mode)
        torch.library.opcheck(ops.max_pool2d.default, args)
        out, idx = ops.max_pool2d(*args)
        torch.library.opcheck(ops.max_pool2d_backward.default, (torch.randn_like(out), idx, list(x.shape)))


@pytest.mark.parametrize("bad", [-5, -1, 4, 10**12])
def test_backward_rejects_out_of_range_indices(bad):
    """Indices come from the caller when the op is used directly: one outside the plane is a ValueError,
    not a write out of bounds and not a silently dropped gradient."""
    grad = torch.ones(1, 1, 2, 2)
    indices = torch.tensor([[[[0, bad], [2, 3]]]])
    with pytest.raises(ValueError, match="indices"):
        torch.ops.cnnext.max_pool2d_backward(grad, indices, [1, 1, 2, 2])


def test_backward_through_windows_that_miss_the_input():
    """A dilation larger than the input leaves windows with no element inside: PyTorch's index for them lies
    past the plane; autograd drops their gradient instead of handing the op an index it rejects."""
    x = torch.randn(1, 1, 3, 1, requires_grad=True)
    out, idx = CF.max_pool2d(x, (1, 2), stride=1, padding=(0, 1), dilation=(1, 2), return_indices=True)
    ref, ref_idx = F.max_pool2d(x, (1, 2), stride=1, padding=(0, 1), dilation=(1, 2), return_indices=True)
    assert torch.equal(idx, ref_idx) and bool((idx >= 3).any())
    grad = torch.randn(out.shape)
    (got,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(got, reference_grad(ref_idx, grad, x.shape))


# The CPU forward has four implementations chosen at run time (AVX-512: a loop for 2 x 2 windows with stride 2
# (or 1) inside the input, a rows loop for horizontal stride <= 2 and rows of >= 8 outputs; AVX-512/AVX2 table-driven
# gathers otherwise; a portable row loop for the rest); the tests below run each of them (the cpu_isa fixture) on
# widths that leave every kind of remainder.

SIMD_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=2, ceil_mode=True),  # odd sizes overhang: the rows loop, not the 2 x 2 one
    dict(kernel_size=2, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1, dilation=2),
    dict(kernel_size=(2, 3), stride=(3, 2), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=3, stride=3, ceil_mode=True),
    dict(kernel_size=(1, 5), stride=(2, 4), padding=(0, 2)),
]


def assert_pool_matches_torch(x: torch.Tensor, cfg: dict) -> None:
    out, idx = CF.max_pool2d(x, **cfg, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, **cfg, return_indices=True)
    assert torch.equal(out.isnan(), ref.isnan()), cfg
    assert torch.equal(out.nan_to_num(), ref.nan_to_num()), cfg
    assert torch.equal(idx, ref_idx), cfg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_isa_paths_cover_every_width(cpu_isa, dtype):
    """Widths 1..40 (rows of 1 to 40 outputs: vector remainders, several column blocks, both loop kinds), with
    ties, NaN and -inf in the data, identical to F.max_pool2d in values and indices."""
    gen = torch.Generator().manual_seed(1234)
    for width in range(1, 41):
        x = torch.randint(-3, 4, (2, 3, 9, width), generator=gen).to(dtype)  # many ties
        x[0, 0].view(-1)[torch.randint(0, 9 * width, (3,), generator=gen)] = float("nan")
        x[1, 2, :4] = float("-inf")  # windows that see nothing above -inf
        for cfg in SIMD_CONFIGS:
            try:
                F.max_pool2d(x, **cfg)
            except RuntimeError:
                continue  # too narrow for this kernel
            assert_pool_matches_torch(x, cfg)


def test_cpu_isa_paths_on_random_configs(cpu_isa, rng):
    """150 random configurations on planes up to 48 wide, float32 and float64: values, indices and gradients."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    compared = 0
    while compared < 150:
        cfg = random_pool_config(rng)
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 30)), int(rng.integers(1, 49)))
        dtype = torch.float64 if compared % 3 == 0 else torch.float32
        x = torch.randn(shape, generator=gen, dtype=dtype).requires_grad_()
        try:
            _, ref_idx = F.max_pool2d(x.detach(), **cfg, return_indices=True)
        except RuntimeError:
            continue
        assert_pool_matches_torch(x.detach(), cfg)
        grad = torch.randn(ref_idx.shape, generator=gen, dtype=dtype)
        (got,) = torch.autograd.grad(CF.max_pool2d(x, **cfg), x, grad)
        torch.testing.assert_close(got, reference_grad(ref_idx, grad, x.shape), rtol=1e-6, atol=1e-6, msg=str(cfg))
        compared += 1


def test_cpu_isa_paths_on_large_planes(cpu_isa):
    """A plane whose gather tables would not fit in cache (the portable loop takes over) and a tensor larger than
    the L2 cache (the prefetching in the SIMD loops), both identical to F.max_pool2d."""
    gen = torch.Generator().manual_seed(7)
    assert_pool_matches_torch(torch.randn(1, 2, 300, 301, generator=gen), dict(kernel_size=3, stride=1, padding=1))
    assert_pool_matches_torch(torch.randn(40, 32, 26, 26, generator=gen), dict(kernel_size=2))
    assert_pool_matches_torch(torch.randn(40, 32, 26, 26, generator=gen), dict(kernel_size=3, stride=3))


def test_set_cpu_isa_rejects_unknown_names():
    import cnnext

    with pytest.raises(ValueError, match="isa must be one of"):
        cnnext.set_cpu_isa("sse2")
    previous = cnnext.set_cpu_isa("baseline")
    try:
        assert cnnext.build_info()["cpu_isa"] == "baseline"
    finally:
        cnnext.set_cpu_isa(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32])
def test_channels_last_pools_in_place(dtype, rng):
    """channels_last input is pooled in that layout (rows of channels, no transposes): 100 random configurations
    with up to 40 channels (a quarter of them 60 - 100, past four vectors of channels) and NaNs give
    F.max_pool2d's values and indices, the reference gradient, and channels_last results."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    compared = 0
    while compared < 100:
        cfg = random_pool_config(rng)
        channels = int(rng.integers(60, 101)) if rng.integers(4) == 0 else int(rng.integers(2, 41))
        shape = (int(rng.integers(1, 4)), channels, int(rng.integers(2, 17)), int(rng.integers(2, 17)))
        x = torch.randn(shape, generator=gen)
        x[torch.rand(shape, generator=gen) < 0.02] = float("nan")
        x = (x * 4).to(dtype) if dtype == torch.int32 else x.to(dtype)
        x = x.to(memory_format=torch.channels_last)
        try:
            ref, ref_idx = F.max_pool2d(x, **cfg, return_indices=True)
        except RuntimeError:
            continue
        out, idx = CF.max_pool2d(x, **cfg, return_indices=True)
        assert torch.equal(out.isnan(), ref.isnan()) if dtype.is_floating_point else True
        assert torch.equal(out.nan_to_num() if dtype.is_floating_point else out,
                           ref.nan_to_num() if dtype.is_floating_point else ref), cfg
        assert torch.equal(idx, ref_idx), cfg
        if not (ref.is_contiguous() and ref.is_contiguous(memory_format=torch.channels_last)):
            assert out.is_contiguous(memory_format=torch.channels_last) == ref.is_contiguous(
                memory_format=torch.channels_last), cfg
        if dtype.is_floating_point:
            xf = x.nan_to_num().requires_grad_()
            out, idx = CF.max_pool2d(xf, **cfg, return_indices=True)
            grad = torch.randn(out.shape, generator=gen).to(dtype).to(memory_format=torch.channels_last)
            (got,) = torch.autograd.grad(out, xf, grad)
            want = reference_grad(idx, grad.float(), x.shape).to(dtype)
            tol = dict(rtol=2e-2, atol=5e-2) if dtype == torch.bfloat16 else dict(rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(got.float(), want.float(), **tol, msg=lambda m: f"{cfg}: {m}")
            assert got.is_contiguous(memory_format=torch.channels_last)
        compared += 1


def test_channels_last_float_pools_every_channel_count():
    """float channels_last pooling of every channel count from 2 to 20 and a few past whole vectors (vectors
    narrower than the ISA's below one of its vectors, a last vector overlapping the one before), windows at the
    borders and inside, NaNs: F.max_pool2d's values and indices exactly."""
    gen = torch.Generator().manual_seed(5)
    configs = (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
               dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True))
    for channels in [*range(2, 21), 23, 33, 47, 70]:
        x = torch.randn(2, channels, 9, 11, generator=gen)
        x[torch.rand(x.shape, generator=gen) < 0.02] = float("nan")
        x = x.to(memory_format=torch.channels_last)
        for cfg in configs:
            ref, ref_idx = F.max_pool2d(x, **cfg, return_indices=True)
            out, idx = CF.max_pool2d(x, **cfg, return_indices=True)
            assert torch.equal(out.isnan(), ref.isnan()), (channels, cfg)
            assert torch.equal(out.nan_to_num(), ref.nan_to_num()), (channels, cfg)
            assert torch.equal(idx, ref_idx), (channels, cfg)
            assert out.is_contiguous(memory_format=torch.channels_last), (channels, cfg)


def test_channels_last_backward_rejects_out_of_range_indices():
    grad = torch.ones(1, 3, 2, 2).to(memory_format=torch.channels_last)
    indices = torch.zeros(1, 3, 2, 2, dtype=torch.long).to(memory_format=torch.channels_last)
    indices[0, 2, 1, 0] = 4
    with pytest.raises(ValueError, match="indices"):
        torch.ops.cnnext.max_pool2d_backward(grad, indices, [1, 3, 2, 2])
