"""Derivatives of cnnext's ops, registered on the ops themselves, in every mode PyTorch takes them.

``differentiable()`` gives one op, from one set of formulas:

- reverse mode on the op (``torch.library.register_autograd``), so ``torch.ops.cnnext.*`` have
  correct gradients wherever they are called: eager code, ``torch.compile``, an exported program,
  a traced module;
- a batching rule (``torch.library.register_vmap``) for ``torch.func.vmap``;
- two ``autograd.Function``s with the same ``setup_context``/``backward``, which is how eager code
  (``cnnext.functional``, the modules) calls the op: the plain one in eager mode (the op's
  registered autograd kernel runs more Python per call, see benchmarks/RESULTS.md), applied
  without ``Function.apply``'s per-call signature binding, and one that adds a ``jvp`` and a ``vmap``
  inside torch.func transforms (grad, jacrev, jvp, ...) and forward-mode AD: the Function
  ``register_autograd`` generates has neither a ``setup_context`` (which torch.func requires)
  nor a ``jvp``, and PyTorch has no jvp registration for custom ops. While dynamo or export
  trace, or ``torch.jit.trace`` records, the op itself is called (dynamo does not trace a
  Function with a custom jvp; a trace must record the op), and its registered autograd applies;
  so it does under autocast outside torch.func, as the op's autocast kernels cast the inputs
  before autograd sees them (inside torch.func, the formulas see the inputs in the output's dtype).

Every backward and jvp formula calls the callables this module returns, never the raw ops, so
the derivatives are themselves differentiable to any order in every mode: the gradient of
grad_input with respect to grad_output is a convolution, with respect to the weight a
grad_weight, and so on; max-pool's backward scatter differentiates into a gather through the
indices. Integer outputs (the max-pool indices) are non-differentiable; nothing is silently zero.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch
from torch._functorch.pyfunctorch import temporarily_pop_interpreter_stack
from torch.autograd import forward_ad

from ._ops import ops

__all__ = [
    "DifferentiableOp", "differentiable", "conv2d", "conv2d_grad_input", "conv2d_grad_weight",
    "conv2d_grad_weight_bias", "conv2d_grad_bias", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
]


def _recording() -> bool:
    """Whether dynamo, export or torch.jit.trace is recording: the graph must show the op itself."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _transformed() -> bool:
    """Whether a torch.func transform or a forward-AD dual level is active: the op needs a jvp."""
    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


class DifferentiableOp:
    """The op ``op`` (an OpOverload), differentiable in every mode (see the module docstring); same
    arguments and results as the op. ``eager`` and ``transformed`` are its autograd.Functions."""

    __slots__ = ("op", "eager", "transformed", "_apply_eager")

    def __init__(self, op: torch._ops.OpOverload, eager: type[torch.autograd.Function],
                 transformed: type[torch.autograd.Function]) -> None:
        self.op, self.eager, self.transformed = op, eager, transformed
        # autograd.Function.apply binds the arguments to forward's signature (inspect.signature, on
        # every call) and checks for torch.func transforms before calling the C++ apply; __call__
        # checks for transforms itself and passes every argument, so eager calls go to C++ apply.
        self._apply_eager = super(torch.autograd.Function, eager).apply

    def __call__(self, *args: Any) -> Any:
        if _recording():
            return self.op(*args)
        if _transformed():  # under autocast too: the formulas see the inputs in the output's dtype
            return self.transformed.apply(*args)
        if torch._C._is_any_autocast_enabled():
            # The op's autocast kernels cast the inputs above the Autograd key; a Function around the
            # op would save the uncast tensors.
            return self.op(*args)
        if not torch.is_grad_enabled():  # nothing to record (e.g. a backward without create_graph)
            with torch._C._AutoDispatchBelowAutograd():
                return self.op(*args)
        return self._apply_eager(*args)


def differentiable(
    name: str,
    *,
    setup_context: Callable[[Any, tuple, Any], None],
    backward: Callable[..., tuple],
    jvp: Callable[..., Any],
    vmap: Callable[..., tuple],
) -> DifferentiableOp:
    """Registers the derivatives of ``torch.ops.cnnext.<name>`` and returns the op as a DifferentiableOp.

    ``setup_context(ctx, inputs, output)`` and ``backward(ctx, *grads)`` follow
    ``torch.library.register_autograd``; ``vmap(info, in_dims, *args)`` follows
    ``torch.library.register_vmap`` (it is also the transformed Function's vmap);
    ``jvp(inputs, output, *tangents)`` gets the op's inputs and output and one tangent (or None)
    per input, and returns the output's tangent(s) (None for a non-differentiable output). The formulas must call DifferentiableOps (or differentiable torch
    functions), never raw ops, so that they are differentiable in turn.
    """
    op = getattr(ops, name).default
    qualname = f"cnnext::{name}"
    torch.library.register_autograd(qualname, backward, setup_context=setup_context)
    torch.library.register_vmap(qualname, _below_vmap_level(vmap))
    is_tensor = [isinstance(arg.type, (torch.TensorType, torch.OptionalType)) for arg in op._schema.arguments]
    returns_tuple = len(op._schema.returns) > 1

    def forward(*args: Any) -> Any:
        with torch._C._AutoDispatchBelowAutograd():  # the Function is the op's autograd here
            return op(*args)

    def transformed_setup_context(ctx, inputs: tuple, output: Any) -> None:
        setup_context(ctx, inputs, output)
        # What jvp needs: the tensors saved for forward mode (version-checked), the rest as they are.
        outputs = output if returns_tuple else (output,)
        ctx.save_for_forward(*(a for a, t in zip(inputs, is_tensor) if t), *outputs)
        ctx.non_tensor_inputs = tuple(None if t else a for a, t in zip(inputs, is_tensor))

    def transformed_jvp(ctx, *tangents: Optional[torch.Tensor]) -> Any:
        saved = iter(ctx.saved_tensors)
        inputs = tuple(next(saved) if t else a for a, t in zip(ctx.non_tensor_inputs, is_tensor))
        outputs = tuple(saved)
        return jvp(inputs, outputs if returns_tuple else outputs[0], *tangents)

    camel = "".join(part.capitalize() for part in name.split("_"))
    eager = type(f"{camel}Function", (torch.autograd.Function,), {
        "__doc__": f"torch.ops.{qualname} in eager autograd.",
        "forward": staticmethod(forward),
        "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward),
    })
    transformed = type(f"{camel}TransformedFunction", (torch.autograd.Function,), {
        "__doc__": f"torch.ops.{qualname} under torch.func transforms and forward-mode AD.",
        "forward": staticmethod(forward),
        "setup_context": staticmethod(transformed_setup_context),
        "backward": staticmethod(backward),
        "jvp": staticmethod(transformed_jvp),
        "vmap": staticmethod(vmap),
    })
    return DifferentiableOp(op, eager, transformed)


def _below_vmap_level(rule: Callable[..., tuple]) -> Callable[..., tuple]:
    """``rule`` as a register_vmap rule that may call DifferentiableOps.

    register_vmap runs its rule with only the batching key excluded, the vmap level still on
    functorch's stack, where an autograd.Function cannot be applied. Popping the level, as
    autograd.Function's own vmap does, lets the rule's ops reach the transforms below it (a
    grad outside the vmap) through their Function.
    """

    def rule_below_vmap_level(info, in_dims, *args):
        with temporarily_pop_interpreter_stack():
            return rule(info, in_dims, *args)

    return rule_below_vmap_level


def _sum(*terms: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Sum of the terms that are not None (a missing gradient or tangent is a zero); None if all are."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def _at_front(x: torch.Tensor, dim: Optional[int], batch: int) -> torch.Tensor:
    """``x`` with its vmap dimension first, expanded to ``batch`` when it has none."""
    return x.expand(batch, *x.shape) if dim is None else x.movedim(dim, 0)


def _into_channels(x: torch.Tensor, dim: Optional[int], batch: int) -> torch.Tensor:
    """A vmapped (N, C, H, W) tensor as (N, batch*C, H, W): the vmap dimension becomes groups of channels."""
    return _at_front(x, dim, batch).movedim(0, 1).flatten(1, 2)


def _bias_map(bias: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The (C,) bias (or its gradient) broadcast over an (N, C, H, W) ``size``."""
    return bias.view(1, -1, 1, 1).expand(size)


def _gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) read at max-pool ``indices`` (N, C, OH, OW), flat within each H x W plane."""
    return x.flatten(2).gather(2, indices.flatten(2)).view(indices.shape)


# conv2d(input, weight, bias, stride, padding, dilation, groups, algo); "geometry" below is the
# trailing (stride, padding, dilation, groups, algo), passed unchanged to every derivative.


def _in_output_dtype(output: torch.Tensor, *tensors: Optional[torch.Tensor]) -> list[Optional[torch.Tensor]]:
    """``tensors`` as the convolution saw them. They differ from what it was given only under autocast, when the
    Function route (torch.func, forward AD) hands the formulas the uncast inputs."""
    return [t if t is None or t.dtype == output.dtype else t.to(output.dtype) for t in tensors]


def _conv2d_setup(ctx, inputs, output):
    input, weight, _bias, *geometry = inputs
    input, weight = _in_output_dtype(output, input, weight)
    ctx.geometry = geometry
    ctx.input_size, ctx.weight_size = input.shape, weight.shape
    # Each operand is needed only for the other's gradient.
    ctx.save_for_backward(input if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)


def _conv2d_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    needs, geometry = ctx.needs_input_grad, ctx.geometry
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = conv2d_grad_input(grad_output, weight, ctx.input_size, *geometry)
    if needs[1] and needs[2]:  # one pass over grad_output for both
        grad_weight, grad_bias = conv2d_grad_weight_bias(grad_output, input, ctx.weight_size, *geometry)
    elif needs[1]:
        grad_weight = conv2d_grad_weight(grad_output, input, ctx.weight_size, *geometry)
    elif needs[2]:
        grad_bias = conv2d_grad_bias(grad_output)
    return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _conv2d_jvp(inputs, output, t_input, t_weight, t_bias, *_):
    input, weight, _bias, *geometry = inputs
    input, weight, t_input, t_weight, t_bias = _in_output_dtype(output, input, weight, t_input, t_weight, t_bias)
    return _sum(
        None if t_input is None else conv2d(t_input, weight, None, *geometry),
        None if t_weight is None else conv2d(input, t_weight, None, *geometry),
        None if t_bias is None else _bias_map(t_bias, output.shape),
    )


def _conv2d_vmap(info, in_dims, input, weight, bias, stride, padding, dilation, groups, algo):
    batch = info.batch_size
    if in_dims[1] is None and in_dims[2] is None:  # shared weights: the vmap dimension joins the batch
        output = conv2d(input.movedim(in_dims[0], 0).flatten(0, 1), weight, bias, stride, padding, dilation, groups,
                        algo)
        return output.unflatten(0, (batch, -1)), 0
    # One convolution per vmapped weight: stack them as groups.
    bias = None if bias is None else _at_front(bias, in_dims[2], batch).flatten()
    output = conv2d(_into_channels(input, in_dims[0], batch), _at_front(weight, in_dims[1], batch).flatten(0, 1),
                    bias, stride, padding, dilation, groups * batch, algo)
    return output.unflatten(1, (batch, -1)), 1


# conv2d_grad_input(grad_output, weight, input_size, *geometry) -> grad_input: linear in each tensor.


def _grad_input_setup(ctx, inputs, output):
    grad_output, weight, _input_size, *geometry = inputs
    ctx.geometry, ctx.weight_size = geometry, weight.shape
    ctx.save_for_backward(grad_output if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None)


def _grad_input_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    needs, geometry = ctx.needs_input_grad, ctx.geometry
    return (
        conv2d(grad, weight, None, *geometry) if needs[0] else None,
        conv2d_grad_weight(grad_output, grad, ctx.weight_size, *geometry) if needs[1] else None,
        None, None, None, None, None, None,
    )


def _grad_input_jvp(inputs, output, t_grad_output, t_weight, *_):
    grad_output, weight, input_size, *geometry = inputs
    return _sum(
        None if t_grad_output is None else conv2d_grad_input(t_grad_output, weight, input_size, *geometry),
        None if t_weight is None else conv2d_grad_input(grad_output, t_weight, input_size, *geometry),
    )


def _grad_input_vmap(info, in_dims, grad_output, weight, input_size, stride, padding, dilation, groups, algo):
    batch = info.batch_size
    if in_dims[1] is None:  # shared weights: the vmap dimension joins the batch
        grad_output = grad_output.movedim(in_dims[0], 0).flatten(0, 1)
        grad_input = conv2d_grad_input(grad_output, weight, [grad_output.shape[0], *input_size[1:]], stride, padding,
                                       dilation, groups, algo)
        return grad_input.unflatten(0, (batch, -1)), 0
    n, channels, height, width = input_size
    grad_input = conv2d_grad_input(_into_channels(grad_output, in_dims[0], batch),
                                   _at_front(weight, in_dims[1], batch).flatten(0, 1),
                                   [n, batch * channels, height, width], stride, padding, dilation, groups * batch, algo)
    return grad_input.unflatten(1, (batch, channels)), 1


# conv2d_grad_weight(grad_output, input, weight_size, *geometry) -> grad_weight, and
# conv2d_grad_weight_bias (the same plus grad_bias): linear in each tensor.


def _grad_weight_setup(ctx, inputs, output):
    grad_output, input, _weight_size, *geometry = inputs
    ctx.geometry, ctx.input_size, ctx.grad_output_size = geometry, input.shape, grad_output.shape
    ctx.save_for_backward(grad_output if ctx.needs_input_grad[1] else None, input if ctx.needs_input_grad[0] else None)
    ctx.set_materialize_grads(False)  # grad_weight_bias: either gradient may be missing


def _grad_weight_backward(ctx, grad_weight, grad_bias=None):
    grad_output, input = ctx.saved_tensors
    needs, geometry = ctx.needs_input_grad, ctx.geometry
    d_grad_output = d_input = None
    if needs[0]:
        if grad_weight is not None:
            d_grad_output = conv2d(input, grad_weight, grad_bias, *geometry)
        elif grad_bias is not None:
            d_grad_output = _bias_map(grad_bias, ctx.grad_output_size)
    if needs[1] and grad_weight is not None:
        d_input = conv2d_grad_input(grad_output, grad_weight, ctx.input_size, *geometry)
    return d_grad_output, d_input, None, None, None, None, None, None


def _grad_weight_tangent(inputs, t_grad_output, t_input):
    grad_output, input, weight_size, *geometry = inputs
    return _sum(
        None if t_grad_output is None else conv2d_grad_weight(t_grad_output, input, weight_size, *geometry),
        None if t_input is None else conv2d_grad_weight(grad_output, t_input, weight_size, *geometry),
    )


def _grad_weight_jvp(inputs, output, t_grad_output, t_input, *_):
    return _grad_weight_tangent(inputs, t_grad_output, t_input)


def _grad_weight_bias_jvp(inputs, output, t_grad_output, t_input, *_):
    t_bias = None if t_grad_output is None else conv2d_grad_bias(t_grad_output)
    return _grad_weight_tangent(inputs, t_grad_output, t_input), t_bias


def _grad_weight_vmap_args(info, in_dims, grad_output, input, weight_size, groups):
    """Arguments of one grad_weight over all vmapped samples: each sample's weight is a group."""
    batch = info.batch_size
    out_channels, *rest = weight_size
    return (_into_channels(grad_output, in_dims[0], batch), _into_channels(input, in_dims[1], batch),
            [batch * out_channels, *rest], groups * batch)


def _grad_weight_vmap(info, in_dims, grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    grad_output, input, size, groups = _grad_weight_vmap_args(info, in_dims, grad_output, input, weight_size, groups)
    grad_weight = conv2d_grad_weight(grad_output, input, size, stride, padding, dilation, groups, algo)
    return grad_weight.unflatten(0, (info.batch_size, -1)), 0


def _grad_weight_bias_vmap(info, in_dims, grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    grad_output, input, size, groups = _grad_weight_vmap_args(info, in_dims, grad_output, input, weight_size, groups)
    grad_weight, grad_bias = conv2d_grad_weight_bias(grad_output, input, size, stride, padding, dilation, groups, algo)
    return (grad_weight.unflatten(0, (info.batch_size, -1)), grad_bias.unflatten(0, (info.batch_size, -1))), (0, 0)


# conv2d_grad_bias(grad_output) -> grad_bias: a sum over N, H, W.


def _grad_bias_setup(ctx, inputs, output):
    ctx.grad_output_size = inputs[0].shape


def _grad_bias_backward(ctx, grad):
    return _bias_map(grad, ctx.grad_output_size)


def _grad_bias_jvp(inputs, output, t_grad_output):
    return conv2d_grad_bias(t_grad_output)


def _grad_bias_vmap(info, in_dims, grad_output):
    grad_bias = conv2d_grad_bias(_into_channels(grad_output, in_dims[0], info.batch_size))
    return grad_bias.unflatten(0, (info.batch_size, -1)), 0


# max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode) -> (output, indices).


def _max_pool2d_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape
    ctx.empty_windows = _may_have_empty_windows(inputs[0].shape, inputs[4])
    indices = output[1]
    ctx.save_for_backward(indices)
    ctx.mark_non_differentiable(indices)
    # Otherwise autograd fills a zero gradient for the indices on every backward: an int64 tensor
    # the size of the output (6.5 MB for lenet.pool1).
    ctx.set_materialize_grads(False)


def _may_have_empty_windows(input_size: Sequence[int], dilation: Sequence[int]) -> bool:
    """Whether some window's taps may all miss the input: only when a dilation exceeds the input's size."""
    return dilation[0] > input_size[-2] or dilation[1] > input_size[-1]


def _inside_windows(values: torch.Tensor, indices: torch.Tensor, input_size: Sequence[int]):
    """``values`` and ``indices`` with the windows that miss the input zeroed. PyTorch's index for such a window
    (its output is -inf) may lie past the plane; its gradient goes nowhere, and max_pool2d_backward rejects
    indices outside the plane."""
    inside = indices < input_size[-2] * input_size[-1]
    return values.where(inside, 0), indices.where(inside, 0)


def _max_pool2d_backward(ctx, grad_output, _grad_indices):
    if grad_output is None:  # a backward through the indices alone
        return None, None, None, None, None, None
    (indices,) = ctx.saved_tensors
    if ctx.empty_windows:
        grad_output, indices = _inside_windows(grad_output, indices, ctx.input_size)
    return max_pool2d_backward(grad_output, indices, ctx.input_size), None, None, None, None, None


def _max_pool2d_jvp(inputs, output, t_input, *_):
    indices = output[1]
    if _may_have_empty_windows(inputs[0].shape, inputs[4]):
        return _inside_windows(_gather(t_input, indices.clamp(max=inputs[0].shape[-2] * inputs[0].shape[-1] - 1)),
                               indices, inputs[0].shape)[0], None
    return _gather(t_input, indices), None


def _max_pool2d_vmap(info, in_dims, input, kernel_size, stride, padding, dilation, ceil_mode):
    output, indices = max_pool2d(input.movedim(in_dims[0], 0).flatten(0, 1), kernel_size, stride, padding, dilation,
                                 ceil_mode)
    batch = info.batch_size
    return (output.unflatten(0, (batch, -1)), indices.unflatten(0, (batch, -1))), (0, 0)


# max_pool2d_backward(grad_output, indices, input_size) -> grad_input: a scatter through the indices.


def _max_pool2d_backward_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _max_pool2d_backward_backward(ctx, grad):
    (indices,) = ctx.saved_tensors
    return _gather(grad, indices) if ctx.needs_input_grad[0] else None, None, None


def _max_pool2d_backward_jvp(inputs, output, t_grad_output, *_):
    _grad_output, indices, input_size = inputs
    return max_pool2d_backward(t_grad_output, indices, input_size)


def _max_pool2d_backward_vmap(info, in_dims, grad_output, indices, input_size):
    batch = info.batch_size
    grad_output = _at_front(grad_output, in_dims[0], batch).flatten(0, 1)
    indices = _at_front(indices, in_dims[1], batch).flatten(0, 1)
    grad_input = max_pool2d_backward(grad_output, indices, [grad_output.shape[0], *input_size[1:]])
    return grad_input.unflatten(0, (batch, -1)), 0


conv2d = differentiable(
    "conv2d", setup_context=_conv2d_setup, backward=_conv2d_backward, jvp=_conv2d_jvp, vmap=_conv2d_vmap)
conv2d_grad_input = differentiable(
    "conv2d_grad_input", setup_context=_grad_input_setup, backward=_grad_input_backward, jvp=_grad_input_jvp,
    vmap=_grad_input_vmap)
conv2d_grad_weight = differentiable(
    "conv2d_grad_weight", setup_context=_grad_weight_setup, backward=_grad_weight_backward, jvp=_grad_weight_jvp,
    vmap=_grad_weight_vmap)
conv2d_grad_weight_bias = differentiable(
    "conv2d_grad_weight_bias", setup_context=_grad_weight_setup, backward=_grad_weight_backward,
    jvp=_grad_weight_bias_jvp, vmap=_grad_weight_bias_vmap)
conv2d_grad_bias = differentiable(
    "conv2d_grad_bias", setup_context=_grad_bias_setup, backward=_grad_bias_backward, jvp=_grad_bias_jvp,
    vmap=_grad_bias_vmap)
max_pool2d = differentiable(
    "max_pool2d", setup_context=_max_pool2d_setup, backward=_max_pool2d_backward, jvp=_max_pool2d_jvp,
    vmap=_max_pool2d_vmap)
max_pool2d_backward = differentiable(
    "max_pool2d_backward", setup_context=_max_pool2d_backward_setup, backward=_max_pool2d_backward_backward,
    jvp=_max_pool2d_backward_jvp, vmap=_max_pool2d_backward_vmap)


# avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override) and
# adaptive_avg_pool2d(input, output_size): linear maps whose adjoints are their *_backward ops, and
# the adjoint of each *_backward op is the forward op again. "geometry" is the trailing arguments
# after the tensor (and, for the backward ops, after input_size).


def _input_size_setup(ctx, inputs, output):
    ctx.input_size = inputs[0].shape


def _merge_vmap_batch(x: torch.Tensor, dim: Optional[int], batch: int) -> torch.Tensor:
    """A vmapped (N, C, H, W) tensor as (batch*N, C, H, W)."""
    return _at_front(x, dim, batch).flatten(0, 1)


def _avg_pool2d_backward_fn(ctx, grad):
    return (avg_pool2d_backward(grad, ctx.input_size, *ctx.geometry),) + (None,) * 6


def _avg_pool2d_setup(ctx, inputs, output):
    ctx.input_size, ctx.geometry = inputs[0].shape, inputs[1:]


def _avg_pool2d_jvp(inputs, output, t_input, *_):
    return avg_pool2d(t_input, *inputs[1:])


def _avg_pool2d_vmap(info, in_dims, input, *geometry):
    output = avg_pool2d(_merge_vmap_batch(input, in_dims[0], info.batch_size), *geometry)
    return output.unflatten(0, (info.batch_size, -1)), 0


def _avg_pool2d_backward_setup(ctx, inputs, output):
    ctx.geometry = inputs[2:]


def _avg_pool2d_backward_backward(ctx, grad):
    return (avg_pool2d(grad, *ctx.geometry),) + (None,) * 7


def _avg_pool2d_backward_jvp(inputs, output, t_grad_output, *_):
    return avg_pool2d_backward(t_grad_output, *inputs[1:])


def _avg_pool2d_backward_vmap(info, in_dims, grad_output, input_size, *geometry):
    grad_output = _merge_vmap_batch(grad_output, in_dims[0], info.batch_size)
    grad_input = avg_pool2d_backward(grad_output, [grad_output.shape[0], *input_size[1:]], *geometry)
    return grad_input.unflatten(0, (info.batch_size, -1)), 0


def _adaptive_backward_fn(ctx, grad):
    return adaptive_avg_pool2d_backward(grad, ctx.input_size), None


def _adaptive_jvp(inputs, output, t_input, *_):
    return adaptive_avg_pool2d(t_input, inputs[1])


def _adaptive_vmap(info, in_dims, input, output_size):
    output = adaptive_avg_pool2d(_merge_vmap_batch(input, in_dims[0], info.batch_size), output_size)
    return output.unflatten(0, (info.batch_size, -1)), 0


def _adaptive_backward_setup(ctx, inputs, output):
    ctx.output_size = inputs[0].shape[2:]


def _adaptive_backward_backward(ctx, grad):
    return adaptive_avg_pool2d(grad, ctx.output_size), None


def _adaptive_backward_jvp(inputs, output, t_grad_output, *_):
    return adaptive_avg_pool2d_backward(t_grad_output, inputs[1])


def _adaptive_backward_vmap(info, in_dims, grad_output, input_size):
    grad_output = _merge_vmap_batch(grad_output, in_dims[0], info.batch_size)
    grad_input = adaptive_avg_pool2d_backward(grad_output, [grad_output.shape[0], *input_size[1:]])
    return grad_input.unflatten(0, (info.batch_size, -1)), 0


avg_pool2d = differentiable(
    "avg_pool2d", setup_context=_avg_pool2d_setup, backward=_avg_pool2d_backward_fn, jvp=_avg_pool2d_jvp,
    vmap=_avg_pool2d_vmap)
avg_pool2d_backward = differentiable(
    "avg_pool2d_backward", setup_context=_avg_pool2d_backward_setup, backward=_avg_pool2d_backward_backward,
    jvp=_avg_pool2d_backward_jvp, vmap=_avg_pool2d_backward_vmap)
adaptive_avg_pool2d = differentiable(
    "adaptive_avg_pool2d", setup_context=_input_size_setup, backward=_adaptive_backward_fn, jvp=_adaptive_jvp,
    vmap=_adaptive_vmap)
adaptive_avg_pool2d_backward = differentiable(
    "adaptive_avg_pool2d_backward", setup_context=_adaptive_backward_setup, backward=_adaptive_backward_backward,
    jvp=_adaptive_backward_jvp, vmap=_adaptive_backward_vmap)
