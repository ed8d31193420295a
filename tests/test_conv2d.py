"""conv2d: gradients (gradcheck), equality with torch.nn.functional, dtypes and memory formats."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnext
from cnnext import functional as CF
from cnnext._ops import conv2d_plan

ALGOS = ["direct", "im2col"]


def random_conv_config(rng: np.random.Generator) -> dict:
    """A random valid conv2d configuration: odd sizes, strides above the kernel, groups, dilation, "same"."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        cin, cout = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 5))
        kernel = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        stride = (int(rng.integers(1, 5)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        choice = rng.integers(0, 4)
        if choice == 0 and stride == (1, 1):
            padding = "same"
        elif choice == 1:
            padding = "valid"
        else:
            padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        size = (int(rng.integers(1, 16)), int(rng.integers(1, 16)))
        pads = (0, 0) if isinstance(padding, str) else padding
        spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
        if padding != "same" and any(s + 2 * p < span for s, p, span in zip(size, pads, spans)):
            continue
        return dict(batch=int(rng.integers(0, 4)), cin=cin, cout=cout, size=size, kernel=kernel, stride=stride,
                    padding=padding, dilation=dilation, groups=groups, bias=bool(rng.integers(0, 2)),
                    layout=str(rng.choice(["contiguous", "channels_last", "strided"])))


def make_input(cfg: dict, dtype: torch.dtype, device: str, gen: torch.Generator) -> torch.Tensor:
    shape = (cfg["batch"], cfg["cin"], *cfg["size"])
    if cfg["layout"] == "strided":  # every other column of a wider tensor: not contiguous in any format
        wide = torch.randn(shape[:-1] + (2 * shape[-1],), dtype=dtype, generator=gen).to(device)
        return wide[..., ::2]
    x = torch.randn(shape, dtype=dtype, generator=gen).to(device)
    return x.to(memory_format=torch.channels_last) if cfg["layout"] == "channels_last" else x


def conv_args(cfg: dict, dtype: torch.dtype, device: str, gen: torch.Generator):
    x = make_input(cfg, dtype, device, gen).requires_grad_()
    w = torch.randn(cfg["cout"], cfg["cin"] // cfg["groups"], *cfg["kernel"], dtype=dtype, generator=gen)
    w = w.to(device).requires_grad_()
    b = torch.randn(cfg["cout"], dtype=dtype, generator=gen).to(device).requires_grad_() if cfg["bias"] else None
    kwargs = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    return x, w, b, kwargs


def float64_reference(x, w, b, kwargs, grad):
    """F.conv2d and its gradients on float64 contiguous copies.

    float64 rather than the float32 F.conv2d itself: torch 2.13's CPU float32 convolution
    returns wrong values for some inputs whose strides are both NCHW- and NHWC-contiguous
    (e.g. size (1, 1, 14, 4), kernel 5x4, stride (1, 3)), which this suite found.
    """
    leaves = [t.detach().double().contiguous().requires_grad_() if t is not None else None for t in (x, w, b)]
    out = F.conv2d(*leaves, **kwargs)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad.double())
    return out, grads


def assert_direct_matches_reference(x, w, b, kwargs, gen, label=""):
    """cnnext's direct conv2d of x, w, b (requiring grad) under kwargs, and its gradients for a random grad_output,
    equal the float64 reference to float32's or float64's precision."""
    out = CF.conv2d(x, w, b, algo="direct", **kwargs)
    grad = torch.randn(out.shape, dtype=x.dtype, generator=gen).to(x.device)
    got = torch.autograd.grad(out, (x, w, b), grad)
    ref, want = float64_reference(x, w, b, kwargs, grad)
    tol = dict(rtol=1e-5, atol=1e-4) if x.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.double(), ref, **tol, msg=lambda m: f"forward {label}: {m}")
    for name, g, r in zip("xwb", got, want):
        torch.testing.assert_close(g.double(), r, **tol, msg=lambda m: f"grad {name} {label}: {m}")
    return out


@pytest.mark.parametrize("algo", ALGOS)
def test_matches_torch_on_random_configs(algo, device, rng):
    """200 random configurations: outputs and all three gradients equal F.conv2d's in float32."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    for _ in range(200):
        cfg = random_conv_config(rng)
        x, w, b, kwargs = conv_args(cfg, torch.float32, device, gen)
        out = CF.conv2d(x, w, b, **kwargs, algo=algo)
        grad = torch.randn(out.shape, generator=gen).to(device)
        ref, want = float64_reference(x, w, b, kwargs, grad)
        torch.testing.assert_close(out, ref.float(), rtol=1e-4, atol=1e-4, msg=lambda m: f"{cfg}: {m}")
        got = torch.autograd.grad(out, [t for t in (x, w, b) if t is not None], grad)
        for name, g, r in zip("xwb", got, want):
            torch.testing.assert_close(g, r.float(), rtol=1e-4, atol=1e-4, msg=lambda m: f"grad {name} {cfg}: {m}")


GRADCHECK_GRID = [
    # (input shape, weight shape, kwargs)
    ((2, 3, 7, 6), (4, 3, 3, 3), dict(stride=1, padding=0)),
    ((2, 3, 7, 6), (4, 3, 3, 2), dict(stride=2, padding=1)),
    ((1, 2, 8, 8), (2, 2, 3, 3), dict(padding="same", dilation=2)),
    ((1, 2, 6, 7), (3, 2, 2, 4), dict(padding="same")),  # even kernel: asymmetric padding
    ((2, 2, 6, 6), (2, 2, 3, 3), dict(padding="valid", dilation=(2, 1))),
    ((2, 4, 6, 5), (6, 2, 3, 1), dict(groups=2, padding=(1, 0), stride=(1, 2))),
    ((1, 4, 6, 6), (4, 1, 3, 3), dict(groups=4, padding=1)),  # depthwise
    ((3, 7, 7), (2, 3, 2, 3), dict(stride=(2, 1), padding=(0, 1))),  # unbatched
]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,kwargs", GRADCHECK_GRID)
def test_gradcheck(algo, bias, x_shape, w_shape, kwargs, device):
    x = torch.randn(x_shape, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(w_shape, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(w_shape[0], dtype=torch.float64, device=device, requires_grad=True) if bias else None
    assert torch.autograd.gradcheck(lambda *t: CF.conv2d(*t, **kwargs, algo=algo), (x, w, b))


@pytest.mark.parametrize("algo", [*ALGOS, "auto"])
def test_unbatched_and_empty_batch(algo, device):
    w = torch.randn(5, 3, 3, 3, device=device)
    x = torch.randn(3, 9, 8, device=device)
    torch.testing.assert_close(CF.conv2d(x, w, padding=1, algo=algo), F.conv2d(x, w, padding=1))
    empty = torch.randn(0, 3, 9, 8, device=device, requires_grad=True)
    out = CF.conv2d(empty, w, algo=algo)
    assert out.shape == (0, 5, 7, 6)
    out.sum().backward()
    assert empty.grad.shape == empty.shape


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_accumulates_in_float32(algo, dtype, device):
    """float16/bfloat16 inputs give float32-accurate results rounded once to the dtype."""
    x = torch.randn(4, 8, 12, 12, device=device).to(dtype).requires_grad_()
    w = torch.randn(16, 8, 3, 3, device=device).to(dtype).requires_grad_()
    b = torch.randn(16, device=device).to(dtype).requires_grad_()
    out = CF.conv2d(x, w, b, padding=1, algo=algo)
    assert out.dtype == dtype
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, w, b))
    ref = F.conv2d(x32, w32, b32, padding=1)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=2e-2)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, w, b), grad.to(dtype))
    want = torch.autograd.grad(ref, (x32, w32, b32), grad)
    for g, r in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), r, rtol=2e-2, atol=0.5)


def test_auto_runs_the_plans_algorithm():
    """auto, per pass, gives bit-identical results to the algorithm the plan (cnnext._ops.conv2d_plan) names for
    the active ISA. On AVX-512 that is the documented rule: forward and grad_weight direct, except im2col for
    strided layers with >= 8 input channels per group that the direct kernels would run with vectors over pixels
    (output channels per group not a multiple of 16, or fewer than 32 on planes whose rows fill their vectors well)
    and for grad_weight of strided layers with fewer; grad_input direct where it scatters (input channels per group
    in whole vectors, >= 16 output channels per group, a gradient plane at most 9/10 of the input's: strided and
    unpadded layers), else iff C_in/groups >= 8 and stride 1; every pass im2col from reductions of 2048 on (256
    channels of 3 x 3), but stride-1 channel vectors (forward, grad_input) from 4096 on."""
    ops = torch.ops.cnnext

    def passes(algo, x, w, gy, stride):
        geometry = ([stride, stride], [1, 1, 1, 1], [1, 1], 1)
        return (ops.conv2d(x, w, None, *geometry, algo),
                ops.conv2d_grad_input(gy, w, list(x.shape), *geometry, algo),
                ops.conv2d_grad_weight(gy, x, list(w.shape), *geometry, algo))

    D, I = "direct", "im2col"
    cases = [  # (cin, cout, size, stride): algos on AVX-512 for forward, grad_input, grad_weight (Intel's rules)
        ((4, 8, 12, 1), (D, I, D)), ((16, 8, 12, 1), (D, D, D)), ((16, 8, 5, 1), (D, D, D)),
        ((4, 8, 20, 2), (D, I, I)),  # strided, few input channels
        ((16, 32, 20, 2), (D, D, D)),  # 32 output channels: channel vectors; grad_input scatters
        ((16, 16, 14, 2), (D, D, D)),  # 16 output channels on 7 x 7 outputs: channel vectors
        ((16, 24, 14, 2), (I, D, I)),  # 24 output channels: pixel vectors
        ((16, 16, 20, 2), (D, D, D)),  # 10 x 10 outputs would fill 10 of 16 pixel lanes: channel vectors
        ((16, 16, 32, 2), (I, D, I)),  # 16 output channels on 16 x 16 outputs: pixel vectors
        ((8, 16, 20, 2), (D, I, D)),  # 8 input channels: no whole vector to scatter
        ((256, 16, 6, 1), (I, D, I)),  # long reductions (forward, grad_weight: 256 x 9 taps)
        ((16, 256, 6, 1), (D, I, D)),  # long reduction (grad_input: 256 x 9)
    ]
    on_avx512 = cnnext.build_info()["cpu_isa"] == "avx512"
    for (cin, cout, size, stride), documented in cases:
        def plan(vendor=None):
            return tuple(conv2d_plan((3, cin, size, size), (cout, cin, 3, 3), stride, 1, pass_=p, vendor=vendor)["algo"]
                         for p in ("forward", "grad_input", "grad_weight"))

        if on_avx512:
            assert plan("intel") == documented, (cin, cout, size, stride)
        planned = plan()  # this CPU's vendor: what auto runs
        x, w = torch.randn(3, cin, size, size), torch.randn(cout, cin, 3, 3)
        out = (size + 2 - 3) // stride + 1
        gy = torch.randn(3, cout, out, out)
        auto = passes("auto", x, w, gy, stride)
        chosen = [passes(algo, x, w, gy, stride)[i] for i, algo in enumerate(planned)]
        for a, c in zip(auto, chosen):
            assert torch.equal(a, c), (cin, cout, size, stride, planned)


@pytest.mark.parametrize("algo", ALGOS)
def test_large_batch_reduction_matches_torch(algo):
    """grad_weight reduces over many samples split across threads: stays close to PyTorch's."""
    x = torch.randn(67, 3, 11, 11, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    grad = torch.randn(67, 5, 9, 9)
    got = torch.autograd.grad(CF.conv2d(x, w, algo=algo), w, grad)[0]
    want = torch.autograd.grad(F.conv2d(x, w), w, grad)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cin", [1, 3])
def test_few_channel_row_paths(dtype, cin, device, rng):
    """Few input channels and output rows of a vector (16 float / 8 double lanes) or more take the direct
    kernels' row paths: forward stores whole overlapping vectors, grad_weight reads grad_output rows in place
    (whole blocks of 8 channels) and clears the lanes a row's last vector shares with the one before. Widths
    around each vector multiple, partial channel blocks, padding and dilation; every result matches the float64 reference."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    lanes = 64 // torch.finfo(dtype).bits * 8
    for out_w in (lanes - 1, lanes, lanes + 1, 2 * lanes - 3, 2 * lanes, 2 * lanes + 5, 3 * lanes + 1):
        for cout, kwargs in ((5, dict()), (8, dict(padding=1)), (13, dict(padding=(2, 1), dilation=(1, 2))),
                             (16, dict(dilation=2))):
            kw = 3
            dilation = kwargs.get("dilation", 1)
            span = (dilation if isinstance(dilation, int) else dilation[1]) * (kw - 1) + 1
            pad = kwargs.get("padding", (0, 0))
            pad_w = pad if isinstance(pad, int) else pad[1]
            x = torch.randn(3, cin, 7, out_w + span - 1 - 2 * pad_w, dtype=dtype, generator=gen)
            x = x.to(device).requires_grad_()
            w = torch.randn(cout, cin, 3, kw, dtype=dtype, generator=gen).to(device).requires_grad_()
            b = torch.randn(cout, dtype=dtype, generator=gen).to(device).requires_grad_()
            out = assert_direct_matches_reference(x, w, b, kwargs, gen, f"width {out_w}, {cout} channels")
            assert out.shape[-1] == out_w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_kernel_steps_and_single_vector_tail(dtype, device, rng):
    """Stride 1 with many taps per output (8 channels x 3 x 3) runs the direct kernels' flat path: two-vector steps
    over out_h x staged-row positions, plus one single-vector step where the positions end half-way into a step.
    Planes from 1 x 1 to 13 x 13 outputs give position counts of 1 to 11 vectors, odd and even, for the forward and
    (on the padded gradient) grad_input; every result matches the float64 reference."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    lanes = 64 // torch.finfo(dtype).bits * 8
    vectors = set()
    for size, padding in ((3, 0), (5, 0), (6, 0), (7, 0), (9, 1), (13, 0), (12, 1)):
        out = size + 2 * padding - 2
        vectors.add(-(-out * (size + 2 * padding) // lanes))
        x = torch.randn(2, 8, size, size, dtype=dtype, generator=gen).to(device).requires_grad_()
        w = torch.randn(11, 8, 3, 3, dtype=dtype, generator=gen).to(device).requires_grad_()
        b = torch.randn(11, dtype=dtype, generator=gen).to(device).requires_grad_()
        assert_direct_matches_reference(x, w, b, dict(padding=padding), gen, f"size {size}")
    assert {v % 2 for v in vectors} == {0, 1} and 1 in vectors, vectors


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((3, 64, 5, 5), (64, 64, 3, 3), dict()),  # lenet.conv3: 3 x 3 outputs; grad_input 5 x 5
        ((2, 8, 6, 7), (80, 8, 3, 3), dict()),  # 5 vectors of channels: a block of 4 and one of 1
        ((2, 12, 9, 9), (48, 12, 3, 3), dict(stride=2, padding=1)),  # strided: 5 x 5 outputs, 3 vectors
        ((2, 6, 8, 8), (32, 6, 3, 2), dict(dilation=(2, 3), padding=(1, 2))),
        ((2, 32, 4, 4), (32, 16, 3, 3), dict(groups=2, padding=1)),  # 16 channels per group
        ((1, 16, 3, 3), (16, 16, 3, 3), dict()),  # a single output pixel
        ((2, 32, 12, 12), (48, 32, 3, 3), dict()),  # middle layer: 10 x 10 outputs, 3 vectors (2 blocks in float64)
        ((2, 16, 13, 13), (32, 16, 3, 3), dict(padding=1)),  # 2 vectors forward; grad_input keeps pixel vectors
    ],
)
def test_channel_vector_paths(dtype, x_shape, w_shape, kwargs, device, rng):
    """Output channels in whole vectors (16 float / 8 double) on tiny planes, or in two or more vectors on layers with
    >= 64 taps per output, take the direct kernels' channel-vector paths: vectors over output channels (grad_input:
    over input channels), one broadcast input value per pixel and tap, pixels and taps in steps of 6 - 12 and halving
    tails. Forward and all gradients match the float64 reference."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = torch.randn(x_shape, dtype=dtype, generator=gen).to(device).requires_grad_()
    w = torch.randn(w_shape, dtype=dtype, generator=gen).to(device).requires_grad_()
    b = torch.randn(w_shape[0], dtype=dtype, generator=gen).to(device).requires_grad_()
    assert_direct_matches_reference(x, w, b, kwargs, gen)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("width", [13, 26, 40])
@pytest.mark.parametrize("cout", [7, 8])
def test_weight_grad_ignores_inputs_outside_the_windows(algo, width, cout, device):
    """An infinite input in the last column reaches only the kernel column that reads it: the other weight
    gradients stay finite and equal PyTorch's (lanes past a row's end must not add 0 * inf = NaN). Covers the
    direct kernel's copied rows (7 channels, or 11-pixel rows) and rows read in place (8 channels, >= 16 pixels)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 9, width, generator=gen)
    x[0, 1, 4, -1] = float("inf")
    x = x.to(device)
    grad = torch.randn(2, cout, 7, width - 2, generator=gen).to(device)
    w = torch.randn(cout, 2, 3, 3, generator=gen).to(device).requires_grad_()
    got = torch.autograd.grad(CF.conv2d(x, w, algo=algo), w, grad)[0]
    w64 = w.detach().cpu().double().requires_grad_()
    want = torch.autograd.grad(F.conv2d(x.cpu().double(), w64), w64, grad.cpu().double())[0]
    assert torch.isfinite(got[:, :, :, :2]).all()
    torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((37, 8, 5, 5), (6, 8, 3, 3), dict()),  # 9 output pixels: many samples per GEMM, a short last block
        ((23, 4, 7, 6), (6, 2, 2, 3), dict(groups=2, stride=(2, 1), padding=1)),
        ((5, 3, 30, 30), (4, 3, 3, 3), dict(padding=1)),  # one sample per GEMM
    ],
)
def test_im2col_batches_samples_per_gemm(x_shape, w_shape, kwargs, threads):
    """im2col puts the columns of several samples of a small plane side by side in one GEMM: forward and every
    gradient still match the float64 reference, under 1 and 2 threads."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(x_shape, generator=gen, requires_grad=True)
    w = torch.randn(w_shape, generator=gen, requires_grad=True)
    b = torch.randn(w_shape[0], generator=gen, requires_grad=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = CF.conv2d(x, w, b, algo="im2col", **kwargs)
        grad = torch.randn(out.shape, generator=gen)
        grads = torch.autograd.grad(out, (x, w, b), grad)
    finally:
        torch.set_num_threads(previous)
    ref, ref_grads = float64_reference(x, w, b, kwargs, grad)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-3)


def test_opcheck():
    """The registered ops pass torch.library.opcheck (schema, fake kernels, dispatch)."""
    ops = torch.ops.cnnext
    x, w, b = torch.randn(2, 4, 9, 8), torch.randn(6, 2, 3, 2), torch.randn(6)
    geometry = ([2, 1], [1, 0, 2, 1], [1, 2], 2)
    for algo in ("direct", "im2col", "auto"):
        torch.library.opcheck(ops.conv2d.default, (x, w, b, *geometry, algo))
        y = ops.conv2d(x, w, b, *geometry, algo)
        gy = torch.randn_like(y)
        torch.library.opcheck(ops.conv2d_grad_input.default, (gy, w, list(x.shape), *geometry, algo))
        torch.library.opcheck(ops.conv2d_grad_weight.default, (gy, x, list(w.shape), *geometry, algo))
        torch.library.opcheck(ops.conv2d_grad_weight_bias.default, (gy, x, list(w.shape), *geometry, algo))
    torch.library.opcheck(ops.conv2d_grad_bias.default, (torch.randn(3, 6, 4, 5),))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs",
    [
        ((37, 1, 28, 28), (16, 1, 3, 3), dict(padding=1)),  # first layer: grad_output read in place
        ((9, 6, 13, 11), (10, 3, 3, 3), dict(groups=2)),  # copied rows, partial block, groups
        ((5, 2, 5, 5), (4, 2, 3, 3), dict()),  # 3 x 3 planes
        ((0, 2, 5, 5), (4, 2, 3, 3), dict()),  # empty batch: zeros
        ((3, 0, 5, 5), (4, 0, 3, 3), dict()),  # no input channels: only the bias has a gradient
    ],
)
def test_grad_weight_bias_equals_the_separate_ops(algo, dtype, x_shape, w_shape, kwargs, device):
    """conv2d_grad_weight_bias, which backward calls when weight and bias both need a gradient, returns what
    conv2d_grad_weight and conv2d_grad_bias return on their own (the CPU direct kernel sums the bias in its pass
    over grad_output, in its own order: equal up to rounding)."""
    ops = torch.ops.cnnext
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(x_shape, generator=gen).to(device, dtype)
    stride, padding = [1, 1], [kwargs.get("padding", 0)] * 4
    groups = kwargs.get("groups", 1)
    out_hw = [s + 2 * padding[0] - 2 for s in x_shape[2:]]
    grad = torch.randn(x_shape[0], w_shape[0], *out_hw, generator=gen).to(device, dtype)
    args = (grad, x, list(w_shape), stride, padding, [1, 1], groups, algo)
    grad_weight, grad_bias = ops.conv2d_grad_weight_bias(*args)
    tol = dict(rtol=1e-2, atol=1e-1) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_weight, ops.conv2d_grad_weight(*args), **tol)
    torch.testing.assert_close(grad_bias, ops.conv2d_grad_bias(grad), **tol)
    torch.testing.assert_close(grad_bias.double(), grad.double().sum((0, 2, 3)), **tol)


def test_kernels_do_not_call_aten_convolution():
    """The point of cnnext: no ATen convolution, pooling, unfold/fold or im2col in csrc/."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "csrc"
    banned = re.compile(
        r"at::(native::)?(_?convolution\w*|conv\w*|cudnn\w*|mkldnn\w*|thnn\w*|slow_conv\w*|"
        r"max_pool\w*|avg_pool\w*|adaptive\w*|unfold\w*|fold\w*|im2col\w*|col2im\w*)\b"
    )
    sources = [p for p in root.rglob("*") if p.suffix in {".cpp", ".cu", ".h", ".cuh"}]
    assert sources, "csrc/ holds no sources"
    offenders = [f"{p.name}: {m.group(0)}" for p in sources for m in banned.finditer(p.read_text())]
    assert offenders == []
