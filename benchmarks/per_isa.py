"""Per-pass, per-algorithm timings of conv layers against torch, at one CPU instruction set.

    CNNEXT_BENCH_ISA=avx2 python -m benchmarks.per_isa [--rounds 15] [--layers lenet.conv2,...]
        [--architectures] [--channels-last] [--peak GFLOPS]

prints a markdown table: per layer and pass (forward, grad_input, grad_weight), torch's median time and the
ratio torch / cnnext for the direct and im2col algorithms and for what ``auto`` picks (the plan's choice,
cnnext._ops.conv2d_plan). The layers are the seed models' convolutions, or with ``--architectures`` every
distinct one of the standard architectures (benchmarks.shapes.architecture_conv_shapes); ``--layers`` keeps
those whose name contains one of the given strings. ``--channels-last`` lays the activations and the weight
out channels_last, as a channels_last model holds them. Every implementation of a row is timed in turn, round after round, in one process
(a shared machine drifts: compare ratios, not times). ``--peak`` (the FMA peak at these threads, from
tools/fma_peak.c) adds the most any kernel could reach: torch's time over the pass's time at the peak,
counting only the taps inside the input (ConvShape.flops_inside). CNNEXT_BENCH_ISA must be set in the
environment, as the benchmarks package narrows torch before importing it (benchmarks/isa.py).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import cnnext
from benchmarks import machine
from benchmarks.shapes import ConvShape, architecture_conv_shapes, conv_shapes
from cnnext._ops import CONV_PASSES, conv2d_plan

ALGOS = ("direct", "im2col")


def pass_calls(shape: ConvShape, pass_: str,
               layout: torch.memory_format = torch.contiguous_format) -> dict[str, Callable[[], torch.Tensor]]:
    """One pass of `shape` by torch and by each cnnext algorithm, on fixed random tensors in `layout`."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.input_shape, generator=gen).contiguous(memory_format=layout)
    w = torch.randn(shape.weight_shape, generator=gen).contiguous(memory_format=layout)
    b = torch.randn(shape.out_channels, generator=gen)
    gy = torch.randn(shape.output_shape, generator=gen).contiguous(memory_format=layout)
    ph, pw = shape.leading_padding
    s, d, g, pad4 = list(shape.stride), list(shape.dilation), shape.groups, [ph, pw, ph, pw]
    ops = torch.ops.cnnext
    if pass_ == "forward":
        calls = {"torch": lambda: F.conv2d(x, w, b, shape.stride, (ph, pw), shape.dilation, g)}
        calls.update({a: (lambda a=a: ops.conv2d(x, w, b, s, pad4, d, g, a)) for a in ALGOS})
        return calls
    mask = [pass_ == "grad_input", pass_ == "grad_weight", False]
    calls = {"torch": lambda: torch.ops.aten.convolution_backward(gy, x, w, None, s, [ph, pw], d, False, [0, 0], g,
                                                                   mask)}
    if pass_ == "grad_input":
        calls.update({a: (lambda a=a: ops.conv2d_grad_input(gy, w, list(x.shape), s, pad4, d, g, a)) for a in ALGOS})
    else:
        calls.update({a: (lambda a=a: ops.conv2d_grad_weight(gy, x, list(w.shape), s, pad4, d, g, a))
                      for a in ALGOS})
    return calls


def medians(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each, timed in turn round after round after two warm-up calls each.

    With one thread (torch and cnnext then run in the calling thread) the clock is this thread's CPU time,
    which the other processes of a shared machine do not inflate; with more, wall time.
    """
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for call in calls.values():
        call(), call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layers", default="",
                        help="comma-separated parts of layer names (default: every layer)")
    parser.add_argument("--architectures", action="store_true",
                        help="the standard architectures' distinct conv layers instead of the seed models'")
    parser.add_argument("--channels-last", action="store_true", help="channels_last activations and weights")
    parser.add_argument("--peak", type=float, metavar="GFLOPS",
                        help="the FMA peak, for the bound torch / time at the peak (see above)")
    args = parser.parse_args()
    if args.peak is not None and args.peak <= 0:
        parser.error("--peak must be a positive GFLOP/s")
    machine.configure_torch(machine.default_threads())
    malloc = machine.configure_malloc(machine.default_malloc())
    wanted = [part for part in args.layers.split(",") if part]
    shapes = [s for s in (architecture_conv_shapes() if args.architectures else conv_shapes())
              if not wanted or any(part in s.name for part in wanted)]
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    info = cnnext.build_info()
    clock = "thread CPU time" if torch.get_num_threads() == 1 else "wall time"
    print(f"cnnext ISA {info['cpu_isa']}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{machine.cpu_model()}, {torch.get_num_threads()} threads, {clock}, malloc {malloc}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}\n")
    bound = " bound: torch / at peak |" if args.peak else ""
    print("| layer | pass | torch ms | direct | im2col | auto (plan) |" + bound)
    print("| --- | --- | --- | --- | --- | --- |" + (" --- |" if args.peak else ""))
    for shape in shapes:
        for pass_ in CONV_PASSES:
            if pass_ == "grad_input" and shape.image_input:
                continue
            m = medians(pass_calls(shape, pass_, layout), args.rounds)
            plan = conv2d_plan(shape.input_shape, shape.weight_shape, shape.stride, shape.leading_padding,
                               shape.dilation, shape.groups, torch.float32, pass_,
                               channels_last=args.channels_last)
            ratio = {a: m["torch"] / m[a] for a in ALGOS}
            at_peak = f" {m['torch'] * args.peak * 1e9 / shape.flops_inside(backward=False):.2f} |" if args.peak else ""
            print(f"| {shape.name} | {pass_} | {m['torch'] * 1e3:.3f} | {ratio['direct']:.2f} | "
                  f"{ratio['im2col']:.2f} | {ratio[plan['algo']]:.2f} ({plan['family']}) |{at_peak}", flush=True)


if __name__ == "__main__":
    main()
