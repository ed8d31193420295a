"""The convolution kernels' AVX2 and baseline code, which the loader never picks on an AVX-512 machine.

The hot convolution loops are compiled once per instruction set and the loader picks the best clone, so a
normal test run only exercises the widest one this CPU has. Each case here builds a copy of cnnext for one
instruction set (setup.py's CNNEXT_CPU_ARCH: no clones, everything compiled for that ISA), cached under
build/isa-builds/ by a hash of the sources, and runs the kernel test files against it in a subprocess, with
the run-time dispatched max_pool2d loops narrowed to the same ISA.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_TESTS = ["test_conv2d.py", "test_pool.py"]
COPIED = ["setup.py", "pyproject.toml", "README.md", "csrc", "cnnext"]


def _supports(isa: str) -> bool:
    import cnnext

    order = cnnext._ops.CPU_ISAS
    return order.index(isa) >= order.index(cnnext.build_info()["cpu_isa_detected"])


def _source_hash() -> str:
    digest = hashlib.sha256()
    files = [ROOT / "setup.py", ROOT / "pyproject.toml", *ROOT.glob("csrc/**/*"), *ROOT.glob("cnnext/**/*.py")]
    for path in sorted(p for p in files if p.is_file() and p.name != "_build_config.py"):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _build(arch: str) -> Path:
    """A copy of cnnext built for -march=arch only, reused while the sources are unchanged."""
    dest = ROOT / "build" / "isa-builds" / f"{arch}-{_source_hash()}"
    if (dest / "built").exists():
        return dest
    for stale in dest.parent.glob(f"{arch}-*"):  # copies of older sources
        shutil.rmtree(stale, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("*.so", "__pycache__", "_build_config.py"))
        else:
            shutil.copy2(source, dest / name)
    env = dict(os.environ, CNNEXT_CPU_ARCH=arch, CNNEXT_CUDA="0")
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"building for -march={arch} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    (dest / "built").touch()
    return dest


@pytest.mark.parametrize("arch,isa", [("x86-64-v3", "avx2"), ("x86-64", "baseline")])
def test_kernel_tests_pass_on_a_single_isa_build(arch, isa):
    if not _supports(isa):
        pytest.skip(f"this CPU cannot run {isa} code")
    build = _build(arch)
    # cwd = the copy, so `import cnnext` finds it before the installed one; CUDA cases are left out (the copy is
    # CPU-only).
    env = dict(os.environ, CNNEXT_CPU_ISA=isa)
    env.pop("PYTHONPATH", None)
    check = subprocess.run(
        [sys.executable, "-c", "import cnnext; info = cnnext.build_info(); "
         "print(cnnext.__file__, info['cpu_isa_dispatch'], info['cpu_isa'])"],
        cwd=build, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    assert str(build) in check.stdout and f"-march={arch} only" in check.stdout and check.stdout.split()[-1] == isa
    tests = [str(ROOT / "tests" / name) for name in KERNEL_TESTS]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not cuda", *tests],
                            cwd=build, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
