"""The standard architectures (ResNet-18, its CIFAR variant, VGG-11, MobileNetV2): torchvision's
layout, cnnext layers against the torch-layer twin (values and gradients, float64), conversion,
and the CLI's input adapter (the CLI itself: tests/test_train.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnext
from cnnext.models import MODELS, STANDARD, build_model, mobilenet_v2, resnet18, resnet18_cifar, vgg11
from cnnext.train import adapt_input

FACTORIES = {"resnet18": resnet18, "resnet18_cifar": resnet18_cifar, "vgg11": vgg11, "mobilenet_v2": mobilenet_v2}

# torchvision's published sizes (its model documentation, 3 input channels, 1000 classes):
# parameter count and number of state_dict entries (parameters and BatchNorm buffers).
TORCHVISION_SIZES = {
    "resnet18": (11_689_512, 122),
    "vgg11": (132_863_336, 22),
    "mobilenet_v2": (3_504_872, 314),
}
# A few entries, written out from torchvision's module tree, that a wrong nesting would miss.
TORCHVISION_ENTRIES = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.1.conv2.weight": (64, 64, 3, 3),
        "layer2.0.conv1.weight": (128, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.num_batches_tracked": (), "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512), "fc.bias": (1000,),
    },
    "vgg11": {
        "features.0.weight": (64, 3, 3, 3), "features.3.weight": (128, 64, 3, 3),
        "features.8.weight": (256, 256, 3, 3), "features.18.bias": (512,),
        "classifier.0.weight": (4096, 25088), "classifier.3.weight": (4096, 4096), "classifier.6.bias": (1000,),
    },
    "mobilenet_v2": {
        "features.0.0.weight": (32, 3, 3, 3), "features.0.1.running_mean": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3), "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.weight": (16,), "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3), "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.17.conv.2.weight": (320, 960, 1, 1), "features.18.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    },
}
LAYER_COUNTS = {  # (convolutions, max-pools) in each model
    "resnet18": (20, 1), "resnet18_cifar": (20, 0), "vgg11": (8, 5), "mobilenet_v2": (52, 0),
}
CONVERTED = ((nn.Conv2d, cnnext.Conv2d), (nn.MaxPool2d, cnnext.MaxPool2d), (nn.AvgPool2d, cnnext.AvgPool2d),
             (nn.AdaptiveAvgPool2d, cnnext.AdaptiveAvgPool2d))


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(TORCHVISION_SIZES))
def test_torchvision_layout(name):
    """Parameter count, state_dict size and sample entries are torchvision's (3 channels, 1000 classes)."""
    model = FACTORIES[name](layers="torch")
    params, entries = TORCHVISION_SIZES[name]
    assert sum(p.numel() for p in model.parameters()) == params
    shapes = _shapes(model)
    assert len(shapes) == entries
    assert {key: shapes.get(key) for key in TORCHVISION_ENTRIES[name]} == TORCHVISION_ENTRIES[name]


def test_variants_layout():
    """The CIFAR stem changes only conv1; in_channels only the first conv; vgg11_bn adds BatchNorm
    after each conv (torchvision's vgg11_bn: 132,868,840 parameters)."""
    imagenet, cifar = _shapes(resnet18(10, layers="torch")), _shapes(resnet18_cifar(10, layers="torch"))
    assert cifar.pop("conv1.weight") == (64, 3, 3, 3) and imagenet.pop("conv1.weight") == (64, 3, 7, 7)
    assert cifar == imagenet
    assert _shapes(mobilenet_v2(7, 1, layers="torch"))["features.0.0.weight"] == (32, 1, 3, 3)
    bn = vgg11(batch_norm=True, layers="torch")
    assert sum(p.numel() for p in bn.parameters()) == 132_868_840
    assert _shapes(bn)["features.1.running_mean"] == (64,) and _shapes(bn)["features.4.weight"] == (128, 64, 3, 3)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_round_trip(name):
    """A torch-layer model's state_dict (a torchvision-shaped one) loads strictly into the cnnext
    model and back, every tensor unchanged."""
    source = FACTORIES[name](10, layers="torch")
    target = FACTORIES[name](10, layers="cnnext", algo="im2col")
    assert list(_shapes(target)) == list(_shapes(source))
    target.load_state_dict(source.state_dict())
    back = FACTORIES[name](10, layers="torch")
    back.load_state_dict(target.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value) and torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cnnext_layers_everywhere(name):
    """layers="cnnext" (and convert() of the torch-layer model) leaves no torch conv or pool layer."""
    for model in (FACTORIES[name](10), cnnext.convert(FACTORIES[name](10, layers="torch"))):
        left = [n for n, m in model.named_modules()
                if any(isinstance(m, kind) and not isinstance(m, ours) for kind, ours in CONVERTED)]
        assert left == []
        convs = [m for m in model.modules() if isinstance(m, cnnext.Conv2d)]
        pools = [m for m in model.modules() if isinstance(m, cnnext.MaxPool2d)]
        assert (len(convs), len(pools)) == LAYER_COUNTS[name]
        assert any(isinstance(m, cnnext.AdaptiveAvgPool2d) for m in model.modules())


@pytest.mark.parametrize("kwargs, word", [(dict(layers="keras"), "layers"), (dict(algo="winograd"), "algo")])
def test_factories_reject_unknown(kwargs, word):
    with pytest.raises(ValueError, match=f"unknown {word}"):
        resnet18(**kwargs)


# Input sizes that keep float64 cheap while every stage still sees a plane of 2x2 or more
# (BatchNorm in train mode over a 1x1 plane of 3 images is ill-conditioned); VGG has no BatchNorm.
PARITY_INPUTS = {"resnet18": 64, "resnet18_cifar": 16, "vgg11": 32, "mobilenet_v2": 64}


def _outputs_and_gradients(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Eval-mode output, train-mode output (dropout masks from seed 0), then the input's gradient
    and every parameter's gradient of a random linear function of the train-mode output."""
    model.eval()
    with torch.no_grad():
        results = [model(x)]
    model.train()
    torch.manual_seed(0)
    x = x.detach().requires_grad_()
    out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), [x, *model.parameters()])
    return [*results, out.detach(), *grads]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cnnext_layers_match_torch_layers(name):
    """From the same weights, float64, batch of 3 (2 for VGG): the model with cnnext layers gives the
    torch-layer model's outputs in eval and train mode, and the same input and parameter gradients."""
    torch.manual_seed(0)
    model = FACTORIES[name](10, layers="torch").double()
    size = PARITY_INPUTS[name]
    x = torch.randn(2 if name == "vgg11" else 3, 3, size, size, dtype=torch.float64)
    buffers = {key: value.clone() for key, value in model.named_buffers()}
    expected = _outputs_and_gradients(model, x)
    # The same module, its running statistics restored, on cnnext's layers: one copy of VGG's weights.
    model.load_state_dict(buffers, strict=False)
    actual = _outputs_and_gradients(cnnext.convert(model, inplace=True), x)
    assert len(actual) == len(expected)
    # Gradients are compared on the scale of the largest one: some are zero but for rounding
    # (a BatchNorm bias whose output reaches the next BatchNorm only through a convolution).
    gradient_scale = max(want.abs().max().item() for want in expected[3:])
    for i, (got, want) in enumerate(zip(actual, expected)):
        scale = want.abs().max().item() if i < 3 else gradient_scale
        assert scale > 0
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * scale, msg=lambda m: f"result {i}: {m}")


@pytest.mark.parametrize("name", STANDARD)
def test_registered_for_mnist(name):
    """build_model gives the 1-channel, 10-class model; the CLI's adapter fits a 28x28 batch to it."""
    spec = MODELS[name]
    model = build_model(name, layers="cnnext", seed=0)
    x = adapt_input(torch.randn(2, 1, 28, 28), spec, background=-0.4242)
    assert x.shape == (2, 1, spec.image_size, spec.image_size)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)


def test_adapt_input_pads_or_resizes():
    """Pad keeps the image and fills the border with the background; resize is bilinear, so a
    constant image stays constant and the image's mean barely moves."""
    images = torch.rand(3, 1, 28, 28)
    padded = adapt_input(images, MODELS["resnet18_cifar"], background=-0.5)
    assert torch.equal(padded[..., 2:30, 2:30], images)
    assert (padded[..., :2, :] == -0.5).all() and (padded[..., :, 30:] == -0.5).all()
    resized = adapt_input(images, MODELS["resnet18"], background=-0.5)
    assert resized.shape == (3, 1, 64, 64)
    torch.testing.assert_close(resized.mean((2, 3)), images.mean((2, 3)), rtol=0, atol=0.02)
    flat = adapt_input(torch.full((1, 1, 28, 28), 0.7), MODELS["mobilenet_v2"], background=-0.5)
    torch.testing.assert_close(flat, torch.full((1, 1, 64, 64), 0.7))
