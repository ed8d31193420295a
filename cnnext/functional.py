"""conv1d(), conv2d(), max_pool2d(), avg_pool2d(), adaptive_avg_pool2d(): torch.nn.functional's
signatures over cnnext's compiled kernels.

They accept every argument form torch.nn.functional accepts (ints or tuples,
padding "same"/"valid", batched (N, C, H, W) or unbatched (C, H, W) input)
and give the same results, gradients and max-pool indices. They are
differentiable to any order, in reverse and forward mode, under torch.func
transforms, torch.compile and torch.export (see cnnext/_autograd.py). A
channels_last input (or, for conv2d, weight) gives a channels_last output.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch

from . import _autograd
from ._args import IntPair, adaptive_output_size, check_algo, conv_padding, pair, pool_stride, single, spatial_input

__all__ = ["adaptive_avg_pool2d", "avg_pool2d", "conv1d", "conv2d", "max_pool2d"]


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
    algo: "direct", "im2col" or "auto" (auto picks per pass, dtype and CPU instruction set
    what measured faster: cnnext._ops.conv2d_plan tells which; see README).
    Float32/64 everywhere; float16/bfloat16 accumulate in float32. On the CPU also int8,
    uint8, int16, int32 and int64 (dilated: int64 only), as torch: the result in that dtype,
    wrapping around on overflow; integer tensors have no gradient. Raises
    ValueError/TypeError naming the bad argument (and the dtype, for one torch rejects).
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
    PyTorch's, NaN propagating). Floating types, and on the CPU int8, uint8, int16, int32 and
    int64. Raises ValueError/TypeError naming the bad argument.
    """
    batched, unbatched = spatial_input("max_pool2d", input)
    kernel_ = pair("kernel_size", kernel_size)
    stride_ = pool_stride(stride, kernel_)
    output, indices = _autograd.max_pool2d(
        batched, kernel_, stride_, pair("padding", padding), pair("dilation", dilation), bool(ceil_mode)
    )
    if unbatched:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output


def avg_pool2d(
    input: torch.Tensor,
    kernel_size: IntPair,
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: Optional[int] = None,
) -> torch.Tensor:
    """2-D average pooling, as torch.nn.functional.avg_pool2d, computed by cnnext's kernels.

    input: (N, C, H, W) or (C, H, W). stride defaults to kernel_size; padding must be at most
    half the kernel. Each output is the sum over its window divided by the window's size: with
    count_include_pad the padded positions count (a ceil_mode window hanging past the padding
    counts only up to it), without only the input positions; a non-zero divisor_override
    replaces that divisor. Float32/64; float16/bfloat16 accumulate in float32; on the CPU also
    int64, as torch: the sum wraps around on overflow and the division truncates toward zero.
    Raises ValueError/TypeError naming the bad argument.
    """
    batched, unbatched = spatial_input("avg_pool2d", input)
    kernel_ = pair("kernel_size", kernel_size)
    stride_ = pool_stride(stride, kernel_)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)):
        raise TypeError(f"divisor_override must be an int or None, got {divisor_override!r}")
    if divisor_override == 0:
        raise ValueError("divisor_override must be non-zero (or None)")
    output = _autograd.avg_pool2d(batched, kernel_, stride_, pair("padding", padding), bool(ceil_mode),
                                  bool(count_include_pad), divisor_override)
    return output.squeeze(0) if unbatched else output


def adaptive_avg_pool2d(input: torch.Tensor, output_size) -> torch.Tensor:
    """2-D adaptive average pooling, as torch.nn.functional.adaptive_avg_pool2d, by cnnext's kernels.

    input: (N, C, H, W) or (C, H, W); output_size: an int or a pair of ints or None (None keeps
    that input size). Output row i averages input rows floor(i*H/OH) to ceil((i+1)*H/OH) - 1,
    and likewise for columns; output 1 x 1 is the global average (a plain sum of each plane).
    Floating types only (torch takes no integers either). Raises ValueError/TypeError naming
    the bad argument.
    """
    batched, unbatched = spatial_input("adaptive_avg_pool2d", input)
    output = _autograd.adaptive_avg_pool2d(batched, adaptive_output_size(output_size, batched))
    return output.squeeze(0) if unbatched else output


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: Union[int, Sequence[int]] = 1,
    padding: Union[str, int, Sequence[int]] = 0,
    dilation: Union[int, Sequence[int]] = 1,
    groups: int = 1,
    *,
    algo: str = "auto",
) -> torch.Tensor:
    """1-D cross-correlation, as torch.nn.functional.conv1d, computed by cnnext's conv2d kernels.

    input: (N, C_in, L) or unbatched (C_in, L); weight: (C_out, C_in/groups, K); bias: (C_out,)
    or None; padding an int, a 1-tuple, "same" or "valid". Returns (N, C_out, OL) (or
    (C_out, OL)) with OL = floor((L + 2*padding - dilation*(K-1) - 1)/stride) + 1. Runs as a
    2-D convolution of height 1 (same results and gradients); algo and dtypes as for conv2d.
    Raises ValueError/TypeError naming the bad argument.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"conv1d: input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(f"conv1d: expected 2-D (unbatched) or 3-D (batched) input, got input of size "
                         f"{tuple(input.shape)}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"conv1d: weight must be a Tensor, got {type(weight).__name__}")
    if weight.dim() != 3:
        raise ValueError(f"conv1d: weight must be 3-D (out_channels, in_channels/groups, kernel), got size "
                         f"{tuple(weight.shape)}")
    stride_, dilation_ = single("stride", stride), single("dilation", dilation)
    padding_ = padding if isinstance(padding, str) else (0, single("padding", padding))
    output = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias, (1, stride_), padding_, (1, dilation_), groups,
                    algo=algo)
    return output.squeeze(-2)
