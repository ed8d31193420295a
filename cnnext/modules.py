"""Drop-in subclasses of the torch.nn layers that run cnnext's kernels: Conv1d, Conv2d, MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d (and ReLUMaxPool2d, built by fuse())."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from . import functional
from ._args import check_algo

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "Conv1d", "Conv2d", "MaxPool2d", "ReLUMaxPool2d"]


class _TraceNotScript:
    """Makes torch.jit.script of a model holding this layer fail at once with a message that says what works.

    TorchScript cannot compile the layers' forward (it calls cnnext.functional, whose argument handling is
    plain Python), and it is in maintenance upstream; torch.jit.trace records the ops themselves instead.
    """

    def __prepare_scriptable__(self):  # torch.jit.script calls this on every submodule before compiling
        raise RuntimeError(
            f"torch.jit.script cannot compile cnnext.{type(self).__name__}: its forward is Python that "
            "TorchScript does not support. Use torch.jit.trace(model, example_inputs) instead (the traced "
            "module saves with torch.jit.save and loads with torch.jit.load after `import cnnext`), or "
            "torch.export / torch.compile."
        )


class _CnnextConv(_TraceNotScript):
    """What Conv1d and Conv2d add to their nn base: the keyword ``algo`` ("direct", "im2col" or "auto"),
    shown in repr, and a forward through ``_convolve`` (a cnnext.functional convolution). Non-zero padding
    modes (reflect, replicate, circular) pad with torch.nn.functional.pad and then convolve without
    padding, exactly as the nn layers do."""

    _convolve: Callable[..., torch.Tensor]

    def __init__(self, *args, algo: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.algo = check_algo(algo)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return type(self)._convolve(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                                    algo=self.algo)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, algo={self.algo!r}"


class Conv2d(_CnnextConv, nn.Conv2d):
    """nn.Conv2d with cnnext's convolution; same constructor, parameters, init and state_dict keys,
    plus ``algo`` (see _CnnextConv)."""

    _convolve = functional.conv2d


class MaxPool2d(_TraceNotScript, nn.MaxPool2d):
    """nn.MaxPool2d with cnnext's pooling kernel; same constructor and behaviour."""

    def forward(self, input: torch.Tensor):
        return functional.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )


class Conv1d(_CnnextConv, nn.Conv1d):
    """nn.Conv1d with cnnext's convolution (a conv2d of height 1); same constructor, parameters, init
    and state_dict keys, plus ``algo`` (see _CnnextConv)."""

    _convolve = functional.conv1d


class AvgPool2d(_TraceNotScript, nn.AvgPool2d):
    """nn.AvgPool2d with cnnext's pooling kernel; same constructor and behaviour."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                     self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(_TraceNotScript, nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d with cnnext's pooling kernel; same constructor and behaviour."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.adaptive_avg_pool2d(input, self.output_size)


class ReLUMaxPool2d(nn.Module):
    """max_pool2d(relu(x)) computed as relu(max_pool2d(x)): ReLU runs on the pooled tensor.

    The two are equal because ReLU never lowers a value and keeps the order of the positive
    ones: where a window's maximum is positive both pick the same element (PyTorch's first
    maximum, NaN included), and where it is not both give 0 and a zero gradient. Outputs and
    gradients are identical to nn.ReLU followed by nn.MaxPool2d; the full-size ReLU pass (and
    its backward) is saved. ``pool`` is the cnnext.MaxPool2d that runs first. Built by
    cnnext.fuse, or directly: ``ReLUMaxPool2d(cnnext.MaxPool2d(2))``. Raises TypeError for
    another kind of pool and ValueError for one with return_indices=True (the indices of the
    windows whose maximum is not positive would differ).
    """

    def __init__(self, pool: MaxPool2d) -> None:
        super().__init__()
        if not isinstance(pool, MaxPool2d):
            raise TypeError(f"pool must be a cnnext.MaxPool2d, got {type(pool).__name__}")
        if pool.return_indices:
            raise ValueError("pool must not return indices (return_indices=True)")
        self.pool = pool

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # In place: the pooled tensor is fresh and nothing else holds it.
        return F.relu(self.pool(input), inplace=True)
