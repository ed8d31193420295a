"""The layer shapes the suite measures, derived from the model definitions.

Every ``nn.Conv2d`` and ``nn.MaxPool2d`` of the seed models is found by running
the model once on a single image with forward hooks; the recorded input sizes
and layer arguments are then put at the model's seed batch size. Two extra
convolutions show how cost grows with work: the 3-channel first layer of
``cifar_bn`` at batch 128 and a larger 64→128 3×3 layer on 56×56 at batch 32.

The standard architectures of issue 15 (``ARCHITECTURES``: ResNet-18 on 32×32 and
224×224, VGG-11's features on 64×64, MobileNetV2 on 224×224, 3 channels) are
traced the same way; each distinct conv and max-pool shape of a model is measured
once, named after its first layer, with the number of layers sharing it. The
smoke run (``--benchmark-disable``, every case once) takes these cases at batch
2 (``smoke_batch``) instead of 32 or 8.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn

from cnnext.architectures import vgg11_features
from cnnext.models import MODELS, build_model, mobilenet_v2, resnet18, resnet18_cifar

SEED_MODELS: tuple[str, ...] = ("lenet", "cnn_pad", "cnn_small")
"""Models whose every conv and pool layer is benchmarked, at their seed batch size."""

TRAIN_MODELS: tuple[str, ...] = (*SEED_MODELS, "cifar_bn")
"""Models whose full training step is benchmarked."""

FLOAT_BYTES = 4


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """One conv2d problem: input ``batch×in_channels×height×width`` and the layer arguments."""

    name: str
    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    image_input: bool = False
    """True for a model's first layer: its input is the image, which needs no gradient."""
    repeats: int = 1
    """How many layers of the model have this shape (the case stands for all of them)."""
    smoke_batch: int | None = None
    """Batch of the smoke run, for cases too big to run at full size there (None: the full batch)."""

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @property
    def output_shape(self) -> tuple[int, ...]:
        meta = torch.nn.functional.conv2d(
            torch.empty(self.input_shape, device="meta"),
            torch.empty(self.weight_shape, device="meta"),
            None, self.stride, self.padding, self.dilation, self.groups,
        )
        return tuple(meta.shape)

    def flops(self, backward: bool) -> int:
        """Multiply-adds ×2 of the forward pass, plus grad_weight and (if needed) grad_input."""
        return self._passes(2 * math.prod(self.output_shape) * math.prod(self.weight_shape[1:]), backward)

    def flops_inside(self, backward: bool) -> int:
        """flops(backward) over only the kernel taps that land inside the input: the work that a
        kernel skipping the zero padding cannot avoid (each pass does the same)."""
        out_h, out_w = self.output_shape[2:]
        inside = math.prod(
            _taps_inside(size, out, kernel, stride, pad, dilation)
            for size, out, kernel, stride, pad, dilation in zip(
                (self.height, self.width), (out_h, out_w), self.kernel_size, self.stride, self.leading_padding,
                self.dilation))
        return self._passes(2 * self.batch * self.out_channels * (self.in_channels // self.groups) * inside, backward)

    def _passes(self, forward: int, backward: bool) -> int:
        """A pass's FLOPs times the passes a step runs: forward, grad_weight and (if needed) grad_input."""
        return forward * (2 if self.image_input else 3) if backward else forward

    @property
    def leading_padding(self) -> tuple[int, int]:
        """Zeros before the first row and column ("same" pads any odd one after the last, as torch)."""
        if self.padding == "valid":
            return (0, 0)
        if self.padding == "same":
            return tuple(d * (k - 1) // 2 for d, k in zip(self.dilation, self.kernel_size))
        return tuple(self.padding)

    def with_batch(self, batch: int) -> ConvShape:
        return dataclasses.replace(self, batch=batch)

    def for_smoke(self) -> ConvShape:
        """The shape the smoke run measures: at ``smoke_batch`` where one is set."""
        return self if self.smoke_batch is None else self.with_batch(self.smoke_batch)

    def __str__(self) -> str:
        kh, kw = self.kernel_size
        text = (f"{self.name} N{self.batch} {self.in_channels}x{self.height}x{self.width}"
                f"->{self.out_channels} k{kh}x{kw}")
        if self.groups != 1:
            text += " dw" if self.groups == self.in_channels == self.out_channels else f" g{self.groups}"
        if self.stride != (1, 1):
            text += f" s{self.stride[0]}"
        if self.padding != (0, 0):
            text += f" p{self.padding if isinstance(self.padding, str) else self.padding[0]}"
        if self.repeats > 1:
            text += f" (x{self.repeats})"
        return text


@dataclasses.dataclass(frozen=True)
class PoolShape:
    """One max_pool2d problem: input ``batch×channels×height×width`` and the layer arguments."""

    name: str
    batch: int
    channels: int
    height: int
    width: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    repeats: int = 1
    """How many layers of the model have this shape."""
    smoke_batch: int | None = None
    """Batch of the smoke run (None: the full batch)."""

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    @property
    def output_shape(self) -> tuple[int, ...]:
        meta = torch.nn.functional.max_pool2d(
            torch.empty(self.input_shape, device="meta"), self.kernel_size, self.stride,
            self.padding, self.dilation, ceil_mode=self.ceil_mode,
        )
        return tuple(meta.shape)

    def bytes_moved(self, backward: bool) -> int:
        """Least memory traffic: read x, write y; backward adds read dy, write dx (no indices)."""
        once = FLOAT_BYTES * (math.prod(self.input_shape) + math.prod(self.output_shape))
        return 2 * once if backward else once

    def with_batch(self, batch: int) -> PoolShape:
        return dataclasses.replace(self, batch=batch)

    def for_smoke(self) -> PoolShape:
        """The shape the smoke run measures: at ``smoke_batch`` where one is set."""
        return self if self.smoke_batch is None else self.with_batch(self.smoke_batch)

    def __str__(self) -> str:
        text = (f"{self.name} N{self.batch} {self.channels}x{self.height}x{self.width}"
                f" k{self.kernel_size[0]} s{self.stride[0]}")
        if self.padding != (0, 0):
            text += f" p{self.padding[0]}"
        return text + (f" (x{self.repeats})" if self.repeats > 1 else "")


def _taps_inside(size: int, out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Along one axis: the taps of all ``out`` outputs' windows that land inside the ``size`` input."""
    return sum(0 <= o * stride - pad + t * dilation < size for o in range(out) for t in range(kernel))


def _trace_layers(model: nn.Module, image: tuple[int, int, int], batch: int,
                  name_of: Callable[[str, str, int], str]) -> tuple[list[ConvShape], list[PoolShape]]:
    """Conv and max-pool shapes of ``model`` (PyTorch's layers) in forward order, at ``batch``,
    from one forward pass over an ``image`` (C, H, W) of zeros. ``name_of(kind, module_name,
    index)`` names a layer ("conv" or "pool", its name in the model, its 1-based index in kind)."""
    convs: list[ConvShape] = []
    pools: list[PoolShape] = []

    def on_conv(module_name: str, layer: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> None:
        _, channels, h, w = args[0].shape
        convs.append(ConvShape(
            name_of("conv", module_name, len(convs) + 1), batch, channels, h, w,
            layer.out_channels, _pair(layer.kernel_size), _pair(layer.stride),
            layer.padding if isinstance(layer.padding, str) else _pair(layer.padding),
            _pair(layer.dilation), layer.groups, image_input=not convs,
        ))

    def on_pool(module_name: str, layer: nn.MaxPool2d, args: tuple[torch.Tensor, ...]) -> None:
        _, channels, h, w = args[0].shape
        kernel = _pair(layer.kernel_size)
        pools.append(PoolShape(
            name_of("pool", module_name, len(pools) + 1), batch, channels, h, w, kernel,
            _pair(layer.stride or kernel), _pair(layer.padding), _pair(layer.dilation),
            layer.ceil_mode,
        ))

    handles = []
    for module_name, layer in model.named_modules():
        hook = on_conv if isinstance(layer, nn.Conv2d) else on_pool if isinstance(layer, nn.MaxPool2d) else None
        if hook is not None:
            handles.append(layer.register_forward_hook(
                lambda layer, args, _out, hook=hook, name=module_name: hook(name, layer, args)))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *image))
    for handle in handles:
        handle.remove()
    return convs, pools


@functools.cache
def _trace(model_name: str) -> tuple[tuple[ConvShape, ...], tuple[PoolShape, ...]]:
    """Conv and pool shapes of one seed model, in forward order, at its seed batch size."""
    spec = MODELS[model_name]
    height, width = _pair(spec.image_size)
    convs, pools = _trace_layers(build_model(model_name, layers="torch"), (spec.in_channels, height, width),
                                 spec.batch_size, lambda kind, _, index: f"{model_name}.{kind}{index}")
    return tuple(convs), tuple(pools)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A standard architecture as issue 15 measures it: 3-channel ``image_size``² images at
    ``batch`` (``smoke_batch`` in the smoke run), 10 classes. ``features_only``: VGG-11's
    convolutional part with a linear layer on its flattened output instead of the 123M-weight
    classifier, whose matrix products would dominate the step."""

    name: str
    image_size: int
    batch: int
    smoke_batch: int | None = None
    features_only: bool = False

    def build(self) -> nn.Module:
        """A fresh model with PyTorch's layers, weights from the global RNG."""
        if self.features_only:
            side = self.image_size // 32
            return nn.Sequential(OrderedDict([
                ("features", vgg11_features(3)), ("flatten", nn.Flatten()),
                ("fc", nn.Linear(512 * side * side, NUM_CLASSES)),
            ]))
        return _FACTORIES[self.name](NUM_CLASSES, 3, layers="torch")

    def batch_for(self, smoke: bool) -> int:
        return self.smoke_batch if smoke and self.smoke_batch is not None else self.batch

    def case(self, smoke: bool = False) -> str:
        """``resnet18 N8 3x224x224``: the model, its batch and its input."""
        return f"{self.name} N{self.batch_for(smoke)} 3x{self.image_size}x{self.image_size}"


NUM_CLASSES = 10
_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "resnet18_cifar": resnet18_cifar, "resnet18": resnet18, "mobilenet_v2": mobilenet_v2,
}
SMOKE_BATCH = 2
ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("resnet18_cifar", 32, 32, SMOKE_BATCH),
    Architecture("resnet18", 224, 8, SMOKE_BATCH),
    Architecture("vgg11_features", 64, 8, SMOKE_BATCH, features_only=True),
    Architecture("mobilenet_v2", 224, 8, SMOKE_BATCH),
)
"""Issue 15's training-step table, in its order. The smoke run takes all their cases (per
layer and per step) at batch 2, which keeps it within about two minutes on 2 cores."""


@functools.cache
def _trace_architecture(arch: Architecture) -> tuple[tuple[ConvShape, ...], tuple[PoolShape, ...]]:
    """Every conv and max-pool layer of ``arch``, in forward order, at its batch."""
    torch.manual_seed(0)
    convs, pools = _trace_layers(arch.build(), (3, arch.image_size, arch.image_size), arch.batch,
                                 lambda _kind, module_name, _index: f"{arch.name}.{module_name}")
    return (tuple(dataclasses.replace(c, smoke_batch=arch.smoke_batch) for c in convs),
            tuple(dataclasses.replace(p, smoke_batch=arch.smoke_batch) for p in pools))


Shape = TypeVar("Shape", ConvShape, PoolShape)


def _distinct(shapes: Sequence[Shape]) -> list[Shape]:
    """The first layer of each distinct geometry (all fields but the name), with its repeat count."""
    first: dict[tuple, Shape] = {}
    counts: dict[tuple, int] = {}
    for shape in shapes:
        key = dataclasses.astuple(dataclasses.replace(shape, name=""))
        first.setdefault(key, shape)
        counts[key] = counts.get(key, 0) + 1
    return [dataclasses.replace(shape, repeats=counts[key]) for key, shape in first.items()]


def architecture_conv_flops(arch: Architecture, smoke: bool = False) -> int:
    """FLOPs of every convolution of one training step (forward, grad_weight, and grad_input
    but for the first layer) of ``arch``: the conv work its step time can be compared with."""
    batch = arch.batch_for(smoke)
    return sum(shape.with_batch(batch).flops(backward=True) for shape in _trace_architecture(arch)[0])


def architecture_conv_shapes() -> list[ConvShape]:
    """Each distinct conv shape of each architecture (first layer's name, repeat count)."""
    return [shape for arch in ARCHITECTURES for shape in _distinct(_trace_architecture(arch)[0])]


def architecture_pool_shapes() -> list[PoolShape]:
    """Each distinct max-pool shape of each architecture."""
    return [shape for arch in ARCHITECTURES for shape in _distinct(_trace_architecture(arch)[1])]


def model_conv_shapes(case: Architecture | str) -> list[ConvShape]:
    """Every conv layer of an architecture or a seed model (by name), in forward order, at the
    batch its training step runs."""
    return list((_trace_architecture(case) if isinstance(case, Architecture) else _trace(case))[0])


def seed_conv_shapes() -> list[ConvShape]:
    """Every conv layer of the seed models, then the cifar first layer and the large layer."""
    seeds = [shape for model in SEED_MODELS for shape in _trace(model)[0]]
    cifar_first = _trace("cifar_bn")[0][0].with_batch(128)
    large = ConvShape("large", 32, 64, 56, 56, 128, (3, 3), padding=(1, 1))
    return [*seeds, cifar_first, large]


def conv_shapes() -> list[ConvShape]:
    """The seed conv shapes, then each distinct conv shape of the standard architectures."""
    return [*seed_conv_shapes(), *architecture_conv_shapes()]


def seed_pool_shapes() -> list[PoolShape]:
    """Every max-pool layer of the seed models."""
    return [shape for model in SEED_MODELS for shape in _trace(model)[1]]


def pool_shapes() -> list[PoolShape]:
    """The seed max-pool shapes, then each distinct one of the standard architectures."""
    return [*seed_pool_shapes(), *architecture_pool_shapes()]


@dataclasses.dataclass(frozen=True)
class AvgPoolShape:
    """One avg_pool2d (``output_size is None``) or adaptive_avg_pool2d problem on a
    ``batch×channels×height×width`` input."""

    name: str
    batch: int
    channels: int
    height: int
    width: int
    kernel_size: tuple[int, int] = (2, 2)
    output_size: tuple[int, int] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    @property
    def output_shape(self) -> tuple[int, ...]:
        x = torch.empty(self.input_shape, device="meta")
        if self.output_size is not None:
            return tuple(torch.nn.functional.adaptive_avg_pool2d(x, self.output_size).shape)
        return tuple(torch.nn.functional.avg_pool2d(x, self.kernel_size).shape)

    def bytes_moved(self, backward: bool) -> int:
        """Least memory traffic: read x, write y; backward adds read dy, write dx."""
        once = FLOAT_BYTES * (math.prod(self.input_shape) + math.prod(self.output_shape))
        return 2 * once if backward else once

    def __str__(self) -> str:
        kind = (f"adaptive {self.output_size[0]}x{self.output_size[1]}" if self.output_size is not None
                else f"k{self.kernel_size[0]}")
        return f"{self.name} N{self.batch} {self.channels}x{self.height}x{self.width} {kind}"


def avg_pool_shapes() -> list[AvgPoolShape]:
    """A 2x2 average pool on the input of every seed max-pool layer (the seed activations), and
    cifar_bn's global average pool (adaptive 1x1) at its seed batch size."""
    seeds = [AvgPoolShape(shape.name.replace(".pool", ".avgpool"), shape.batch, shape.channels, shape.height,
                          shape.width) for shape in seed_pool_shapes()]
    spec = MODELS["cifar_bn"]
    model = build_model("cifar_bn", layers="torch").eval()
    sizes: list[tuple[int, ...]] = []
    handle = model.avgpool.register_forward_hook(lambda _m, args, _o: sizes.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, *_pair(spec.image_size)))
    handle.remove()
    _, channels, height, width = sizes[0]
    return [*seeds, AvgPoolShape("cifar_bn.avgpool", spec.batch_size, channels, height, width, output_size=(1, 1))]


def find(name: str) -> ConvShape | PoolShape:
    """The conv or pool shape called ``name`` (e.g. ``"lenet.conv2"``)."""
    for shape in (*conv_shapes(), *pool_shapes()):
        if shape.name == name:
            return shape
    raise KeyError(name)
