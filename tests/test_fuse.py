"""cnnext.fuse and ReLUMaxPool2d: ReLU -> max-pool chains rewritten to pool first, with identical results
(also under torch.compile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cnnext
from cnnext.models import MODELS, SEEDS, build_model

# Which layers fuse() turns into ReLUMaxPool2d in each seed model (cnn_pad pools before its ReLUs).
SEED_FUSED = {"lenet": {"pool1", "pool2"}, "cnn_pad": set(), "cnn_small": {"pool"}, "cifar_bn": {"pool1", "pool2"}}


def randn(rng: np.random.Generator, *shape: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype=dtype, device=device)


def fused_layers(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, cnnext.ReLUMaxPool2d)}


def outputs_and_grads(model: nn.Module, x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """The output, the input gradient and every parameter gradient, with dropout masks drawn under ``seed``."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [out.detach(), x.grad, *(p.grad for p in model.parameters())]


def assert_identical(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", SEEDS)
@pytest.mark.parametrize("train", [True, False])
def test_seed_models_fuse_with_identical_results(rng, name, train):
    spec = MODELS[name]
    model = build_model(name, seed=int(rng.integers(1 << 30))).train(train)
    fused = cnnext.fuse(model)
    assert fused_layers(fused) == SEED_FUSED[name]
    assert fused_layers(model) == set()  # the original is not changed
    # Same parameters and buffers: same tensors under the same state_dict keys.
    assert list(fused.state_dict()) == list(model.state_dict())
    assert all(a is b for a, b in zip(fused.parameters(), model.parameters(), strict=True))
    x = randn(rng, 6, spec.in_channels, spec.image_size, spec.image_size)
    assert_identical(outputs_and_grads(fused, x), outputs_and_grads(model, x))


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (2, 2, 0, 1, False),
    (2, 1, 0, 1, False),  # overlapping windows: several windows add into one input gradient
    (3, 2, 1, 1, True),
    ((3, 2), (1, 3), (1, 0), (2, 1), False),
    (3, 3, 1, 2, True),
])
def test_relu_max_pool_equals_pool_of_relu(rng, kernel, stride, padding, dilation, ceil_mode):
    x = randn(rng, 3, 4, 11, 13)
    x[0, 0, :4, :4] = -torch.rand(4, 4) - 0.1  # windows whose maximum is negative
    x[0, 1, 2:6, 2:6] = 0.0  # ... and zero
    x[1, 2, 3, 5] = float("nan")
    x[2, 3, 4, 4:8] = x[2, 3, 4, 4]  # ties
    pool = cnnext.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    fused = cnnext.ReLUMaxPool2d(pool)
    x_ref = x.clone().requires_grad_()
    x_ext = x.clone().requires_grad_()
    ref = F.max_pool2d(F.relu(x_ref), kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    out = fused(x_ext)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    gy = randn(rng, *ref.shape)
    ref.backward(gy)
    out.backward(gy)
    torch.testing.assert_close(x_ext.grad, x_ref.grad, rtol=0, atol=0)


def test_relu_max_pool_gradcheck(rng):
    # Values kept away from 0, where ReLU has no derivative.
    x = randn(rng, 2, 3, 7, 8, dtype=torch.float64)
    x = (x + 0.2 * x.sign()).requires_grad_()
    fused = cnnext.ReLUMaxPool2d(cnnext.MaxPool2d(3, 2, 1))
    assert torch.autograd.gradcheck(fused, (x,))


def test_relu_max_pool_checks_its_pool():
    with pytest.raises(TypeError, match="pool"):
        cnnext.ReLUMaxPool2d(nn.MaxPool2d(2))
    with pytest.raises(ValueError, match="return_indices"):
        cnnext.ReLUMaxPool2d(cnnext.MaxPool2d(2, return_indices=True))


class Functional(nn.Module):
    """A conv net written with functional ReLUs in every form fuse() knows, and one shared pool layer."""

    def __init__(self, relu) -> None:
        super().__init__()
        self.relu = relu
        self.conv1 = cnnext.Conv2d(2, 4, 3)
        self.conv2 = cnnext.Conv2d(4, 4, 3, padding=1)
        self.pool = cnnext.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        return self.pool(self.relu(self.conv2(x)))


@pytest.mark.parametrize("relu", [
    F.relu, torch.relu, torch.relu_, F.relu_, lambda x: F.relu(x, inplace=True), lambda x: F.relu(x, True),
    lambda x: x.relu(), lambda x: x.relu_(),
], ids=["F.relu", "torch.relu", "torch.relu_", "F.relu_", "F.relu-inplace-kw", "F.relu-inplace-arg",
        "Tensor.relu", "Tensor.relu_"])
def test_functional_relus_and_a_shared_pool_fuse(rng, relu):
    model = Functional(relu)
    fused = cnnext.fuse(model)
    # The pool layer serves two chains: each gets its own fused layer and the pool itself goes.
    assert fused_layers(fused) == {"pool_relu", "pool_relu1"}
    assert not hasattr(fused, "pool")
    x = randn(rng, 3, 2, 14, 12)
    assert_identical(outputs_and_grads(fused, x), outputs_and_grads(model, x))


class Unfusable(nn.Module):
    """ReLU -> pool chains fuse() must leave alone, and one it may fuse."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.pool_indices = cnnext.MaxPool2d(2, return_indices=True)
        self.relu_inplace = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(x)
        shared = self.pool(a) + a[..., ::2, ::2]  # the ReLU's output has a second user
        y = x * 2
        inplace = self.pool(self.relu_inplace(y)) + y[..., ::2, ::2]  # in place: its input has a second user
        with_indices = self.pool_indices(F.relu(x))[0]
        return shared + inplace + with_indices + self.pool(F.relu(x * 3))  # only this one fuses


def test_unfusable_chains_are_left_alone(rng):
    model = Unfusable()
    fused = cnnext.fuse(model)
    assert fused_layers(fused) == {"pool_relu"}
    assert isinstance(fused.pool, nn.MaxPool2d) and isinstance(fused.pool_relu.pool, cnnext.MaxPool2d)
    x = randn(rng, 2, 3, 8, 10)
    assert_identical(outputs_and_grads(fused, x), outputs_and_grads(model, x))


def test_torch_layers_fuse_into_cnnext_pooling(rng):
    model = build_model("lenet", layers="torch", seed=0)
    fused = cnnext.fuse(model)
    assert fused_layers(fused) == {"pool1", "pool2"}
    assert type(fused.conv1) is nn.Conv2d  # only the chains change: convert() is a separate step
    x = randn(rng, 4, 1, 28, 28)
    model.eval(), fused.eval()
    assert_identical(outputs_and_grads(fused, x), outputs_and_grads(model, x))


def test_an_optimizer_of_the_original_trains_the_fused_model(rng):
    model = build_model("lenet", seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fused = cnnext.fuse(model)
    before = model.conv1.weight.detach().clone()
    outputs_and_grads(fused, randn(rng, 4, 1, 28, 28))
    optimizer.step()
    assert not torch.equal(model.conv1.weight, before)
    assert fused.conv1.weight is model.conv1.weight


def test_fuse_rejects_what_is_not_a_module():
    with pytest.raises(TypeError, match="model"):
        cnnext.fuse(lambda x: x)


def test_fused_model_compiles(rng):
    model = cnnext.fuse(build_model("cifar_bn", seed=0)).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = randn(rng, 3, 3, 32, 32).requires_grad_()
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(grad, expected_grad)
