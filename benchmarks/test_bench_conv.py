"""conv2d forward and forward+backward on every seed conv layer and each distinct conv layer of the
standard architectures, torch vs each cnnext algo."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import Measure
from benchmarks.impls import CONV_IMPLS
from benchmarks.ops import CONV_RTOL, assert_matches, conv_call, conv_problem
from benchmarks.shapes import ConvShape, conv_shapes


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("shape", conv_shapes(), ids=lambda shape: shape.name)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_conv(measure: Measure, device: torch.device, smoke: bool, backward: bool, shape: ConvShape,
              impl: str) -> None:
    shape = shape.for_smoke() if smoke else shape
    problem = conv_problem(shape, device, backward)
    call = conv_call(problem, impl)
    if impl != "torch":
        assert_matches(call(), conv_call(problem, "torch")(), CONV_RTOL)
    phase = "fwd+bwd" if backward else "fwd"
    measure(call, group=f"conv {phase} {shape}", kind="conv", phase=phase, case=str(shape),
            impl=impl, flops=shape.flops(backward))
