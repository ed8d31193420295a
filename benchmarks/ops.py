"""The measured calls: conv, pool and training-step closures per implementation, and the guard.

A *problem* holds the tensors of one case; ``*_call(problem, impl)`` returns a
no-argument closure that runs the case once with one implementation and returns
its results (outputs, then gradients). The same problem feeds torch and every
cnnext implementation, so :func:`assert_matches` can compare them directly.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import cnnext
from benchmarks.impls import CHANNELS_LAST, FUSED, algo_of
from benchmarks.shapes import NUM_CLASSES, Architecture, AvgPoolShape, ConvShape, PoolShape
from cnnext.models import MODELS, build_model, make_optimizer

CONV_RTOL = 1e-4
"""Float32 sums in another order: errors stay far below this fraction of the largest value."""
POOL_RTOL = 1e-6
"""Max is exact; only overlapping windows (stride < kernel) sum gradients in another order."""
TRAIN_RTOL = 1e-3
"""Loss and parameter gradients after several layers of differently ordered float32 sums."""
ARCH_RTOL = 1e-7
"""The standard architectures' loss and gradients, checked in float64: through 10 to 50 layers
with BatchNorm and ReLU, float32 rounding flips activations near zero, and gradients of float32
runs part by up to ~1e-3 of their largest value, torch's own from float64 as much as cnnext's."""
ARCH_CHECK_BATCH, ARCH_CHECK_SIZE = 2, 64
"""The float64 check runs on 2 images of at most 64x64 (torch's float64 depthwise convolution
is slow); every layer's float32 kernels are checked at full size by the per-layer cases."""

Results = tuple[torch.Tensor, ...]
Call = Callable[[], Results]


def _largest(tensor: torch.Tensor) -> float:
    return tensor.abs().max().item() if tensor.numel() else 0.0


def assert_matches(actual: Results, expected: Results, rtol: float, common_scale: bool = False) -> None:
    """Each tensor equals its reference within ``rtol`` of the reference's largest magnitude.

    With ``common_scale`` the largest magnitude is taken over all reference
    tensors: for results holding tensors that are zero up to rounding (the
    gradient of a conv bias followed by BatchNorm).
    """
    assert len(actual) == len(expected)
    common = max(map(_largest, expected), default=0.0)
    for got, want in zip(actual, expected, strict=True):
        scale = common if common_scale else _largest(want)
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)


def synchronized(call: Call, device: torch.device) -> Call:
    """The call, made to wait for the GPU so that a clock read after it sees finished work."""
    if device.type != "cuda":
        return call

    def synced() -> Results:
        results = call()
        torch.cuda.synchronize(device)
        return results

    return synced


def _random(shape: tuple[int, ...], device: torch.device, generator: torch.Generator,
            requires_grad: bool = False) -> torch.Tensor:
    values = torch.randn(shape, generator=generator).to(device)
    return values.requires_grad_(requires_grad)


@dataclasses.dataclass(frozen=True)
class ConvProblem:
    """Input, weight, bias and (for backward) output gradient of one conv case."""

    shape: ConvShape
    backward: bool
    input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    grad_output: torch.Tensor | None

    @property
    def grad_inputs(self) -> tuple[torch.Tensor, ...]:
        """The tensors whose gradients fwd+bwd computes: no input gradient for an image."""
        wb = (self.weight, self.bias)
        return wb if self.shape.image_input else (self.input, *wb)


def conv_problem(shape: ConvShape, device: torch.device, backward: bool, seed: int = 0) -> ConvProblem:
    gen = torch.Generator().manual_seed(seed)
    needs_input_grad = backward and not shape.image_input
    return ConvProblem(
        shape, backward,
        _random(shape.input_shape, device, gen, needs_input_grad),
        _random(shape.weight_shape, device, gen, backward),
        _random((shape.out_channels,), device, gen, backward),
        _random(shape.output_shape, device, gen) if backward else None,
    )


def _conv_op(impl: str) -> Callable[..., torch.Tensor]:
    if impl == "torch":
        return F.conv2d
    return functools.partial(cnnext.functional.conv2d, algo=algo_of(impl))


def conv_call(problem: ConvProblem, impl: str) -> Call:
    """Forward, or forward then the gradients of :attr:`ConvProblem.grad_inputs`."""
    op, s, p = _conv_op(impl), problem.shape, problem

    def forward() -> Results:
        return (op(p.input, p.weight, p.bias, s.stride, s.padding, s.dilation, s.groups),)

    def forward_backward() -> Results:
        (out,) = forward()
        return (out, *torch.autograd.grad(out, p.grad_inputs, p.grad_output))

    return forward_backward if problem.backward else forward


@dataclasses.dataclass(frozen=True)
class PoolProblem:
    """Input and (for backward) output gradient of one max-pool or average-pool case."""

    shape: PoolShape | AvgPoolShape
    backward: bool
    input: torch.Tensor
    grad_output: torch.Tensor | None


def pool_problem(shape: PoolShape, device: torch.device, backward: bool, seed: int = 0) -> PoolProblem:
    gen = torch.Generator().manual_seed(seed)
    return PoolProblem(
        shape, backward,
        _random(shape.input_shape, device, gen, backward),
        _random(shape.output_shape, device, gen) if backward else None,
    )


def pool_call(problem: PoolProblem, impl: str) -> Call:
    """Forward, or forward then the input gradient."""
    op = F.max_pool2d if impl == "torch" else cnnext.functional.max_pool2d
    s, p = problem.shape, problem

    def forward() -> Results:
        return (op(p.input, s.kernel_size, s.stride, s.padding, s.dilation, s.ceil_mode),)

    def forward_backward() -> Results:
        (out,) = forward()
        return (out, *torch.autograd.grad(out, p.input, p.grad_output))

    return forward_backward if problem.backward else forward


def avg_pool_problem(shape: AvgPoolShape, device: torch.device, backward: bool, seed: int = 0) -> PoolProblem:
    gen = torch.Generator().manual_seed(seed)
    return PoolProblem(
        shape, backward,
        _random(shape.input_shape, device, gen, backward),
        _random(shape.output_shape, device, gen) if backward else None,
    )


def avg_pool_call(problem: PoolProblem, impl: str) -> Call:
    """Forward, or forward then the input gradient, of avg_pool2d or adaptive_avg_pool2d."""
    functional = F if impl == "torch" else cnnext.functional
    s, p = problem.shape, problem

    def forward() -> Results:
        if s.output_size is not None:
            return (functional.adaptive_avg_pool2d(p.input, s.output_size),)
        return (functional.avg_pool2d(p.input, s.kernel_size),)

    def forward_backward() -> Results:
        (out,) = forward()
        return (out, *torch.autograd.grad(out, p.input, p.grad_output))

    return forward_backward if problem.backward else forward


def train_model(name: str, impl: str, device: torch.device) -> nn.Module:
    """The seed model with torch layers, or converted to cnnext with the impl's algo (and fused);
    in channels_last memory format for a ``+channels_last`` impl."""
    model = build_model(name, layers="torch", seed=0)
    if not impl.startswith("torch"):
        model = cnnext.convert(model, algo=algo_of(impl))
    if impl.endswith(FUSED):
        model = cnnext.fuse(model)
    return model.to(device, memory_format=_memory_format(impl)).train()


def train_batch(name: str, device: torch.device, seed: int = 0, impl: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """A random image batch and labels at the model's seed batch size (images in the impl's memory format)."""
    spec = MODELS[name]
    size = spec.image_size
    height, width = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(spec.batch_size, spec.in_channels, height, width, generator=gen)
    labels = torch.randint(NUM_CLASSES, (spec.batch_size,), generator=gen)
    return images.to(device, memory_format=_memory_format(impl)), labels.to(device)


def _loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # cross_entropy also fits models ending in log_softmax: log_softmax is idempotent.
    return F.cross_entropy(model(images), labels)


def loss_and_grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Results:
    """Loss and every parameter gradient, with dropout masks fixed by a set seed."""
    torch.manual_seed(0)
    loss = _loss(model, images, labels)
    params = [param for _, param in sorted(model.named_parameters())]
    return (loss.detach(), *torch.autograd.grad(loss, params))


def _memory_format(impl: str) -> torch.memory_format:
    return torch.channels_last if impl.endswith(CHANNELS_LAST) else torch.contiguous_format


def architecture_model(arch: Architecture, impl: str, device: torch.device) -> nn.Module:
    """The architecture with torch layers (weights from seed 0), or converted to cnnext with the
    impl's algo; in channels_last memory format for a ``+channels_last`` impl."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = arch.build()
    if not impl.startswith("torch"):
        model = cnnext.convert(model, algo=algo_of(impl))
    return model.to(device, memory_format=_memory_format(impl)).train()


def architecture_batch(arch: Architecture, impl: str, device: torch.device, batch: int,
                       seed: int = 0, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3-channel images (in the impl's memory format; ``size``², default the
    architecture's) and labels for ``arch``."""
    gen = torch.Generator().manual_seed(seed)
    size = size or arch.image_size
    images = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=gen)
    return images.to(device, memory_format=_memory_format(impl)), labels.to(device)


def check_architecture(arch: Architecture, model: nn.Module, impl: str) -> None:
    """Fail unless the converted ``model`` (of implementation ``impl``) has no torch conv or pool
    layer left and, in float64 (on copies, a small batch in the impl's memory format), gives the
    torch-layer model's loss and parameter gradients."""
    assert not torch_layers_left(model)
    device = next(model.parameters()).device
    images, labels = architecture_batch(arch, impl, device, ARCH_CHECK_BATCH, seed=1,
                                        size=min(arch.image_size, ARCH_CHECK_SIZE))
    reference = architecture_model(arch, "torch", device).double()
    assert_matches(loss_and_grads(copy.deepcopy(model).double(), images.double(), labels),
                   loss_and_grads(reference, images.contiguous().double(), labels), ARCH_RTOL, common_scale=True)


def train_step_call(name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Call:
    """One training step: zero grads, forward, loss, backward, optimizer step; the optimizer is
    the seed model's or, for any other ``name``, an optimizer name ("sgd": momentum 0.9, lr 0.01)."""
    optimizer = make_optimizer(name, model.parameters())

    def step() -> Results:
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, images, labels)
        loss.backward()
        optimizer.step()
        return (loss,)

    return step


def torch_layers_left(model: nn.Module) -> list[str]:
    """Names of conv and pool layers that conversion left as plain torch layers."""
    pairs = ((nn.Conv1d, cnnext.Conv1d), (nn.Conv2d, cnnext.Conv2d), (nn.MaxPool2d, cnnext.MaxPool2d),
             (nn.AvgPool2d, cnnext.AvgPool2d), (nn.AdaptiveAvgPool2d, cnnext.AdaptiveAvgPool2d))
    return [
        name for name, layer in model.named_modules()
        if any(isinstance(layer, torch_kind) and not isinstance(layer, ours) for torch_kind, ours in pairs)
    ]
