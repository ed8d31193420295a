"""torch.func and forward-mode AD: vmap per-sample gradients, jacrev, jacfwd, jvp, hessian and
torch.autograd.forward_ad, each compared with the same code on torch's layers; the raw ops' batching rules."""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import cnnext
from cnnext import functional as CF
from cnnext.models import build_model

ops = torch.ops.cnnext
f64 = dict(dtype=torch.float64)


def _randn(*size, seed=0):
    return torch.randn(*size, generator=torch.Generator().manual_seed(seed), **f64)


def _close(ours, theirs):
    for a, e in zip(torch.utils._pytree.tree_leaves(ours), torch.utils._pytree.tree_leaves(theirs)):
        torch.testing.assert_close(a, e)


def _net(mod):
    """conv (groups, padding) -> max-pool (ceil_mode) -> conv (stride) with weights w1, w2 and bias b1."""
    def net(w1, b1, w2, x):
        h = mod.conv2d(x, w1, b1, padding=1, groups=2).tanh()
        h = mod.max_pool2d(h, 3, 2, 1, ceil_mode=True)
        return mod.conv2d(h, w2, None, stride=2)
    return net


def _params():
    return _randn(4, 1, 3, 3, seed=1), _randn(4, seed=2), _randn(3, 4, 2, 2, seed=3)


def test_per_sample_gradients_of_a_seed_model():
    """The Opacus / DP-SGD recipe: vmap(grad(loss)) over single samples of a converted model."""
    results = []
    for layers in ("cnnext", "torch"):
        model = build_model("cnn_pad", layers=layers).double()
        params = {k: v.detach() for k, v in model.named_parameters()}
        x, y = _randn(3, 1, 28, 28), torch.tensor([1, 7, 3])

        def loss(p, xi, yi):
            return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

        results.append(vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y))
    _close(*results)
    assert all(g.shape[0] == 3 for g in results[0].values())


def test_vmap_grad_with_respect_to_input_and_weights():
    x = _randn(3, 2, 6, 5)
    fns = [grad(lambda w1, b1, w2, xi: (_net(m)(w1, b1, w2, xi[None]) ** 2).sum(), argnums=(0, 1, 2, 3))
           for m in (CF, F)]
    _close(*[vmap(fn, in_dims=(None, None, None, 0))(*_params(), x) for fn in fns])


def test_vmap_over_weights():
    """A batch of weight sets (an ensemble) against one input: conv2d's batched-weight rule."""
    w1, b1, w2 = _params()
    ensemble = (torch.stack([w1, 2 * w1]), torch.stack([b1, -b1]), torch.stack([w2, w2.flip(0)]))
    x = _randn(2, 2, 6, 5)
    _close(*[vmap(_net(m), in_dims=(0, 0, 0, None))(*ensemble, x) for m in (CF, F)])


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_jacobians(transform):
    jac = {"jacrev": jacrev, "jacfwd": jacfwd}[transform]
    x = _randn(1, 2, 5, 4)
    _close(*[jac(_net(m), argnums=(0, 1, 2, 3))(*_params(), x) for m in (CF, F)])


def test_jvp_in_every_argument():
    primals = (*_params(), _randn(2, 2, 6, 5))
    tangents = tuple(_randn(*p.shape, seed=10 + i) for i, p in enumerate(primals))
    _close(*[jvp(_net(m), primals, tangents) for m in (CF, F)])


def test_hessian_of_a_loss():
    w1, b1, w2 = _params()
    x = _randn(1, 2, 5, 4)
    _close(*[hessian(lambda b: (_net(m)(w1, b, w2, x) ** 2).sum())(b1) for m in (CF, F)])


def test_forward_ad_dual_tensors():
    primals = (*_params(), _randn(2, 2, 6, 5))
    tangents = tuple(_randn(*p.shape, seed=10 + i) for i, p in enumerate(primals))
    results = []
    for m in (CF, F):
        with fwAD.dual_level():
            out = _net(m)(*(fwAD.make_dual(p, t) for p, t in zip(primals, tangents)))
            results.append(fwAD.unpack_dual(out))
    _close(*results)


def test_forward_over_reverse_hvp():
    """jvp of grad: the fastest Hessian-vector product in torch.func, through the backward ops' jvps."""
    w1, b1, w2 = _params()
    x = _randn(2, 2, 6, 5)
    v = _randn(*w1.shape, seed=9)
    _close(*[jvp(grad(lambda w: (_net(m)(w, b1, w2, x) ** 2).sum()), (w1,), (v,)) for m in (CF, F)])


def test_max_pool2d_jvp_gathers_the_tangent():
    x, t = _randn(2, 3, 7, 6), _randn(2, 3, 7, 6, seed=1)
    (out, tangent), (_, ref) = [jvp(lambda x: m.max_pool2d(x, (3, 2), 2, 1, dilation=(1, 2)), (x,), (t,))
                                for m in (CF, F)]
    torch.testing.assert_close(tangent, ref)
    indices = CF.max_pool2d(x, (3, 2), 2, 1, dilation=(1, 2), return_indices=True)[1]
    torch.testing.assert_close(tangent, t.flatten(2).gather(2, indices.flatten(2)).view_as(out))


def test_raw_ops_batching_rules():
    """Every op under vmap, with each tensor argument batched, equals a loop over the batch."""
    geometry = ([2, 1], [1, 0, 1, 1], [1, 2], 2, "auto")
    x, w, b = _randn(3, 2, 4, 7, 6), _randn(3, 4, 2, 3, 2, seed=1), _randn(3, 4, seed=2)
    gy = ops.conv2d(x[0], w[0], None, *geometry)
    gys = _randn(3, *gy.shape, seed=3)
    pooled, indices = ops.max_pool2d(x[0], [2, 2], [2, 1], [1, 0], [1, 1], True)
    pooled_indices = torch.stack([ops.max_pool2d(x[i], [2, 2], [2, 1], [1, 0], [1, 1], True)[1] for i in range(3)])
    cases = [
        (lambda x, w, b: ops.conv2d(x, w, b, *geometry), (x, w, b), (0, 0, 0)),
        (lambda x, w, b: ops.conv2d(x, w, b, *geometry), (x, w[0], b[0]), (0, None, None)),
        (lambda x, w, b: ops.conv2d(x, w, b, *geometry), (x[0], w, b[0]), (None, 0, None)),
        (lambda g, w: ops.conv2d_grad_input(g, w, list(x.shape[1:]), *geometry), (gys, w), (0, 0)),
        (lambda g, w: ops.conv2d_grad_input(g, w, list(x.shape[1:]), *geometry), (gys, w[0]), (0, None)),
        (lambda g, x: ops.conv2d_grad_weight(g, x, list(w.shape[1:]), *geometry), (gys, x), (0, 0)),
        (lambda g, x: ops.conv2d_grad_weight(g, x, list(w.shape[1:]), *geometry), (gys, x[0]), (0, None)),
        (lambda g, x: ops.conv2d_grad_weight_bias(g, x, list(w.shape[1:]), *geometry), (gys[0], x), (None, 0)),
        (lambda g: ops.conv2d_grad_bias(g), (gys,), (0,)),
        (lambda x: ops.max_pool2d(x, [2, 2], [2, 1], [1, 0], [1, 1], True), (x,), (0,)),
        (lambda g, i: ops.max_pool2d_backward(g, i, list(x.shape[1:])),
         (_randn(3, *pooled.shape, seed=4), pooled_indices), (0, 0)),
        (lambda g, i: ops.max_pool2d_backward(g, i, list(x.shape[1:])), (_randn(3, *pooled.shape, seed=5), indices),
         (0, None)),
    ]
    for fn, args, in_dims in cases:
        batched = vmap(fn, in_dims=in_dims)(*args)
        looped = [fn(*(a if d is None else a[i] for a, d in zip(args, in_dims))) for i in range(3)]
        if isinstance(batched, tuple):
            looped = tuple(torch.stack(parts) for parts in zip(*looped))
        else:
            looped = torch.stack(looped)
        _close(batched, looped)


def test_vmap_of_a_converted_module_unbatched_samples():
    """vmap over (C, H, W) samples through cnnext.Conv2d / MaxPool2d modules (unbatched input)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.MaxPool2d(2)).double()
    converted = cnnext.convert(model)
    x = _randn(4, 2, 6, 6)
    _close(vmap(converted)(x), vmap(model)(x))
