"""Normalises the argument forms torch.nn.functional accepts into the ops' fixed-size lists.

Every function raises ValueError/TypeError naming the offending argument.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Optional, Union

import torch

IntPair = Union[int, Sequence[int]]
ALGOS = ("auto", "direct", "im2col")


def check_algo(algo: str) -> str:
    """Returns ``algo`` if it is one of ALGOS, else raises ValueError."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {', '.join(map(repr, ALGOS))}, got {algo!r}")
    return algo


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _as_int(name: str, value, v) -> int:
    """One element ``v`` of argument ``name`` (= ``value``) as an int; TypeError for bools, floats, strings."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be an int or a tuple of 2 ints, got {value!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of 2 ints, got {value!r}") from None


def pair(name: str, value: IntPair) -> list[int]:
    """``value`` (an int, or a sequence of one or two ints) as [height, width].

    Raises TypeError for anything else (floats, strings and bools included, as PyTorch does)
    and ValueError for a wrong length or an int outside int64, naming ``name``.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = [_as_int(name, value, v) for v in value]
    else:
        values = [_as_int(name, value, value)]
    if len(values) == 1:
        values *= 2
    if len(values) != 2:
        raise ValueError(f"{name} must be an int or a tuple of 2 ints, got {value!r}")
    if not all(INT64_MIN <= v <= INT64_MAX for v in values):
        raise ValueError(f"{name} must fit in int64, got {value!r}")
    return values


def pool_stride(stride: Optional[IntPair], kernel_size: list[int]) -> list[int]:
    """A pooling stride as [height, width]: None or an empty sequence means kernel_size, as in PyTorch."""
    if stride is None or (isinstance(stride, Sequence) and not isinstance(stride, str) and len(stride) == 0):
        return kernel_size
    return pair("stride", stride)


def conv_padding(padding: Union[str, IntPair], weight: torch.Tensor, stride: list[int], dilation: list[int]) -> list[int]:
    """Padding as [top, left, bottom, right]; "same" may be asymmetric (the extra row/column goes last, as in PyTorch)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding != "same":
            raise ValueError(f"padding must be 'same', 'valid', an int or a tuple of 2 ints, got {padding!r}")
        if stride != [1, 1]:
            raise ValueError("padding='same' is not supported for strided convolutions")
        if weight.dim() != 4:
            raise ValueError(f"weight must be 4-D (out_channels, in_channels/groups, kH, kW), got size {tuple(weight.shape)}")
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
        if max(totals) > INT64_MAX:
            raise ValueError(f"padding='same' with dilation={dilation} and kernel {tuple(weight.shape[2:])} needs more "
                             "padding than int64 can hold")
        return [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]
    top, left = pair("padding", padding)
    return [top, left, top, left]


def spatial_input(op: str, input: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Returns (4-D input, whether it was unbatched 3-D), or raises for other ranks."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dim() == 3:
        return input.unsqueeze(0), True
    if input.dim() != 4:
        raise ValueError(f"{op}: expected 3-D (unbatched) or 4-D (batched) input, got input of size {tuple(input.shape)}")
    return input, False


def single(name: str, value: Union[int, Sequence[int]]) -> int:
    """``value`` (an int, or a sequence of one int) as an int: conv1d's stride, padding and dilation."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of 1 int, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        values = [int(v) for v in value]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a tuple of 1 int, got {value!r}") from None
    if len(values) != 1:
        raise ValueError(f"{name} must be an int or a tuple of 1 int, got {value!r}")
    return values[0]


def adaptive_output_size(output_size, input: torch.Tensor) -> list[int]:
    """adaptive pooling's ``output_size`` (an int, or two ints or Nones; None keeps the input's size)
    as [height, width], for a 4-D ``input``."""
    if isinstance(output_size, bool):
        raise TypeError(f"output_size must be an int or a tuple of 2 ints or None, got {output_size!r}")
    if isinstance(output_size, int):
        return [output_size, output_size]
    try:
        values = list(output_size)
    except TypeError:
        raise TypeError(f"output_size must be an int or a tuple of 2 ints or None, got {output_size!r}") from None
    if len(values) != 2:
        raise ValueError(f"output_size must be an int or a tuple of 2 ints or None, got {output_size!r}")
    sizes = []
    for value, size in zip(values, input.shape[2:]):
        if value is None:
            sizes.append(size)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"output_size must be an int or a tuple of 2 ints or None, got {output_size!r}")
        else:
            sizes.append(value)
    return sizes
