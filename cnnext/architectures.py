"""ResNet-18, VGG-11 and MobileNetV2 with PyTorch's layers, laid out as torchvision lays them out.

Module names, parameter shapes, buffers and the initialisation follow
torchvision's ``resnet18``, ``vgg11`` and ``mobilenet_v2`` (torchvision itself is
not a dependency), so a state_dict saved from a torchvision model loads into these
and back. Two deliberate additions, neither of which adds a state_dict entry:

- ``in_channels`` sets the first convolution's input channels (torchvision: 3);
- MobileNetV2 pools with an ``nn.AdaptiveAvgPool2d`` module named ``avgpool``
  where torchvision calls the function, so ``cnnext.convert`` reaches it.

``cnnext.models`` builds these and converts them to cnnext's layers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "VGG", "VGG11_CONFIG", "vgg11_features", "InvertedResidual", "MobileNetV2"]


def _init_conv_bn(model: nn.Module) -> None:
    """torchvision's initialisation: convs Kaiming-normal over fan-out, zero conv biases;
    BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a shortcut; the first conv (and the
    shortcut's 1x1 conv, present when the shape changes) carries the stride."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """ResNet-18: a stem, four stages of two BasicBlocks (64, 128, 256, 512 channels;
    stages 2-4 halve the plane), global average pool, ``fc``.

    ``cifar_stem=False``: the ImageNet stem, 7x7 stride-2 conv, BN, ReLU and a 3x3
    stride-2 max-pool with padding 1 (the plane shrinks 32x overall).
    ``cifar_stem=True``: a 3x3 stride-1 conv, BN, ReLU and no max-pool (8x overall),
    the usual ResNet-18 for 32x32 images; its ``conv1`` weight is then 64 x C x 3 x 3.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, cifar_stem: bool = False) -> None:
        super().__init__()
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, stride=2, padding=1)
        stages, channels = [], 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width)))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        _init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""VGG-11 ("configuration A"): output channels of each 3x3 conv, "M" for a 2x2 max-pool."""


def vgg11_features(in_channels: int = 3, *, batch_norm: bool = False) -> nn.Sequential:
    """VGG-11's ``features``: 3x3 convs (padding 1, with bias) each followed by ReLU
    (BatchNorm, ReLU with ``batch_norm``), and 2x2 stride-2 max-pools, as VGG11_CONFIG
    lists them; 512 output channels, the plane shrunk 32x. Initialised as in VGG."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG11_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, item, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    features = nn.Sequential(*layers)
    _init_conv_bn(features)
    return features


class VGG(nn.Module):
    """VGG-11: ``features`` (see vgg11_features), ``avgpool`` (adaptive, to 7x7),
    ``classifier`` (Linear 25088-4096, ReLU, Dropout, Linear 4096-4096, ReLU,
    Dropout, Linear 4096-num_classes; weights normal with std 0.01, zero biases)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = vgg11_features(in_channels, batch_norm=batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    """Conv (no bias, "same" padding for odd kernels), BatchNorm, ReLU6: entries 0, 1, 2."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                  groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2's block in ``conv``: a 1x1 expansion to ``expand_ratio`` times the
    channels (left out when the ratio is 1), a depthwise 3x3 (carrying the stride),
    each with BN and ReLU6, then a linear 1x1 projection with BN; the input is added
    back when stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(in_channels, hidden, kernel_size=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


# (expand ratio t, output channels c, blocks n, first block's stride s), width multiplier 1.0.
_MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2, width multiplier 1.0: ``features`` = a 3x3 stride-2 conv to 32
    channels, 17 InvertedResiduals, a 1x1 conv to 1280 (each conv with BN and ReLU6;
    the plane shrinks 32x); ``avgpool`` to 1x1; ``classifier`` = Dropout, Linear
    1280-num_classes."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, stride=2)]
        channels = 32
        for expand_ratio, width, blocks, stride in _MOBILENET_V2_STAGES:
            for i in range(blocks):
                layers.append(InvertedResidual(channels, width, stride if i == 0 else 1, expand_ratio))
                channels = width
        layers.append(_conv_bn_relu6(channels, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        _init_conv_bn(self)
        nn.init.normal_(self.classifier[1].weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
