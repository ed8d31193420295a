"""The layer shapes the suite measures, derived from the seed model definitions.

Every ``nn.Conv2d`` and ``nn.MaxPool2d`` of the seed models is found by running
the model once on a single image with forward hooks; the recorded input sizes
and layer arguments are then put at the model's seed batch size. Two extra
convolutions show how cost grows with work: the 3-channel first layer of
``cifar_bn`` at batch 128 and a larger 64→128 3×3 layer on 56×56 at batch 32.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

from cnnext.models import MODELS, build_model

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
        forward = 2 * math.prod(self.output_shape) * math.prod(self.weight_shape[1:])
        if not backward:
            return forward
        return forward * (2 if self.image_input else 3)

    def with_batch(self, batch: int) -> ConvShape:
        return dataclasses.replace(self, batch=batch)

    def __str__(self) -> str:
        kh, kw = self.kernel_size
        text = (f"{self.name} N{self.batch} {self.in_channels}x{self.height}x{self.width}"
                f"->{self.out_channels} k{kh}x{kw}")
        if self.stride != (1, 1):
            text += f" s{self.stride[0]}"
        if self.padding != (0, 0):
            text += f" p{self.padding if isinstance(self.padding, str) else self.padding[0]}"
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

    def __str__(self) -> str:
        return (f"{self.name} N{self.batch} {self.channels}x{self.height}x{self.width}"
                f" k{self.kernel_size[0]} s{self.stride[0]}")


@functools.cache
def _trace(model_name: str) -> tuple[tuple[ConvShape, ...], tuple[PoolShape, ...]]:
    """Conv and pool shapes of one model, in forward order, at its seed batch size."""
    spec = MODELS[model_name]
    height, width = _pair(spec.image_size)
    convs: list[ConvShape] = []
    pools: list[PoolShape] = []

    def on_conv(layer: nn.Conv2d, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        _, channels, h, w = args[0].shape
        convs.append(ConvShape(
            f"{model_name}.conv{len(convs) + 1}", spec.batch_size, channels, h, w,
            layer.out_channels, _pair(layer.kernel_size), _pair(layer.stride),
            layer.padding if isinstance(layer.padding, str) else _pair(layer.padding),
            _pair(layer.dilation), layer.groups, image_input=not convs,
        ))

    def on_pool(layer: nn.MaxPool2d, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        _, channels, h, w = args[0].shape
        kernel = _pair(layer.kernel_size)
        pools.append(PoolShape(
            f"{model_name}.pool{len(pools) + 1}", spec.batch_size, channels, h, w, kernel,
            _pair(layer.stride or kernel), _pair(layer.padding), _pair(layer.dilation),
            layer.ceil_mode,
        ))

    model = build_model(model_name, layers="torch").eval()
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(on_conv)
        elif isinstance(layer, nn.MaxPool2d):
            layer.register_forward_hook(on_pool)
    with torch.no_grad():
        model(torch.zeros(1, spec.in_channels, height, width))
    return tuple(convs), tuple(pools)


def conv_shapes() -> list[ConvShape]:
    """Every conv layer of the seed models, then the cifar first layer and the large layer."""
    seeds = [shape for model in SEED_MODELS for shape in _trace(model)[0]]
    cifar_first = _trace("cifar_bn")[0][0].with_batch(128)
    large = ConvShape("large", 32, 64, 56, 56, 128, (3, 3), padding=(1, 1))
    return [*seeds, cifar_first, large]


def pool_shapes() -> list[PoolShape]:
    """Every max-pool layer of the seed models."""
    return [shape for model in SEED_MODELS for shape in _trace(model)[1]]


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
                          shape.width) for shape in pool_shapes()]
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
