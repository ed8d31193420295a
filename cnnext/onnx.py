"""ONNX export of models that use cnnext: its ops translated to the standard ONNX ``Conv``, ``MaxPool``,
``AveragePool`` and ``GlobalAveragePool``.

    import cnnext.onnx
    program = torch.onnx.export(model, (x,), dynamo=True,
                                custom_translation_table=cnnext.onnx.translation_table())
    program.save("model.onnx")    # runs in any ONNX runtime: no cnnext needed there

torch's exporter (``dynamo=True``) has no public registry for custom ops, so the
translations go in through ``custom_translation_table``; ``export`` below does that
for you. Needs the ``onnx`` and ``onnxscript`` packages (imported on first use).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from . import _ops  # noqa: F401  (registers torch.ops.cnnext.*)

__all__ = ["export", "translation_table"]


def translation_table() -> dict[Callable, Callable]:
    """The translations of cnnext's forward ops, keyed by op overload, for ``torch.onnx.export``'s
    ``custom_translation_table`` (``dynamo=True`` only).

    - ``cnnext::conv2d`` becomes ``Conv``: strides, pads (cnnext's [top, left, bottom, right] is
      ONNX's order), dilations, group, bias when there is one. ``algo`` has no ONNX meaning and is dropped.
    - ``cnnext::max_pool2d`` becomes ``MaxPool`` (kernel_shape, strides, pads, dilations, ceil_mode).
      Its indices are ONNX's, flattened over the whole (N, C, H, W) tensor, taken modulo H*W to give
      PyTorch's per-plane indices; when the model does not use the indices, the exporter's optimizer
      drops that computation and MaxPool's Indices output.
    - ``cnnext::avg_pool2d`` becomes ``AveragePool`` (count_include_pad, ceil_mode); a
      ``divisor_override`` d scales it by kH*kW/d, exact when every window has kH*kW positions, so
      it is refused (ValueError at export) together with ceil_mode, whose last windows may be clipped.
    - ``cnnext::adaptive_avg_pool2d`` becomes ``GlobalAveragePool`` for a 1x1 output and
      ``AveragePool`` with kernel = stride = input/output size where the output divides the input;
      ONNX has no adaptive pooling for other sizes (ValueError at export, as torch's own exporter).

    The translations are written in ai.onnx opset 18, the exporter's default. Raises ImportError when
    onnxscript is not installed.
    """
    from onnxscript import opset18 as op

    def conv2d(input, weight, bias, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
               groups: int, algo: str):
        attributes = dict(strides=list(stride), pads=list(padding), dilations=list(dilation), group=groups)
        if bias is None:
            return op.Conv(input, weight, **attributes)
        return op.Conv(input, weight, bias, **attributes)

    def max_pool2d(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   dilation: Sequence[int], ceil_mode: bool):
        output, flat_indices = op.MaxPool(
            input, kernel_shape=list(kernel_size), strides=list(stride), pads=[*padding, *padding],
            dilations=list(dilation), ceil_mode=int(ceil_mode), storage_order=0,
        )
        plane = op.ReduceProd(op.Shape(input, start=2, end=4), keepdims=1)
        return output, op.Mod(flat_indices, plane)

    def avg_pool2d(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                   ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int]):
        if divisor_override is not None and ceil_mode:
            raise ValueError("avg_pool2d with divisor_override and ceil_mode=True has no exact ONNX form")
        include_pad = count_include_pad or divisor_override is not None
        output = op.AveragePool(input, kernel_shape=list(kernel_size), strides=list(stride),
                                pads=[*padding, *padding], ceil_mode=int(ceil_mode),
                                count_include_pad=int(include_pad))
        if divisor_override is None:
            return output
        return op.Mul(output, op.CastLike(kernel_size[0] * kernel_size[1] / divisor_override, output))

    def adaptive_avg_pool2d(input, output_size: Sequence[int]):
        if list(output_size) == [1, 1]:
            return op.GlobalAveragePool(input)
        sizes = [input.shape[2], input.shape[3]] if input.shape is not None else [None, None]
        if not all(isinstance(s, int) and s % o == 0 for s, o in zip(sizes, output_size)):
            raise ValueError(f"adaptive_avg_pool2d to output size {list(output_size)} from input size {sizes}: "
                             "ONNX has adaptive pooling only where the output size divides a static input size")
        window = [s // o for s, o in zip(sizes, output_size)]
        return op.AveragePool(input, kernel_shape=window, strides=window)

    return {
        torch.ops.cnnext.conv2d.default: conv2d,
        torch.ops.cnnext.max_pool2d.default: max_pool2d,
        torch.ops.cnnext.avg_pool2d.default: avg_pool2d,
        torch.ops.cnnext.adaptive_avg_pool2d.default: adaptive_avg_pool2d,
    }


def export(model: torch.nn.Module, args: tuple[Any, ...] = (), f: Optional[str] = None, **kwargs: Any):
    """``torch.onnx.export(model, args, f, dynamo=True, **kwargs)`` with cnnext's translations added to
    any ``custom_translation_table`` in kwargs. Returns the ``torch.onnx.ONNXProgram``. Raises
    TypeError if kwargs ask for ``dynamo=False`` (the TorchScript exporter does not know cnnext's ops).
    """
    if kwargs.pop("dynamo", True) is not True:
        raise TypeError("cnnext.onnx.export needs dynamo=True: the TorchScript-based exporter has no "
                        "translations for cnnext's ops")
    table = {**translation_table(), **(kwargs.pop("custom_translation_table", None) or {})}
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
