"""torch.export and torch.compile of converted models: gradients through an exported program, dynamic
batch and spatial sizes without recompiles or specialization, the same number of graphs as torch's layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import cnnext
from cnnext.models import build_model


def _small_net() -> nn.Module:
    """A seed-like net on small images (fast to compile): conv, ReLU, pool (ceil_mode), conv, pool, linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(5),
    )


def _pair():
    torch_net = _small_net()
    torch_net(torch.randn(1, 1, 13, 13))  # materialize the lazy layer
    return cnnext.convert(torch_net), torch_net


def _param_grads(model):
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("dynamic_batch", [False, True], ids=["static", "dynamic_batch"])
def test_export_then_backward_through_module(dynamic_batch):
    model = build_model("lenet").eval()
    reference = build_model("lenet").eval()
    x = torch.randn(4, 1, 28, 28)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=2, max=64)},) if dynamic_batch else None
    program = torch.export.export(model, (x,), dynamic_shapes=dynamic_shapes)
    targets = {str(node.target) for node in program.graph.nodes}
    assert {"cnnext.conv2d.default", "cnnext.max_pool2d.default"} <= targets

    exported = program.module()
    inputs = torch.randn(7 if dynamic_batch else 4, 1, 28, 28)
    x_exported, x_reference = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    exported(x_exported).square().sum().backward()
    reference(x_reference).square().sum().backward()
    grads = _param_grads(exported)
    assert all(g is not None for g in grads.values()), [k for k, g in grads.items() if g is None]
    for name, g in _param_grads(reference).items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_exported.grad, x_reference.grad, rtol=1e-4, atol=1e-5)


def test_export_dynamic_height_and_width():
    model, reference = _pair()
    # From 13 up every layer's output is at least 2 x 2 (torch specializes size-1 dimensions, for its own
    # layers too). The linear layer fixes the flattened size: H and W are dynamic up to it.
    dims = {0: torch.export.Dim("n", min=1, max=32), 2: torch.export.Dim("h", min=13, max=40),
            3: torch.export.Dim("w", min=13, max=40)}
    features = nn.Sequential(*list(model)[:-2])
    program = torch.export.export(features, (torch.randn(2, 1, 13, 13),), dynamic_shapes=(dims,))
    for size in [(3, 1, 13, 17), (1, 1, 22, 13), (5, 1, 31, 40)]:
        x = torch.randn(size)
        torch.testing.assert_close(program.module()(x), nn.Sequential(*list(reference)[:-2])(x))


def _count_graphs(model: nn.Module, sizes, mark_dynamic=()) -> int:
    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(lambda x: model(x).square().sum(), backend="aot_eager")
    for n, h, w in sizes:
        x = torch.randn(n, 1, h, w)
        if mark_dynamic:
            torch._dynamo.mark_dynamic(x, mark_dynamic)
        step(x).backward()
    return counters["stats"]["unique_graphs"]


def test_compile_training_over_batch_sizes_same_graphs_as_torch():
    model, reference = _pair()
    sizes = [(n, 13, 13) for n in range(20, 28)]
    ours, theirs = _count_graphs(model, sizes), _count_graphs(reference, sizes)
    assert ours == theirs
    assert ours <= 2  # one static graph, then one with a dynamic batch: no recompile per batch size


def test_compile_mark_dynamic_batch_height_width():
    model, _ = _pair()
    features = nn.Sequential(*list(model)[:-2])
    sizes = [(2, 13, 13), (3, 16, 21), (5, 24, 18)]
    assert _count_graphs(features, sizes, mark_dynamic=(0, 2, 3)) == 1


def test_compiled_gradients_match_eager():
    model, _ = _pair()
    x = torch.randn(6, 1, 13, 13)
    model(x).square().sum().backward()
    eager = {k: g.clone() for k, g in _param_grads(model).items()}
    model.zero_grad()
    torch._dynamo.reset()
    torch.compile(lambda x: model(x).square().sum(), backend="aot_eager")(x).backward()
    for name, g in _param_grads(model).items():
        torch.testing.assert_close(g, eager[name], rtol=1e-5, atol=1e-6)
