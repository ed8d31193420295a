"""ONNX: torch.onnx.export(dynamo=True) with cnnext.onnx's translations gives a standard ONNX graph (Conv, MaxPool)
that onnxruntime runs with PyTorch's outputs, max-pool indices included."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnext
from cnnext.models import build_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


class Geometry(nn.Module):
    """Groups, dilation, asymmetric "same" padding, a strided conv without bias, max-pool padding, dilation and
    ceil_mode, and max-pool indices as an output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, (3, 4), padding="same", dilation=(2, 1), groups=2)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, return_indices=True)
        self.pool2 = nn.MaxPool2d((2, 3), stride=(2, 1), padding=(1, 1), dilation=(2, 1), ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=(2, 1), padding=(0, 2), dilation=(1, 2), bias=False)

    def forward(self, x):
        y, indices = self.pool1(self.conv1(x))
        return self.conv2(self.pool2(y)), indices


def _export(model: nn.Module, x: torch.Tensor, **kwargs):
    return torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                             custom_translation_table=cnnext.onnx.translation_table(), **kwargs)


def _run(program, *inputs: torch.Tensor) -> list[torch.Tensor]:
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(out) for out in session.run(None, feeds)]


def _ops(program) -> list[tuple[str, str, int]]:
    """(domain, op type, number of outputs) of every node of the graph."""
    return [(node.domain, node.op_type, len(node.output)) for node in program.model_proto.graph.node]


@pytest.mark.parametrize("name", ["lenet", "cnn_pad", "cnn_small", "cifar_bn", "lenet fused"])
def test_seed_model_runs_in_onnxruntime(name):
    """Standard ops only (cnnext's become Conv / MaxPool; the values-only max-pool keeps one output), and
    onnxruntime gives PyTorch's outputs. "fused" is the model after cnnext.fuse."""
    name, *fused = name.split()
    model = build_model(name).eval()
    if fused:
        model = cnnext.fuse(model)
    channels, size = (3, 32) if name == "cifar_bn" else (1, 28)
    x = torch.randn(3, channels, size, size)
    program = _export(model, x)
    ops = _ops(program)
    assert all(domain == "" for domain, _, _ in ops)
    convs = [m for m in model.modules() if isinstance(m, cnnext.Conv2d)]
    pools = [m for m in model.modules() if isinstance(m, cnnext.MaxPool2d)]
    assert [op for op in ops if op[1] == "Conv"] == [("", "Conv", 1)] * len(convs)
    assert [op for op in ops if op[1] == "MaxPool"] == [("", "MaxPool", 1)] * len(pools)
    (got,) = _run(program, x)
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-5)


def test_geometry_and_indices_with_a_dynamic_batch():
    """Every geometry argument and PyTorch's per-plane max-pool indices, on batch sizes other than the exported
    one."""
    torch.manual_seed(0)
    model = cnnext.convert(Geometry()).eval()
    x = torch.randn(2, 4, 11, 13)
    program = _export(model, x, dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert ("", "MaxPool", 2) in _ops(program)
    for batch in (1, 5):
        x = torch.randn(batch, 4, 11, 13)
        got, got_indices = _run(program, x)
        with torch.no_grad():
            want, want_indices = model(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert torch.equal(got_indices, want_indices)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    (5, 2, 2, 1, 1),  # ceil_mode's last window would start in the right padding: PyTorch drops it
    (7, 3, 2, 1, 2),
    (6, 3, 3, 0, 1),
])
def test_max_pool2d_ceil_mode_output_size(size, kernel, stride, padding, dilation):
    pool = cnnext.MaxPool2d(kernel, stride, padding, dilation, return_indices=True, ceil_mode=True).eval()
    x = torch.randn(2, 3, size, size + 1)
    got, got_indices = _run(_export(pool, x), x)
    want, want_indices = pool(x)
    assert torch.equal(got, want) and torch.equal(got_indices, want_indices)


def test_export_helper_adds_the_table(tmp_path):
    model = cnnext.convert(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2))).eval()
    x = torch.randn(1, 2, 6, 6)
    program = cnnext.onnx.export(model, (x,), verbose=False)
    (got,) = _run(program, x)
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="dynamo=True"):
        cnnext.onnx.export(model, (x,), str(tmp_path / "m.onnx"), dynamo=False)


@pytest.mark.parametrize("pool", [
    cnnext.AvgPool2d(2),
    cnnext.AvgPool2d(3, stride=2, padding=1),
    cnnext.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    cnnext.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
    cnnext.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    cnnext.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 0), divisor_override=4),
    cnnext.AdaptiveAvgPool2d(1),
    cnnext.AdaptiveAvgPool2d((3, 2)),
], ids=repr)
def test_average_pools_run_in_onnxruntime(pool):
    x = torch.randn(2, 3, 9, 8)
    program = _export(pool.eval(), x)
    assert {op for _, op, _ in _ops(program)} <= {"AveragePool", "GlobalAveragePool", "Mul", "CastLike", "Constant"}
    (got,) = _run(program, x)
    torch.testing.assert_close(got, pool(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool", [cnnext.AdaptiveAvgPool2d((4, 3)), cnnext.AvgPool2d(3, 2, ceil_mode=True, divisor_override=5)],
                         ids=repr)
def test_average_pools_without_an_onnx_form_are_refused(pool):
    with pytest.raises(Exception, match="ONNX"):
        _export(pool.eval(), torch.randn(1, 2, 9, 8))
