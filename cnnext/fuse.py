"""fuse(): rewrite ReLU -> max-pool chains of a model (torch.fx) so that ReLU runs after pooling."""
from __future__ import annotations

from typing import Optional

import torch
from torch import fx, nn
from torch.nn import functional as F

from .modules import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d, ReLUMaxPool2d

__all__ = ["fuse"]

_RELU_FUNCTIONS = {F.relu: False, torch.relu: False, F.relu_: True, torch.relu_: True}
_RELU_METHODS = {"relu": False, "relu_": True}


class _Tracer(fx.Tracer):
    """Keeps cnnext's layers whole: their forward checks argument types, which fx proxies fail."""

    LEAVES = (Conv1d, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLUMaxPool2d)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, self.LEAVES) or super().is_leaf_module(module, qualified_name)


def _relu_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[bool]:
    """Whether ``node`` is a ReLU of its first argument working in place; None if it is no ReLU."""
    if node.op == "call_module" and type(modules[node.target]) is nn.ReLU:
        return modules[node.target].inplace
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        if node.target is F.relu:  # F.relu(input, inplace=False)
            return bool(node.args[1] if len(node.args) > 1 else node.kwargs.get("inplace", False))
        return _RELU_FUNCTIONS[node.target]
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return _RELU_METHODS[node.target]
    return None


def _fusable_pool(node: fx.Node, modules: dict[str, nn.Module]) -> Optional[nn.MaxPool2d]:
    """The max-pool layer ``node`` calls on one tensor, if it returns no indices."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    pool = modules[node.target]
    if type(pool) not in (nn.MaxPool2d, MaxPool2d) or pool.return_indices:
        return None
    return pool


def _fused_name(gm: fx.GraphModule, pool_node: fx.Node, calls: int) -> str:
    """The pool's own name when this is its only call, else a fresh name beside it."""
    if calls == 1:
        return pool_node.target
    name, suffix = f"{pool_node.target}_relu", 0
    while True:
        candidate = name if suffix == 0 else f"{name}{suffix}"
        try:
            gm.get_submodule(candidate)
        except AttributeError:
            return candidate
        suffix += 1


def fuse(model: nn.Module) -> fx.GraphModule:
    """Returns ``model`` traced by torch.fx with every ReLU -> max-pool chain as one ReLUMaxPool2d.

    A chain is a ReLU (nn.ReLU, F.relu, torch.relu, Tensor.relu and their in-place forms)
    whose only user is an nn.MaxPool2d or cnnext.MaxPool2d layer without return_indices. It
    becomes cnnext's pooling followed by ReLU on the pooled tensor (see ReLUMaxPool2d), which
    gives identical outputs and gradients and skips the ReLU pass over the full-size tensor.
    An in-place ReLU whose input has other users is left alone (they would see the change).
    Everything else (cnnext.convert's layers included) stays as traced.

    The result shares parameters and buffers with ``model`` (same tensors, same state_dict
    keys, so an optimizer built on ``model`` keeps working); ``model`` itself is not changed.
    Raises TypeError when ``model`` is not an nn.Module, and torch.fx's error when it cannot
    be traced (data-dependent control flow).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    graph = _Tracer().trace(model)
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        pool = _fusable_pool(node, modules)
        relu = node.args[0] if pool is not None else None
        if not isinstance(relu, fx.Node) or len(relu.users) != 1:
            continue
        inplace = _relu_inplace(relu, modules)
        source = relu.args[0] if relu.args else None
        if inplace is None or not isinstance(source, fx.Node) or (inplace and len(source.users) > 1):
            continue
        cnnext_pool = MaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                ceil_mode=pool.ceil_mode)
        name = _fused_name(gm, node, calls[node.target])
        gm.add_submodule(name, ReLUMaxPool2d(cnnext_pool))
        with gm.graph.inserting_after(node):
            fused = gm.graph.call_module(name, (source,))
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        gm.graph.erase_node(relu)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
