"""cnnext.Conv2d / MaxPool2d as drop-in nn layers, convert() on the seed models, torch.compile."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnext
from cnnext.models import MODELS, SEEDS, build_model


def test_conv2d_is_an_nn_conv2d_with_the_same_init():
    torch.manual_seed(0)
    theirs = nn.Conv2d(3, 8, (3, 5), stride=2, padding=1, bias=True)
    torch.manual_seed(0)
    ours = cnnext.Conv2d(3, 8, (3, 5), stride=2, padding=1, bias=True, algo="im2col")
    assert isinstance(ours, nn.Conv2d)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert "algo='im2col'" in repr(ours)
    assert repr(ours).startswith(repr(theirs)[:-1])


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_conv2d_module_matches_torch(padding_mode, algo, device):
    theirs = nn.Conv2d(4, 6, 3, padding=(1, 2), padding_mode=padding_mode, groups=2, device=device)
    ours = cnnext.Conv2d(4, 6, 3, padding=(1, 2), padding_mode=padding_mode, groups=2, device=device, algo=algo)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 4, 9, 7, device=device, requires_grad=True)
    out, ref = ours(x), theirs(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (x, ours.weight, ours.bias), grad)
    want = torch.autograd.grad(ref, (x, theirs.weight, theirs.bias), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_state_dict_round_trips_both_ways():
    torch_model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 2, 3, bias=False))
    ours = nn.Sequential(cnnext.Conv2d(1, 4, 3), nn.ReLU(), cnnext.MaxPool2d(2), cnnext.Conv2d(4, 2, 3, bias=False))
    ours.load_state_dict(torch_model.state_dict())
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(ours(x), torch_model(x))
    for p in ours.parameters():
        p.data.normal_()
    torch_model.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), torch_model(x))


def test_convert_copies_by_default_and_converts_in_place_on_request():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), nn.Conv2d(2, 2, 1))
    converted = cnnext.convert(model, algo="direct")
    assert type(model[0][0]) is nn.Conv2d and type(model[0][1]) is nn.MaxPool2d
    assert type(converted[0][0]) is cnnext.Conv2d and converted[0][0].algo == "direct"
    assert type(converted[0][1]) is cnnext.MaxPool2d and type(converted[1]) is cnnext.Conv2d
    assert converted[0][0].weight is not model[0][0].weight
    weight = model[1].weight
    same = cnnext.convert(model, algo="im2col", inplace=True)
    assert same is model and type(model[1]) is cnnext.Conv2d and model[1].weight is weight
    assert cnnext.convert(same, algo="direct")[1].algo == "direct"
    single = cnnext.convert(nn.Conv2d(1, 1, 3))
    assert type(single) is cnnext.Conv2d


@pytest.mark.parametrize("name", SEEDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_convert_seed_models_same_outputs_and_gradients(name, algo, device):
    spec = MODELS[name]
    model = build_model(name, layers="torch", seed=1).to(device).eval()
    converted = cnnext.convert(model, algo=algo)
    assert not any(type(m) in (nn.Conv2d, nn.MaxPool2d) for m in converted.modules())
    x = torch.randn(5, spec.in_channels, spec.image_size, spec.image_size, device=device)
    out, ref = converted(x), model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.square().sum().backward()
    ref.square().sum().backward()
    for (pname, p), q in zip(converted.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=lambda m: f"{pname}: {m}")


def test_torch_compile_of_converted_model_matches():
    torch._dynamo.reset()
    model = build_model("cnn_pad", layers="torch", seed=2).eval()
    converted = cnnext.convert(model)
    compiled = torch.compile(converted, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (want,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-4)
