"""The seed CNNs of the course material and the standard architectures, buildable
with PyTorch's or cnnext's layers.

Every registered model (``MODELS``: the ``SEEDS`` and the ``STANDARD`` ones set up
for 1-channel MNIST images) maps a batch (N, C, H, W) float32 to scores (N, 10)
meant for ``F.cross_entropy``: logits, except ``cnn_pad`` which ends in
log-softmax as its seed does (cross-entropy of log-probabilities equals the seed's
NLL loss, since log-softmax is idempotent). ``build_model(name, layers=...)``
gives identical initial weights for ``layers="torch"`` and ``layers="cnnext"``
from the same seed: the model is always built with PyTorch's layers, then
converted with ``cnnext.convert``. ``resnet18``, ``resnet18_cifar``, ``vgg11``
and ``mobilenet_v2`` build the standard architectures at any size the same way,
with torchvision's module names and parameter shapes (cnnext/architectures.py).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

import cnnext

from .architectures import VGG, MobileNetV2, ResNet

__all__ = [
    "ModelSpec", "MODELS", "SEEDS", "STANDARD", "LAYERS", "ALGOS", "OPTIMIZERS", "FITS", "build_model",
    "make_optimizer", "resnet18", "resnet18_cifar", "vgg11", "mobilenet_v2",
]

LAYERS = ("cnnext", "torch")
ALGOS = ("auto", "direct", "im2col")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
FITS = ("pad", "resize")
_DEFAULT_LR = {"adam": 1e-3, "rmsprop": 1e-3, "sgd": 1e-2}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its input (in_channels x image_size x image_size) and how a
    28x28 image is fitted to it (``fit``: "pad" with the background, or bilinear
    "resize"), training defaults (batch size, optimizer name, learning rate) and a
    ``build()`` returning a fresh ``nn.Module`` with PyTorch's layers."""

    name: str
    in_channels: int
    image_size: int
    batch_size: int
    optimizer: str
    lr: float
    build: Callable[[], nn.Module]
    fit: str = "pad"


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


def _build(make: Callable[[], nn.Module], layers: str, algo: str) -> nn.Module:
    """``make()`` (PyTorch's layers) as asked: itself, or converted in place to cnnext's
    layers with ``algo``; both choices are checked before anything is built."""
    _check_choice("layers", layers, LAYERS)
    _check_choice("algo", algo, ALGOS)
    model = make()
    return cnnext.convert(model, algo=algo, inplace=True) if layers == "cnnext" else model


def resnet18(num_classes: int = 1000, in_channels: int = 3, *, layers: str = "cnnext",
             algo: str = "auto") -> nn.Module:
    """ResNet-18 with the ImageNet stem (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2
    max-pool with padding 1), laid out as torchvision's ``resnet18``: its state_dict
    loads (for ``in_channels=3``). Input (N, in_channels, H, W), H and W >= 1 (224 is
    ImageNet's; the plane shrinks 32x before the global average pool); output
    (N, num_classes) logits. ``layers="cnnext"`` (default) converts every conv and
    pool to cnnext's with ``algo``; ``layers="torch"`` keeps PyTorch's. Weights are
    drawn from the global RNG. Raises ValueError for an unknown layers or algo."""
    return _build(lambda: ResNet(num_classes, in_channels), layers, algo)


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3, *, layers: str = "cnnext",
                   algo: str = "auto") -> nn.Module:
    """ResNet-18 for 32x32 images: as :func:`resnet18`, but the stem is a 3x3 stride-1
    conv (``conv1`` weight 64 x in_channels x 3 x 3) with no max-pool, so the plane
    shrinks 8x (32x32 -> 4x4 before the global average pool). Other state_dict
    entries are torchvision's ``resnet18``'s."""
    return _build(lambda: ResNet(num_classes, in_channels, cifar_stem=True), layers, algo)


def vgg11(num_classes: int = 1000, in_channels: int = 3, *, batch_norm: bool = False,
          layers: str = "cnnext", algo: str = "auto") -> nn.Module:
    """VGG-11 (configuration A) laid out as torchvision's ``vgg11`` (``batch_norm=True``:
    ``vgg11_bn``): ``features``, ``avgpool`` (adaptive, to 7x7), ``classifier`` (about
    123M parameters). Input (N, in_channels, H, W) with H, W >= 32 (five 2x2
    max-pools); output (N, num_classes). ``layers`` and ``algo`` as for :func:`resnet18`."""
    return _build(lambda: VGG(num_classes, in_channels, batch_norm=batch_norm), layers, algo)


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, *, layers: str = "cnnext",
                 algo: str = "auto") -> nn.Module:
    """MobileNetV2 (width 1.0) laid out as torchvision's ``mobilenet_v2``: ``features``
    (inverted residuals with depthwise 3x3 convs and ReLU6; the plane shrinks 32x),
    ``avgpool`` (a module where torchvision calls the function; no state),
    ``classifier``. Output (N, num_classes). ``layers`` and ``algo`` as for :func:`resnet18`."""
    return _build(lambda: MobileNetV2(num_classes, in_channels), layers, algo)


# Batch sizes and optimizers as in the seeds; cifar_bn's seed gives none, so Adam 1e-3, batch 64.
_SEED_SPECS = (
    ModelSpec("lenet", 1, 28, 150, "adam", 1e-3, _lenet),
    ModelSpec("cnn_pad", 1, 28, 64, "adam", 1e-3, _cnn_pad),
    ModelSpec("cnn_small", 1, 28, 32, "rmsprop", 1e-3, _cnn_small),
    ModelSpec("cifar_bn", 3, 32, 64, "adam", 1e-3, _cifar_bn),
)
# The standard architectures on 1-channel MNIST / Fashion-MNIST, 10 classes. The CIFAR
# variant takes the image padded to 32x32, as CIFAR's; the ImageNet-stem ones take it
# resized to 64x64, not 224x224: their planes shrink 32x (2x2 before the pool), and an
# epoch over the embedded 8,000 images costs ~12x less than at 224 (minutes, not an
# hour, on 2 cores). Adam 1e-3 suits the BatchNorm models; VGG-11 has no BatchNorm
# and 123M classifier weights, so Adam 1e-4.
_STANDARD_SPECS = (
    ModelSpec("resnet18_cifar", 1, 32, 64, "adam", 1e-3,
              functools.partial(resnet18_cifar, 10, 1, layers="torch")),
    ModelSpec("resnet18", 1, 64, 64, "adam", 1e-3, functools.partial(resnet18, 10, 1, layers="torch"), "resize"),
    ModelSpec("vgg11", 1, 64, 64, "adam", 1e-4, functools.partial(vgg11, 10, 1, layers="torch"), "resize"),
    ModelSpec("mobilenet_v2", 1, 64, 64, "adam", 1e-3,
              functools.partial(mobilenet_v2, 10, 1, layers="torch"), "resize"),
)
SEEDS: tuple[str, ...] = tuple(spec.name for spec in _SEED_SPECS)
"""The seed CNNs of the course material."""
STANDARD: tuple[str, ...] = tuple(spec.name for spec in _STANDARD_SPECS)
"""The standard architectures, registered for MNIST-sized input."""
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (*_SEED_SPECS, *_STANDARD_SPECS)}


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
