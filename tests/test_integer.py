"""Integer inputs, as PyTorch's CPU kernels take them.

conv1d / conv2d on int8, uint8, int16, int32 and int64 (both algorithms; dilated ones on int64 only),
max_pool2d on the same, avg_pool2d on int64: values bit for bit torch.nn.functional's (products and sums
wrap around on overflow, averages truncate toward zero), same dtypes and layouts; and what torch rejects
(bool, avg_pool2d on the narrower integers, adaptive_avg_pool2d and the backward ops on integers, mixed
dtypes, integers on CUDA) cnnext rejects with an error naming the argument and the dtype.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import cnnext
from cnnext import functional as CF

ops = torch.ops.cnnext
INT_DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]
ALGOS = ["direct", "im2col"]
CONFIGS = 100  # random configurations per op and dtype


def full_range(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Values over the dtype's whole range: products and sums overflow and wrap."""
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, dtype=dtype, generator=gen)


def small_range(shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Few distinct values (ties for max pooling), negative ones where the dtype has them."""
    low = 0 if dtype == torch.uint8 else -4
    return torch.randint(low, low + 9, shape, dtype=dtype, generator=gen)


def assert_same(got: torch.Tensor, want: torch.Tensor, what) -> None:
    """Bit-identical values, same dtype, shape and layout."""
    assert got.dtype == want.dtype, what
    assert torch.equal(got, want), f"{what}: {got} != {want}"
    assert got.is_contiguous() == want.is_contiguous(), what
    assert got.is_contiguous(memory_format=torch.channels_last) == want.is_contiguous(
        memory_format=torch.channels_last), what


def layout_variant(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """x as is, channels_last, or a non-contiguous view with the same values."""
    kind = rng.choice(["contiguous", "contiguous", "channels_last", "strided"])
    if kind == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if kind == "strided":
        return torch.cat([x, x], dim=-1)[..., ::2]
    return x


# --- the seed notebook's examples -----------------------------------------------------------------


@pytest.mark.parametrize("algo", ["auto", *ALGOS])
def test_seed_notebook_conv1d_examples(algo):
    """The course's 1-D example on integer tensors: torch's printed values and dtype int64."""
    x = torch.arange(1, 10).view(1, 1, -1)
    w = torch.tensor([[[2, 1, 2]]])
    cases = [(dict(padding="same"), [5, 10, 15, 20, 25, 30, 35, 40, 25]),
             (dict(padding="valid"), [10, 15, 20, 25, 30, 35, 40]),
             (dict(padding=2, stride=2), [2, 10, 20, 30, 40, 18])]
    for kwargs, expected in cases:
        out = CF.conv1d(x, w, algo=algo, **kwargs)
        assert out.dtype == torch.int64
        assert out.flatten().tolist() == expected
        assert_same(out, F.conv1d(x, w, **kwargs), kwargs)


@pytest.mark.parametrize("algo", ["auto", *ALGOS])
def test_integer_conv2d_example(algo):
    """x[i][j] = 4i + j + 1 with the kernel [[1, 2], [3, 4]]: each output is 10 * x[i][j] + 34."""
    x = torch.arange(1, 17).view(1, 1, 4, 4)
    w = torch.tensor([[[[1, 2], [3, 4]]]])
    out = CF.conv2d(x, w, algo=algo)
    assert out.dtype == torch.int64
    assert out[0, 0].tolist() == [[44, 54, 64], [84, 94, 104], [124, 134, 144]]
    assert_same(out, F.conv2d(x, w), "valid")
    assert_same(CF.conv2d(x, w, torch.tensor([-100]), padding=1, algo=algo), F.conv2d(x, w, torch.tensor([-100]),
                                                                                      padding=1), "padded")


def test_integer_pooling_examples():
    x = torch.arange(16).view(1, 1, 4, 4)
    values, indices = CF.max_pool2d(x, 2, return_indices=True)
    assert values.dtype == torch.int64 and values[0, 0].tolist() == [[5, 7], [13, 15]]
    assert indices[0, 0].tolist() == [[5, 7], [13, 15]]
    # Averages 2.5, 4.5, 10.5, 12.5 truncate; -2.5 truncates toward zero too.
    assert CF.avg_pool2d(x, 2)[0, 0].tolist() == [[2, 4], [10, 12]]
    assert CF.avg_pool2d(-x, 2)[0, 0].tolist() == [[-2, -4], [-10, -12]]
    for y in (x, -x):
        assert_same(CF.avg_pool2d(y, 2), F.avg_pool2d(y, 2), "avg")
        assert_same(CF.max_pool2d(y, 2), F.max_pool2d(y, 2), "max")


def test_overflow_wraps_as_in_torch():
    """Products and sums wrap around in the dtype's width, as PyTorch's CPU convolution computes them."""
    a = torch.full((1, 4, 1, 1), 100, dtype=torch.int8)
    for algo in ALGOS:
        assert CF.conv2d(a, a, algo=algo).item() == 64  # 40000 mod 256
        assert_same(CF.conv2d(a, a, algo=algo), F.conv2d(a, a), "int8")
        big = torch.full((1, 2, 1, 1), 2**31 - 1, dtype=torch.int32)
        one = torch.ones(1, 2, 1, 1, dtype=torch.int32)
        two = torch.tensor([2], dtype=torch.int32)
        assert CF.conv2d(big, one, two, algo=algo).item() == 0  # 2 * (2^31 - 1) + 2 = 2^32
        assert_same(CF.conv2d(big, one, two, algo=algo), F.conv2d(big, one, two), "int32")
        huge = torch.full((1, 1, 1, 1), 2**62, dtype=torch.int64)
        assert CF.conv2d(huge, torch.full((1, 1, 1, 1), 4), algo=algo).item() == 0
        u = torch.full((1, 3, 1, 1), 255, dtype=torch.uint8)
        assert_same(CF.conv2d(u, u, algo=algo), F.conv2d(u, u), "uint8")
        s = torch.full((1, 3, 1, 1), -32768, dtype=torch.int16)
        assert_same(CF.conv2d(s, s, algo=algo), F.conv2d(s, s), "int16")


# --- random configurations against torch ----------------------------------------------------------


def random_conv_config(rng: random.Random, dtype: torch.dtype):
    g = rng.choice([1, 1, 2, 3])
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    # PyTorch's CPU convolution has a dilated kernel for int64 only among the integer types.
    dil = (rng.randint(1, 3), rng.randint(1, 3)) if dtype == torch.int64 else (1, 1)
    stride = (rng.randint(1, 5), rng.randint(1, 5))
    padding = rng.choice([(rng.randint(0, 3), rng.randint(0, 3)), "valid", "same"])
    if padding == "same":
        stride = (1, 1)
    height = rng.randint(dil[0] * (kh - 1) + 1, 11)
    width = rng.randint(dil[1] * (kw - 1) + 1, 11)
    x_shape = (rng.randint(1, 3), g * rng.randint(1, 3), height, width)
    w_shape = (g * rng.randint(1, 3), x_shape[1] // g, kh, kw)
    return x_shape, w_shape, dict(stride=stride, padding=padding, dilation=dil, groups=g), rng.random() < 0.5


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's, about its own padding copy
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_conv2d_random_configurations_match_torch(dtype):
    rng, gen = random.Random(f"conv2d-{dtype}"), torch.Generator().manual_seed(1)
    for _ in range(CONFIGS):
        x_shape, w_shape, kwargs, with_bias = random_conv_config(rng, dtype)
        values = full_range if rng.random() < 0.7 else small_range
        x = layout_variant(values(x_shape, dtype, gen), rng)
        w = values(w_shape, dtype, gen)
        b = values((w_shape[0],), dtype, gen) if with_bias else None
        if rng.random() < 0.2:
            x = x[0]  # unbatched
        want = F.conv2d(x, w, b, **kwargs)
        for algo in ["auto", *ALGOS]:
            assert_same(CF.conv2d(x, w, b, **kwargs, algo=algo), want, (algo, x.shape, w.shape, kwargs))


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_conv1d_random_configurations_match_torch(dtype):
    rng, gen = random.Random(f"conv1d-{dtype}"), torch.Generator().manual_seed(2)
    for _ in range(CONFIGS):
        g, k = rng.choice([1, 2]), rng.randint(1, 7)
        dil = rng.randint(1, 3) if dtype == torch.int64 else 1
        length = rng.randint(dil * (k - 1) + 1, 40)
        padding = rng.choice([rng.randint(0, 4), "same", "valid"])
        stride = 1 if padding == "same" else rng.randint(1, 4)
        x = full_range((rng.randint(1, 2), g * rng.randint(1, 3), length), dtype, gen)
        w = full_range((g * rng.randint(1, 3), x.shape[1] // g, k), dtype, gen)
        b = full_range((w.shape[0],), dtype, gen) if rng.random() < 0.5 else None
        kwargs = dict(stride=stride, padding=padding, dilation=dil, groups=g)
        want = F.conv1d(x, w, b, **kwargs)
        for algo in ["auto", *ALGOS]:
            assert_same(CF.conv1d(x, w, b, **kwargs, algo=algo), want, (algo, x.shape, w.shape, kwargs))


@pytest.mark.parametrize("algo", ALGOS)
def test_conv_long_rows_sparse_windows_and_many_tiles(algo):
    """Shapes past the kernels' blocking: rows longer than the direct kernel's accumulator block, outputs that
    take many im2col tiles, and strides far above the kernel (the direct kernel gathers the windows)."""
    gen = torch.Generator().manual_seed(3)
    x = full_range((2, 6, 3000), torch.int32, gen)
    w = full_range((5, 6, 9), torch.int32, gen)
    assert_same(CF.conv1d(x, w, padding=4, algo=algo), F.conv1d(x, w, padding=4), "long rows")
    x = full_range((1, 40, 30, 30), torch.int16, gen)
    w = full_range((8, 40, 3, 3), torch.int16, gen)
    assert_same(CF.conv2d(x, w, padding=1, algo=algo), F.conv2d(x, w, padding=1), "many tiles")
    x = full_range((2, 3, 29, 31), torch.int64, gen)
    w = full_range((4, 3, 2, 3), torch.int64, gen)
    for kwargs in (dict(stride=(7, 5), padding=1), dict(stride=(9, 11), dilation=(3, 2), padding=(1, 0))):
        assert_same(CF.conv2d(x, w, **kwargs, algo=algo), F.conv2d(x, w, **kwargs), kwargs)


def random_pool_config(rng: random.Random):
    kh, kw = rng.randint(1, 4), rng.randint(1, 4)
    return dict(kernel_size=(kh, kw), stride=rng.choice([None, (rng.randint(1, 3), rng.randint(1, 3))]),
                padding=(rng.randint(0, kh // 2), rng.randint(0, kw // 2)), ceil_mode=rng.random() < 0.5)


def torch_max_pool2d(x: torch.Tensor, **kwargs):
    """F.max_pool2d(x, return_indices=True, **kwargs). torch's channels_last kernel keeps indices in the input's
    integer type, and fails an internal check for int8/uint8/int16 planes of more elements than that type holds
    (a limit of that kernel, not a rule of the op: the contiguous kernel takes them); there the reference is the
    contiguous kernel's result in channels_last layout."""
    try:
        return F.max_pool2d(x, **kwargs, return_indices=True)
    except RuntimeError:
        if not x.is_contiguous(memory_format=torch.channels_last) or x.element_size() > 2:
            raise
        out = F.max_pool2d(x.contiguous(), **kwargs, return_indices=True)
        return tuple(t.contiguous(memory_format=torch.channels_last) for t in out)


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_max_pool2d_random_configurations_match_torch(dtype):
    """Values and indices; few distinct values, so ties (the first maximum wins), and the dtype's lowest value
    in some windows (a window of only that value reports its first element, as torch does)."""
    rng, gen = random.Random(f"max_pool2d-{dtype}"), torch.Generator().manual_seed(4)
    for _ in range(CONFIGS):
        kwargs = random_pool_config(rng)
        kwargs["dilation"] = (rng.randint(1, 2), rng.randint(1, 2))
        shape = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(7, 12), rng.randint(7, 12))
        x = (small_range if rng.random() < 0.7 else full_range)(shape, dtype, gen)
        x[x == x.min()] = torch.iinfo(dtype).min
        x = layout_variant(x, rng)
        want = torch_max_pool2d(x, **kwargs)
        got = CF.max_pool2d(x, **kwargs, return_indices=True)
        assert_same(got[0], want[0], (shape, kwargs))
        assert_same(got[1], want[1], (shape, kwargs, "indices"))


def test_avg_pool2d_int64_random_configurations_match_torch():
    """int64 (the one integer type torch's CPU average pooling takes): sums that wrap, averages that truncate
    toward zero, with count_include_pad, ceil_mode and divisor_override (negative ones too)."""
    rng, gen = random.Random("avg_pool2d"), torch.Generator().manual_seed(5)
    for _ in range(2 * CONFIGS):
        kwargs = random_pool_config(rng)
        kwargs["count_include_pad"] = rng.random() < 0.5
        kwargs["divisor_override"] = rng.choice([None, None, rng.randint(1, 7), -rng.randint(1, 7)])
        shape = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(4, 12), rng.randint(4, 12))
        x = (small_range if rng.random() < 0.5 else full_range)(shape, torch.int64, gen)
        x = layout_variant(x, rng)
        assert_same(CF.avg_pool2d(x, **kwargs), F.avg_pool2d(x, **kwargs), (shape, kwargs))


def test_avg_pool2d_backward_int64_matches_torch():
    """torch's avg_pool2d_backward takes int64 (it divides each output's gradient, truncating, then sums);
    so does cnnext's backward op, called directly."""
    rng, gen = random.Random("avg_pool2d_backward"), torch.Generator().manual_seed(6)
    for _ in range(CONFIGS):
        kwargs = random_pool_config(rng)
        stride = kwargs["stride"] or kwargs["kernel_size"]
        include_pad, divisor = rng.random() < 0.5, rng.choice([None, rng.randint(1, 5), -rng.randint(1, 5)])
        shape = (rng.randint(1, 2), rng.randint(1, 3), rng.randint(4, 10), rng.randint(4, 10))
        x = torch.zeros(shape, dtype=torch.int64)
        out_shape = F.avg_pool2d(x, **kwargs).shape
        gy = (small_range if rng.random() < 0.5 else full_range)(out_shape, torch.int64, gen)
        args = (list(kwargs["kernel_size"]), list(stride), list(kwargs["padding"]), kwargs["ceil_mode"], include_pad,
                divisor)
        want = torch.ops.aten.avg_pool2d_backward(gy, x, *args)
        assert_same(ops.avg_pool2d_backward(gy, list(shape), *args), want, (shape, kwargs, include_pad, divisor))


def test_avg_pool2d_int64_min_over_minus_one_wraps():
    """INT64_MIN / -1 overflows: a trap in C (torch's own kernel dies of SIGFPE); cnnext wraps around, as for
    every other int64 overflow."""
    x = torch.tensor([[[[-2**63]]]])
    assert CF.avg_pool2d(x, 1, divisor_override=-1).item() == -2**63
    assert ops.avg_pool2d_backward(x, [1, 1, 1, 1], [1, 1], [1, 1], [0, 0], False, True, -1).item() == -2**63


# --- modules, autograd machinery, autocast, compile/export ----------------------------------------


def test_modules_on_integer_tensors():
    """The pooling layers take integer input; a convolution layer whose weight was set to an integer tensor
    (a Parameter without grad, which torch allows) convolves integers, every padding mode included."""
    gen = torch.Generator().manual_seed(7)
    x = full_range((2, 3, 9, 10), torch.int64, gen)
    assert_same(cnnext.MaxPool2d(3, 2, 1, ceil_mode=True)(x), nn.MaxPool2d(3, 2, 1, ceil_mode=True)(x), "max")
    assert_same(cnnext.AvgPool2d(3, 2, 1, count_include_pad=False)(x),
                nn.AvgPool2d(3, 2, 1, count_include_pad=False)(x), "avg")
    w = full_range((4, 3, 3, 3), torch.int64, gen)
    b = full_range((4,), torch.int64, gen)
    for mode in ("zeros", "reflect", "replicate", "circular"):
        for algo in ALGOS:
            ours, theirs = cnnext.Conv2d(3, 4, 3, padding=1, padding_mode=mode, algo=algo), nn.Conv2d(
                3, 4, 3, padding=1, padding_mode=mode)
            for m in (ours, theirs):
                m.weight, m.bias = nn.Parameter(w, requires_grad=False), nn.Parameter(b, requires_grad=False)
            assert_same(ours(x), theirs(x), (mode, algo))
    conv1 = cnnext.Conv1d(1, 1, 3, padding="same", padding_mode="reflect", bias=False)
    conv1.weight = nn.Parameter(torch.tensor([[[2, 1, 2]]]), requires_grad=False)
    assert conv1(torch.arange(1, 10).view(1, 1, -1)).flatten().tolist() == [9, 10, 15, 20, 25, 30, 35, 40, 41]


def test_integer_outputs_carry_no_autograd_state():
    """Integer tensors cannot require grad: under grad mode the outputs are plain tensors, and a float model
    next to them still trains."""
    x = torch.arange(2 * 3 * 6 * 6).view(2, 3, 6, 6)
    w = torch.ones(4, 3, 3, 3, dtype=torch.int64)
    with torch.enable_grad():
        outs = [CF.conv2d(x, w), *CF.max_pool2d(x, 2, return_indices=True), CF.avg_pool2d(x, 2)]
    for out in outs:
        assert out.dtype == torch.int64 and not out.requires_grad and out.grad_fn is None
    features = CF.conv2d(x, w).float().requires_grad_()
    CF.max_pool2d(features, 2).sum().backward()
    assert features.grad is not None and features.grad.sum().item() == features.shape[0] * 4 * 2 * 2


def test_autocast_leaves_integers_alone():
    """Inside torch.autocast the convolution's integer tensors are not cast, as with torch's conv2d."""
    gen = torch.Generator().manual_seed(8)
    x, w = full_range((1, 2, 5, 5), torch.int32, gen), full_range((3, 2, 3, 3), torch.int32, gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.conv2d(x, w)
        for algo in ALGOS:
            assert_same(CF.conv2d(x, w, algo=algo), want, algo)
            assert_same(ops.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, algo), want, algo)


def test_vmap_over_integer_inputs():
    """torch.func.vmap's batching rules carry integer tensors through as any others."""
    gen = torch.Generator().manual_seed(10)
    x, w = full_range((3, 2, 4, 6, 6), torch.int16, gen), full_range((3, 4, 3, 3), torch.int16, gen)
    for fn, ref in [(lambda a: CF.conv2d(a, w, padding=1), lambda a: F.conv2d(a, w, padding=1)),
                    (lambda a: CF.max_pool2d(a, 2, return_indices=True)[1],
                     lambda a: F.max_pool2d(a, 2, return_indices=True)[1]),
                    (lambda a: CF.avg_pool2d(a.long(), 3, 1, 1), lambda a: F.avg_pool2d(a.long(), 3, 1, 1))]:
        assert_same(torch.func.vmap(fn)(x), torch.stack([ref(a) for a in x]), fn)


def test_fake_kernels_give_integer_dtypes():
    """torch.compile / torch.export see the right output dtype (the fake kernels keep the input's)."""
    with FakeTensorMode() as mode:
        x = mode.from_tensor(torch.zeros(2, 3, 8, 8, dtype=torch.int8))
        w = mode.from_tensor(torch.zeros(4, 3, 3, 3, dtype=torch.int8))
        assert ops.conv2d(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1, "auto").dtype == torch.int8
        values, indices = ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
        assert values.dtype == torch.int8 and indices.dtype == torch.int64
        assert ops.avg_pool2d(x.long(), [2, 2], [2, 2], [0, 0], False, True, None).dtype == torch.int64


def test_export_of_an_integer_model():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("weight", torch.tensor([[[[1, -2], [3, 4]]]]))

        def forward(self, x):
            return CF.avg_pool2d(CF.max_pool2d(CF.conv2d(x, self.weight, padding=1), 2, stride=1), 2)

    x = torch.arange(-20, 29).view(1, 1, 7, 7)
    model = Model()
    program = torch.export.export(model, (x,))
    want = F.avg_pool2d(F.max_pool2d(F.conv2d(x, model.weight, padding=1), 2, stride=1), 2)
    assert_same(program.module()(x), want, "exported")
    assert any(n.target is ops.conv2d.default for n in program.graph.nodes)


@pytest.mark.parametrize("case", ["conv2d", "max_pool2d", "avg_pool2d", "avg_pool2d_backward"])
def test_opcheck_on_integers(case):
    gen = torch.Generator().manual_seed(9)
    x = full_range((2, 4, 7, 6), torch.int32, gen)
    samples = {
        "conv2d": (ops.conv2d.default, (x, full_range((6, 2, 3, 2), torch.int32, gen),
                                        full_range((6,), torch.int32, gen), [2, 1], [1, 0, 1, 1], [1, 1], 2, "direct")),
        "max_pool2d": (ops.max_pool2d.default, (x, [3, 2], [2, 1], [1, 1], [1, 2], True)),
        "avg_pool2d": (ops.avg_pool2d.default, (x.long(), [3, 2], [2, 1], [1, 1], True, False, None)),
        "avg_pool2d_backward": (ops.avg_pool2d_backward.default,
                                (full_range((2, 4, 4, 7), torch.int64, gen), [2, 4, 7, 6], [3, 2], [2, 1], [1, 1],
                                 False, True, -3)),
    }
    op, args = samples[case]
    results = torch.library.opcheck(op, args)
    assert all(r == "SUCCESS" for r in results.values()), results


# --- what torch rejects, cnnext rejects -----------------------------------------------------------

# The integer dtypes but int64, with the names c10 gives them in messages.
NARROW_INTS = {torch.int8: "Char", torch.uint8: "Byte", torch.int16: "Short", torch.int32: "Int"}
x_int = torch.arange(2 * 4 * 6 * 6).view(2, 4, 6, 6)
w_int = torch.ones(3, 4, 3, 3, dtype=torch.int64)

REJECTED = [
    ("conv2d bool", lambda f: f.conv2d(x_int.bool(), w_int.bool()), "Bool"),
    ("conv1d bool", lambda f: f.conv1d(x_int[:, :, 0].bool(), w_int[..., 0].bool()), "Bool"),
    ("max_pool2d bool", lambda f: f.max_pool2d(x_int.bool(), 2), "Bool"),
    ("avg_pool2d bool", lambda f: f.avg_pool2d(x_int.bool(), 2), "Bool"),
    *[(f"avg_pool2d {d}", lambda f, d=d: f.avg_pool2d(x_int.to(d), 2), name) for d, name in NARROW_INTS.items()],
    *[(f"adaptive_avg_pool2d {d}", lambda f, d=d: f.adaptive_avg_pool2d(x_int.to(d), 2), "input")
      for d in INT_DTYPES],
    ("int input, float weight", lambda f: f.conv2d(x_int, w_int.float()), "dtype"),
    ("float input, int weight", lambda f: f.conv2d(x_int.float(), w_int), "dtype"),
    ("int64 input, int32 weight", lambda f: f.conv2d(x_int, w_int.int()), "dtype"),
    ("int input, float bias", lambda f: f.conv2d(x_int, w_int, torch.ones(3)), "bias"),
    *[(f"dilated {d}", lambda f, d=d: f.conv2d(x_int.to(d), w_int.to(d), dilation=2), "dilation") for d in NARROW_INTS],
    ("dilated conv1d int32", lambda f: f.conv1d(x_int[:, :, 0].int(), w_int[..., 0].int(), dilation=2), "dilation"),
]


@pytest.mark.parametrize("case", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejects_what_torch_rejects(case):
    _, call, word = case
    with pytest.raises(Exception):
        call(F)
    with pytest.raises((TypeError, ValueError), match=word):
        call(CF)


GY = torch.arange(2 * 3 * 4 * 4).view(2, 3, 4, 4)
BACKWARD_REJECTED = [
    ("conv2d_grad_input", lambda: ops.conv2d_grad_input(GY, w_int, [2, 4, 6, 6], [1, 1], [0] * 4, [1, 1], 1, "auto"),
     lambda: torch.ops.aten.convolution_backward(GY, x_int, w_int, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                 [True, False, False])),
    ("conv2d_grad_weight", lambda: ops.conv2d_grad_weight(GY, x_int, [3, 4, 3, 3], [1, 1], [0] * 4, [1, 1], 1, "auto"),
     lambda: torch.ops.aten.convolution_backward(GY, x_int, w_int, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                                 [False, True, False])),
    ("conv2d_grad_weight_bias",
     lambda: ops.conv2d_grad_weight_bias(GY, x_int, [3, 4, 3, 3], [1, 1], [0] * 4, [1, 1], 1, "auto"), None),
    ("conv2d_grad_bias", lambda: ops.conv2d_grad_bias(GY), None),
    ("max_pool2d_backward", lambda: ops.max_pool2d_backward(GY, torch.zeros_like(GY), [2, 3, 8, 8]),
     lambda: torch.ops.aten.max_pool2d_with_indices_backward(GY, torch.zeros(2, 3, 8, 8, dtype=torch.int64), [2, 2],
                                                             [2, 2], [0, 0], [1, 1], False, torch.zeros_like(GY))),
    ("adaptive_avg_pool2d_backward", lambda: ops.adaptive_avg_pool2d_backward(GY, [2, 3, 8, 8]),
     lambda: torch.ops.aten._adaptive_avg_pool2d_backward(GY, torch.zeros(2, 3, 8, 8, dtype=torch.int64))),
    ("avg_pool2d_backward int32",
     lambda: ops.avg_pool2d_backward(GY.int(), [2, 3, 8, 8], [2, 2], [2, 2], [0, 0], False, True, None),
     lambda: torch.ops.aten.avg_pool2d_backward(GY.int(), torch.zeros(2, 3, 8, 8, dtype=torch.int32), [2, 2], [2, 2],
                                                [0, 0], False, True, None)),
]


@pytest.mark.parametrize("case", BACKWARD_REJECTED, ids=[c[0] for c in BACKWARD_REJECTED])
def test_backward_ops_reject_integers_as_torch(case):
    """torch's own backward kernels take no integer gradients (but avg_pool2d's in int64): neither do cnnext's,
    with a TypeError naming grad_output and its dtype."""
    _, call, torch_call = case
    if torch_call is not None:
        with pytest.raises(Exception):
            torch_call()
    with pytest.raises(TypeError, match=r"grad_output .*got (Long|Int)"):
        call()
