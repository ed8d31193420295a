"""conv2d() and max_pool2d(): torch.nn.functional's signatures over cnnext's compiled kernels.

Both accept every argument form torch.nn.functional accepts (ints or tuples,
padding "same"/"valid", batched (N, C, H, W) or unbatched (C, H, W) input)
and give the same results, gradients and max-pool indices. Outputs are
contiguous NCHW whatever the input's memory format.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from ._args import IntPair, check_algo, conv_padding, pair, pool_stride, spatial_input
from ._ops import ops

__all__ = ["conv2d", "max_pool2d"]


class Conv2dFunction(torch.autograd.Function):
    """Autograd over cnnext::conv2d; saves the input only if the weight needs a gradient, and vice versa."""

    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups, algo):
        ctx.geometry = (stride, padding, dilation, groups, algo)
        ctx.input_size = list(input.shape)
        ctx.weight_size = list(weight.shape)
        needs_input, needs_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(input if needs_weight else None, weight if needs_input else None)
        return ops.conv2d(input, weight, bias, stride, padding, dilation, groups, algo)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        geometry = ctx.geometry
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = ops.conv2d_grad_input(grad_output, weight, ctx.input_size, *geometry)
        if ctx.needs_input_grad[1] and ctx.needs_input_grad[2]:  # one pass over grad_output for both
            grad_weight, grad_bias = ops.conv2d_grad_weight_bias(grad_output, input, ctx.weight_size, *geometry)
        elif ctx.needs_input_grad[1]:
            grad_weight = ops.conv2d_grad_weight(grad_output, input, ctx.weight_size, *geometry)
        elif ctx.needs_input_grad[2]:
            grad_bias = ops.conv2d_grad_bias(grad_output)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class MaxPool2dFunction(torch.autograd.Function):
    """Autograd over cnnext::max_pool2d; backward scatters through the saved indices."""

    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode):
        output, indices = ops.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.input_size = list(input.shape)
        # A window whose taps all miss the input (possible only when a dilation exceeds the input's size)
        # has output -inf and PyTorch's index for it, which can lie past the plane.
        ctx.empty_windows = any(d > n for d, n in zip(dilation, input.shape[-2:]))
        ctx.save_for_backward(indices)
        ctx.mark_non_differentiable(indices)
        # Otherwise autograd fills a zero gradient for the indices on every backward: an int64 tensor
        # the size of the output (6.5 MB for lenet.pool1), 0.16 - 0.5 ms of a training step.
        ctx.set_materialize_grads(False)
        return output, indices

    @staticmethod
    def backward(ctx, grad_output, _grad_indices):
        if grad_output is None:  # a backward through the indices alone (gradcheck does one)
            return (None,) * 6
        (indices,) = ctx.saved_tensors
        if ctx.empty_windows:  # their gradient goes nowhere; the op rejects indices outside the plane
            inside = indices < ctx.input_size[-2] * ctx.input_size[-1]
            indices, grad_output = indices.where(inside, 0), grad_output.where(inside, 0)
        return ops.max_pool2d_backward(grad_output, indices, ctx.input_size), None, None, None, None, None


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
    output = Conv2dFunction.apply(batched, weight, bias, stride_, padding_, dilation_, groups, algo)
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
    stride_ = pool_stride(stride, kernel_)
    output, indices = MaxPool2dFunction.apply(
        batched, kernel_, stride_, pair("padding", padding), pair("dilation", dilation), bool(ceil_mode)
    )
    if unbatched:
        output, indices = output.squeeze(0), indices.squeeze(0)
    return (output, indices) if return_indices else output
