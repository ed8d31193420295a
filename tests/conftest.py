"""Shared fixtures: the devices to test on and a fresh, seeded random generator per test."""
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
