"""The seed CNNs of the course material, buildable with PyTorch's or cnnext's layers.

Every model maps a batch (N, C, H, W) float32 to scores (N, 10) meant for
``F.cross_entropy``: logits, except ``cnn_pad`` which ends in log-softmax as
its seed does (cross-entropy of log-probabilities equals the seed's NLL
loss, since log-softmax is idempotent). ``build_model(name, layers=...)``
gives identical initial weights for ``layers="torch"`` and
``layers="cnnext"`` from the same seed: the model is always built with
PyTorch's layers, then converted with ``cnnext.convert``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

import cnnext

__all__ = ["ModelSpec", "MODELS", "LAYERS", "ALGOS", "OPTIMIZERS", "build_model", "make_optimizer"]

LAYERS = ("cnnext", "torch")
ALGOS = ("auto", "direct", "im2col")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
_DEFAULT_LR = {"adam": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}


@dataclass(frozen=True)
class ModelSpec:
    """A seed model: its input (in_channels x image_size x image_size), training
    defaults (batch size, optimizer name, learning rate) and a ``build()``
    returning a fresh ``nn.Module`` with PyTorch's layers."""

    name: str
    in_channels: int
    image_size: int
    batch_size: int
    optimizer: str
    lr: float
    build: Callable[[], nn.Module]


def _lenet() -> nn.Module:
    """The "small convnet": 3 valid 3x3 convs, 2 max-pools, dense 576-64-10 with dropout."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
        ("conv2", nn.Conv2d(32, 64, 3)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2, 2)),
        ("conv3", nn.Conv2d(64, 64, 3)), ("relu3", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(576, 64)), ("relu4", nn.ReLU()), ("dropout", nn.Dropout(0.5)),
        ("fc2", nn.Linear(64, 10)),
    ]))


def _cnn_pad() -> nn.Module:
    """Two padded 3x3 convs, each followed by max-pool 2 then ReLU; dense 3136-128-10; log-softmax."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 32, 3, padding=1)), ("pool1", nn.MaxPool2d(2)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(32, 64, 3, padding=1)), ("pool2", nn.MaxPool2d(2)), ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(3136, 128)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(128, 10)), ("log_softmax", nn.LogSoftmax(dim=1)),
    ]))


def _cnn_small() -> nn.Module:
    """Two padded 3x3 convs with 16 channels, max-pool 2 stride 1, dense 11664-64-10 with dropout."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 16, 3, padding=1)), ("relu2", nn.ReLU()),
        ("pool", nn.MaxPool2d(2, stride=1)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * 27 * 27, 64)), ("relu3", nn.ReLU()), ("dropout", nn.Dropout(0.5)),
        ("fc2", nn.Linear(64, 10)),
    ]))


def _cifar_bn() -> nn.Module:
    """3x32x32 input: two (conv 3x3, BatchNorm, ReLU, max-pool 2) blocks, global avg-pool, dense 64-10."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 32, 3)), ("bn1", nn.BatchNorm2d(32)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 3)), ("bn2", nn.BatchNorm2d(64)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(64, 10)),
    ]))


# Batch sizes and optimizers as in the seeds; cifar_bn's seed gives none, so Adam 1e-3, batch 64.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("lenet", 1, 28, 150, "adam", 1e-3, _lenet),
        ModelSpec("cnn_pad", 1, 28, 64, "adam", 1e-3, _cnn_pad),
        ModelSpec("cnn_small", 1, 28, 32, "rmsprop", 1e-3, _cnn_small),
        ModelSpec("cifar_bn", 3, 32, 64, "adam", 1e-3, _cifar_bn),
    )
}


def _check_choice(what: str, value: str, choices: Iterable[str]) -> None:
    """Raise ValueError naming ``what`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")


def build_model(name: str, *, layers: str = "cnnext", algo: str = "auto", seed: int | None = 0) -> nn.Module:
    """Build seed model ``name`` with PyTorch's (``layers="torch"``) or cnnext's layers.

    With an int ``seed`` the weights are drawn under ``torch.manual_seed(seed)``
    inside a forked RNG (the global RNG is left untouched), so both layer
    kinds start from identical weights; ``seed=None`` draws from the global
    RNG. ``algo`` ("auto", "direct", "im2col") is passed to ``cnnext.convert``
    and validated for both layer kinds. Raises ValueError for an unknown
    name, layers or algo.
    """
    _check_choice("model", name, MODELS)
    _check_choice("layers", layers, LAYERS)
    _check_choice("algo", algo, ALGOS)
    if seed is None:
        model = MODELS[name].build()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MODELS[name].build()
    if layers == "cnnext":
        model = cnnext.convert(model, algo=algo, inplace=True)
    return model


def make_optimizer(
    name_or_spec: str | ModelSpec,
    params: Iterable[torch.nn.Parameter],
    lr: float | None = None,
) -> torch.optim.Optimizer:
    """Return the optimizer for ``params``.

    ``name_or_spec`` is a ModelSpec or a model name (its seed optimizer and
    learning rate), or an optimizer name: "adam", "rmsprop" (PyTorch's
    defaults apart from lr) or "sgd" (momentum 0.9). ``lr`` overrides the
    learning rate (defaults: the spec's, else 1e-3 for adam and rmsprop,
    1e-2 for sgd). Raises ValueError for an unknown name.
    """
    if isinstance(name_or_spec, str) and name_or_spec in MODELS:
        name_or_spec = MODELS[name_or_spec]
    if isinstance(name_or_spec, ModelSpec):
        optimizer, lr = name_or_spec.optimizer, name_or_spec.lr if lr is None else lr
    else:
        _check_choice("optimizer (or model)", name_or_spec, OPTIMIZERS + tuple(MODELS))
        optimizer, lr = name_or_spec, _DEFAULT_LR[name_or_spec] if lr is None else lr
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)
