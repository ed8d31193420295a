"""The CUDA kernels of csrc/cuda, run on the CPU under an emulation of the CUDA execution model.

No GPU is needed: tests/cuda_emulation/cuda_emu.h lets g++ compile the unchanged .cu files, running each block's
threads as real threads with __syncthreads() as a real barrier, and tests/cuda_emulation/driver.cpp calls the
launchers of csrc/cuda/launchers.h on the cases below (the im2col algorithm replayed as conv2d_cuda.cpp drives it).
Every kernel (conv2d forward, grad_input, grad_weight for the direct and im2col algorithms, including the untiled
direct fallbacks and chunked im2col; grad_bias; max_pool2d, avg_pool2d and adaptive_avg_pool2d forward and
backward) runs on a grid of shapes in all four dtypes and is compared with torch.nn.functional in float64 on the
same (rounded) inputs.

Two builds, cached under build/cuda-emulation/ by a hash of their sources and flags:
  * asan: AddressSanitizer + UndefinedBehaviorSanitizer, every case. Every buffer is an exact-size allocation and
    the emulated shared memory too, so any out-of-bounds global or shared access aborts the run; so does signed
    overflow in the 32-bit index paths.
  * tsan: ThreadSanitizer, a smaller set covering every kernel: a missing barrier between shared-memory writes and
    reads is reported as a data race.
Both are built with CNNEXT_CUDA_INDEX32_LIMIT = 4096, so the cases with more elements than that take the kernels'
64-bit index paths.

Tolerances: with u the unit roundoff of the dtype (2^-24, 2^-53, 2^-11, 2^-8 for float32, float64, float16,
bfloat16), u_acc that of the accumulate type (float64 for float64, else float32) and n the number of terms each
result sums, every convolution result must lie within (4 u + n u_acc) * M of the float64 reference, where M is the
same sum taken over absolute values: a rounding-error bound, not a guess. Max pooling must match exactly (values,
NaNs and indices); its backward, and average pooling, within (2 u + n u_acc) * M.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.cuda_emulation

ROOT = Path(__file__).resolve().parents[1]
EMU = ROOT / "tests" / "cuda_emulation"
SOURCES = [*sorted((ROOT / "csrc" / "cuda").glob("*.cu")), EMU / "driver.cpp"]
CXX = os.environ.get("CXX", "g++")
INDEX32_LIMIT = 4096
COMMON_FLAGS = ["-std=c++20", "-g", "-O1", "-pthread", "-Wall", "-Wextra", "-Wno-unknown-pragmas",
                "-Wno-unused-parameter", f"-DCNNEXT_CUDA_INDEX32_LIMIT={INDEX32_LIMIT}",
                "-I", str(EMU / "include"), "-I", str(ROOT / "csrc")]
SANITIZERS = {
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
    "tsan": ["-fsanitize=thread"],
}
SANITIZER_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "TSAN_OPTIONS": "halt_on_error=1:second_deadlock_stack=1",
}
RUN_TIMEOUT_S = 900

DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


# ---------------------------------------------------------------------------------------------------------------
# cases


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution geometry (symmetric padding, as torch.nn.functional.conv2d takes it)."""

    name: str
    N: int
    C: int
    K: int
    H: int
    W: int
    kernel: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1

    @property
    def out(self) -> tuple:
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                     zip((self.H, self.W), self.padding, self.dilation, self.kernel, self.stride))

    def keys(self) -> dict:
        (oh, ow), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.out, self.kernel, self.stride, self.padding, self.dilation
        return dict(N=self.N, C=self.C, K=self.K, groups=self.groups, H=self.H, W=self.W, OH=oh, OW=ow, KH=kh, KW=kw,
                    sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw)

    def conv_args(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


@dataclasses.dataclass(frozen=True)
class Pool:
    """A max-pool geometry; `specials` puts NaNs and -infs into the input."""

    name: str
    N: int
    C: int
    H: int
    W: int
    kernel: tuple
    stride: tuple
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False
    specials: bool = False

    def pool_args(self) -> dict:
        return dict(kernel_size=self.kernel, stride=self.stride, padding=self.padding, dilation=self.dilation,
                    ceil_mode=self.ceil_mode)


CONVS = [
    Conv("3x3pad1", 2, 3, 4, 7, 7, padding=(1, 1)),
    Conv("rect-strided", 2, 4, 6, 9, 11, kernel=(3, 2), stride=(2, 1), padding=(1, 0)),
    Conv("dilated-grouped", 1, 4, 4, 10, 10, padding=(2, 2), dilation=(2, 2), groups=2),
    Conv("depthwise-s2", 2, 6, 6, 8, 8, stride=(2, 2), padding=(1, 1), groups=6),
    Conv("1x1", 2, 5, 3, 6, 5, kernel=(1, 1)),
    # One image whose last input row no output reads: im2col's col2im of a whole image must still zero it.
    Conv("rows-read-by-none", 1, 4, 2, 14, 5, kernel=(4, 3), stride=(2, 2), dilation=(2, 2), groups=2),
    Conv("kernel-over-input", 1, 2, 3, 4, 4, kernel=(5, 5), padding=(2, 2)),
    # 40 input channels of a 7x7 kernel: the tiled kernels stage the reduction in several chunks.
    Conv("7x7-many-channels", 1, 40, 8, 12, 12, kernel=(7, 7), padding=(3, 3)),
    # More than INDEX32_LIMIT elements: the 64-bit index paths.
    Conv("index64", 2, 3, 5, 20, 37, padding=(1, 1)),
    # Several co x ci weight tiles in the tiled grad_weight kernel.
    Conv("weight-tiles", 1, 10, 40, 6, 6, padding=(1, 1)),
]
# For the untiled direct kernels, whose grad_weight runs one block per weight element: few weights.
GENERIC_CONVS = [
    Conv("small", 2, 2, 2, 5, 6, padding=(1, 1)),
    Conv("small-dilated-grouped", 1, 4, 2, 7, 6, kernel=(3, 2), stride=(2, 1), padding=(2, 1), dilation=(2, 1),
         groups=2),
]
CONV_BY_NAME = {c.name: c for c in CONVS}
POOLS = [
    Pool("2x2s2", 2, 3, 8, 8, (2, 2), (2, 2)),
    Pool("3x3s1pad1-overlapping", 1, 4, 7, 9, (3, 3), (1, 1), (1, 1)),
    Pool("dilated-ceil", 1, 2, 10, 10, (3, 3), (2, 2), (1, 1), (2, 2), ceil_mode=True),
    Pool("nan-inf", 1, 4, 7, 9, (3, 3), (1, 1), (1, 1), specials=True),
    Pool("index64", 2, 4, 40, 40, (2, 2), (1, 1)),
]


@dataclasses.dataclass(frozen=True)
class AvgPool:
    """An avg_pool2d geometry, or an adaptive_avg_pool2d one when `output_size` is given."""

    name: str
    N: int
    C: int
    H: int
    W: int
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    output_size: tuple | None = None

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_size is not None:
            return F.adaptive_avg_pool2d(x, self.output_size)
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)


AVG_POOLS = [
    AvgPool("2x2s2", 2, 3, 8, 8, (2, 2), (2, 2)),
    AvgPool("3x3s1pad1", 1, 2, 7, 9, (3, 3), (1, 1), (1, 1)),
    AvgPool("3x2s2pad1-ceil-exclude-pad", 1, 4, 9, 10, (3, 2), (2, 2), (1, 1), ceil_mode=True,
            count_include_pad=False),
    AvgPool("divisor-override", 1, 2, 8, 8, (3, 3), (2, 2), (1, 1), divisor_override=5),
    # ceil_mode's last window hangs past the right padding: count_include_pad counts it only up to the padding.
    AvgPool("3x3s3pad1-ceil-past-padding", 1, 3, 11, 1, (3, 3), (3, 3), (1, 1), ceil_mode=True),
    AvgPool("index64", 2, 4, 40, 40, (2, 2), (1, 1)),
    AvgPool("adaptive-5x3", 2, 3, 9, 11, output_size=(5, 3)),
    AvgPool("adaptive-global", 2, 8, 7, 7, output_size=(1, 1)),
    AvgPool("adaptive-global-large-plane", 1, 3, 20, 20, output_size=(1, 1)),
]
CONV_OPS = ["conv_forward", "conv_grad_input", "conv_grad_weight"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One launcher call: an op on a geometry in a dtype, with the launcher settings of `env` (driver.cpp keys)."""

    op: str
    shape: Conv | Pool | AvgPool
    dtype: torch.dtype
    algo: str = ""
    env: tuple = ()  # ((key, value), ...)
    tag: str = ""  # names what `env` selects

    @property
    def id(self) -> str:
        parts = [self.op, self.algo, self.shape.name, self.tag, DTYPES[self.dtype]]
        return "-".join(p for p in parts if p)


def _im2col_budget(conv: Conv, op: str, dtype: torch.dtype, columns: int) -> int:
    """A CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES that makes chunks of `columns` output positions (see im2col_chunks.h)."""
    col_bytes = 4 if op == "conv_grad_weight" and dtype in (torch.float16, torch.bfloat16) else dtype.itemsize
    return (conv.C * conv.kernel[0] * conv.kernel[1] + conv.K) * col_bytes * columns


def _chunked_cases(dtype: torch.dtype) -> list:
    """im2col with a workspace budget too small for the whole batch: whole-image chunks (the last one partial) and
    row bands of one image (col2im then accumulates)."""
    cases = []
    shape = Conv("chunked", 3, 3, 4, 9, 11, kernel=(3, 3), stride=(2, 1), padding=(1, 1))
    oh, ow = shape.out
    for tag, columns in [("2images", 2 * oh * ow), ("2rows", 2 * ow), ("1row", ow)]:
        for op in CONV_OPS:
            budget = _im2col_budget(shape, op, dtype, columns)
            cases.append(Case(op, shape, dtype, "im2col", (("budget", budget),), f"chunks-of-{tag}"))
    return cases


def full_cases() -> list:
    cases = []
    for dtype in DTYPES:
        for conv in CONVS:
            for op in CONV_OPS:
                cases += [Case(op, conv, dtype, algo) for algo in ("direct", "im2col")]
        # grad_bias depends only on (N, K, OH*OW): a few planes, and the 64-bit index path.
        cases += [Case("conv_grad_bias", CONV_BY_NAME[name], dtype) for name in ("3x3pad1", "1x1", "index64")]
        # The untiled direct kernels (the fallback for geometries whose tiles do not fit in shared memory).
        for conv in GENERIC_CONVS:
            cases += [Case(op, conv, dtype, "direct", (("generic", 1),), "generic") for op in CONV_OPS]
        # grad_weight without partial-sum slices: few multiprocessors for four weight tiles.
        cases.append(Case("conv_grad_weight", CONV_BY_NAME["weight-tiles"], dtype, "direct", (("sms", 1),), "1slice"))
        cases += _chunked_cases(dtype)
        for pool in POOLS:
            cases += [Case("pool_forward", pool, dtype), Case("pool_backward", pool, dtype)]
        for pool in AVG_POOLS:
            cases += [Case("avg_forward", pool, dtype), Case("avg_backward", pool, dtype)]
    # Indices outside the plane are skipped by the backward kernel, whatever they hold.
    cases += [Case("pool_backward", POOLS[0], dtype, tag="bad-indices") for dtype in DTYPES]
    return cases


def tsan_cases() -> list:
    """Every kernel once or twice, in the dtypes whose shared-memory staging differs (4- and 8-byte accumulators)."""
    cases = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for name in ("3x3pad1", "7x7-many-channels", "weight-tiles"):
            cases += [Case(op, CONV_BY_NAME[name], dtype, "direct") for op in CONV_OPS]
        cases += [Case(op, CONV_BY_NAME["index64"], dtype, "im2col") for op in CONV_OPS]
        cases += [Case(op, GENERIC_CONVS[1], dtype, "direct", (("generic", 1),), "generic") for op in CONV_OPS]
        cases.append(Case("conv_grad_bias", CONV_BY_NAME["index64"], dtype))
        cases.append(Case("conv_grad_bias", CONV_BY_NAME["3x3pad1"], dtype))
        cases += [Case(op, POOLS[1], dtype) for op in ("pool_forward", "pool_backward")]
        # The global average is a block reduction through shared memory.
        cases += [Case(op, AVG_POOLS[-1], dtype) for op in ("avg_forward", "avg_backward")]
    return cases


VARIANT_CASES = {"asan": full_cases(), "tsan": tsan_cases()}


# ---------------------------------------------------------------------------------------------------------------
# inputs and references


def _random(case: Case, shape: tuple, name: str) -> torch.Tensor:
    """Seeded per case and tensor; rounded to the case's dtype (the reference then sees exactly these values)."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{case.id}/{name}".encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(case.dtype)


def _conv_inputs(case: Case) -> dict:
    c: Conv = case.shape
    oh, ow = c.out
    shapes = {"input": (c.N, c.C, c.H, c.W), "weight": (c.K, c.C // c.groups, *c.kernel), "bias": (c.K,),
              "grad_output": (c.N, c.K, oh, ow)}
    needs = {"conv_forward": ["input", "weight", "bias"], "conv_grad_input": ["grad_output", "weight"],
             "conv_grad_weight": ["grad_output", "input"], "conv_grad_bias": ["grad_output"]}[case.op]
    return {name: _random(case, shapes[name], name) for name in needs}


def _conv_reference(case: Case, t: dict) -> tuple:
    """(name of the output, float64 reference, the same sum over absolute values, terms per result)."""
    c: Conv = case.shape
    d = {k: v.double() for k, v in t.items()}
    a = {k: v.abs() for k, v in d.items()}
    kk = c.kernel[0] * c.kernel[1]
    oh, ow = c.out
    if case.op == "conv_forward":
        return ("output", F.conv2d(d["input"], d["weight"], d["bias"], **c.conv_args()),
                F.conv2d(a["input"], a["weight"], a["bias"], **c.conv_args()), c.C // c.groups * kk + 1)
    if case.op == "conv_grad_input":
        shape = (c.N, c.C, c.H, c.W)
        return ("grad_input", torch.nn.grad.conv2d_input(shape, d["weight"], d["grad_output"], **c.conv_args()),
                torch.nn.grad.conv2d_input(shape, a["weight"], a["grad_output"], **c.conv_args()), c.K // c.groups * kk)
    if case.op == "conv_grad_weight":
        shape = (c.K, c.C // c.groups, *c.kernel)
        return ("grad_weight", torch.nn.grad.conv2d_weight(d["input"], shape, d["grad_output"], **c.conv_args()),
                torch.nn.grad.conv2d_weight(a["input"], shape, a["grad_output"], **c.conv_args()), c.N * oh * ow)
    return "grad_bias", d["grad_output"].sum((0, 2, 3)), a["grad_output"].sum((0, 2, 3)), c.N * oh * ow


def _pool_forward_reference(case: Case, x: torch.Tensor) -> tuple:
    out, idx = F.max_pool2d(x.double(), return_indices=True, **case.shape.pool_args())
    return out, idx


def _pool_inputs(case: Case) -> dict:
    p: Pool = case.shape
    x = _random(case, (p.N, p.C, p.H, p.W), "input")
    if p.specials:
        flat = x.view(-1)
        flat[::7] = float("nan")
        flat[3::11] = float("-inf")
    if case.op == "pool_forward":
        return {"input": x}
    _, idx = _pool_forward_reference(case, x)
    if case.tag == "bad-indices":
        flat = idx.view(-1)
        flat[::5] = -1
        flat[2::5] = p.H * p.W
        flat[4::9] = 1 << 40
    return {"grad_output": _random(case, tuple(idx.shape), "grad_output"), "indices": idx}


def _pool_backward_reference(case: Case, t: dict) -> tuple:
    p: Pool = case.shape
    go, idx = t["grad_output"].double().flatten(2), t["indices"].flatten(2)
    valid = (idx >= 0) & (idx < p.H * p.W)
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    zeros = torch.zeros(p.N, p.C, p.H * p.W, dtype=torch.float64)
    ref = zeros.scatter_add(2, idx, torch.where(valid, go, 0.0)).view(p.N, p.C, p.H, p.W)
    mag = zeros.scatter_add(2, idx, torch.where(valid, go.abs(), 0.0)).view(p.N, p.C, p.H, p.W)
    return ref, mag, p.kernel[0] * p.kernel[1]


def _avg_inputs(case: Case) -> dict:
    a: AvgPool = case.shape
    x = _random(case, (a.N, a.C, a.H, a.W), "input")
    if case.op == "avg_forward":
        return {"input": x}
    return {"grad_output": _random(case, tuple(a.pool(x.double()).shape), "grad_output")}


def _avg_reference(case: Case, t: dict) -> tuple:
    """(name of the output, float64 reference, the same sum over absolute values, terms per result)."""
    a: AvgPool = case.shape
    terms = a.H * a.W if a.output_size is not None else a.kernel[0] * a.kernel[1]
    if case.op == "avg_forward":
        x = t["input"].double()
        return "output", a.pool(x), a.pool(x.abs()), terms
    # Average pooling is linear with non-negative weights: its gradient at |grad_output| is the magnitude.
    go = t["grad_output"].double()
    x = torch.zeros(a.N, a.C, a.H, a.W, dtype=torch.float64, requires_grad=True)
    (ref,) = torch.autograd.grad(a.pool(x), x, go)
    (mag,) = torch.autograd.grad(a.pool(x), x, go.abs())
    return "grad_input", ref, mag, terms


def case_inputs(case: Case) -> dict:
    if isinstance(case.shape, AvgPool):
        return _avg_inputs(case)
    return _pool_inputs(case) if isinstance(case.shape, Pool) else _conv_inputs(case)


def case_line(case: Case, key: str) -> str:
    if isinstance(case.shape, AvgPool):
        a = case.shape
        out = a.pool(torch.empty(1, 1, a.H, a.W)).shape[2:]
        keys = dict(planes=a.N * a.C, H=a.H, W=a.W, OH=out[0], OW=out[1], adaptive=int(a.output_size is not None),
                    KH=a.kernel[0], KW=a.kernel[1], sh=a.stride[0], sw=a.stride[1], ph=a.padding[0],
                    pw=a.padding[1], cip=int(a.count_include_pad), div=a.divisor_override or 0)
    elif isinstance(case.shape, Pool):
        p = case.shape
        out = F.max_pool2d(torch.empty(1, 1, p.H, p.W), **p.pool_args()).shape[2:]
        keys = dict(planes=p.N * p.C, H=p.H, W=p.W, OH=out[0], OW=out[1], KH=p.kernel[0], KW=p.kernel[1],
                    sh=p.stride[0], sw=p.stride[1], ph=p.padding[0], pw=p.padding[1], dh=p.dilation[0],
                    dw=p.dilation[1])
    else:
        keys = case.shape.keys()
    keys = dict(id=key, op=case.op, dtype=DTYPES[case.dtype], algo=case.algo or "direct",
                bias=int(case.op == "conv_forward"), **keys, **dict(case.env))
    return " ".join(f"{k}={v}" for k, v in keys.items())


def _tofile(t: torch.Tensor, path: Path) -> None:
    t.contiguous().view(-1).view(torch.uint8).numpy().tofile(path)


def _fromfile(path: Path, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8)).view(dtype).view(shape)


def _within(got: torch.Tensor, ref: torch.Tensor, mag: torch.Tensor, tol: float, what: str) -> None:
    err = (got.double() - ref).abs()
    bound = tol * mag + 1e-300
    bad = ~(err <= bound)  # NaN (an element never written) counts as bad
    assert not bad.any(), (f"{what}: {int(bad.sum())} of {bad.numel()} elements off, first at "
                           f"{tuple(bad.nonzero()[0].tolist())}: got {got.double()[bad][0].item()}, "
                           f"want {ref[bad][0].item()} (tolerance {bound[bad][0].item():.3g})")


def check(case: Case, inputs: dict, directory: Path, key: str) -> None:
    u = UNIT_ROUNDOFF[case.dtype]
    u_acc = UNIT_ROUNDOFF[torch.float64 if case.dtype == torch.float64 else torch.float32]
    if case.op == "pool_forward":
        ref, ref_idx = _pool_forward_reference(case, inputs["input"])
        got = _fromfile(directory / f"{key}.output.bin", case.dtype, tuple(ref.shape))
        idx = _fromfile(directory / f"{key}.indices.bin", torch.int64, tuple(ref.shape))
        torch.testing.assert_close(got.double(), ref, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(idx, ref_idx), f"indices differ at {int((idx != ref_idx).sum())} positions"
        return
    if case.op == "pool_backward":
        ref, mag, terms = _pool_backward_reference(case, inputs)
        got = _fromfile(directory / f"{key}.grad_input.bin", case.dtype, tuple(ref.shape))
        _within(got, ref, mag, 2 * u + terms * u_acc, "grad_input")
        return
    if case.op in ("avg_forward", "avg_backward"):
        name, ref, mag, terms = _avg_reference(case, inputs)
        got = _fromfile(directory / f"{key}.{name}.bin", case.dtype, tuple(ref.shape))
        _within(got, ref, mag, 2 * u + terms * u_acc, name)
        return
    name, ref, mag, terms = _conv_reference(case, inputs)
    got = _fromfile(directory / f"{key}.{name}.bin", case.dtype, tuple(ref.shape))
    _within(got, ref, mag, 4 * u + terms * u_acc, name)


# ---------------------------------------------------------------------------------------------------------------
# build and run


def _build_dir(variant: str) -> Path:
    digest = hashlib.sha256()
    files = [*SOURCES, *sorted(EMU.rglob("*.h")), *sorted((ROOT / "csrc" / "cuda").glob("*.h")),
             *sorted((ROOT / "csrc" / "cuda").glob("*.cuh")), ROOT / "csrc" / "params.h"]
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    digest.update(" ".join([CXX, *COMMON_FLAGS, *SANITIZERS[variant]]).encode())
    return ROOT / "build" / "cuda-emulation" / f"{variant}-{digest.hexdigest()[:16]}"


def _compile(args: list) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=1800)


def build_drivers() -> dict:
    """The driver executable of each variant, compiled (all translation units in parallel) unless cached."""
    todo, drivers = [], {}
    for variant, flags in SANITIZERS.items():
        dest = _build_dir(variant)
        drivers[variant] = dest / "cuda_emu_driver"
        if drivers[variant].exists():
            continue
        for stale in dest.parent.glob(f"{variant}-*"):  # builds of older sources
            shutil.rmtree(stale, ignore_errors=True)
        dest.mkdir(parents=True)
        objects = [dest / f"{src.stem}.o" for src in SOURCES]
        compiles = [[CXX, *COMMON_FLAGS, *flags, "-x", "c++", "-c", str(src), "-o", str(obj)]
                    for src, obj in zip(SOURCES, objects)]
        todo.append((compiles, [CXX, *flags, "-pthread", *map(str, objects), "-o", str(drivers[variant])]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for result in pool.map(_compile, [c for compiles, _ in todo for c in compiles]):
            assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stderr[-6000:]}"
    for _, link in todo:
        result = _compile(link)
        assert result.returncode == 0, f"{' '.join(link)}\n{result.stderr[-6000:]}"
    return drivers


@dataclasses.dataclass
class Run:
    directory: Path
    statuses: dict  # case key -> cudaError_t the launcher returned
    inputs: dict  # case key -> input tensors
    report: str  # the driver's stderr (sanitizer reports)
    returncode: int


def run_variant(variant: str, driver: Path, directory: Path) -> Run:
    """Writes every case of the variant, runs the driver once over all of them and collects what it printed."""
    cases = VARIANT_CASES[variant]
    inputs, lines = {}, []
    for i, case in enumerate(cases):
        key = str(i)
        inputs[key] = case_inputs(case)
        for name, t in inputs[key].items():
            _tofile(t, directory / f"{key}.{name}.bin")
        lines.append(case_line(case, key))
    (directory / "cases.txt").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, **SANITIZER_ENV)
    result = subprocess.run([str(driver), str(directory)], capture_output=True, text=True, env=env,
                            timeout=RUN_TIMEOUT_S)
    statuses = dict(line.split() for line in result.stdout.splitlines())
    return Run(directory, {k: int(v) for k, v in statuses.items()}, inputs, result.stderr, result.returncode)


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    """Runs each variant's cases on first use: variant -> Run."""
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler ({CXX}) to build the CUDA emulation")
    drivers = build_drivers()
    runs: dict = {}

    def get(variant: str) -> Run:
        if variant not in runs:
            runs[variant] = run_variant(variant, drivers[variant], tmp_path_factory.mktemp(f"cuda-emu-{variant}"))
        return runs[variant]

    return get


@pytest.mark.parametrize("variant", list(SANITIZERS))
def test_sanitizer_report_is_clean(emulation, variant):
    run = emulation(variant)
    assert run.returncode == 0 and not run.report.strip(), run.report[-8000:]
    assert len(run.statuses) == len(VARIANT_CASES[variant])


@pytest.mark.parametrize("variant,index", [pytest.param(v, i, id=f"{v}-{c.id}")
                                           for v, cases in VARIANT_CASES.items() for i, c in enumerate(cases)])
def test_kernel_matches_torch(emulation, variant, index):
    run = emulation(variant)
    case, key = VARIANT_CASES[variant][index], str(index)
    assert key in run.statuses, f"the driver stopped before this case:\n{run.report[-8000:]}"
    assert run.statuses[key] == 0, f"launcher returned cudaError {run.statuses[key]}"
    check(case, run.inputs[key], run.directory, key)


def test_case_ids_are_unique():
    for cases in VARIANT_CASES.values():
        ids = [c.id for c in cases]
        assert len(ids) == len(set(ids))
