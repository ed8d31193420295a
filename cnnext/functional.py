"""conv2d() and max_pool2d(): torch.nn.functional's signatures over cnnext's compiled kernels.

Both accept every argument form torch.nn.functional accepts (ints or tuples,
padding "same"/"valid", batched (N, C, H, W) or unbatched (C, H, W) input)
and give the same results, gradients and max-pool indices. They are
differentiable to any order, in reverse and forward mode, under torch.func
transforms, torch.compile and torch.export (see cnnext/_autograd.py). A
channels_last input (or, for conv2d, weight) gives a channels_last output.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from ._args import IntPair, check_algo, conv_padding, pair, spatial_input
from . import _autograd

__all__ = ["conv2d", "max_pool2d"]


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: Union[str, IntPair] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    algo: str = "auto",
) -> torch.Tensor:
    """2-D cross-correlation, as torch.nn.functional.conv2d, computed by cnnext's kernels.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kH, kW);
    bias: (C_out,) or None. Returns (N, C_out, OH, OW) (or (C_out, OH, OW) for unbatched
    input) with OH = floor((H + pad_top + pad_bottom - dilation*(kH-1) - 1)/stride) + 1.
    algo: "direct", "im2col" or "auto" (auto picks per pass: forward direct, grad_input
    direct iff C_in/groups >= 8, grad_weight direct iff OH*OW >= 64; see README).
    Float32/64 everywhere; float16/bfloat16 accumulate in float32. Raises
    ValueError/TypeError naming the bad argument.
    """
    check_algo(algo)
    batched, unbatched = spatial_input("conv2d", input)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"conv2d: weight must be a Tensor, got {type(weight).__name__}")
    if not isinstance(groups, int) or isinstance(groups, bool):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
    stride_, dilation_ = pair("stride", stride), pair("dilation", dilation)
    padding_ = conv_padding(padding, weight, stride_, dilation_)
    output = _autograd.conv2d(batched, weight, bias, stride_, padding_, dilation_, groups, algo)
    return output.squeeze(0) if unbatched else output


def max_pool2d(
    input: torch.Tensor,
    kernel_size: IntPair,
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling, as torch.nn.functional.max_pool2d, computed by cnnext's kernels.

    input: (N, C, H, W) or (C, H, W). stride defaults to kernel_size; padding must be at
    most half the kernel. Returns the pooled tensor, and with return_indices=True also the
    int64 indices of each maximum, flattened within its H x W input plane (identical to
    PyTorch's, NaN propagating). Raises ValueError/TypeError naming the bad argument.
    """
    batched, unbatched = spatial_input("max_pool2d", input)
    kernel_ = pair("kernel_size", kernel_size)
    stride_ = kernel_ if stride is None or (not isinstance(stride, int) and len(stride) == 0) else pair("stride", stride)
    output, indices = _autograd.max_pool2d(
        batched, kernel_, stride_, pair("padding", padding), pair("dilation", dilation), bool(ceil_mode)
    )
    if unbatched:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output
