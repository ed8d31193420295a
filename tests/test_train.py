"""The training CLI end to end, in subprocesses: single process, --compare/--save/--plot, and DDP."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnext.data import MNIST
from cnnext.models import MODELS, build_model
from cnnext.train import Dist, adapt_input, evaluate, main

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], tmp_path: Path, *, launcher: list[str] | None = None, timeout: float = 240):
    """Run the CLI with ``args`` (offline: an empty data dir) and return the CompletedProcess."""
    cmd = (launcher or [sys.executable, "-m"]) + ["cnnext.train", "--data-dir", str(tmp_path / "data"), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def _test_accuracy(state_path: Path, name: str, limit_test: int) -> float:
    """Accuracy of the saved state_dict loaded into the layers="torch" model, on the CLI's test images."""
    model = build_model(name, layers="torch", seed=None)
    model.load_state_dict(torch.load(state_path, weights_only=True))
    test = MNIST(None, train=False)
    data = (test.images[:limit_test], test.labels[:limit_test])
    return evaluate(model, data, lambda x: adapt_input(x, MODELS[name], -MNIST.mean / MNIST.std),
                    Dist(0, 1, torch.device("cpu")))[1]


def test_cli_compare_save_plot(tmp_path):
    proc = run_cli(["--model", "cnn_pad", "--epochs", "2", "--limit-train", "640", "--limit-test", "500",
                    "--algo", "im2col", "--compare", "--save", "out/model.pt", "--plot", "curves.png"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "using the embedded real sample" in proc.stderr
    assert "cnn_pad on MNIST (embedded sample: 640 train / 500 test images)" in out
    for epoch in (1, 2):
        for label in ("cnnext(im2col)", "torch"):
            assert re.search(rf"epoch {epoch}/2 +{re.escape(label)}: train loss [\d.]+ +test loss [\d.]+ +test acc", out)
    for row in ("test accuracy", "final test loss", "final train loss", "time / epoch", "throughput", "speed ratio"):
        assert row in out
    # the saved cnnext weights load into the plain-torch model and score what the CLI printed
    printed = float(re.search(r"epoch 2/2 +cnnext\(im2col\):.*test acc ([\d.]+)%", out).group(1)) / 100
    assert abs(_test_accuracy(tmp_path / "out" / "model.pt", "cnn_pad", 500) - printed) <= 1 / 500
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # stderr is a pipe here, as in a CI log: no progress bar output, only the data note
    assert "img/s]" not in proc.stderr and "%|" not in proc.stderr


def test_cli_defaults_per_model(tmp_path):
    """cifar_bn (3x32x32) trains on MNIST through the input adapter, with its seed batch and optimizer; --fuse."""
    proc = run_cli(["--model", "cifar_bn", "--limit-train", "256", "--limit-test", "100", "--epochs", "1",
                    "--fuse"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "batch 64/process, adam lr 0.001" in proc.stdout and "input padded to 3x32x32" in proc.stdout
    assert re.search(r"epoch 1/1 +cnnext\(auto\+fuse\): train loss", proc.stdout)
    assert re.search(r"final: cnnext\(auto\+fuse\) test accuracy [\d.]+%", proc.stdout)


def test_cli_trains_resnet18_cifar(tmp_path):
    """One short epoch of the CIFAR-style ResNet-18 on the embedded MNIST sample, padded to 32x32."""
    proc = run_cli(["--model", "resnet18_cifar", "--epochs", "1", "--limit-train", "16", "--limit-test", "16",
                    "--batch-size", "8", "--compare"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "resnet18_cifar on MNIST (embedded sample: 16 train / 16 test images)" in out
    assert "batch 8/process, adam lr 0.001" in out and "input padded to 1x32x32" in out
    losses = [float(v) for v in re.findall(r"epoch 1/1 +(?:cnnext\(auto\)|torch): train loss ([\d.]+)", out)]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    # same weights, batches and float32 kernels: the two runs' mean losses agree closely
    assert abs(losses[0] - losses[1]) <= 1e-3 * losses[1]


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
    (["--epochs", "abc"], "argument --epochs: must be a positive integer, got 'abc'"),
    (["--lr", "nan"], "argument --lr: must be a positive number, got 'nan'"),
    (["--lr", "fast"], "argument --lr: must be a positive number, got 'fast'"),
    (["--model", "vgg"], "invalid choice: 'vgg'"),
    (["--ddp"], "--ddp needs torchrun"),
])
def test_cli_rejects_bad_options(args, message, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_messages_show_no_internal_names(capsys):
    with pytest.raises(SystemExit):
        main(["--epochs", "abc", "--threads", "x"])
    assert "_positive" not in capsys.readouterr().err


def test_cli_plot_without_matplotlib_fails_before_training(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails, as when not installed
    with pytest.raises(SystemExit) as info:
        main(["--plot", "curves.png", "--epochs", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--plot needs matplotlib" in err and "pip install matplotlib" in err


def test_ddp_two_cpu_processes(tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    proc = run_cli(["--ddp", "--model", "lenet", "--epochs", "2", "--limit-train", "600", "--limit-test", "400",
                    "--threads", "1", "--save", "ddp.pt"], tmp_path, launcher=launcher)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "2 process(es) x 1 thread(s)" in out
    assert len(re.findall(r"epoch 2/2 +cnnext\(auto\): train loss", out)) == 1  # only rank 0 prints
    printed = float(re.search(r"final: cnnext\(auto\) test accuracy ([\d.]+)%", out).group(1)) / 100
    assert abs(_test_accuracy(tmp_path / "ddp.pt", "lenet", 400) - printed) <= 1 / 400


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cli_on_cuda(tmp_path):
    proc = run_cli(["--device", "cuda", "--model", "cnn_pad", "--epochs", "1", "--limit-train", "1280",
                    "--limit-test", "500", "--compare", "--save", "cuda.pt"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "), cuda, 1 process(es)" in proc.stdout
    accuracies = [float(a) / 100 for a in re.findall(r"test acc ([\d.]+)%", proc.stdout)]
    assert len(accuracies) == 2 and abs(accuracies[0] - accuracies[1]) <= 0.02  # cnnext vs torch, same start
    assert abs(_test_accuracy(tmp_path / "cuda.pt", "cnn_pad", 500) - accuracies[0]) <= 2 / 500
