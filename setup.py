"""Builds cnnext._C against the torch that is installed right now.

Install with ``pip install --no-build-isolation .`` (see README.md: build
isolation would compile against a different torch than the one you run).

CNNEXT_CUDA=1 forces the CUDA build (and fails if it cannot), CNNEXT_CUDA=0
disables it; unset, CUDA is built when torch has CUDA and nvcc is found.

The CPU kernels are compiled once per instruction set in their own files
(csrc/cpu/variants.h) and chosen at run time: no -march flag is needed.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

VERSION = "0.1.0"
ROOT = Path(__file__).parent


def want_cuda() -> bool:
    """Decides the CUDA build from CNNEXT_CUDA and what this machine has."""
    flag = os.environ.get("CNNEXT_CUDA", "").strip()
    can = torch.version.cuda is not None and CUDA_HOME is not None
    if flag == "1":
        if not can:
            raise RuntimeError(
                "CNNEXT_CUDA=1 but the CUDA extension cannot be built: "
                f"torch {torch.__version__} has CUDA={torch.version.cuda}, CUDA toolkit (nvcc) at {CUDA_HOME}. "
                "Install a CUDA build of torch and a CUDA toolkit, or set CNNEXT_CUDA=0."
            )
        return True
    if flag not in ("", "0"):
        raise RuntimeError(f"CNNEXT_CUDA must be 0 or 1, got {flag!r}")
    return flag == "" and can


def cuda_archs() -> str:
    """TORCH_CUDA_ARCH_LIST if given (torch's build honours it), else sm_80 and sm_90."""
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    return os.environ["TORCH_CUDA_ARCH_LIST"]


def write_build_config(cuda: bool, archs: str) -> None:
    """Records the torch this build is for, so `import cnnext` can refuse a mismatch before loading _C."""
    (ROOT / "cnnext" / "_build_config.py").write_text(
        '"""Written by setup.py at build time; do not edit."""\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA = {cuda!r}\n"
        f"CUDA_ARCHS = {archs!r}\n"
    )


def extension():
    cuda = want_cuda()
    archs = cuda_archs() if cuda else ""
    write_build_config(cuda, archs)
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp") + glob.glob("csrc/cpu/*/*.cpp"))
    macros = [("CNNEXT_VERSION", f'"{VERSION}"'), ("CNNEXT_TORCH_VERSION", f'"{torch.__version__}"')]
    # No -std: torch's cpp_extension passes the standard its headers need (C++17, C++20 from torch 2.14).
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    args = dict(extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])
    if not cuda:
        return CppExtension("cnnext._C", sources, define_macros=macros, **args)
    sources += sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    macros += [
        ("CNNEXT_WITH_CUDA", None),
        ("CNNEXT_CUDA_VERSION", f'"{torch.version.cuda}"'),
        ("CNNEXT_CUDA_ARCHS", f'"{archs}"'),
    ]
    args["extra_compile_args"]["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    return CUDAExtension("cnnext._C", sources, define_macros=macros, **args)


setup(
    name="cnnext",
    version=VERSION,
    packages=find_packages(include=["cnnext", "cnnext.*"]),
    package_data={"cnnext": ["data/embedded/*"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
