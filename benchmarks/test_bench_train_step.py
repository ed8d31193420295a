"""One full training step (forward, loss, backward, optimizer step) per seed model,
torch layers vs the same model after ``cnnext.convert(model, algo=...)``, and after
``cnnext.fuse(cnnext.convert(model))``."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import Measure
from benchmarks.impls import TRAIN_IMPLS
from benchmarks.ops import (
    TRAIN_RTOL, assert_matches, loss_and_grads, torch_layers_left, train_batch, train_model,
    train_step_call,
)
from benchmarks.shapes import TRAIN_MODELS


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_step(measure: Measure, device: torch.device, name: str, impl: str) -> None:
    images, labels = train_batch(name, device)
    model = train_model(name, impl, device)
    if impl != "torch":
        assert not torch_layers_left(model)
        reference = train_model(name, "torch", device)
        assert_matches(loss_and_grads(model, images, labels),
                       loss_and_grads(reference, images, labels), TRAIN_RTOL, common_scale=True)
    case = f"{name} N{len(images)}"
    measure(train_step_call(name, model, images, labels), group=f"train {case}", kind="train",
            phase="step", case=case, impl=impl)
