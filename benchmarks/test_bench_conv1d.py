"""conv1d forward and forward+backward on 1-D signals (1k-16k samples, 1-64 channels, kernels 3-15),
torch vs each cnnext algo. cnnext runs conv1d on its 2-D kernels with a height of 1."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F

import cnnext
from benchmarks.conftest import Measure
from benchmarks.impls import CONV_IMPLS, algo_of
from benchmarks.ops import CONV_RTOL, Results, assert_matches


@dataclasses.dataclass(frozen=True)
class Conv1dShape:
    """One conv1d case: (batch, in_channels, length) input, (out_channels, in_channels, kernel) weight."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    length: int
    kernel: int
    stride: int = 1
    padding: int = 0

    @property
    def out_length(self) -> int:
        return (self.length + 2 * self.padding - self.kernel) // self.stride + 1

    def flops(self, backward: bool) -> int:
        """Multiply-adds x 2 of the forward pass; x 3 with both backward GEMMs."""
        forward = 2 * self.batch * self.out_channels * self.out_length * self.in_channels * self.kernel
        return 3 * forward if backward else forward

    def __str__(self) -> str:
        s = f" s{self.stride}" if self.stride != 1 else ""
        return f"{self.name} N{self.batch} {self.in_channels}->{self.out_channels} L{self.length} k{self.kernel}{s}"


SHAPES = (
    Conv1dShape("mono_k3", 16, 1, 16, 1000, 3, padding=1),
    Conv1dShape("mono_k15", 16, 1, 1, 16384, 15, padding=7),
    Conv1dShape("ch16_k7", 8, 16, 16, 4096, 7, padding=3),
    Conv1dShape("ch32_k3", 8, 32, 64, 8192, 3, padding=1),
    Conv1dShape("ch64_k15", 2, 64, 64, 4096, 15, padding=7),
    Conv1dShape("ch64_k5_s2", 8, 64, 64, 2048, 5, stride=2, padding=2),
)


def _call(shape: Conv1dShape, impl: str, device: torch.device, backward: bool):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.batch, shape.in_channels, shape.length, generator=gen).to(device).requires_grad_(backward)
    w = torch.randn(shape.out_channels, shape.in_channels, shape.kernel, generator=gen).to(device)
    b = torch.randn(shape.out_channels, generator=gen).to(device)
    w.requires_grad_(backward)
    b.requires_grad_(backward)
    gy = torch.randn(shape.batch, shape.out_channels, shape.out_length, generator=gen).to(device)
    op = F.conv1d if impl == "torch" else functools.partial(cnnext.functional.conv1d, algo=algo_of(impl))

    def forward() -> Results:
        return (op(x, w, b, shape.stride, shape.padding),)

    def forward_backward() -> Results:
        (out,) = forward()
        return (out, *torch.autograd.grad(out, (x, w, b), gy))

    return forward_backward if backward else forward


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_conv1d(measure: Measure, device: torch.device, backward: bool, shape: Conv1dShape, impl: str) -> None:
    call = _call(shape, impl, device, backward)
    if impl != "torch":
        assert_matches(call(), _call(shape, "torch", device, backward)(), CONV_RTOL)
    phase = "fwd+bwd" if backward else "fwd"
    measure(call, group=f"conv1d {phase} {shape}", kind="conv1d", phase=phase, case=str(shape),
            impl=impl, flops=shape.flops(backward))
