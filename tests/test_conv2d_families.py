"""Layer families with paths of their own: depthwise (the direct algorithm's own kernels: one input channel per
group, fewer than 8 outputs per group) and pointwise (1 x 1, stride 1, no padding: im2col without the column
copy). Values and all gradients against the float64 F.conv2d on random shapes, gradcheck, non-finite inputs,
thread counts, and what auto picks."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnext
from cnnext import _ops, functional as CF

from test_conv2d import assert_direct_matches_reference


@pytest.fixture(params=_ops.CPU_ISAS)
def isa(request):
    """One CPU instruction set's kernels for the test (skipped where this CPU lacks it); the ISA and the thread
    count, which the test may change, are restored afterwards."""
    if request.param not in _ops.CPU_ISAS[_ops.CPU_ISAS.index(cnnext.build_info()["cpu_isa_detected"]):]:
        pytest.skip(f"this CPU has no {request.param}")
    previous_isa, previous_threads = cnnext.set_cpu_isa(request.param), torch.get_num_threads()
    yield request.param
    cnnext.set_cpu_isa(previous_isa)
    torch.set_num_threads(previous_threads)


def random_depthwise_config(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """Input shape, weight shape and kwargs of a random depthwise convolution whose windows leave no gaps."""
    while True:
        channels, multiplier = int(rng.integers(1, 12)), int(rng.choice([1, 1, 2, 3, 7]))
        kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
        stride = tuple(int(rng.integers(1, min(3, span) + 1)) for span in spans)
        padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        size = (int(rng.integers(1, 20)), int(rng.integers(1, 40)))
        if any(s + 2 * p < span for s, p, span in zip(size, padding, spans)):
            continue
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=channels)
        return (int(rng.integers(1, 4)), channels, *size), (channels * multiplier, 1, *kernel), kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_on_random_configs(dtype, device, rng):
    """120 random depthwise configurations (multipliers 1 - 7, strides, dilations, narrow and wide planes):
    output and the gradients of input, weight and bias equal the float64 reference."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(120):
        x_shape, w_shape, kwargs = random_depthwise_config(rng)
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(device).requires_grad_()
        w = torch.randn(w_shape, dtype=dtype, generator=gen).to(device).requires_grad_()
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen).to(device).requires_grad_()
        assert_direct_matches_reference(x, w, b, kwargs, gen, label=f"{x_shape} {w_shape} {kwargs}")


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((2, 2, 5, 6), (2, 1, 3, 3), dict(groups=2, padding=1)),
        ((1, 2, 7, 6), (4, 1, 3, 3), dict(groups=2, stride=2, padding=1)),  # multiplier 2, stride 2
        ((1, 2, 6, 9), (6, 1, 3, 2), dict(groups=2, stride=(1, 2), dilation=(2, 1), padding=(2, 0))),
        ((3, 5, 5), (3, 1, 5, 5), dict(groups=3, padding=2)),  # unbatched, 5 x 5 kernel
    ],
)
def test_gradcheck(x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, **kwargs, algo="direct"), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *t: CF.conv2d(*t, **kwargs, algo="direct"), (x, w, b))


def weight_grad_and_reference(x: torch.Tensor, w: torch.Tensor, gen: torch.Generator, device,
                              **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight gradient of cnnext's direct conv2d of x and w on `device` for a random grad_output (drawn
    from gen), and float64 torch's for the same one, both on the CPU in float64."""
    x, w = x.to(device), w.to(device).requires_grad_()
    out = CF.conv2d(x, w, algo="direct", **kwargs)
    grad = torch.randn(out.shape, generator=gen).to(device)
    got = torch.autograd.grad(out, w, grad)[0]
    w64 = w.detach().cpu().double().requires_grad_()
    want = torch.autograd.grad(F.conv2d(x.cpu().double(), w64, **kwargs), w64, grad.cpu().double())[0]
    return got.cpu().double(), want


@pytest.mark.parametrize("width", [8, 22, 42])
def test_weight_grad_ignores_inputs_outside_the_windows(width, device):
    """An infinite input that no window reads (the last column of an even width at stride 2, no padding) leaves
    every weight gradient finite: the lanes of a row's last vector past out_w must not add 0 * inf."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, width, generator=gen)
    x[1, 2, 4, -1] = float("inf")
    w = torch.randn(8, 1, 3, 3, generator=gen)
    got, want = weight_grad_and_reference(x, w, gen, device, groups=4, stride=2)
    assert torch.isfinite(want).all()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [7, 14])
def test_weight_grad_of_an_infinite_input_at_stride_1(size, device):
    """An infinite input at stride 1 makes exactly the weight gradients of the taps that read it infinite: the
    flat reduction over narrow rows, whose vectors span row ends, runs only on finite inputs (0 * inf is NaN)."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, size, size, generator=gen)
    x[1, 2, 3, -1] = float("inf")
    w = torch.randn(4, 1, 3, 3, generator=gen)
    got, want = weight_grad_and_reference(x, w, gen, device, groups=4, padding=1)
    assert torch.isinf(want[2]).any() and torch.isfinite(want[2]).any() and not torch.isnan(want).any()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def under_thread_counts(run, counts=(1, 3)):
    """run() under each thread count in turn, the caller's count restored after: the list of its results."""
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in counts:
            torch.set_num_threads(threads)
            results.append(run())
        return results
    finally:
        torch.set_num_threads(previous)


def test_results_do_not_depend_on_the_thread_count():
    """The batch reduction of grad_weight and grad_bias runs in chunks fixed by the batch size."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(13, 6, 15, 15, generator=gen, requires_grad=True)
    w = torch.randn(12, 1, 3, 3, generator=gen, requires_grad=True)
    b = torch.randn(12, generator=gen, requires_grad=True)
    grad = torch.randn(13, 12, 8, 8, generator=gen)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = CF.conv2d(x, w, b, stride=2, padding=1, groups=6, algo="direct")
            results.append((out, *torch.autograd.grad(out, (x, w, b), grad)))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)


def test_auto_runs_depthwise_layers_direct():
    """auto takes the direct algorithm for every pass of a depthwise layer (grad_input too, which it sends to
    im2col for other layers with few input channels per group): bit-identical to algo="direct"."""
    ops = torch.ops.cnnext
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(4, 16, 15, 15, generator=gen), torch.randn(32, 1, 3, 3, generator=gen)
    gy = torch.randn(4, 32, 8, 8, generator=gen)
    geometry = ([2, 2], [1, 1, 1, 1], [1, 1], 16)
    for algo_passes in (lambda a: ops.conv2d(x, w, None, *geometry, a),
                        lambda a: ops.conv2d_grad_input(gy, w, list(x.shape), *geometry, a),
                        lambda a: ops.conv2d_grad_weight(gy, x, list(w.shape), *geometry, a)):
        assert torch.equal(algo_passes("auto"), algo_passes("direct"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "x_shape,w_shape,groups",
    [
        ((3, 8, 5, 7), (6, 8, 1, 1), 1),  # a few pixels: several samples per GEMM, copied side by side
        ((2, 8, 20, 20), (6, 4, 1, 1), 2),  # one sample per GEMM: views of the input, no copy
        ((37, 6, 4, 4), (5, 6, 1, 1), 1),  # a short last block of samples
        ((8, 6, 6), (4, 8, 1, 1), 1),  # unbatched
    ],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pointwise_matches_torch(dtype, x_shape, w_shape, groups, layout, device):
    """im2col's pointwise path (the input as the column matrix; grad_input written by the GEMM) and auto, which
    takes it for every pass: output and all gradients equal the float64 reference."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(x_shape, dtype=dtype, generator=gen)
    if layout == "channels_last" and x.dim() == 4:
        x = x.to(memory_format=torch.channels_last)
    x = x.to(device).requires_grad_()
    w = torch.randn(w_shape, dtype=dtype, generator=gen).to(device).requires_grad_()
    b = torch.randn(w_shape[0], dtype=dtype, generator=gen).to(device).requires_grad_()
    out = CF.conv2d(x, w, b, groups=groups, algo="im2col")
    grad = torch.randn(out.shape, dtype=dtype, generator=gen).to(device)
    got = (out, *torch.autograd.grad(out, (x, w, b), grad))
    auto = CF.conv2d(x, w, b, groups=groups, algo="auto")
    assert torch.equal(auto, out)
    leaves = [t.detach().cpu().double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*leaves, groups=groups)
    want = (ref, *torch.autograd.grad(ref, leaves, grad.cpu().double()))
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for g, r in zip(got, want):
        torch.testing.assert_close(g.cpu().double(), r, **tol)


def test_pointwise_gradcheck(device):
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(6, 2, 1, 1, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, groups=2, algo="im2col"), (x, w, b))


@pytest.mark.parametrize("x_shape, cout", [((9, 12, 23, 29), 10), ((8, 320, 7, 7), 264)])
def test_channels_last_pointwise_is_one_gemm_per_pass_and_thread_independent(x_shape, cout):
    """A channels_last pointwise layer computes in channels_last (its pixel matrices, no transposes) and returns
    channels_last results; the values and gradients (bias included) are bitwise the same under 1, 2 and 3 threads
    and equal the contiguous computation's to rounding. The second layer's few pixels (a 7 x 7 plane) give its
    forward and grad_input GEMMs blocks of pixels and tiles of channels both."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(x_shape, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(cout, x_shape[1], 1, 1, generator=gen, requires_grad=True)
    b = torch.randn(cout, generator=gen, requires_grad=True)
    grad = torch.randn(x_shape[0], cout, *x_shape[2:], generator=gen).to(memory_format=torch.channels_last)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = CF.conv2d(x, w, b)
            results.append((out, *torch.autograd.grad(out, (x, w, b), grad)))
    finally:
        torch.set_num_threads(previous)
    out, gx = results[0][:2]
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)
    xc = x.detach().contiguous().requires_grad_()
    ref = CF.conv2d(xc, w, b)
    want = (ref, *torch.autograd.grad(ref, (xc, w, b), grad.contiguous()))
    for a, c in zip(results[0], want):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-4)


def random_window(rng: np.random.Generator, max_padding: int, max_size: tuple[int, int]) -> tuple[tuple[int, int], dict]:
    """Kernel size (kH, kW) and the stride, padding (up to max_padding) and dilation kwargs of a random 2-d window,
    with an input size (H, W) up to max_size, drawn again until the dilated window fits the padded input.
    Returns ((kH, kW), kwargs | dict(size=(H, W)))."""
    while True:
        kernel = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        padding = (int(rng.integers(0, max_padding + 1)), int(rng.integers(0, max_padding + 1)))
        size = (int(rng.integers(1, max_size[0] + 1)), int(rng.integers(1, max_size[1] + 1)))
        if all(s + 2 * p >= d * (k - 1) + 1 for s, p, d, k in zip(size, padding, dilation, kernel)):
            return kernel, dict(size=size, stride=stride, padding=padding, dilation=dilation)


def random_dense_config(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """Input shape, weight shape and kwargs of a random groups-1 convolution (any kernel, stride, dilation)."""
    kernel, kwargs = random_window(rng, max_padding=2, max_size=(13, 39))
    size = kwargs.pop("size")
    cin, cout = int(rng.integers(1, 40)), int(rng.integers(1, 90))
    return (int(rng.integers(1, 12)), cin, *size), (cout, cin, *kernel), kwargs


def assert_im2col_matches_reference(x, w, b, kwargs, gen, label):
    """im2col's output and its input, weight and bias gradients equal the float64 F.conv2d's; results of a
    channels_last input are channels_last."""
    fmt = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
           else torch.contiguous_format)
    out = CF.conv2d(x, w, b, **kwargs, algo="im2col")
    grad = torch.randn(out.shape, dtype=x.dtype, generator=gen).contiguous(memory_format=fmt)
    got = (out, *torch.autograd.grad(out, (x, w, b), grad))
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*leaves, **kwargs)
    want = (ref, *torch.autograd.grad(ref, leaves, grad.double()))
    tol = dict(rtol=1e-4, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, g, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, want):
        torch.testing.assert_close(g.double(), r, **tol, msg=lambda m: f"{label} {name}: {m}")
    if fmt == torch.channels_last:  # (x is not also contiguous)
        assert out.is_contiguous(memory_format=fmt), label
        if not grad.is_contiguous():  # grad_input's layout is grad's
            assert got[1].is_contiguous(memory_format=fmt), label


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_im2col_matches_torch_on_random_configs(layout, dtype, rng):
    """60 random groups-1 convolutions through im2col in each layout: NCHW (sample blocks, channel tiles, the
    padded-plane gather for short rows and im2col's row copies for long ones) and channels_last (pixel-row
    columns, tap-major weights, col2im per block of samples): output and all gradients equal the float64 reference."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(60):
        x_shape, w_shape, kwargs = random_dense_config(rng)
        x = torch.randn(x_shape, dtype=dtype, generator=gen)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(w_shape, dtype=dtype, generator=gen, requires_grad=True)
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen, requires_grad=True)
        assert_im2col_matches_reference(x, w, b, kwargs, gen, label=f"{layout} {x_shape} {w_shape} {kwargs}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((3, 96, 5, 5), (80, 96, 3, 3), dict(padding=1)),  # few blocks: output/input channel tiles
        ((2, 64, 4, 4), (300, 64, 3, 3), dict(padding=1)),  # large layer on a tiny plane (gather)
        ((20, 64, 4, 4), (48, 64, 3, 3), dict(padding=1)),  # tiny planes: blocks of 10 samples per GEMM
        ((5, 24, 30, 33), (40, 24, 3, 3), dict(padding=1, stride=2)),  # long rows (row copies), strided
        ((2, 3, 40, 40), (16, 3, 7, 7), dict(padding=3, stride=2)),  # a stem: kernel rows cut for grad_weight
        # grad_weight's columns of a sample over 1 MB: built and reduced in bands of output rows, the last shorter
        ((2, 16, 62, 62), (8, 16, 3, 3), dict(padding=1)),
        ((2, 3, 150, 150), (8, 3, 7, 7), dict(padding=3, stride=2)),
        ((1, 32, 100, 90), (6, 32, 3, 3), dict(padding=2, stride=(2, 3), dilation=2)),
        ((2, 16, 62, 62), (8, 8, 3, 3), dict(padding=1, groups=2)),
    ],
)
def test_im2col_large_layers_are_thread_independent(x_shape, w_shape, kwargs, layout):
    """im2col's tasks follow from the shape alone: values and gradients are bitwise the same under 1, 2 and 3
    threads, and equal the float64 reference."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(x_shape, generator=gen)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(w_shape, generator=gen, requires_grad=True)
    b = torch.randn(w_shape[0], generator=gen, requires_grad=True)
    out = CF.conv2d(x, w, b, **kwargs)
    grad = torch.randn(out.shape, generator=gen).contiguous(memory_format=torch.channels_last if layout ==
                                                            "channels_last" else torch.contiguous_format)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            out = CF.conv2d(x, w, b, **kwargs, algo="im2col")
            results.append((out, *torch.autograd.grad(out, (x, w, b), grad)))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)
    assert_im2col_matches_reference(x, w, b, kwargs, gen, label=f"{layout} {x_shape} {w_shape}")


def test_auto_runs_large_layers_as_im2col():
    """On Intel CPUs (oneMKL's GEMM at full speed): reductions of 2048 multiply-adds per output and more (256 channels of 3 x 3) run im2col in grad_weight and
    strided layers; on AVX-512, stride-1 forward and grad_input, which channel vectors run blocked for the cache,
    from 4096 (512 channels of 3 x 3) on. AVX-512's NCHW strided forward runs channel vectors at any width for
    reductions below 1024, but for 1 x 1 kernels (shortcuts). In channels_last, AVX-512's channel vectors run
    forward and grad_input in place at any reduction, strided or not; every ISA's strided forward of 64 or more
    output channels runs im2col where its channel vectors are not AVX-512's. The portable forward runs im2col
    from 256 multiply-adds per output on over planes of 64 outputs or more, as its grad_weight."""
    def plan(x_shape, w_shape, pass_="forward", isa="avx512", **kwargs):
        return _ops.conv2d_plan(x_shape, w_shape, pass_=pass_, isa=isa, vendor="intel", **kwargs)

    for pass_, algo in (("forward", "direct"), ("grad_input", "direct"), ("grad_weight", "im2col")):
        got = plan((8, 256, 14, 14), (256, 256, 3, 3), pass_, padding=1)
        assert got["algo"] == algo, (pass_, got)
        if algo == "direct":
            assert got["family"] == "channel_vectors", (pass_, got)
    for pass_ in _ops.CONV_PASSES:
        assert plan((8, 512, 7, 7), (512, 512, 3, 3), pass_, padding=1)["algo"] == "im2col", pass_
    assert plan((8, 256, 14, 14), (512, 256, 3, 3), stride=2, padding=1)["algo"] == "im2col"
    assert plan((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1)["algo"] == "direct"
    assert plan((8, 128, 28, 28), (256, 128, 3, 3), stride=2, padding=1)["algo"] == "im2col"
    # channels_last: forward and grad_input in place, grad_weight as in NCHW.
    for w_shape, kwargs in (((512, 512, 3, 3), dict(padding=1)), ((512, 512, 3, 3), dict(stride=2, padding=1)),
                            ((128, 512, 3, 3), dict(stride=2, padding=1))):
        for pass_, family in (("forward", "channel_vectors"),
                              ("grad_input", "channel_vectors_scatter" if "stride" in kwargs else "channel_vectors"),
                              ("grad_weight", "im2col")):
            got = plan((8, 512, 7, 7), w_shape, pass_, channels_last=True, **kwargs)
            assert got["family"] == family and got["channels_last"] == (family != "im2col"), (w_shape, pass_, got)
        got = plan((8, 512, 7, 7), w_shape, "forward", channels_last=True, isa="avx2", **kwargs)
        assert got["algo"] == "im2col", (w_shape, got)
    assert plan((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1, channels_last=True)["algo"] == "direct"
    assert plan((8, 64, 56, 56), (128, 64, 1, 1), stride=2, channels_last=True)["algo"] == "im2col"
    assert plan((8, 64, 56, 56), (128, 64, 1, 1), stride=2)["algo"] == "im2col"
    assert plan((8, 64, 14, 14), (64, 64, 3, 3), padding=1)["algo"] == "direct"
    # AVX2's channel vectors (2 vectors x 6 pixels) keep the 2048 rule and im2col for wide strided layers.
    for isa in ("avx2", "baseline"):
        assert plan((8, 256, 14, 14), (256, 256, 3, 3), padding=1, isa=isa)["algo"] == "im2col", isa
        assert plan((8, 64, 56, 56), (128, 64, 3, 3), stride=2, padding=1, isa=isa)["algo"] == "im2col", isa
    # The portable forward: im2col from 256 multiply-adds per output over planes of 64 outputs on, as grad_weight.
    assert plan((8, 32, 14, 14), (64, 32, 3, 3), "forward", padding=1, isa="baseline")["algo"] == "im2col"
    assert plan((8, 16, 28, 28), (16, 16, 3, 3), "forward", padding=1, isa="baseline")["algo"] == "direct"
    assert plan((8, 64, 5, 5), (64, 64, 3, 3), "forward", isa="baseline")["algo"] == "direct"
    assert plan((8, 32, 14, 14), (64, 32, 3, 3), "forward", padding=1, isa="avx2")["algo"] == "direct"


def test_auto_weighs_the_gemm_by_cpu_vendor():
    """Where oneMKL runs below full speed (CPUs not Intel's), AVX-512's channel vectors stay direct at any
    reduction, forward (but 1 x 1 shortcuts) and grad_input, strided or not, scattered or not (NCHW 1 x 1
    shortcuts included); channels_last pointwise layers run direct, AVX2's too (the pointwise families, and the
    channel vectors for forward passes of long reductions); AVX2's channel vectors over a pixel-major staging
    (NCHW's small stride-1 planes here) run direct at any reduction; AVX2's other rules and the other rules are
    the Intel ones, but for grad_weight's channel vectors where a group's weight gradient fits 1 MB, or above it
    where the batch has 256 output pixels (where the Intel rules leave strided layers and long reductions to
    im2col), strided first layers' grad_weight included.
    On this CPU, `auto` runs what the plan for its vendor says, with torch's results and layout."""
    def plan(x_shape, w_shape, pass_="forward", isa="avx512", vendor="amd", **kwargs):
        return _ops.conv2d_plan(x_shape, w_shape, pass_=pass_, isa=isa, vendor=vendor, **kwargs)

    large, strided, wide_strided = ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)), \
        ((8, 128, 28, 28), (256, 128, 3, 3), dict(stride=2, padding=1)), \
        ((8, 256, 14, 14), (512, 256, 3, 3), dict(stride=2, padding=1))
    for vendor in ("amd", "other"):
        for x_shape, w_shape, kwargs in (large, strided, wide_strided):
            got = plan(x_shape, w_shape, vendor=vendor, **kwargs)
            assert (got["algo"], got["family"], got["vendor"]) == ("direct", "channel_vectors", vendor), got
            assert plan(x_shape, w_shape, vendor="intel", **kwargs)["algo"] == "im2col"
            got = plan(x_shape, w_shape, "grad_weight", vendor=vendor, **kwargs)  # weight gradients of 1 - 9 MB
            assert (got["algo"], got["family"]) == ("direct", "grad_weight_channel_vectors"), got
            assert plan(x_shape, w_shape, "grad_weight", vendor="intel", **kwargs)["algo"] == "im2col"
            # AVX2: im2col, but over the pixel-major staging of small stride-1 planes (7 x 7).
            got = plan(x_shape, w_shape, isa="avx2", vendor=vendor, **kwargs)
            assert (got["algo"], got["pixel_major"]) == (("direct", True) if x_shape == large[0] else
                                                         ("im2col", False)), (x_shape, got)
        got = plan(*strided[:2], "grad_input", vendor=vendor, **strided[2])  # 256 x 9 = 2304 per input pixel
        assert got["family"] == "channel_vectors_scatter", got
        assert plan(*strided[:2], "grad_input", vendor="intel", **strided[2])["algo"] == "im2col"
        for (x_shape, w_shape, kwargs), family in zip((large, wide_strided),  # 4608 per input pixel
                                                      ("channel_vectors", "channel_vectors_scatter")):
            got = plan(x_shape, w_shape, "grad_input", vendor=vendor, **kwargs)
            assert (got["algo"], got["family"]) == ("direct", family), got
            assert plan(x_shape, w_shape, "grad_input", vendor="intel", **kwargs)["algo"] == "im2col"
            avx2 = plan(x_shape, w_shape, "grad_input", isa="avx2", vendor=vendor, **kwargs)["algo"]
            assert avx2 == ("direct" if family == "channel_vectors" else "im2col"), (x_shape, avx2)
        shortcut = (8, 256, 14, 14), (512, 256, 1, 1)
        assert plan(*shortcut, stride=2, vendor=vendor)["algo"] == "im2col"
        got = plan(*shortcut, "grad_input", stride=2, vendor=vendor)
        assert (got["algo"], got["family"]) == ("direct", "channel_vectors_scatter"), got
        got = plan(*shortcut, "grad_input", stride=2, vendor=vendor, channels_last=True)
        assert (got["algo"], got["family"]) == ("direct", "pointwise"), got
        assert plan(*shortcut, "grad_input", stride=2, vendor="intel")["algo"] == "im2col"
        # Pointwise, channels_last: forward and grad_input direct, in the pointwise family but for forward passes
        # of long reductions, which the channel vectors run in place; AVX2's too, short reductions into many
        # outputs included (MobileNetV2's expansions and the grad_input of its projections).
        for x_shape, w_shape, families in (
                ((8, 64, 14, 14), (384, 64, 1, 1), ("pointwise", "pointwise")),
                ((8, 384, 14, 14), (64, 384, 1, 1), ("channel_vectors", "pointwise")),
                ((8, 32, 28, 28), (192, 32, 1, 1), ("pointwise", "pointwise")),
                ((8, 16, 112, 112), (96, 16, 1, 1), ("pointwise", "pointwise")),
                ((8, 96, 56, 56), (24, 96, 1, 1), ("pointwise", "pointwise")),  # 24 outputs
                ((8, 24, 56, 56), (144, 24, 1, 1), ("pointwise", "pointwise"))):
            for pass_, family in zip(("forward", "grad_input"), families):
                got = plan(x_shape, w_shape, pass_, vendor=vendor, channels_last=True)
                assert (got["algo"], got["family"], got["channels_last"]) == ("direct", family, True), \
                    (x_shape, w_shape, pass_, got)
                # NCHW: direct on AVX-512 (every shape here has a vector of outputs); on AVX2 over a reduction
                # of at most 4 vectors into more than 4 vectors of outputs (expansions forward, projections'
                # grad_input), else im2col; im2col on Intel.
                assert plan(x_shape, w_shape, pass_, vendor=vendor)["algo"] == "direct", (x_shape, pass_)
                reduction, outs = (w_shape[1], w_shape[0])[::1 if pass_ == "forward" else -1]
                avx2 = "direct" if reduction <= 32 < outs else "im2col"
                assert plan(x_shape, w_shape, pass_, vendor=vendor, isa="avx2")["algo"] == avx2, (x_shape, pass_)
                assert plan(x_shape, w_shape, pass_, vendor="intel")["algo"] == "im2col"
                assert plan(x_shape, w_shape, pass_, vendor="intel", channels_last=True)["algo"] == "im2col"
                got = plan(x_shape, w_shape, pass_, isa="avx2", vendor=vendor, channels_last=True)
                assert (got["algo"], got["family"]) == ("direct", family), (x_shape, w_shape, pass_, got)
            # grad_weight: grad_weight_pointwise in both layouts, AVX2's too; im2col on Intel.
            for channels_last in (True, False):
                for isa in ("avx512", "avx2"):
                    got = plan(x_shape, w_shape, "grad_weight", isa=isa, vendor=vendor, channels_last=channels_last)
                    assert (got["algo"], got["family"]) == ("direct", "grad_weight_pointwise"), got
                got = plan(x_shape, w_shape, "grad_weight", vendor="intel", channels_last=channels_last)
                assert got["algo"] == "im2col", got
        # NCHW pointwise with fewer outputs than a vector stays im2col, and a forward pass with just one.
        assert plan((8, 64, 14, 14), (8, 64, 1, 1), vendor=vendor)["algo"] == "im2col"
        assert plan((8, 8, 14, 14), (64, 8, 1, 1), "grad_input", vendor=vendor)["algo"] == "im2col"
        assert plan((8, 32, 112, 112), (16, 32, 1, 1), vendor=vendor)["algo"] == "im2col"
        assert plan((8, 16, 112, 112), (96, 16, 1, 1), "grad_input", vendor=vendor)["algo"] == "direct"
        # NCHW grad_weight: channel vectors where a group's weight gradient fits 1 MB (stems, 64 -> 128 and
        # 128 -> 128 of 3 x 3, strided or not), AVX2's too, and in channels_last; or, AVX-512's, above it
        # where the batch has 128 output pixels (256 -> 256 of 3 x 3 on 8 x 8 and 14 x 14, 512 -> 512 on
        # 4 x 4 planes of 8 samples), where the Intel rules run im2col; not on 2 x 2 planes of 16 samples.
        for x_shape, w_shape, kwargs, avx2 in (
                ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), True),
                ((8, 64, 56, 56), (128, 64, 3, 3), dict(stride=2, padding=1), True),
                ((8, 128, 28, 28), (128, 128, 3, 3), dict(padding=1), True),
                ((32, 256, 8, 8), (256, 256, 3, 3), dict(padding=1), False),
                ((8, 256, 14, 14), (256, 256, 3, 3), dict(padding=1), False),
                ((8, 512, 4, 4), (512, 512, 3, 3), dict(padding=1), False)):
            got = plan(x_shape, w_shape, "grad_weight", vendor=vendor, **kwargs)
            assert (got["algo"], got["family"]) == ("direct", "grad_weight_channel_vectors"), (w_shape, got)
            assert plan(x_shape, w_shape, "grad_weight", vendor="intel", **kwargs)["algo"] == "im2col"
            for channels_last in (False, True):
                got = plan(x_shape, w_shape, "grad_weight", isa="avx2", vendor=vendor, channels_last=channels_last,
                           **kwargs)
                want = ("direct", "grad_weight_channel_vectors") if avx2 else ("im2col",)
                assert (got["algo"], got["family"])[:len(want)] == want, (w_shape, channels_last, got)
        assert plan((16, 512, 2, 2), (512, 512, 3, 3), "grad_weight", vendor=vendor, padding=1)["algo"] == "im2col"
        assert plan((8, 3, 64, 64), (64, 3, 3, 3), "grad_weight", vendor=vendor, padding=1)["family"] == \
            "planes_first_layer"
        # A strided first layer's grad_weight (MobileNetV2's stem) over the channel vectors, at AVX-512 (where
        # they beat the shifted planes) as at AVX2; the Intel rules: im2col.
        stem = (8, 3, 224, 224), (32, 3, 3, 3)
        for isa in ("avx512", "avx2"):
            got = plan(*stem, "grad_weight", isa=isa, vendor=vendor, stride=2, padding=1)
            assert (got["algo"], got["family"]) == ("direct", "grad_weight_channel_vectors"), (isa, got)
        assert plan(*stem, "grad_weight", vendor="intel", stride=2, padding=1)["algo"] == "im2col"
    gen = torch.Generator().manual_seed(11)
    vendor = cnnext.build_info()["cpu_vendor"]
    assert vendor in _ops.CPU_VENDORS
    ops = torch.ops.cnnext
    for x_shape, w_shape, stride, pass_, layout in (
            ((2, 512, 4, 4), (32, 512, 3, 3), 1, "forward", torch.contiguous_format),
            ((2, 32, 8, 8), (256, 32, 3, 3), 2, "grad_input", torch.contiguous_format),
            ((2, 32, 6, 6), (512, 32, 3, 3), 1, "grad_input", torch.contiguous_format),
            ((3, 32, 7, 9), (64, 32, 1, 1), 2, "grad_input", torch.contiguous_format),
            ((3, 72, 5, 6), (40, 72, 1, 1), 1, "forward", torch.channels_last),
            ((3, 40, 5, 6), (72, 40, 1, 1), 1, "grad_input", torch.channels_last),
            ((2, 16, 9, 9), (32, 16, 3, 3), 2, "grad_weight", torch.contiguous_format)):
        pad = w_shape[-1] // 2
        x = torch.randn(x_shape, dtype=torch.float64, generator=gen).to(memory_format=layout)
        w = torch.randn(w_shape, dtype=torch.float64, generator=gen).to(memory_format=layout)
        y = F.conv2d(x, w, None, stride, pad)
        gy = torch.randn(y.shape, dtype=torch.float64, generator=gen).to(memory_format=layout)
        geometry = ([stride, stride], [pad] * 4, [1, 1], 1)
        if pass_ == "forward":
            got, want = ops.conv2d(x, w, None, *geometry, "auto"), y
        elif pass_ == "grad_weight":
            got = ops.conv2d_grad_weight(gy, x, list(w_shape), *geometry, "auto")
            want = torch.ops.aten.convolution_backward(gy, x, w, None, [stride, stride], [pad, pad], [1, 1], False,
                                                       [0, 0], 1, [False, True, False])[1]
        else:
            got = ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, "auto")
            want = torch.ops.aten.convolution_backward(gy, x, w, None, [stride, stride], [pad, pad], [1, 1], False,
                                                       [0, 0], 1, [True, False, False])[0]
        channels_last = layout == torch.channels_last
        expected = _ops.conv2d_plan(x_shape, w_shape, stride, pad, dtype=torch.float64, pass_=pass_, vendor=vendor,
                                    channels_last=channels_last)
        assert _ops.last_conv2d_family(pass_) == expected["family"] or expected["algo"] == "im2col", expected
        torch.testing.assert_close(got, want)
        assert got.is_contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_vectors_blocked_for_cache_match_torch(layout, dtype):
    """Channel vectors whose reduction is cut into parts (weights of a block larger than the part budget), over
    sets of samples staged together, with steps across the samples' pixels: output and input gradient equal the
    float64 reference, bitwise the same under 1 and 3 threads, NCHW and channels_last, grouped and strided."""
    gen = torch.Generator().manual_seed(7)
    ops = torch.ops.cnnext
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for x_shape, w_shape, stride, padding, groups in (((7, 600, 5, 5), (48, 600, 3, 3), 1, 1, 1),
                                                     ((5, 1040, 4, 3), (64, 520, 3, 3), 1, (1, 0), 2),
                                                     ((3, 300, 9, 8), (32, 300, 5, 3), 2, 2, 1)):
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=memory_format)
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen)
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        geometry = ([stride, stride], [ph, pw, ph, pw], [1, 1], groups)
        y = F.conv2d(x.double(), w.double(), b.double(), stride, (ph, pw), 1, groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=memory_format)
        gx_ref = torch.ops.aten.convolution_backward(gy.double(), x.double(), w.double(), None, [stride] * 2,
                                                     [ph, pw], [1, 1], False, [0, 0], groups,
                                                     [True, False, False])[0]
        def run():
            out = ops.conv2d(x, w, b, *geometry, "direct")
            assert _ops.last_conv2d_family("forward") == "channel_vectors"
            return out, ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, "direct")

        results = under_thread_counts(run)
        label = f"{layout} {x_shape} {w_shape} stride {stride} padding {padding} groups {groups}"
        for a, c in zip(*results):
            assert torch.equal(a, c), label
        tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(results[0][0].double(), y, **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(results[0][1].double(), gx_ref, **tol, msg=lambda m: f"{label} grad_input: {m}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_vectors_skipping_border_taps_match_torch(isa, layout, dtype, monkeypatch):
    """Small planes whose windows read much of the zero border run their pixels class by class, each class
    skipping the kernel positions its windows see only the border at: values and input gradient equal the
    float64 reference, bitwise the same under 1 and 3 threads. The shapes have asymmetric padding, windows wholly
    in the border (output = bias), strides, dilation, groups, and reductions cut into parts across kernel
    positions (a class with none of its taps in a part). grad_input runs channel vectors where the plan can (input
    channels in whole vectors; stride 1 at least), else the family the plan falls back to. grad_weight's channel
    vectors sweep the taps kernel-major and sum each step over the pixels whose windows read the source at its
    kernel positions (steps whose taps straddle two positions, several block widths; a plane swept in several
    bands of rows): the weight gradient equals the float64 reference too, bitwise the same under 1 and 3
    threads."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=channel_vectors,family=grad_weight_channel_vectors")
    gen = torch.Generator().manual_seed(11)
    ops = torch.ops.cnnext
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    cases = (((6, 64, 4, 4), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
             ((3, 64, 5, 3), (32, 32, 3, 3), (1, 1), (2, 0, 1, 3), (1, 1), 2),
             ((4, 16, 2, 3), (16, 16, 3, 3), (1, 1), (4, 3, 4, 3), (1, 1), 1),
             ((2, 20, 7, 6), (48, 20, 3, 5), (2, 2), (1, 2, 1, 2), (1, 1), 1),
             ((3, 16, 6, 6), (32, 16, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
             ((2, 608, 3, 3), (64, 608, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
             ((2, 16, 40, 36), (32, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
             ((1, 1024, 12, 12), (32, 1024, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    for x_shape, w_shape, stride, padding, dilation, groups in cases:
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=memory_format)
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen)
        top, left, bottom, right = padding
        padded = F.pad(x.double(), (left, right, top, bottom)).requires_grad_()
        w64 = w.double().requires_grad_()
        y = F.conv2d(padded, w64, b.double(), stride, 0, dilation, groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=memory_format)
        gx_ref, gw_ref = torch.autograd.grad(y, (padded, w64), gy.double())
        gx_ref = gx_ref[:, :, top:top + x_shape[2], left:left + x_shape[3]]
        geometry = (list(stride), list(padding), list(dilation), groups)
        def run():
            out = ops.conv2d(x, w, b, *geometry, "direct")
            assert _ops.last_conv2d_family("forward") == "channel_vectors"
            gx = ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, "direct")
            planned = _ops.conv2d_plan(x_shape, w_shape, stride, padding, dilation, groups, dtype,
                                       pass_="grad_input", algo="direct", channels_last=layout == "channels_last")
            assert _ops.last_conv2d_family("grad_input") == planned["family"]
            assert planned["family"] == "channel_vectors" or stride != (1, 1)
            gw = ops.conv2d_grad_weight(gy, x, list(w_shape), *geometry, "direct")
            assert _ops.last_conv2d_family("grad_weight") == "grad_weight_channel_vectors"
            return out, gx, gw

        results = under_thread_counts(run)
        label = f"{layout} {x_shape} {w_shape} stride {stride} padding {padding} dilation {dilation} groups {groups}"
        for a, c in zip(*results):
            assert torch.equal(a, c), label
        tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(results[0][0].double(), y.detach(), **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(results[0][1].double(), gx_ref, **tol, msg=lambda m: f"{label} grad_input: {m}")
        torch.testing.assert_close(results[0][2].double(), gw_ref, **tol, msg=lambda m: f"{label} grad_weight: {m}")
        assert results[0][0].is_contiguous(memory_format=memory_format), label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_pointwise_channel_vectors_read_in_place(isa, dtype, monkeypatch):
    """channels_last 1 x 1 layers at stride 1 without padding: the channel vectors read a pixel's channels in
    place, no staged planes. Forward and grad_input (with and without bias, groups, samples of one pixel, several
    blocks of outputs, a reduction of one vector and of many) equal the float64 reference, bitwise the same
    under 1 and 3 threads, and stay channels_last."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=channel_vectors")
    gen = torch.Generator().manual_seed(17)
    ops = torch.ops.cnnext
    geometry = ([1, 1], [0, 0, 0, 0], [1, 1])
    for x_shape, outs, groups, bias in (((3, 32, 5, 7), 48, 1, True), ((2, 16, 1, 1), 32, 1, False),
                                        ((4, 64, 6, 3), 96, 2, True), ((2, 208, 3, 4), 80, 1, False)):
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        w = torch.randn(outs, x_shape[1] // groups, 1, 1, dtype=dtype, generator=gen)
        b = torch.randn(outs, dtype=dtype, generator=gen) if bias else None
        y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), groups=groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        gx_ref = F.conv_transpose2d(gy.double(), w.double(), groups=groups)
        def run():
            out = ops.conv2d(x, w, b, *geometry, groups, "direct")
            assert _ops.last_conv2d_family("forward") == "channel_vectors"
            gx = ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, groups, "direct")
            assert _ops.last_conv2d_family("grad_input") == "channel_vectors"
            return out, gx

        results = under_thread_counts(run)
        label = f"{x_shape} -> {outs} groups {groups} bias {bias}"
        for a, c in zip(*results):
            assert torch.equal(a, c), label
            assert a.is_contiguous(memory_format=torch.channels_last), label
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(results[0][0].double(), y, **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(results[0][1].double(), gx_ref, **tol, msg=lambda m: f"{label} grad_input: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pointwise_grad_weight_matches_torch(isa, dtype, layout, monkeypatch):
    """grad_weight of 1 x 1 layers at stride 1 without padding (grad_weight_pointwise) per ISA and layout: the
    input as the vector side (channels_last: it has the more channels, or a whole step of vectors; NCHW: the
    fewer, or grad_output's are fewer than a vector) and grad_output as it, its channels in whole vectors or
    not (the last vector overlaps the one before), broadcast rows not in whole steps, large planes cut into
    chunks of pixels (NCHW: the vector side transposed band by band, bands across samples), small planes of
    many channels into parts of the rows (NCHW: the vector side transposed once), groups, samples of one
    pixel, random shapes. dW and grad_bias (and dW alone) equal the float64 reference, bitwise the same under 1
    and 3 threads."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=grad_weight_pointwise")
    gen = torch.Generator().manual_seed(19)
    ops = torch.ops.cnnext
    lanes = _ops.conv2d_plan((1, 16, 8, 8), (16, 16, 1, 1), dtype=dtype, isa=isa)["tiles"]["vec_bytes"] // (
        4 if dtype == torch.float32 else 8)
    # input, output channels, groups
    cases = [((3, lanes + 3, 9, 7), 2 * lanes + 5, 1),  # grad_output the vector side, not in whole vectors
             ((2, 4 * lanes + 5, 5, 6), 3, 1),  # the input, not in whole vectors; 3 rows: steps of 2 and 1
             ((2, 2 * lanes, 6, 6), lanes, 1),  # the input, whole vectors, one chunk: sums straight into dW
             ((4, 8, 40, 40), 3 * lanes, 1),  # a large plane: chunks of pixels
             ((2, 7 * lanes, 3, 3), 6 * lanes + 1, 1),  # a small plane of many channels: parts of the rows
             ((2, 2 * (lanes + 1), 4, 5), 4 * lanes, 2),
             ((5, 3 * lanes, 1, 1), 3 * (lanes // 2), 3)]  # samples of one pixel
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))
    for _ in range(4):
        groups = draw(1, 2)
        cases.append(((draw(1, 3), groups * draw(1, 3 * lanes), draw(1, 12), draw(1, 12)),
                      groups * draw(lanes, 4 * lanes), groups))
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for x_shape, outs, groups in cases:
        label = f"{isa} {layout} {x_shape} -> {outs} groups {groups}"
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=memory_format)
        w_shape = [outs, x_shape[1] // groups, 1, 1]
        gy = torch.randn(x_shape[0], outs, *x_shape[2:], dtype=dtype, generator=gen).to(memory_format=memory_format)
        _, gw_ref, gb_ref = torch.ops.aten.convolution_backward(
            gy.double(), x.double(), torch.zeros(w_shape, dtype=torch.float64), [outs], [1, 1], [0, 0], [1, 1],
            False, [0, 0], groups, [False, True, True])
        geometry = ([1, 1], [0, 0, 0, 0], [1, 1], groups)

        def run():
            gw, gb = ops.conv2d_grad_weight_bias(gy, x, w_shape, *geometry, "direct")
            assert _ops.last_conv2d_family("grad_weight") == "grad_weight_pointwise", label
            return gw, gb, ops.conv2d_grad_weight(gy, x, w_shape, *geometry, "direct")

        results = under_thread_counts(run)
        for a, c in zip(*results):
            assert torch.equal(a, c), label
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        gw, gb, gw_alone = results[0]
        torch.testing.assert_close(gw.double(), gw_ref, **tol, msg=lambda m: f"{label} dW: {m}")
        torch.testing.assert_close(gb.double(), gb_ref, **tol, msg=lambda m: f"{label} db: {m}")
        assert torch.equal(gw_alone, gw), label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_strided_one_by_one_matches_torch(isa, dtype, monkeypatch):
    """Strided 1 x 1 layers without padding (ResNet's shortcuts) in channels_last, per ISA: forward and
    grad_input in the pointwise family and grad_weight in grad_weight_pointwise, each over the input pixels
    under the output pixels, gathered (grad_input: scattered, zeros between, into a gradient first filled with
    NaN) block by block: strides (2, 2), (1, 2), (3, 1), sizes the stride does not divide, groups, bias, large
    planes (several blocks and chunks of pixels). All equal the float64 reference, bitwise the same under 1 and
    3 threads; the plan gives them the families off Intel, forward's and grad_input's on AVX2 and AVX-512,
    grad_weight's on AVX-512."""
    gen = torch.Generator().manual_seed(31)
    ops = torch.ops.cnnext
    lanes = _ops.conv2d_plan((1, 16, 8, 8), (16, 16, 1, 1), dtype=dtype, isa=isa)["tiles"]["vec_bytes"] // (
        4 if dtype == torch.float32 else 8)
    # input, output channels, stride, groups, bias
    cases = [((3, lanes + 3, 9, 7), 2 * lanes + 5, (2, 2), 1, True),
             ((2, 4 * lanes, 8, 11), lanes, (1, 2), 1, False),
             ((2, 2 * lanes, 10, 5), 3 * lanes + 1, (3, 1), 1, True),
             ((2, 2 * (lanes + 1), 7, 9), 4 * lanes, (2, 2), 2, False),
             ((8, 16, 64, 64), 2 * lanes, (2, 2), 1, True)]
    for x_shape, outs, stride, groups, bias in cases:
        label = f"{isa} {x_shape} -> {outs} stride {stride} groups {groups} bias {bias}"
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        w_shape = [outs, x_shape[1] // groups, 1, 1]
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        b = torch.randn(outs, dtype=dtype, generator=gen) if bias else None
        y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride=stride, groups=groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        gx_ref, gw_ref, gb_ref = torch.ops.aten.convolution_backward(
            gy.double(), x.double(), w.double(), [outs], list(stride), [0, 0], [1, 1], False, [0, 0], groups,
            [True, True, True])
        geometry = (list(stride), [0, 0, 0, 0], [1, 1], groups)

        def run():
            monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=pointwise")
            out = ops.conv2d(x, w, b, *geometry, "direct")
            assert _ops.last_conv2d_family("forward") == "pointwise", label
            # Memory the gradient may reuse holds NaN: a pixel the kernel does not write shows.
            torch.full((x.numel(),), float("nan"), dtype=dtype)
            gx = ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, "direct")
            assert _ops.last_conv2d_family("grad_input") == "pointwise", label
            monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=grad_weight_pointwise")
            gw, gb = ops.conv2d_grad_weight_bias(gy, x, w_shape, *geometry, "direct")
            assert _ops.last_conv2d_family("grad_weight") == "grad_weight_pointwise", label
            return out, gx, gw, gb

        results = under_thread_counts(run)
        for a, c in zip(*results):
            assert torch.equal(a, c), label
        assert results[0][0].is_contiguous(memory_format=torch.channels_last), label
        assert results[0][1].is_contiguous(memory_format=torch.channels_last), label
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        out, gx, gw, gb = results[0]
        torch.testing.assert_close(out.double(), y, **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(gx.double(), gx_ref, **tol, msg=lambda m: f"{label} grad_input: {m}")
        torch.testing.assert_close(gw.double(), gw_ref, **tol, msg=lambda m: f"{label} dW: {m}")
        torch.testing.assert_close(gb.double(), gb_ref, **tol, msg=lambda m: f"{label} db: {m}")
    monkeypatch.delenv("CNNEXT_CONV_PLAN")
    shortcut = (8, 256, 14, 14), (512, 256, 1, 1)
    for pass_, family in (("forward", "pointwise"), ("grad_input", "pointwise"),
                          ("grad_weight", "grad_weight_pointwise")):
        # AVX2 off Intel: forward and grad_input only.
        for isa_ in ("avx512", "avx2") if pass_ != "grad_weight" else ("avx512",):
            got = _ops.conv2d_plan(*shortcut, stride=2, pass_=pass_, isa=isa_, vendor="amd", channels_last=True)
            assert (got["algo"], got["family"]) == ("direct", family), got
        im2col = (("avx2", "intel"), ("avx512", "intel")) + ((("avx2", "amd"),) if pass_ == "grad_weight" else ())
        for isa_, vendor in im2col:
            assert _ops.conv2d_plan(*shortcut, stride=2, pass_=pass_, isa=isa_, vendor=vendor,
                                    channels_last=True)["algo"] == "im2col"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pointwise_forward_and_grad_input_match_torch(isa, dtype, monkeypatch):
    """Forward and grad_input of channels_last 1 x 1 layers at stride 1 without padding in the pointwise family
    per ISA: outputs in whole vectors or not (the last vector overlaps the one before), in several tiles of
    vectors, pixels not in whole steps, long and short reductions, groups, with and without bias, samples of one
    pixel, random shapes. Both equal the float64 reference, bitwise the same under 1 and 3 threads, and stay
    channels_last."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=pointwise")
    gen = torch.Generator().manual_seed(29)
    ops = torch.ops.cnnext
    lanes = _ops.conv2d_plan((1, 16, 8, 8), (16, 16, 1, 1), dtype=dtype, isa=isa)["tiles"]["vec_bytes"] // (
        4 if dtype == torch.float32 else 8)
    # input, output channels, groups, bias
    cases = [((3, lanes + 3, 9, 7), 2 * lanes + 5, 1, True),
             ((2, 4 * lanes + 5, 5, 6), lanes + 1, 1, False),
             ((2, 300, 3, 5), 7 * lanes, 1, True),  # tiles of 6 (3 on 16-register ISAs) vectors and the rest
             ((2, 2 * (lanes + 1), 4, 5), 4 * lanes, 2, False),
             ((5, 3 * lanes, 1, 1), 3 * lanes, 3, True)]  # samples of one pixel
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))
    for _ in range(4):
        groups = draw(1, 2)
        cases.append(((draw(1, 3), groups * draw(lanes, 3 * lanes), draw(1, 12), draw(1, 12)),
                      groups * draw(lanes, 4 * lanes), groups, bool(draw(0, 1))))
    geometry = ([1, 1], [0, 0, 0, 0], [1, 1])
    for x_shape, outs, groups, bias in cases:
        label = f"{isa} {x_shape} -> {outs} groups {groups} bias {bias}"
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        w = torch.randn(outs, x_shape[1] // groups, 1, 1, dtype=dtype, generator=gen)
        b = torch.randn(outs, dtype=dtype, generator=gen) if bias else None
        y = F.conv2d(x.double(), w.double(), None if b is None else b.double(), groups=groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last)
        gx_ref = F.conv_transpose2d(gy.double(), w.double(), groups=groups)

        def run():
            out = ops.conv2d(x, w, b, *geometry, groups, "direct")
            assert _ops.last_conv2d_family("forward") == "pointwise", label
            gx = ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, groups, "direct")
            assert _ops.last_conv2d_family("grad_input") == "pointwise", label
            return out, gx

        results = under_thread_counts(run)
        for a, c in zip(*results):
            assert torch.equal(a, c), label
            assert a.is_contiguous(memory_format=torch.channels_last), label
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(results[0][0].double(), y, **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(results[0][1].double(), gx_ref, **tol, msg=lambda m: f"{label} grad_input: {m}")


def test_pointwise_grad_weight_plan_and_gradcheck():
    """Off Intel's CPUs, `auto` runs pointwise grad_weight as grad_weight_pointwise with AVX2 and AVX-512
    (MobileNetV2's 1 x 1 layers), channels_last and NCHW, im2col on Intel's, with the portable kernels, and
    where neither side has a vector of channels; NCHW strided 1 x 1 layers (ResNet's shortcuts) are not
    pointwise there. gradcheck and gradgradcheck in float64 through such a layer, whose forward and
    grad_input run the pointwise family."""
    def plan(x_shape, w_shape, **kwargs):
        return _ops.conv2d_plan(x_shape, w_shape, pass_="grad_weight", channels_last=True, **kwargs)

    for x_shape, w_shape in (((8, 16, 112, 112), (96, 16, 1, 1)), ((8, 144, 56, 56), (24, 144, 1, 1)),
                             ((8, 960, 7, 7), (160, 960, 1, 1)), ((8, 320, 7, 7), (1280, 320, 1, 1))):
        for isa in ("avx512", "avx2"):
            for vendor in ("amd", "other"):
                got = plan(x_shape, w_shape, isa=isa, vendor=vendor)
                assert (got["algo"], got["family"], got["channels_last"]) == (
                    "direct", "grad_weight_pointwise", True), (x_shape, w_shape, isa, vendor)
            assert plan(x_shape, w_shape, isa=isa, vendor="intel")["algo"] == "im2col"
        assert plan(x_shape, w_shape, isa="baseline", vendor="amd")["algo"] == "im2col"
        got = _ops.conv2d_plan(x_shape, w_shape, pass_="grad_weight", vendor="amd")
        assert (got["algo"], got["family"], got["channels_last"]) == ("direct", "grad_weight_pointwise", False), got
    assert plan((8, 4, 28, 28), (8, 4, 1, 1), isa="avx512", vendor="amd")["family"] != "grad_weight_pointwise"
    got = _ops.conv2d_plan((8, 256, 14, 14), (512, 256, 1, 1), pass_="grad_weight", stride=2, vendor="amd")
    assert got["family"] != "grad_weight_pointwise", got
    w = torch.randn(11, 9, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, dtype=torch.float64, requires_grad=True)
    for channels_last in (True, False):
        x = torch.randn(2, 9, 5, 4, dtype=torch.float64)
        x = x.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format).requires_grad_()
        got = _ops.conv2d_plan(tuple(x.shape), tuple(w.shape), dtype=torch.float64, pass_="grad_weight",
                               algo="direct", channels_last=channels_last)
        assert got["family"] == "grad_weight_pointwise", got
        for pass_ in ("forward", "grad_input"):
            got = _ops.conv2d_plan(tuple(x.shape), tuple(w.shape), dtype=torch.float64, pass_=pass_, algo="direct",
                                   channels_last=channels_last)
            assert (got["family"] == "pointwise") == channels_last, got
        assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, algo="direct"), (x, w, b))
        assert torch.autograd.gradgradcheck(lambda *t: CF.conv2d(*t, algo="direct"), (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shifted_planes_match_torch(isa, dtype):
    """First layers over shifted planes (planes_first_layer) per ISA: one band per plane and planes cut into
    several bands (the last taking the rows left over), planes not in whole vectors (the last vector overlaps the
    one before: grad_weight must not count those pixels twice), strides (rows split by phase, columns gathered),
    a 7 x 7 stride-2 stem, strides larger than the kernel (gathered staging), padding, dilation, groups, 5 x 5 and
    1 x 3 kernels, output channels not in whole blocks. The plan runs the family for forward, grad_weight is
    forced; output and weight gradient equal the float64 reference, bitwise the same under 1 and 3 threads."""
    gen = torch.Generator().manual_seed(11)
    ops = torch.ops.cnnext
    # input, weight, stride, padding, dilation, groups
    cases = [((5, 1, 28, 28), (32, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1),
             ((3, 3, 32, 30), (16, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
             ((2, 3, 150, 230), (8, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # several bands
             ((3, 2, 9, 15), (10, 2, 5, 5), (1, 1), (2, 1), (1, 1), 1),  # 10 outputs: a partial block
             ((2, 4, 12, 20), (16, 2, 1, 3), (1, 1), (0, 0), (1, 2), 2),
             ((4, 1, 21, 19), (8, 1, 3, 3), (1, 1), (2, 2), (2, 2), 1),
             ((3, 3, 33, 35), (16, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1),  # MobileNetV2's stem
             ((2, 3, 46, 44), (16, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1),  # ResNet's stem
             ((2, 3, 130, 120), (8, 3, 7, 7), (2, 2), (3, 3), (1, 1), 1),  # ... in bands
             ((2, 1, 23, 40), (8, 1, 3, 2), (3, 1), (1, 0), (2, 1), 1),  # three row phases
             ((2, 2, 30, 31), (8, 1, 2, 2), (3, 3), (0, 0), (1, 1), 2)]  # stride > kernel: gathered
    for x_shape, w_shape, stride, padding, dilation, groups in cases:
        label = f"{isa} {x_shape} {w_shape} stride {stride} padding {padding} dilation {dilation} groups {groups}"
        x = torch.randn(x_shape, dtype=dtype, generator=gen)
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen)
        y = F.conv2d(x.double(), w.double(), b.double(), stride, padding, dilation, groups)
        gy = torch.randn(y.shape, dtype=dtype, generator=gen)
        gw_ref = torch.ops.aten.convolution_backward(gy.double(), x.double(), w.double(), None, list(stride),
                                                     list(padding), list(dilation), False, [0, 0], groups,
                                                     [False, True, False])[1]
        plan = _ops.conv2d_plan(x_shape, w_shape, stride, padding, dilation, groups, dtype, "forward", algo="direct")
        assert plan["family"] == "planes_first_layer", (label, plan)
        whole_blocks = w_shape[0] // groups % plan["tiles"]["oc_block"] == 0
        geometry = (list(stride), [padding[0], padding[1], padding[0], padding[1]], list(dilation), groups)
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            out = ops.conv2d(x, w, b, *geometry, "direct")
            assert _ops.last_conv2d_family("forward") == "planes_first_layer", label
            os.environ["CNNEXT_CONV_PLAN"] = "family=planes_first_layer"
            try:
                gw = ops.conv2d_grad_weight(gy, x, list(w_shape), *geometry, "direct")
            finally:
                del os.environ["CNNEXT_CONV_PLAN"]
            if whole_blocks:  # else the forced family cannot run it
                assert _ops.last_conv2d_family("grad_weight") == "planes_first_layer", label
            results.append((out, gw))
        for a, c in zip(*results):
            assert torch.equal(a, c), label
        tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(results[0][0].double(), y, **tol, msg=lambda m: f"{label} output: {m}")
        torch.testing.assert_close(results[0][1].double(), gw_ref, **tol, msg=lambda m: f"{label} grad_weight: {m}")


def test_shifted_planes_gradcheck():
    """gradcheck and gradgradcheck in float64 through a first layer that runs over shifted planes."""
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    for pass_ in ("forward", "grad_weight"):
        plan = _ops.conv2d_plan(tuple(x.shape), tuple(w.shape), padding=(1, 1), dtype=torch.float64, pass_=pass_)
        assert plan["family"] == "planes_first_layer", plan
    assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, padding=1, algo="direct"), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *t: CF.conv2d(*t, padding=1, algo="direct"), (x, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_vectors_grad_weight_match_torch(isa, dtype):
    """grad_weight over input-channel vectors (grad_weight_input_vectors) per ISA, NCHW and channels_last: planes
    cut into bands of rows (the last shorter), input channels in 1 - 5 vectors (steps of 4, 3, 2, 1), output
    channels not in whole steps, 9 taps in steps of 3 and 25 with one left over, strides, padding, dilation,
    groups, grad_bias. dW and grad_bias equal the float64 reference, bitwise the same under 1 and 3 threads."""
    gen = torch.Generator().manual_seed(13)
    ops = torch.ops.cnnext
    lanes = _ops.conv2d_plan((1, 16, 8, 8), (16, 16, 3, 3), dtype=dtype, isa=isa)["tiles"]["vec_bytes"] // (
        4 if dtype == torch.float32 else 8)
    # input (channels in vectors), weight (output channels), stride, padding, dilation, groups
    cases = [((3, 1, 28, 28), 16, (1, 1), (1, 1), (1, 1), 1),
             ((2, 2, 70, 66), 13, (1, 1), (1, 1), (1, 1), 1),  # bands of rows
             ((2, 3, 15, 17), 21, (1, 1), (2, 0), (1, 1), 1),
             ((2, 5, 12, 9), 7, (2, 1), (1, 2), (1, 2), 1),  # 4 + 1 vectors, strided, dilated
             ((3, 4, 11, 13), 10, (1, 1), (2, 2), (1, 1), 1),  # 5 x 5 kernel below
             ((2, 2, 14, 14), 12, (2, 3), (0, 1), (1, 1), 2)]
    for (n, vectors, h, w_), cout, stride, padding, dilation, groups in cases:
        cin = vectors * lanes
        kernel = (5, 5) if cout == 10 else (3, 3)
        x_shape, w_shape = (n, cin * groups, h, w_), (cout * groups, cin, *kernel)
        for layout in (torch.contiguous_format, torch.channels_last):
            label = f"{isa} {layout} {x_shape} {w_shape} stride {stride} padding {padding} dilation {dilation}"
            x = torch.randn(x_shape, dtype=dtype, generator=gen).contiguous(memory_format=layout)
            w = torch.randn(w_shape, dtype=dtype, generator=gen)
            y = F.conv2d(x.double(), w.double(), None, stride, padding, dilation, groups)
            gy = torch.randn(y.shape, dtype=dtype, generator=gen).contiguous(memory_format=layout)
            _, gw_ref, gb_ref = torch.ops.aten.convolution_backward(
                gy.double(), x.double(), w.double(), [w_shape[0]], list(stride), list(padding), list(dilation),
                False, [0, 0], groups, [False, True, True])
            geometry = (list(stride), [padding[0], padding[1], padding[0], padding[1]], list(dilation), groups)
            results = []
            os.environ["CNNEXT_CONV_PLAN"] = "family=grad_weight_input_vectors"
            try:
                for threads in (1, 3):
                    torch.set_num_threads(threads)
                    results.append(ops.conv2d_grad_weight_bias(gy, x, list(w_shape), *geometry, "direct"))
                    assert _ops.last_conv2d_family("grad_weight") == "grad_weight_input_vectors", label
            finally:
                del os.environ["CNNEXT_CONV_PLAN"]
            for a, c in zip(*results):
                assert torch.equal(a, c), label
            tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(results[0][0].double(), gw_ref, **tol, msg=lambda m: f"{label} dW: {m}")
            torch.testing.assert_close(results[0][1].double(), gb_ref, **tol, msg=lambda m: f"{label} db: {m}")


def assert_grad_weight_bias_matches_reference(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                                              stride: tuple[int, int], padding: tuple[int, int],
                                              dilation: tuple[int, int], groups: int, layout: torch.memory_format,
                                              dtype: torch.dtype, gen: torch.Generator, family: str, label: str):
    """conv2d_grad_weight_bias (algo direct) of a random input and grad_output in `layout`, under 1 and 3 threads:
    it ran `family` (which the caller forces), bitwise the same both times, and equals the float64 reference's
    dW and grad_bias."""
    ops = torch.ops.cnnext
    x = torch.randn(x_shape, dtype=dtype, generator=gen).contiguous(memory_format=layout)
    y_shape = F.conv2d(x[:1, :, :, :].double(), torch.zeros(w_shape, dtype=torch.float64), None, stride, padding,
                       dilation, groups).shape
    gy = torch.randn(x_shape[0], *y_shape[1:], dtype=dtype, generator=gen).contiguous(memory_format=layout)
    _, gw_ref, gb_ref = torch.ops.aten.convolution_backward(
        gy.double(), x.double(), torch.zeros(w_shape, dtype=torch.float64), [w_shape[0]], list(stride),
        list(padding), list(dilation), False, [0, 0], groups, [False, True, True])
    geometry = (list(stride), [padding[0], padding[1], padding[0], padding[1]], list(dilation), groups)

    def run():
        got = ops.conv2d_grad_weight_bias(gy, x, list(w_shape), *geometry, "direct")
        assert _ops.last_conv2d_family("grad_weight") == family, label
        return got

    results = under_thread_counts(run)
    for a, c in zip(*results):
        assert torch.equal(a, c), label
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results[0][0].double(), gw_ref, **tol, msg=lambda m: f"{label} dW: {m}")
    torch.testing.assert_close(results[0][1].double(), gb_ref, **tol, msg=lambda m: f"{label} db: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_vector_grad_weight_of_first_layers_matches_torch(isa, dtype, monkeypatch):
    """grad_weight's channel vectors on first layers (1 - 3 input channels: ResNet's 7 x 7 and MobileNetV2's
    3 x 3 stride-2 stems, odd planes), per ISA, NCHW and channels_last: dW and grad_bias equal the float64
    reference, bitwise the same under 1 and 3 threads."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=grad_weight_channel_vectors")
    gen = torch.Generator().manual_seed(29)
    cases = [((3, 3, 45, 43), (32, 3, 7, 7), 2, 3), ((2, 3, 33, 31), (16, 3, 3, 3), 2, 1),
             ((2, 1, 29, 30), (32, 1, 5, 5), 1, 2)]
    for x_shape, w_shape, stride, padding in cases:
        for layout in (torch.contiguous_format, torch.channels_last):
            assert_grad_weight_bias_matches_reference(
                x_shape, w_shape, (stride, stride), (padding, padding), (1, 1), 1, layout, dtype, gen,
                "grad_weight_channel_vectors", f"{isa} {layout} {x_shape} {w_shape} stride {stride}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_vector_grad_weight_in_sets_matches_torch(isa, dtype, monkeypatch):
    """grad_weight's channel vectors for a group's weight gradient above 1 MB (summed over sets of samples staged
    for every task, each task a block of output channels x a part of the taps), per ISA, NCHW and channels_last:
    a batch in several sets, the last one short, samples reduced a few at a time over whole planes or rows of
    one, the border's taps skipped (4 x 4 planes), strides and dilation, output channels in blocks of fewer
    vectors, groups. dW and grad_bias equal the float64 reference, bitwise the same under 1 and 3 threads."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=grad_weight_channel_vectors")
    gen = torch.Generator().manual_seed(23)
    # input, weight, stride, padding, dilation, groups: every group's dW is above 1 MB in float32
    cases = [((3, 240, 38, 38), (128, 240, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # several sets
             ((5, 512, 4, 4), (64, 512, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # the border skipped
             ((2, 300, 11, 13), (112, 300, 3, 3), (2, 2), (1, 1), (2, 2), 1),  # 7 vectors: blocks of 4 and 3
             ((2, 384, 6, 6), (320, 192, 3, 3), (1, 1), (1, 1), (1, 1), 2)]
    for x_shape, w_shape, stride, padding, dilation, groups in cases:
        for layout in (torch.contiguous_format, torch.channels_last):
            assert_grad_weight_bias_matches_reference(
                x_shape, w_shape, stride, padding, dilation, groups, layout, dtype, gen, "grad_weight_channel_vectors",
                f"{isa} {layout} {x_shape} {w_shape} stride {stride} padding {padding} dilation {dilation}")


def test_input_vectors_gradcheck_and_plan():
    """gradcheck and gradgradcheck in float64 through a layer whose grad_weight runs over input vectors (NCHW and
    channels_last); auto runs them for the stride-1 layers with 16 - 64 input channels on planes of 8 x 8 and
    more (cnn_small.conv2, cnn_pad.conv2, lenet.conv2, cifar_bn.conv2, the large seed layer, ResNet-18's first
    stage, VGG-11's second layer), not on smaller planes, wide or strided layers."""
    def plan(x_shape, w_shape, **kwargs):
        return _ops.conv2d_plan(x_shape, w_shape, pass_="grad_weight", padding=1, **kwargs)

    for x_shape, w_shape in (((32, 16, 28, 28), (16, 16, 3, 3)), ((64, 32, 14, 14), (64, 32, 3, 3)),
                             ((8, 64, 56, 56), (64, 64, 3, 3)), ((32, 64, 32, 32), (64, 64, 3, 3)),
                             ((32, 64, 56, 56), (128, 64, 3, 3)), ((8, 64, 32, 32), (128, 64, 3, 3)),
                             ((150, 32, 13, 13), (64, 32, 3, 3))):
        for channels_last in (False, True):
            got = plan(x_shape, w_shape, channels_last=channels_last)
            assert (got["algo"], got["family"]) == ("direct", "grad_weight_input_vectors"), (x_shape, got)
    for x_shape, w_shape, kwargs in (((150, 64, 5, 5), (128, 64, 3, 3), {}), ((8, 128, 28, 28), (128, 128, 3, 3), {}),
                                     ((8, 64, 56, 56), (128, 64, 3, 3), dict(stride=2))):
        assert plan(x_shape, w_shape, **kwargs)["family"] != "grad_weight_input_vectors", x_shape
    x = torch.randn(2, 16, 15, 14, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert plan(tuple(x.shape), tuple(w.shape), dtype=torch.float64)["family"] == "grad_weight_input_vectors"
    for layout in (torch.contiguous_format, torch.channels_last):
        leaves = (x.detach().contiguous(memory_format=layout).requires_grad_(), w, b)
        assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, padding=1, algo="direct"), leaves)
        assert torch.autograd.gradgradcheck(lambda *t: CF.conv2d(*t, padding=1, algo="direct"), leaves)


def run_channels_last_against_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, kwargs: dict,
                                        dtype: torch.dtype, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """conv2d of channels_last x (and w, b) and its three gradients under 1 and 3 threads: bitwise the same,
    and equal to the float64 reference. Returns the output and the input's gradient (1 thread)."""
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            out = CF.conv2d(x, w, b, **kwargs)
            grad = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1)).contiguous(
                memory_format=torch.channels_last)
            results.append((out, *torch.autograd.grad(out, (x, w, b), grad)))
    finally:
        torch.set_num_threads(previous)
    for a, c in zip(*results):
        assert torch.equal(a, c), label
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*leaves, **kwargs)
    want = (ref, *torch.autograd.grad(ref, leaves, grad.double()))
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, g, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), results[0], want):
        torch.testing.assert_close(g.double(), r, **tol, msg=lambda m: f"{label} {name}: {m}")
    return results[0][0], results[0][1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_depthwise_runs_in_place(dtype, rng):
    """Depthwise layers with one output per group in channels_last run their own channels_last kernels (rows of
    channels per tap): 60 random configurations (strides, dilations, padding, up to 40 channels) give the float64
    reference's output and gradients, in channels_last, the same under 1 and 3 threads."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(60):
        x_shape, w_shape, kwargs = random_depthwise_config(rng)
        channels = int(rng.integers(2, 41))
        x_shape = (x_shape[0], channels, *x_shape[2:])
        w_shape = (channels, 1, *w_shape[2:])
        kwargs["groups"] = channels
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(w_shape, dtype=dtype, generator=gen, requires_grad=True)
        b = torch.randn(channels, dtype=dtype, generator=gen, requires_grad=True)
        label = f"{x_shape} {w_shape} {kwargs}"
        assert _ops.conv2d_plan(x_shape, w_shape, **{k: v for k, v in kwargs.items()}, dtype=dtype)["family"] == \
            "depthwise", label
        out, gx = run_channels_last_against_reference(x, w, b, kwargs, dtype, label)
        assert _ops.last_conv2d_family("forward") == "depthwise", label
        if not out.is_contiguous():
            assert out.is_contiguous(memory_format=torch.channels_last), label
        if not gx.is_contiguous():
            assert gx.is_contiguous(memory_format=torch.channels_last), label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_depthwise_few_channels(isa, dtype, rng):
    """3 x 3 depthwise layers with 2 - 40 channels, the counts whose whole kernel the forward and grad_input
    keep in registers (one to a few vectors of channels, the last one overlapping where the channels are not
    whole vectors) and those around them, on every ISA: strides, dilations, padding and planes wider than the
    kernel's reach, so rows of windows lie wholly in bounds; output and gradients equal the float64 reference's."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for channels in [2, 4, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 40]:
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        dilation = (int(rng.integers(1, 3)), 1)
        kwargs = dict(stride=stride, padding=(int(rng.integers(0, 3)), int(rng.integers(0, 3))), dilation=dilation,
                      groups=channels)
        x_shape = (int(rng.integers(1, 3)), channels, int(rng.integers(7, 14)), int(rng.integers(9, 24)))
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn((channels, 1, 3, 3), dtype=dtype, generator=gen, requires_grad=True)
        b = torch.randn(channels, dtype=dtype, generator=gen, requires_grad=True)
        label = f"{isa} {x_shape} {kwargs}"
        run_channels_last_against_reference(x, w, b, kwargs, dtype, label)
        assert _ops.last_conv2d_family("forward") == "depthwise", label


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stride", [1, 2])
def test_channels_last_depthwise_grad_weight_over_bands(isa, dtype, stride):
    """channels_last 3 x 3 depthwise grad_weight on planes large enough that it sums the batch in several bands
    of output rows (bands that end mid-sample), with channel counts whose vectors fill neither the register
    blocks nor the last vector, on every ISA: output and gradients equal the float64 reference's."""
    gen = torch.Generator().manual_seed(7)
    for channels in (70, 72):
        x_shape = (2, channels, 41, 72)
        kwargs = dict(stride=stride, padding=1, groups=channels)
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn((channels, 1, 3, 3), dtype=dtype, generator=gen, requires_grad=True)
        b = torch.randn(channels, dtype=dtype, generator=gen, requires_grad=True)
        label = f"{isa} {x_shape} {kwargs}"
        run_channels_last_against_reference(x, w, b, kwargs, dtype, label)
        assert _ops.last_conv2d_family("grad_weight") == "depthwise", label


def random_channel_vector_config(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """A random convolution whose channels_last plan runs every direct pass with channel vectors: output channels
    per group in whole vectors (multiples of 16), any input channels (first layers with 1 - 3 of them too),
    strides, dilations and padding."""
    while True:
        groups = int(rng.choice([1, 1, 2]))
        kernel, kwargs = random_window(rng, max_padding=2, max_size=(15, 29))
        size = kwargs.pop("size")
        cin, cout = groups * int(rng.choice([1, 3, 5, 16, 32])), groups * 16 * int(rng.integers(1, 4))
        kwargs["groups"] = groups
        x_shape, w_shape = (int(rng.integers(1, 5)), cin, *size), (cout, cin // groups, *kernel)
        if _ops.conv2d_plan(x_shape, w_shape, **kwargs, channels_last=True)["channels_last"]:
            return x_shape, w_shape, kwargs


def test_channels_last_prefers_channel_vectors():
    """In a channels_last model the direct passes run with channel vectors wherever they can (whole vectors of
    outputs), in place: a first layer's forward and grad_weight too, which NCHW runs over shifted planes, and the
    grad_weight of a layer whose planes and grad_output NCHW would not stage together."""
    first = dict(input_shape=(8, 1, 28, 28), weight_shape=(32, 1, 3, 3))
    # NCHW grad_weight: over shifted planes where a step holds 8 channels (AVX-512), else along rows in place.
    wide = _ops.conv2d_plan(**first)["tiles"]["oc_block"] >= 8
    for pass_, nchw, family in (("forward", "planes_first_layer", "channel_vectors"),
                                ("grad_weight", "planes_first_layer" if wide else "grad_weight_columns_in_place",
                                 "grad_weight_channel_vectors")):
        assert _ops.conv2d_plan(**first, pass_=pass_)["family"] == nchw
        plan = _ops.conv2d_plan(**first, pass_=pass_, channels_last=True)
        assert (plan["algo"], plan["family"], plan["channels_last"]) == ("direct", family, True)
    # A sample's grad_output too large to stage twice beside its planes: NCHW leaves channel vectors (Intel's rules;
    # beside a slower GEMM it keeps them: test_auto_weighs_the_gemm_by_cpu_vendor), channels_last
    # keeps AVX-512's (4 vectors a step) in place (the other families would transpose both operands, or leave the
    # pass to im2col); AVX2's leave too, but beside a slower GEMM, which they beat.
    mid = dict(input_shape=(8, 128, 28, 28), weight_shape=(128, 128, 3, 3), padding=1, pass_="grad_weight")
    for isa in ("avx512", "avx2"):
        assert _ops.conv2d_plan(**mid, isa=isa, vendor="intel")["family"] != "grad_weight_channel_vectors"
    plan = _ops.conv2d_plan(**mid, isa="avx512", channels_last=True)
    assert (plan["algo"], plan["family"], plan["channels_last"]) == ("direct", "grad_weight_channel_vectors", True)
    assert _ops.conv2d_plan(**mid, isa="avx2", channels_last=True, vendor="intel")["family"] != \
        "grad_weight_channel_vectors"
    assert _ops.conv2d_plan(**mid, isa="avx2", channels_last=True, vendor="amd")["family"] == \
        "grad_weight_channel_vectors"
    # Strided grad_weight (a 7 x 7 stride-2 stem, a 64 -> 128 stride-2 layer): im2col in NCHW (Intel's rules) and for
    # AVX2 (but beside a slower GEMM), AVX-512's channel vectors in place in channels_last.
    for strided in (dict(input_shape=(4, 3, 64, 64), weight_shape=(64, 3, 7, 7), stride=2, padding=3),
                    dict(input_shape=(8, 64, 32, 32), weight_shape=(128, 64, 3, 3), stride=2, padding=1)):
        assert _ops.conv2d_plan(**strided, isa="avx512", pass_="grad_weight", vendor="intel")["algo"] == "im2col"
        assert _ops.conv2d_plan(**strided, isa="avx2", pass_="grad_weight", channels_last=True,
                                vendor="intel")["algo"] == "im2col"
        plan = _ops.conv2d_plan(**strided, isa="avx2", pass_="grad_weight", channels_last=True, vendor="amd")
        assert (plan["algo"], plan["family"]) == ("direct", "grad_weight_channel_vectors"), plan
        plan = _ops.conv2d_plan(**strided, isa="avx512", pass_="grad_weight", channels_last=True)
        assert (plan["algo"], plan["family"], plan["channels_last"]) == ("direct", "grad_weight_channel_vectors",
                                                                         True), strided
    # A strided 1 x 1 shortcut's grad_weight in channels_last: im2col (a GEMM over the gathered pixels) by Intel's
    # rules, grad_weight_pointwise over pixels gathered band by band beside a slower GEMM.
    shortcut = dict(input_shape=(8, 256, 14, 14), weight_shape=(512, 256, 1, 1), stride=2, pass_="grad_weight")
    assert _ops.conv2d_plan(**shortcut, isa="avx512", channels_last=True, vendor="intel")["algo"] == "im2col"
    plan = _ops.conv2d_plan(**shortcut, isa="avx512", channels_last=True, vendor="amd")
    assert (plan["algo"], plan["family"]) == ("direct", "grad_weight_pointwise"), plan
    # Wide 3 x 3 layers in channels_last, forward (strided too) and grad_input: AVX2's channel vectors beside a
    # slower GEMM, over their pixel-major staging; im2col by Intel's rules. A strided grad_input (scattered) stays
    # im2col on AVX2.
    wide = dict(input_shape=(8, 256, 8, 8), weight_shape=(256, 256, 3, 3), padding=1, isa="avx2", channels_last=True)
    wide_strided = dict(wide, input_shape=(8, 128, 16, 16), weight_shape=(256, 128, 3, 3), stride=2)
    for shape, pass_ in ((wide, "forward"), (wide, "grad_input"), (wide_strided, "forward")):
        plan = _ops.conv2d_plan(**shape, pass_=pass_, vendor="amd")
        assert (plan["algo"], plan["family"], plan["channels_last"]) == ("direct", "channel_vectors", True), plan
        assert _ops.conv2d_plan(**shape, pass_=pass_, vendor="intel")["algo"] == "im2col", (shape, pass_)
    assert _ops.conv2d_plan(**wide_strided, pass_="grad_input", vendor="amd")["algo"] == "im2col"
    # Output channels not in whole vectors: no channel vectors, and the NCHW family runs on transposed copies.
    plan = _ops.conv2d_plan((8, 3, 28, 28), (10, 3, 3, 3), channels_last=True)
    assert (plan["family"], plan["channels_last"]) == ("planes_first_layer", False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_channel_vectors_run_in_place(dtype, rng):
    """40 random channels_last convolutions that auto runs with channel vectors in place (forward, grad_input
    with or without scattering, grad_weight): the families the plan names run, the output and input gradient
    stay channels_last, the values and all gradients equal the float64 reference, bitwise the same under 1 and 3
    threads. The weights are NCHW in half of them and channels_last (as in a channels_last model, where the
    kernels read them as they are) in the other half, and the two layouts give bitwise the same results."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for i in range(40):
        x_shape, w_shape, kwargs = random_channel_vector_config(rng)
        label = f"{x_shape} {w_shape} {kwargs}"
        x = torch.randn(x_shape, dtype=dtype, generator=gen).to(memory_format=torch.channels_last).requires_grad_()
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        if i % 2:
            w = w.to(memory_format=torch.channels_last)
        w.requires_grad_()
        b = torch.randn(w_shape[0], dtype=dtype, generator=gen, requires_grad=True)
        out, gx = run_channels_last_against_reference(x, w, b, kwargs, dtype, label)
        for pass_ in _ops.CONV_PASSES:
            assert _ops.last_conv2d_family(pass_) == \
                _ops.conv2d_plan(x_shape, w_shape, **kwargs, dtype=dtype, pass_=pass_, channels_last=True)["family"]
        assert out.is_contiguous(memory_format=torch.channels_last), label
        assert gx.is_contiguous(memory_format=torch.channels_last), label
        other = w.detach().contiguous(memory_format=torch.contiguous_format if i % 2 else torch.channels_last)
        other.requires_grad_()
        out2 = CF.conv2d(x, other, b, **kwargs)
        grad = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(1)).contiguous(
            memory_format=torch.channels_last)
        assert torch.equal(out2, out), label
        (gx2,) = torch.autograd.grad(out2, x, grad)
        (gx1,) = torch.autograd.grad(CF.conv2d(x, w, b, **kwargs), x, grad)
        assert torch.equal(gx2, gx1), label


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, groups=2)])
def test_channels_last_channel_vectors_gradcheck(kwargs):
    """gradcheck and gradgradcheck in float64 through channels_last layers that run with channel vectors in place
    (a 3-channel first layer; a strided grouped one whose grad_input scatters)."""
    groups = kwargs.get("groups", 1)
    cin = 3 if groups == 1 else 32
    x = torch.randn(2, cin, 7, 9, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16 * groups, cin // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16 * groups, dtype=torch.float64, requires_grad=True)
    assert _ops.conv2d_plan(x.shape, w.shape, **kwargs, dtype=torch.float64, channels_last=True)["channels_last"]
    fn = lambda *t: CF.conv2d(*t, **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def random_scatter_config(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...], dict]:
    """A random convolution whose grad_input the plan scatters (channel_vectors_scatter): input channels per group
    in whole vectors (multiples of 16), 16 - 80 output channels per group, and a gradient plane at most 9/10 of the
    input plane (strides, dilations, little or no padding)."""
    while True:
        groups = int(rng.choice([1, 1, 2]))
        kernel, kwargs = random_window(rng, max_padding=1, max_size=(15, 29))
        size = kwargs.pop("size")
        cin, cout = groups * 16 * int(rng.integers(1, 4)), groups * int(rng.integers(16, 81))
        kwargs["groups"] = groups
        x_shape, w_shape = (int(rng.integers(1, 5)), cin, *size), (cout, cin // groups, *kernel)
        if _ops.conv2d_plan(x_shape, w_shape, **kwargs, pass_="grad_input")["family"] == "channel_vectors_scatter":
            return x_shape, w_shape, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scattered_grad_input_matches_torch(isa, dtype, rng):
    """grad_input scattered over real gradient values (channel_vectors_scatter) on 25 random strided, dilated,
    grouped and unpadded convolutions per ISA: auto runs it, the input gradient equals the float64 reference's,
    bitwise the same under 1 and 3 threads; channels_last operands give the same values."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    ops = torch.ops.cnnext
    for _ in range(25):
        x_shape, w_shape, kwargs = random_scatter_config(rng)
        x = torch.randn(x_shape, dtype=dtype, generator=gen)
        w = torch.randn(w_shape, dtype=dtype, generator=gen)
        gy = torch.randn(F.conv2d(x, w, **kwargs).shape, dtype=dtype, generator=gen)
        ph, pw = kwargs["padding"]
        geometry = (list(kwargs["stride"]), [ph, pw, ph, pw], list(kwargs["dilation"]), kwargs["groups"])
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(ops.conv2d_grad_input(gy, w, list(x_shape), *geometry, "auto"))
            assert _ops.last_conv2d_family("grad_input") == "channel_vectors_scatter"
        assert torch.equal(results[0], results[1])
        ref = torch.ops.aten.convolution_backward(gy.double(), x.double(), w.double(), None, kwargs["stride"],
                                                  kwargs["padding"], kwargs["dilation"], False, [0, 0],
                                                  kwargs["groups"], [True, False, False])[0]
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        label = f"{isa} {x_shape} {w_shape} {kwargs}"
        torch.testing.assert_close(results[0].double(), ref, **tol, msg=lambda m: f"{label}: {m}")
        cl = ops.conv2d_grad_input(gy.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last),
                                   list(x_shape), *geometry, "direct")
        torch.testing.assert_close(cl.double(), ref, **tol, msg=lambda m: f"{label} channels_last: {m}")


@pytest.mark.parametrize("kwargs", [dict(stride=2), dict(dilation=(2, 1), groups=2)])
def test_scattered_grad_input_gradcheck(kwargs):
    """gradcheck and gradgradcheck in float64 through a layer whose grad_input scatters (its plan says so)."""
    x = torch.randn(2, 16, 9, 8, dtype=torch.float64, requires_grad=True)
    groups = kwargs.get("groups", 1)
    w = torch.randn(16 * groups, 16 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16 * groups, dtype=torch.float64, requires_grad=True)
    plan = _ops.conv2d_plan(tuple(x.shape), tuple(w.shape), **kwargs, dtype=torch.float64, pass_="grad_input")
    assert plan["family"] == "channel_vectors_scatter", plan
    assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, **kwargs), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda *t: CF.conv2d(*t, **kwargs), (x, w, b))
