"""Loads the compiled ops (``torch.ops.cnnext.*``) and gives them fake kernels.

Importing this module loads ``cnnext._C``, whose static initialisers register
the ops with the dispatcher. The fake kernels below compute output shapes and
layouts (as the C++ ops do) with symbolic sizes where they flow in, so
``torch.compile`` and ``torch.export`` trace cnnext layers with dynamic shapes
without specializing them. Derivatives and batching rules: cnnext/_autograd.py.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Optional

import torch
from torch import SymInt
from torch._prims_common import suggest_memory_format


# A package directory without its build outputs is cnnext's unbuilt source tree (typically found
# first on sys.path after a non-editable install, when run from the source directory): one clear
# error instead of Python's "partially initialized module" message.
for _output in ("_build_config", "_C"):
    _name = f"{__package__}.{_output}"
    if _name in sys.modules:
        continue
    _spec = importlib.util.find_spec(_name)
    # Found elsewhere means another cnnext's build (e.g. an editable install's finder), not this tree's.
    if _spec is None or os.path.dirname(_spec.origin or "") != os.path.dirname(__file__):
        raise ImportError(
            f"cnnext is not built in {os.path.dirname(__file__)} (its build output {_output} is missing): this "
            "is cnnext's source tree. Either run from another directory, so that the installed cnnext is "
            "imported, or build it in place with: pip install --no-build-isolation -e ."
        )

from . import _build_config  # noqa: E402

if _build_config.TORCH_VERSION != torch.__version__:
    raise ImportError(
        f"cnnext was built against torch {_build_config.TORCH_VERSION}, but torch {torch.__version__} is "
        "installed. Rebuild it against the installed torch with: "
        "pip install --no-build-isolation --force-reinstall --no-deps ."
    )

try:
    from . import _C
except ImportError as exc:  # e.g. undefined symbols after an in-place torch upgrade
    raise ImportError(
        f"cnnext's compiled extension failed to load ({exc}). Rebuild it against the installed torch "
        f"{torch.__version__} with: pip install --no-build-isolation --force-reinstall --no-deps ."
    ) from exc

ops = torch.ops.cnnext


def _conv_out(size: SymInt, pad_total: int, dilation: int, kernel: SymInt, stride: int) -> SymInt:
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def _pool_out(size: SymInt, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> SymInt:
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode:
        # PyTorch's rule: the last window must start inside the input or the left padding, i.e.
        # (out - 1) * stride < size + pad. As a min it needs no branch on a symbolic size (the check
        # that padding is at most half the kernel makes it drop at most one window, as torch does).
        out = torch.sym_min(out, (size + pad - 1) // stride + 1)
    return out


def _layout(*tensors: torch.Tensor) -> torch.memory_format:
    """channels_last if any of ``tensors`` is (as the C++ ops decide with suggest_memory_format)."""
    if any(suggest_memory_format(t) == torch.channels_last for t in tensors):
        return torch.channels_last
    return torch.contiguous_format


def _empty(like: torch.Tensor, size: Sequence[SymInt], layout: torch.memory_format,
           dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    return torch.empty(size, dtype=dtype or like.dtype, device=like.device, memory_format=layout)


@torch.library.register_fake("cnnext::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups, algo):
    height = _conv_out(input.shape[2], padding[0] + padding[2], dilation[0], weight.shape[2], stride[0])
    width = _conv_out(input.shape[3], padding[1] + padding[3], dilation[1], weight.shape[3], stride[1])
    return _empty(input, (input.shape[0], weight.shape[0], height, width), _layout(input, weight))


@torch.library.register_fake("cnnext::conv2d_grad_input")
def _conv2d_grad_input_fake(grad_output, weight, input_size, stride, padding, dilation, groups, algo):
    return _empty(grad_output, input_size, _layout(grad_output, weight))


@torch.library.register_fake("cnnext::conv2d_grad_weight")
def _conv2d_grad_weight_fake(grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    return _empty(grad_output, weight_size, _layout(grad_output, input))


@torch.library.register_fake("cnnext::conv2d_grad_weight_bias")
def _conv2d_grad_weight_bias_fake(grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    return (_empty(grad_output, weight_size, _layout(grad_output, input)),
            grad_output.new_empty((weight_size[0],)))


@torch.library.register_fake("cnnext::conv2d_grad_bias")
def _conv2d_grad_bias_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


@torch.library.register_fake("cnnext::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    height = _pool_out(input.shape[2], kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode)
    width = _pool_out(input.shape[3], kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode)
    shape = (input.shape[0], input.shape[1], height, width)
    layout = _layout(input)
    return _empty(input, shape, layout), _empty(input, shape, layout, torch.int64)


@torch.library.register_fake("cnnext::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, indices, input_size):
    return _empty(grad_output, input_size, _layout(indices))


@torch.library.register_fake("cnnext::avg_pool2d")
def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    height = _pool_out(input.shape[2], kernel_size[0], stride[0], padding[0], 1, ceil_mode)
    width = _pool_out(input.shape[3], kernel_size[1], stride[1], padding[1], 1, ceil_mode)
    return _empty(input, (input.shape[0], input.shape[1], height, width), _layout(input))


@torch.library.register_fake("cnnext::avg_pool2d_backward")
def _avg_pool2d_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override):
    return _empty(grad_output, input_size, _layout(grad_output))


@torch.library.register_fake("cnnext::adaptive_avg_pool2d")
def _adaptive_avg_pool2d_fake(input, output_size):
    return _empty(input, (input.shape[0], input.shape[1], *output_size), _layout(input))


@torch.library.register_fake("cnnext::adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_fake(grad_output, input_size):
    return _empty(grad_output, input_size, _layout(grad_output))


CPU_ISAS = ("avx512", "avx2", "baseline")
"""Instruction sets of the run-time dispatched CPU kernels, widest first."""

CPU_VENDORS = ("intel", "amd", "other")
"""CPU vendors the conv2d plan tells apart (its ``auto`` rule weighs im2col's GEMM, oneMKL, by them)."""


def build_info() -> dict:
    """How this cnnext was built (version, torch it was compiled against, CUDA and its archs, OpenMP, ISA
    dispatch) and what this CPU gives it: ``cpu_isa`` in use, ``cpu_isa_detected``, ``cpu_vendor`` (one of
    CPU_VENDORS)."""
    return dict(_C.build_info(), cpu_isa=_C.cpu_isa(), cpu_isa_detected=_C.detected_cpu_isa(),
                cpu_vendor=_C.cpu_vendor())


def set_cpu_isa(isa: str) -> str:
    """Limit every cnnext CPU kernel (convolution, max and average pooling) to ``isa``; return the previous limit.

    ``isa`` is one of CPU_ISAS; a limit above what the CPU supports is harmless (the CPU's best is used), and
    ``build_info()["cpu_isa"]`` says what runs. The kernels are compiled for each ISA and chosen per call, so
    the limit takes effect at the next call. The environment variable ``CNNEXT_CPU_ISA`` sets the limit at
    import. Raises ValueError for an unknown name.
    """
    if isa not in CPU_ISAS:
        raise ValueError(f"isa must be one of {', '.join(map(repr, CPU_ISAS))}, got {isa!r}")
    return _C.set_cpu_isa(isa)


CONV_PASSES = ("forward", "grad_input", "grad_weight")


def _pair(value: int | Sequence[int]) -> list[int]:
    return [value, value] if isinstance(value, int) else list(value)


def conv2d_plan(input_shape: Sequence[int], weight_shape: Sequence[int], stride: int | Sequence[int] = 1,
                padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                dtype: torch.dtype = torch.float32, pass_: str = "forward", isa: str | None = None,
                algo: str = "auto", channels_last: bool = False, vendor: str | None = None) -> dict:
    """How a CPU conv2d pass runs: ``dict(algo=, family=, isa=, vendor=, tiles=dict(...), channels_last=,
    pixel_major=, forced=)``.

    ``input_shape`` is (N, C, H, W), ``weight_shape`` (C_out, C_in/groups, kH, kW); ``padding`` an int, a
    pair (both sides) or four values (top, left, bottom, right). ``pass_`` is one of CONV_PASSES, ``isa``
    one of CPU_ISAS (None: the active one), ``algo`` as for conv2d; ``channels_last``: the operands are
    channels_last (auto then runs groups-1 layers with 8 or more input channels by im2col, in that layout,
    unless the direct family runs channels_last itself); ``vendor`` one of CPU_VENDORS (None: this CPU's).
    ``family`` names the direct kernel family
    (csrc/cpu/conv2d_direct/) or "im2col"; the returned ``channels_last`` (a bool) says whether that direct
    family computes in place on channels_last activations; ``pixel_major`` whether the channel vectors stage
    their input with a pixel's channels side by side; ``forced`` echoes CNNEXT_CONV_PLAN and says when
    a forced family cannot run the shape. Raises ValueError for bad arguments, as the ops do.
    """
    pad = _pair(padding)
    pad = pad * 2 if len(pad) == 2 else pad
    text = torch.ops.cnnext._conv2d_plan(list(input_shape), list(weight_shape), _pair(stride), pad, _pair(dilation),
                                         groups, dtype, pass_, isa or "", algo, channels_last,
                                         vendor or "")
    fields = dict(line.split("=", 1) for line in text.splitlines())
    tiles = {key: int(fields.pop(key)) for key in ("vec_bytes", "oc_block", "pixel_vectors", "cv_vectors",
                                                   "cv_accumulators", "cv_max_pixels")}
    return dict(fields, tiles=tiles, channels_last=fields.pop("channels_last") == "1",
                pixel_major=fields.pop("pixel_major") == "1")


def last_conv2d_family(pass_: str) -> str:
    """The family (as conv2d_plan names it) the CPU convolution last ran for ``pass_``, for tests."""
    return _C.last_conv2d_family(pass_)


def _apply_isa_env() -> None:
    value = os.environ.get("CNNEXT_CPU_ISA", "").strip()
    if not value:
        return
    if value not in CPU_ISAS:
        raise ImportError(f"CNNEXT_CPU_ISA must be one of {', '.join(CPU_ISAS)} (or unset), got {value!r}")
    set_cpu_isa(value)


_apply_isa_env()
