"""Shared fixtures: the devices and CPU instruction sets to test on, and a fresh, seeded random generator per test."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Every device test runs on: cpu, and cuda when a GPU is visible (skipped, not passed, otherwise)."""
    return request.param


def _cpu_isas() -> list:
    import cnnext

    supported = cnnext._ops.CPU_ISAS[cnnext._ops.CPU_ISAS.index(cnnext.build_info()["cpu_isa_detected"]):]
    return [
        isa if isa in supported else pytest.param(isa, marks=pytest.mark.skip(reason=f"this CPU has no {isa}"))
        for isa in cnnext._ops.CPU_ISAS
    ]


@pytest.fixture(params=_cpu_isas())
def cpu_isa(request):
    """Runs the test once per instruction set of cnnext's run-time dispatched CPU kernels (max_pool2d) that this
    CPU supports: AVX-512, AVX2 and the portable baseline, so each SIMD path is exercised on an AVX-512 machine."""
    import cnnext

    previous = cnnext.set_cpu_isa(request.param)
    yield request.param
    cnnext.set_cpu_isa(previous)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's name, so each test draws its own reproducible inputs."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(autouse=True)
def _reference_precision():
    """PyTorch's reference convolution must not use TF32 on a GPU."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
