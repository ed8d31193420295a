"""avg_pool2d (2x2 on the seed activations) and cifar_bn's adaptive_avg_pool2d, forward and
forward+backward, torch vs cnnext."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import Measure
from benchmarks.impls import POOL_IMPLS
from benchmarks.ops import POOL_RTOL, assert_matches, avg_pool_call, avg_pool_problem
from benchmarks.shapes import AvgPoolShape, avg_pool_shapes


@pytest.mark.parametrize("impl", POOL_IMPLS)
@pytest.mark.parametrize("shape", avg_pool_shapes(), ids=lambda shape: shape.name)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_avg_pool(measure: Measure, device: torch.device, backward: bool, shape: AvgPoolShape, impl: str) -> None:
    problem = avg_pool_problem(shape, device, backward)
    call = avg_pool_call(problem, impl)
    if impl != "torch":
        assert_matches(call(), avg_pool_call(problem, "torch")(), POOL_RTOL)
    phase = "fwd+bwd" if backward else "fwd"
    measure(call, group=f"avgpool {phase} {shape}", kind="avgpool", phase=phase, case=str(shape),
            impl=impl, bytes=shape.bytes_moved(backward))
