"""Conv2d and MaxPool2d: drop-in subclasses of the torch.nn layers that run cnnext's kernels."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from . import functional
from ._args import check_algo

__all__ = ["Conv2d", "MaxPool2d"]


class Conv2d(nn.Conv2d):
    """nn.Conv2d with cnnext's convolution; same constructor, parameters, init and state_dict keys.

    The extra keyword ``algo`` ("direct", "im2col" or "auto") picks the algorithm and shows
    in repr. Non-zero padding modes (reflect, replicate, circular) pad with torch.nn.functional.pad
    and then convolve without padding, exactly as nn.Conv2d does.
    """

    def __init__(self, *args, algo: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.algo = check_algo(algo)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        return functional.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups, algo=self.algo)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, algo={self.algo!r}"


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d with cnnext's pooling kernel; same constructor and behaviour."""

    def forward(self, input: torch.Tensor):
        return functional.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )
