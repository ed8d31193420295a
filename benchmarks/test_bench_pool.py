"""max_pool2d forward and forward+backward on every seed pooling layer and each distinct max-pool of
the standard architectures, torch vs cnnext."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import Measure
from benchmarks.impls import POOL_IMPLS
from benchmarks.ops import POOL_RTOL, assert_matches, pool_call, pool_problem
from benchmarks.shapes import PoolShape, pool_shapes


@pytest.mark.parametrize("impl", POOL_IMPLS)
@pytest.mark.parametrize("shape", pool_shapes(), ids=lambda shape: shape.name)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_pool(measure: Measure, device: torch.device, smoke: bool, backward: bool, shape: PoolShape,
              impl: str) -> None:
    shape = shape.for_smoke() if smoke else shape
    problem = pool_problem(shape, device, backward)
    call = pool_call(problem, impl)
    if impl != "torch":
        assert_matches(call(), pool_call(problem, "torch")(), POOL_RTOL)
    phase = "fwd+bwd" if backward else "fwd"
    measure(call, group=f"pool {phase} {shape}", kind="pool", phase=phase, case=str(shape),
            impl=impl, bytes=shape.bytes_moved(backward))
