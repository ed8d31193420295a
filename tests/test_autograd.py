"""Derivatives registered on the ops: second order (gradgradcheck), the raw ops' gradients, second-order
recipes on every seed model against torch's layers, opcheck on every op, and channels_last layouts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import cnnext
from cnnext import functional as CF
from cnnext.models import MODELS, SEEDS, build_model

ops = torch.ops.cnnext
f64 = dict(dtype=torch.float64)

CONV_CASES = {  # (input size, weight size, keyword arguments)
    "plain": ((2, 2, 5, 4), (3, 2, 3, 3), dict()),
    "stride_padding": ((2, 2, 7, 6), (3, 2, 3, 2), dict(stride=(2, 3), padding=(1, 2))),
    "same_asymmetric": ((1, 2, 5, 6), (2, 2, 2, 4), dict(padding="same", dilation=(2, 1))),
    "dilation_groups": ((1, 4, 6, 5), (4, 2, 2, 3), dict(dilation=2, groups=2, padding=1)),
    "depthwise_strided": ((1, 3, 6, 6), (3, 1, 3, 3), dict(groups=3, stride=2)),
}
POOL_CASES = {
    "plain": ((2, 2, 4, 6), dict(kernel_size=2)),
    "padding_stride": ((1, 3, 7, 5), dict(kernel_size=3, stride=2, padding=1)),
    "dilation": ((2, 2, 8, 7), dict(kernel_size=(2, 3), dilation=(2, 1), stride=(1, 2))),
    "ceil_mode": ((1, 2, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
}


def _conv_inputs(case: str, bias: bool):
    input_size, weight_size, kwargs = CONV_CASES[case]
    x = torch.randn(input_size, **f64, requires_grad=True)
    w = torch.randn(weight_size, **f64, requires_grad=True)
    b = torch.randn(weight_size[0], **f64, requires_grad=True) if bias else None
    return x, w, b, kwargs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradgradcheck(case, algo, bias):
    x, w, b, kwargs = _conv_inputs(case, bias)
    args = (x, w) if b is None else (x, w, b)
    fn = lambda x, w, b=None: CF.conv2d(x, w, b, algo=algo, **kwargs)  # noqa: E731
    assert gradcheck(fn, args, fast_mode=True)
    assert gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_gradgradcheck(case):
    size, kwargs = POOL_CASES[case]
    # Distinct values, away from ties, so that finite differences never move a maximum.
    x = (torch.randperm(torch.Size(size).numel(), **f64) / 7).view(size).requires_grad_()
    fn = lambda x: CF.max_pool2d(x, **kwargs)  # noqa: E731
    assert gradcheck(fn, (x,), fast_mode=True)
    assert gradgradcheck(fn, (x,), fast_mode=True)


def test_third_order_conv2d_matches_torch():
    x, w, b, _ = _conv_inputs("dilation_groups", True)

    def third(conv):
        y = conv(x, w, b, dilation=2, groups=2, padding=1)
        (gx,) = torch.autograd.grad((y.tanh()).sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad((gx ** 2).sum(), w, create_graph=True)
        return torch.autograd.grad((gw ** 2).sum(), (x, w, b))

    for ours, theirs in zip(third(CF.conv2d), third(F.conv2d)):
        torch.testing.assert_close(ours, theirs)


def test_raw_ops_have_gradients():
    """torch.ops.cnnext.* called directly differentiate like torch's ops, without cnnext.functional."""
    x, w, b, _ = _conv_inputs("stride_padding", True)
    y = ops.conv2d(x, w, b, [2, 3], [1, 2, 1, 2], [1, 1], 1, "auto")
    out, indices = ops.max_pool2d(y, [2, 2], [1, 1], [0, 0], [1, 1], False)
    assert not indices.requires_grad
    ours = torch.autograd.grad(out.sum(), (x, w, b))
    ref = F.max_pool2d(F.conv2d(x, w, b, stride=(2, 3), padding=(1, 2)), 2, 1)
    for a, e in zip(ours, torch.autograd.grad(ref.sum(), (x, w, b))):
        torch.testing.assert_close(a, e)


def _backward_op_cases():
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.randn(*s, generator=g, **f64, requires_grad=True)  # noqa: E731
    geometry = ([2, 1], [1, 0, 1, 0], [1, 2], 2, "auto")
    gy, w, x = rand(2, 4, 4, 2), rand(4, 1, 3, 2), rand(2, 2, 7, 4)
    pool_out, indices = ops.max_pool2d(rand(2, 3, 6, 5), [3, 2], [2, 2], [1, 1], [1, 1], True)
    return {
        "conv2d_grad_input": (ops.conv2d_grad_input, (gy, w, [2, 2, 7, 4], *geometry)),
        "conv2d_grad_weight": (ops.conv2d_grad_weight, (gy, x, [4, 1, 3, 2], *geometry)),
        "conv2d_grad_weight_bias": (ops.conv2d_grad_weight_bias, (gy, x, [4, 1, 3, 2], *geometry)),
        "conv2d_grad_bias": (ops.conv2d_grad_bias, (gy,)),
        "max_pool2d_backward": (ops.max_pool2d_backward, (rand(*pool_out.shape), indices, [2, 3, 6, 5])),
    }


@pytest.mark.parametrize("name", list(_backward_op_cases()))
def test_backward_ops_gradgradcheck(name):
    """Each backward op is itself differentiable twice (its formulas are cnnext ops and a gather)."""
    op, args = _backward_op_cases()[name]
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def fn(*inputs):
        full = list(args)
        for i, t in zip(tensors, inputs):
            full[i] = t
        return op(*full)

    inputs = tuple(args[i] for i in tensors)
    assert gradcheck(fn, inputs, fast_mode=True)
    assert gradgradcheck(fn, inputs, fast_mode=True)


def test_max_pool2d_indices_get_no_gradient():
    x = torch.randn(1, 2, 4, 4, **f64, requires_grad=True)
    out, indices = CF.max_pool2d(x, 2, return_indices=True)
    assert indices.grad_fn is None and not indices.requires_grad
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert gx.sum() == out.numel()


# --- second-order recipes on the seed models, against the same models on torch's layers -------------


def _seed_pair(name: str):
    spec = MODELS[name]
    models = [build_model(name, layers=layers).double() for layers in ("cnnext", "torch")]
    for model in models:  # dropout off (random), everything else (BatchNorm) in training mode
        model.apply(lambda m: m.eval() if isinstance(m, nn.Dropout) else None)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, spec.in_channels, spec.image_size, spec.image_size, generator=g, **f64)
    y = torch.randint(0, 10, (2,), generator=g)
    return models, x, y


def _assert_all_close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", SEEDS)
def test_seed_hessian_vector_product(name):
    models, x, y = _seed_pair(name)
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i), **f64)
         for i, p in enumerate(models[0].parameters())]

    def hvp(model):
        params = list(model.parameters())
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        dot = sum((g * u).sum() for g, u in zip(grads, v))
        return torch.autograd.grad(dot, params)

    _assert_all_close(hvp(models[0]), hvp(models[1]))


@pytest.mark.parametrize("name", SEEDS)
def test_seed_gradient_penalty(name):
    """WGAN-GP: the penalty on the input gradient's norm trains the parameters through d(dL/dx)/dW."""
    models, x, _ = _seed_pair(name)

    def penalty_grads(model):
        x_hat = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(model(x_hat).sum(), x_hat, create_graph=True)
        penalty = ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()
        # The last layer's bias does not change the input gradient: its gradient is a true zero.
        return torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True, materialize_grads=True)

    ours, theirs = penalty_grads(models[0]), penalty_grads(models[1])
    _assert_all_close(ours, theirs)
    conv_weight = next(m.weight for m in models[0].modules() if isinstance(m, cnnext.Conv2d))
    index = [p is conv_weight for p in models[0].parameters()].index(True)
    assert ours[index].abs().sum() > 0  # the second-order term that used to be dropped


@pytest.mark.parametrize("name", SEEDS)
def test_seed_maml_inner_step(name):
    """One differentiable SGD step on a support batch, then the query loss's gradient w.r.t. the start."""
    models, x, y = _seed_pair(name)

    def meta_grads(model):
        params = dict(model.named_parameters())
        loss = F.cross_entropy(torch.func.functional_call(model, params, (x[:1],)), y[:1])
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        fast = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
        query = F.cross_entropy(torch.func.functional_call(model, fast, (x[1:],)), y[1:])
        return torch.autograd.grad(query, list(params.values()))

    _assert_all_close(meta_grads(models[0]), meta_grads(models[1]))


# --- opcheck: schema, autograd registration, fake kernels, AOT dispatch (static and dynamic) ---------


def _opcheck_samples():
    g = torch.Generator().manual_seed(0)

    def rand(*size, grad=True, channels_last=False):
        t = torch.randn(*size, generator=g)
        if channels_last:
            t = t.to(memory_format=torch.channels_last)
        return t.requires_grad_(grad)

    geometry = ([2, 1], [1, 0, 2, 1], [1, 2], 2, "auto")
    samples = []
    for cl in (False, True):
        x, w = rand(2, 4, 7, 6, channels_last=cl), rand(6, 2, 3, 2)
        y = ops.conv2d(x.detach(), w.detach(), None, *geometry)
        samples += [
            ("conv2d", (x, w, rand(6), *geometry)),
            ("conv2d", (x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 2, "im2col")),
            ("conv2d_grad_input", (rand(*y.shape, channels_last=cl), w, [2, 4, 7, 6], *geometry)),
            ("conv2d_grad_weight", (rand(*y.shape, channels_last=cl), x, [6, 2, 3, 2], *geometry)),
            ("conv2d_grad_weight_bias", (rand(*y.shape, channels_last=cl), x, [6, 2, 3, 2], *geometry)),
            ("conv2d_grad_bias", (rand(*y.shape, channels_last=cl),)),
        ]
        p = rand(2, 3, 7, 6, channels_last=cl)
        pool = ([3, 2], [2, 2], [1, 1], [1, 1], True)
        out, indices = ops.max_pool2d(p.detach(), *pool)
        samples += [
            ("max_pool2d", (p, *pool)),
            ("max_pool2d", (p, [2, 2], [1, 2], [0, 1], [2, 1], False)),
            ("max_pool2d_backward", (rand(*out.shape, channels_last=cl), indices, [2, 3, 7, 6])),
        ]
    return samples


OPCHECK_SAMPLES = _opcheck_samples()


@pytest.mark.parametrize("index", range(len(OPCHECK_SAMPLES)),
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(OPCHECK_SAMPLES)])
def test_opcheck(index):
    name, args = OPCHECK_SAMPLES[index]
    results = torch.library.opcheck(getattr(ops, name).default, args)  # every test opcheck has
    assert {"test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"} <= set(results)
    assert all(result == "SUCCESS" for result in results.values()), results


def test_every_op_is_opchecked():
    assert {name for name, _ in OPCHECK_SAMPLES} == {
        "conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_weight_bias", "conv2d_grad_bias",
        "max_pool2d", "max_pool2d_backward"}


# --- channels_last: outputs and gradients keep the layout torch's layers give -------------------------


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.mark.parametrize("which", ["input", "weight", "both"])
def test_conv2d_channels_last_like_torch(which):
    results = []
    for conv in (CF.conv2d, F.conv2d):
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(2, 4, 6, 6, generator=g), torch.randn(8, 4, 3, 3, generator=g)
        if which in ("input", "both"):
            x = x.to(memory_format=torch.channels_last)
        if which in ("weight", "both"):
            w = w.to(memory_format=torch.channels_last)
        x.requires_grad_(), w.requires_grad_()
        y = conv(x, w, None, padding=1)
        gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
        results.append((y, gx, gw))
    for ours, theirs in zip(*results):
        assert _layout(ours) == _layout(theirs) == "channels_last"
        torch.testing.assert_close(ours, theirs)


def test_max_pool2d_channels_last_like_torch():
    results = []
    for pool in (CF.max_pool2d, F.max_pool2d):
        x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(0))
        x = x.to(memory_format=torch.channels_last).requires_grad_()
        y, indices = pool(x, 3, 2, 1, return_indices=True)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        results.append((y, indices, gx))
    for ours, theirs in zip(*results):
        assert _layout(ours) == _layout(theirs) == "channels_last"
        torch.testing.assert_close(ours, theirs)


def test_channels_last_model_stays_channels_last():
    model = build_model("cifar_bn").to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    seen = []
    for m in model.modules():
        if isinstance(m, (cnnext.Conv2d, cnnext.MaxPool2d)):
            m.register_forward_hook(lambda m, i, o: seen.append(_layout(o)))
    model(x).sum().backward()
    assert seen and set(seen) == {"channels_last"}
    assert all(_layout(p.grad) == _layout(p) for p in model.parameters())
