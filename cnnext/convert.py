"""convert(): swap a model's convolution and pooling layers for cnnext's."""
from __future__ import annotations

import copy

from torch import nn

from ._args import check_algo
from .modules import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d

__all__ = ["convert"]

# torch layer (or cnnext's own, which takes the new algo) -> cnnext layer.
_CONVS = {nn.Conv1d: Conv1d, Conv1d: Conv1d, nn.Conv2d: Conv2d, Conv2d: Conv2d}
_POOLS = {nn.MaxPool2d: MaxPool2d, nn.AvgPool2d: AvgPool2d, nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d}


def convert(model: nn.Module, *, algo: str = "auto", inplace: bool = False) -> nn.Module:
    """Returns ``model`` with every nn.Conv1d, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d and
    nn.AdaptiveAvgPool2d (at any depth) running on cnnext.

    Each layer becomes an instance of the cnnext layer of the same name holding the very same
    parameters, buffers and hooks, so outputs and state_dict keys do not change. With
    inplace=False (the default) a deep copy is converted and ``model`` is left untouched;
    with inplace=True the layers of ``model`` itself are converted (its parameters stay the
    same tensors, so an existing optimizer keeps working). Cnnext layers already present get
    the new ``algo``. Subclasses of the torch layers other than cnnext's are left alone,
    since their forward may differ. Raises ValueError for an unknown algo.
    """
    check_algo(algo)
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        # Re-typing keeps the object, so every reference to the layer and its tensors stays valid.
        kind = type(module)
        if kind in _CONVS:
            module.__class__ = _CONVS[kind]
            module.algo = algo
        elif kind in _POOLS:
            module.__class__ = _POOLS[kind]
    return model
