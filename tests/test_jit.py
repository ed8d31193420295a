"""TorchScript: torch.jit.trace records cnnext's ops, the traced module saves and loads in a fresh process (after
`import cnnext`) with the same outputs; torch.jit.script refuses with a message that points to trace."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnext
from cnnext.models import SEEDS, build_model

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit itself is deprecated upstream


class Geometry(nn.Module):
    """Groups, dilation, asymmetric "same" padding, a strided conv without bias, ceil_mode and max-pool padding,
    and max-pool indices as an output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, (3, 4), padding="same", dilation=(2, 1), groups=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, return_indices=True)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=(2, 1), padding=(0, 2), bias=False)

    def forward(self, x):
        y, indices = self.pool(self.conv1(x))
        return self.conv2(y), indices


def _inputs(name: str, batch: int) -> torch.Tensor:
    channels, size = (3, 32) if name == "cifar_bn" else (1, 28)
    return torch.randn(batch, channels, size, size)


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    models = {name: (build_model(name).eval(), _inputs(name, 3)) for name in SEEDS}
    torch.manual_seed(0)
    models["geometry"] = (cnnext.convert(Geometry()).eval(), torch.randn(2, 4, 11, 13))
    return models


def test_trace_records_the_ops():
    model, x = _models()["geometry"]
    graph = torch.jit.trace(model, (x,)).inlined_graph
    kinds = [node.kind() for node in graph.nodes()]
    assert kinds.count("cnnext::conv2d") == 2 and kinds.count("cnnext::max_pool2d") == 1
    assert "prim::PythonOp" not in kinds


def test_trace_save_load_in_a_fresh_process(tmp_path):
    """Each model is traced on one batch size, saved, then loaded by a new interpreter that has only imported
    cnnext; it reproduces the eager outputs on the traced input and on another batch size."""
    cases = {}
    for name, (model, x) in _models().items():
        traced = torch.jit.trace(model, (x,))
        path = tmp_path / f"{name}.pt"
        torch.jit.save(traced, str(path))
        other = torch.randn(5, *x.shape[1:])
        with torch.no_grad():
            cases[name] = (str(path), [(x, model(x)), (other, model(other))])
    torch.save(cases, tmp_path / "cases.pt")
    script = (
        "import sys, torch, cnnext\n"
        "cases = torch.load(sys.argv[1], weights_only=False)\n"
        "for name, (path, runs) in cases.items():\n"
        "    module = torch.jit.load(path)\n"
        "    for x, want in runs:\n"
        "        got = module(x)\n"
        "        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)\n"
        "print('ok', len(cases))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "cases.pt")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ok", str(len(cases))]


def test_traced_module_trains():
    """The traced graph calls the ops, which carry their own autograd: the same gradients as eager."""
    model, x = _models()["geometry"]
    traced = torch.jit.trace(model, (x,))
    x = torch.randn(3, *x.shape[1:], requires_grad=True)
    grads = []
    for module in (model, traced):
        out, _ = module(x)
        grads.append(torch.autograd.grad(out.square().sum(), (x, *model.parameters())))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["lenet", "fused"])
def test_script_says_to_trace(name):
    model = build_model("lenet")
    if name == "fused":
        model = cnnext.fuse(model)
    with pytest.raises(RuntimeError, match=r"torch\.jit\.script cannot compile cnnext\.(Conv2d|MaxPool2d).*torch\.jit\.trace"):
        torch.jit.script(model)
