"""The counts the benchmarks' bounds stand on (benchmarks/shapes.py): FLOPs over the taps inside the input,
and the layers a model's training step runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmarks.shapes import ARCHITECTURES, ConvShape, model_conv_shapes

SHAPES = [  # (name, shape): padding of every kind, strides, dilations, groups, odd and even kernels
    ("valid", ConvShape("valid", 3, 4, 11, 9, 6, (3, 3))),
    ("padded", ConvShape("padded", 2, 4, 7, 10, 8, (3, 5), padding=(1, 2))),
    ("strided", ConvShape("strided", 2, 6, 13, 12, 4, (3, 3), stride=(2, 3), padding=(1, 1), groups=2)),
    ("dilated", ConvShape("dilated", 1, 3, 15, 14, 5, (3, 2), padding=(2, 1), dilation=(2, 3))),
    ("same even", ConvShape("same even", 2, 2, 9, 8, 3, (4, 2), padding="same")),
    ("over padded", ConvShape("over padded", 1, 2, 3, 4, 2, (3, 3), padding=(3, 2))),
    ("first layer", ConvShape("first layer", 4, 1, 10, 10, 5, (3, 3), padding=(1, 1), image_input=True)),
]


def _taps_inside_by_convolution(shape: ConvShape) -> int:
    """How many (output, tap) pairs of one plane read inside the input: a convolution of ones over ones."""
    ones = torch.ones(1, 1, shape.height, shape.width, dtype=torch.float64)
    kernel = torch.ones(1, 1, *shape.kernel_size, dtype=torch.float64)
    return int(F.conv2d(ones, kernel, None, shape.stride, shape.padding, shape.dilation).sum())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch copies; the count holds
@pytest.mark.parametrize("name, shape", SHAPES, ids=[name for name, _ in SHAPES])
def test_flops_inside_count_the_taps_inside_the_input(name: str, shape: ConvShape) -> None:
    per_pass = 2 * shape.batch * shape.out_channels * (shape.in_channels // shape.groups) * \
        _taps_inside_by_convolution(shape)
    assert shape.flops_inside(backward=False) == per_pass
    assert shape.flops_inside(backward=True) == per_pass * (2 if shape.image_input else 3)
    assert shape.flops_inside(backward=True) <= shape.flops(backward=True)
    if shape.padding in ((0, 0), "valid"):
        assert shape.flops_inside(backward=True) == shape.flops(backward=True)


def test_leading_padding_is_what_torch_pads_first() -> None:
    shape = ConvShape("same", 1, 1, 6, 7, 1, (4, 3), padding="same", dilation=(1, 2))
    x = torch.randn(1, 1, 6, 7, dtype=torch.float64)
    w = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    top, left = shape.leading_padding
    # "same" pads d*(k-1) in all; what is not before the first row/column goes after the last.
    manual = F.conv2d(F.pad(x, (left, 2 * 2 - left, top, 3 - top)), w, dilation=(1, 2))
    torch.testing.assert_close(F.conv2d(x, w, padding="same", dilation=(1, 2)), manual)
    assert ConvShape("valid", 1, 1, 5, 5, 1, (3, 3), padding="valid").leading_padding == (0, 0)


def test_model_conv_shapes_follow_the_forward_pass() -> None:
    seeds = model_conv_shapes("lenet")
    assert [s.name for s in seeds] == ["lenet.conv1", "lenet.conv2", "lenet.conv3"]
    assert [s.image_input for s in seeds] == [True, False, False]
    assert {s.batch for s in seeds} == {150}
    resnet = next(a for a in ARCHITECTURES if a.name == "resnet18_cifar")
    layers = model_conv_shapes(resnet)
    # A stem, 4 stages of 2 blocks of 2 convolutions, and 3 strided shortcuts, each in the step once.
    assert len(layers) == 1 + 4 * 2 * 2 + 3
    assert layers[0].image_input and not any(s.image_input for s in layers[1:])
    assert {s.batch for s in layers} == {resnet.batch}
