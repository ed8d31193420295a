"""convert(): swap a model's nn.Conv2d / nn.MaxPool2d layers for cnnext's."""
from __future__ import annotations

import copy

from torch import nn

from ._args import check_algo
from .modules import Conv2d, MaxPool2d

__all__ = ["convert"]


def convert(model: nn.Module, *, algo: str = "auto", inplace: bool = False) -> nn.Module:
    """Returns ``model`` with every nn.Conv2d and nn.MaxPool2d (at any depth) running on cnnext.

    Each layer becomes an instance of cnnext.Conv2d / cnnext.MaxPool2d holding the very same
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
        if type(module) in (nn.Conv2d, Conv2d):
            # Re-typing keeps the object, so every reference to the layer and its tensors stays valid.
            module.__class__ = Conv2d
            module.algo = algo
        elif type(module) is nn.MaxPool2d:
            module.__class__ = MaxPool2d
    return model
