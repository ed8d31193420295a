"""One full training step (forward, loss, backward, optimizer step) per seed model,
torch layers vs the same model after ``cnnext.convert(model, algo=...)``, and after
``cnnext.fuse(cnnext.convert(model))``; and per standard architecture (SGD), torch
layers vs ``cnnext.convert(model)``, in NCHW and in channels_last memory format."""

from __future__ import annotations

import pytest
import torch

from benchmarks.conftest import Measure
from benchmarks.impls import ARCH_TRAIN_IMPLS, CHANNELS_LAST, TRAIN_IMPLS
from benchmarks.ops import (
    TRAIN_RTOL, architecture_batch, architecture_model, assert_matches, check_architecture, loss_and_grads,
    torch_layers_left, train_batch, train_model, train_step_call,
)
from benchmarks.shapes import ARCHITECTURES, TRAIN_MODELS, Architecture, architecture_conv_flops


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


@pytest.mark.parametrize("impl", ARCH_TRAIN_IMPLS)
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda arch: arch.name)
def test_architecture_train_step(measure: Measure, device: torch.device, smoke: bool, arch: Architecture,
                                 impl: str) -> None:
    batch = arch.batch_for(smoke)
    images, labels = architecture_batch(arch, impl, device, batch)
    model = architecture_model(arch, impl, device)
    if impl.startswith("cnnext"):
        check_architecture(arch, model, impl)
    case = arch.case(smoke)
    measure(train_step_call("sgd", model, images, labels), group=f"train {case}", kind="train-arch",
            phase="step", case=case, impl=impl, flops=architecture_conv_flops(arch, smoke),
            layout="channels_last" if impl.endswith(CHANNELS_LAST) else "nchw")
