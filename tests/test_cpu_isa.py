"""Every CPU instruction set's kernels in one build: cnnext compiles its CPU kernels once per ISA (AVX-512, AVX2,
portable) and picks one per call by cnnext.set_cpu_isa / CNNEXT_CPU_ISA, so each runs on an AVX-512 machine.

In process: every direct convolution family of every ISA the CPU supports, forced through CNNEXT_CONV_PLAN on
random shapes it can run, against torch (values and both gradients, float32 and float64), and the plan
(cnnext._ops.conv2d_plan) against the family that ran. In a subprocess per narrower ISA: the kernel test files.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cnnext
from cnnext._ops import CONV_PASSES, CPU_ISAS, conv2d_plan, last_conv2d_family

ROOT = Path(__file__).resolve().parents[1]
KERNEL_TESTS = ["test_conv2d.py", "test_pool.py", "test_avg_pool.py", "test_conv1d.py"]
CORRELATION_FAMILIES = ["pixel_vectors_flat", "pixel_vectors_block", "channel_vectors", "channel_vectors_scatter"]
GRAD_WEIGHT_FAMILIES = ["grad_weight_columns_in_place", "grad_weight_columns", "grad_weight_columns_flat",
                        "grad_weight_channel_vectors", "grad_weight_input_vectors"]
EVERY_PASS_FAMILIES = ["planes_first_layer"]


def _supported() -> list[str]:
    return list(CPU_ISAS[CPU_ISAS.index(cnnext.build_info()["cpu_isa_detected"]):])


@pytest.fixture(params=CPU_ISAS)
def isa(request):
    if request.param not in _supported():
        pytest.skip(f"this CPU has no {request.param}")
    previous = cnnext.set_cpu_isa(request.param)
    yield request.param
    cnnext.set_cpu_isa(previous)


def _random_conv(gen: torch.Generator) -> dict:
    """A random valid convolution: small, with strides, dilations, padding and groups, channel counts that fill
    whole vectors or not."""
    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    groups = [1, 1, 2][draw(0, 2)]
    cin = groups * [1, 3, 5, 8, 16][draw(0, 4)]
    cout = groups * [2, 5, 8, 16, 32][draw(0, 4)]
    kh, kw = draw(1, 4), draw(1, 4)
    stride = (draw(1, 3), draw(1, 3)) if draw(0, 1) else (1, 1)
    dilation = (draw(1, 2), draw(1, 2)) if draw(0, 2) == 0 else (1, 1)
    padding = (draw(0, 2), draw(0, 2))
    h = draw(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 24)
    w = draw(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 40)
    return dict(input=(draw(1, 3), cin, h, w), weight=(cout, cin // groups, kh, kw), stride=stride, padding=padding,
                dilation=dilation, groups=groups)


def _plan(conv: dict, pass_: str, dtype: torch.dtype, algo: str = "direct", channels_last: bool = False) -> dict:
    return conv2d_plan(conv["input"], conv["weight"], conv["stride"], conv["padding"], conv["dilation"],
                       conv["groups"], dtype, pass_, algo=algo, channels_last=channels_last)


def _check_against_torch(conv: dict, dtype: torch.dtype, gen: torch.Generator, algo: str,
                         channels_last: bool = False) -> None:
    """conv2d's output and both gradients against torch's, and every pass ran the family its plan names;
    ``channels_last``: the input is, and so must be the output and the input's gradient."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(conv["input"], dtype=dtype, generator=gen).to(memory_format=layout).requires_grad_()
    w = torch.randn(conv["weight"], dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn(conv["weight"][0], dtype=dtype, generator=gen, requires_grad=True)
    args = dict(stride=conv["stride"], padding=conv["padding"], dilation=conv["dilation"], groups=conv["groups"])
    y = cnnext.functional.conv2d(x, w, b, algo=algo, **args)
    ran = {"forward": last_conv2d_family("forward")}
    g = torch.randn(y.shape, dtype=dtype, generator=gen).to(memory_format=layout)  # as the next layer's gradient
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    ran.update({p: last_conv2d_family(p) for p in ("grad_input", "grad_weight")})
    for pass_ in CONV_PASSES:
        assert ran[pass_] == _plan(conv, pass_, dtype, algo, channels_last)["family"], (pass_, conv)
    assert y.is_contiguous(memory_format=layout) and gx.is_contiguous(memory_format=layout)
    ref = F.conv2d(x, w, b, **args)
    rgx, rgw, rgb = torch.autograd.grad(ref, (x, w, b), g)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for name, got, want in (("output", y, ref), ("grad_input", gx, rgx), ("grad_weight", gw, rgw),
                            ("grad_bias", gb, rgb)):
        torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{name} of {conv}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family", CORRELATION_FAMILIES + GRAD_WEIGHT_FAMILIES + EVERY_PASS_FAMILIES)
def test_every_family_of_every_isa_matches_torch(isa, family, dtype, monkeypatch):
    """Each family forced on random shapes it can run (the plan says so), then a shape it cannot run (the plan
    says it falls back, and the fallback runs)."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", f"family={family}")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{isa} {family} {dtype}".encode()))
    in_place = family in ("channel_vectors", "channel_vectors_scatter", "grad_weight_channel_vectors",
                          "grad_weight_input_vectors")
    passes = (("forward", "grad_input") if family in CORRELATION_FAMILIES
              else ("grad_weight",) if family in GRAD_WEIGHT_FAMILIES else CONV_PASSES)
    ran, fell_back = 0, 0
    for _ in range(200):
        conv = _random_conv(gen)
        runs = any(_plan(conv, p, dtype)["family"] == family for p in passes)
        if runs and ran < 3:
            ran += 1
        elif not runs and fell_back < 1:
            fell_back += 1
            assert all("cannot run" in _plan(conv, p, dtype)["forced"] for p in passes)
        else:
            continue
        for channels_last in (False, True):
            _check_against_torch(conv, dtype, gen, "direct", channels_last)
        if runs:  # in a channels_last model, the family runs in place where it has kernels for that layout
            assert all(_plan(conv, p, dtype, channels_last=True)["channels_last"] == in_place
                       for p in passes if _plan(conv, p, dtype)["family"] == family)
        if ran == 3 and fell_back == 1:
            break
    assert ran == 3, f"no random shape runs {family} on {isa}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_depthwise_of_every_isa_matches_torch(isa, dtype):
    """Depthwise layers with one output per group in a channels_last model run each ISA's kernels of that layout
    (the plan says so): random shapes, channel counts in and out of whole vectors, against torch."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"depthwise {isa} {dtype}".encode()))

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    checked = 0
    while checked < 6:
        channels, kernel = draw(1, 40), (draw(1, 5), draw(1, 5))
        dilation, padding = (draw(1, 2), draw(1, 2)), (draw(0, 2), draw(0, 2))
        spans = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
        stride = tuple(draw(1, min(2, span)) for span in spans)
        size = (draw(1, 20), draw(1, 30))
        if any(s + 2 * p < span for s, p, span in zip(size, padding, spans)):
            continue
        conv = dict(input=(draw(1, 3), channels, *size), weight=(channels, 1, *kernel), stride=stride,
                    padding=padding, dilation=dilation, groups=channels)
        assert all(_plan(conv, p, dtype, "auto", True)["channels_last"] for p in CONV_PASSES), conv
        _check_against_torch(conv, dtype, gen, "auto", channels_last=True)
        checked += 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_vectors_on_small_nchw_planes_stage_pixel_major(isa, dtype, monkeypatch):
    """NCHW channel vectors of stride-1 layers stage their input pixel-major where the pass's output planes have
    fewer than 64 pixels (AVX2: 257; the plan says so, and planes elsewhere): random shapes on planes of up to
    20 x 20, dilations, padding and groups, against torch."""
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=channel_vectors")
    gen = torch.Generator().manual_seed(zlib.crc32(f"pixel-major {isa} {dtype}".encode()))
    checked, pixel_major = 0, 0
    for _ in range(400):
        conv = _random_conv(gen)
        (kh, kw), dilation, padding = conv["weight"][2:], conv["dilation"], conv["padding"]
        lowest = [max(1, d * (k - 1) + 1 - 2 * p) for d, k, p in zip(dilation, (kh, kw), padding)]
        h, w = (int(torch.randint(lo, max(lo, 20) + 1, (1,), generator=gen)) for lo in lowest)
        conv.update(input=(*conv["input"][:2], h, w), stride=(1, 1))
        plans = [_plan(conv, p, dtype) for p in ("forward", "grad_input")]
        if any(plan["family"] != "channel_vectors" for plan in plans):
            continue
        out = [size + 2 * p - d * (k - 1) for size, p, d, k in zip((h, w), padding, dilation, (kh, kw))]
        below = 257 if isa == "avx2" else 64
        assert [plan["pixel_major"] for plan in plans] == [out[0] * out[1] < below, h * w < below], conv
        _check_against_torch(conv, dtype, gen, "direct")
        checked += 1
        pixel_major += any(plan["pixel_major"] for plan in plans)
        if checked >= 6 and pixel_major >= 4:
            break
    assert checked >= 6 and pixel_major >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_runs_what_the_plan_says(isa, dtype):
    """`auto` on random shapes, NCHW and channels_last: the algorithm and family each pass runs are the plan's,
    and the results torch's."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{isa} {dtype}".encode()))
    for i in range(16):
        _check_against_torch(_random_conv(gen), dtype, gen, "auto", channels_last=i % 2 == 1)


def test_set_cpu_isa_narrows_the_convolution():
    """build_info reports the narrowed ISA and the plan's tiles follow it: 64-, 32- and 16-byte vectors."""
    conv = dict(input=(2, 32, 13, 13), weight=(64, 32, 3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                groups=1)
    widths = {"avx512": 64, "avx2": 32, "baseline": 16}
    for isa in _supported():
        previous = cnnext.set_cpu_isa(isa)
        try:
            assert cnnext.build_info()["cpu_isa"] == isa
            plan = _plan(conv, "forward", torch.float32)
            assert plan["isa"] == isa and plan["tiles"]["vec_bytes"] == widths[isa]
        finally:
            cnnext.set_cpu_isa(previous)


def test_conv_plan_env_is_checked(monkeypatch):
    conv = dict(input=(2, 3, 9, 9), weight=(4, 3, 3, 3), stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "family=fastest")
    with pytest.raises(ValueError, match="CNNEXT_CONV_PLAN: unknown entry 'family=fastest'"):
        _plan(conv, "forward", torch.float32)
    with pytest.raises(ValueError, match="CNNEXT_CONV_PLAN"):
        cnnext.functional.conv2d(torch.randn(conv["input"]), torch.randn(conv["weight"]))
    monkeypatch.setenv("CNNEXT_CONV_PLAN", "algo=im2col")
    assert _plan(conv, "forward", torch.float32, algo="auto")["algo"] == "im2col"
    assert _plan(conv, "forward", torch.float32, algo="direct")["algo"] == "direct"  # an explicit algo wins


def test_unknown_pass_or_isa_is_a_value_error():
    with pytest.raises(ValueError, match="pass must be one of"):
        conv2d_plan((1, 1, 5, 5), (1, 1, 3, 3), pass_="backward")
    with pytest.raises(ValueError, match="isa must be one of"):
        conv2d_plan((1, 1, 5, 5), (1, 1, 3, 3), isa="sse2")
    with pytest.raises(ValueError, match="vendor must be one of"):
        conv2d_plan((1, 1, 5, 5), (1, 1, 3, 3), vendor="cyrix")


@pytest.mark.parametrize("isa_name", CPU_ISAS[1:])
def test_kernel_tests_pass_on_each_narrower_isa(isa_name):
    """The kernel test files, in a subprocess with CNNEXT_CPU_ISA set: the whole value and gradient coverage for
    each ISA below the widest (which the suite itself runs)."""
    if isa_name not in _supported():
        pytest.skip(f"this CPU has no {isa_name}")
    env = dict(os.environ, CNNEXT_CPU_ISA=isa_name)
    env.pop("CNNEXT_CONV_PLAN", None)
    tests = [str(ROOT / "tests" / name) for name in KERNEL_TESTS]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k",
                             "not cuda", *tests], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
