"""Physical references measured in the same run: float32 GEMM peak and memory copy bandwidth."""

from __future__ import annotations

import math

import torch

from benchmarks.conftest import Measure
from benchmarks.shapes import FLOAT_BYTES, seed_pool_shapes

MM_SIZE = 2048


def test_mm_peak(measure: Measure, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MM_SIZE, MM_SIZE, generator=gen).to(device) for _ in range(2))
    out = torch.empty_like(a)  # a preallocated output: the GEMM alone, whatever the allocator does
    measure(lambda: (torch.mm(a, b, out=out),), group="reference", kind="reference", phase="mm",
            case=f"torch.mm {MM_SIZE}x{MM_SIZE} float32", impl="torch", flops=2 * MM_SIZE**3)


def test_copy_bandwidth(measure: Measure, device: torch.device) -> None:
    shape = max(seed_pool_shapes(), key=lambda pool: math.prod(pool.input_shape))
    source = torch.randn(shape.input_shape, device=device)
    target = torch.empty_like(source)
    measure(lambda: (target.copy_(source),), group="reference", kind="reference", phase="copy",
            case=f"copy {shape.name} input", impl="torch", bytes=2 * FLOAT_BYTES * source.numel())
