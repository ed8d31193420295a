"""Interleaved training-step ratios of the standard architectures (issue 15's table) and
of the seed models, NCHW and channels_last.

Usage: ``python -m benchmarks.arch_steps [--rounds 7] [--steps 1] [--threads 2] [--split] [NAME ...]``
(NAME: an architecture or a seed model; default: every architecture)

pytest-benchmark times one case after the other, so a change in the machine's load
between the torch and the cnnext case moves their ratio. Here each round times
``--steps`` training steps (forward, cross-entropy, backward, SGD) of every variant
of one architecture back to back — torch layers and ``cnnext.convert()`` (algo
auto), NCHW and channels_last — in an order that rotates from round to round;
each ratio is taken within a round, and the table gives the median over the
rounds and its range. The cnnext models' loss and gradients are checked against
the torch model's first (architectures: in float64, see ``ops.check_architecture``; seed models:
as the benchmark suite checks them). Seed models train with their own optimizer and batch,
the architectures with SGD. Prints a markdown table and the CPU load other processes put on
the machine meanwhile.

``--split`` times, instead, where the NCHW ratio comes from: the torch model, the cnnext model with
only its convolutions on cnnext (pools back on torch), with only its pools on cnnext, and wholly
converted, round by round as above. ``--peak GFLOPS`` (the CPU's FMA peak at these threads, from
tools/fma_peak.c) adds what the convolutions could gain at most: the FLOPs of a step's conv passes
over the taps inside the input, their time at the peak, torch's time for the same passes (each timed
alone), and the bound on the ratio were cnnext's convolutions to run at the peak with everything else
of the pools-only step unchanged.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from benchmarks import machine
from benchmarks.impls import ARCH_TRAIN_IMPLS
from benchmarks.ops import (
    TRAIN_RTOL, architecture_batch, architecture_model, assert_matches, check_architecture, loss_and_grads,
    train_batch, train_model, train_step_call,
)
from benchmarks.per_isa import medians, pass_calls
from benchmarks.shapes import ARCHITECTURES, TRAIN_MODELS, Architecture, model_conv_shapes
from cnnext._ops import CONV_PASSES

TORCH, AUTO, TORCH_CL, AUTO_CL = ARCH_TRAIN_IMPLS
RATIOS = (  # (column, numerator impl, denominator impl): > 1 means the denominator is faster
    ("torch/cnnext NCHW", TORCH, AUTO),
    ("torch/cnnext channels_last", TORCH_CL, AUTO_CL),
    ("cnnext NCHW ÷ cnnext channels_last", AUTO, AUTO_CL),
    ("torch NCHW ÷ torch channels_last", TORCH, TORCH_CL),
)

POOLS_ONLY = "cnnext pools only"
SPLIT = {  # --split's variants: NCHW cnnext models with these layer kinds back on torch
    TORCH: (),
    "cnnext convs only": (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d),
    POOLS_ONLY: (nn.Conv1d, nn.Conv2d),
    AUTO: (),
}
BOUND_COLUMNS = ("conv GFLOP (taps inside)", "convs at peak ms", "torch's conv passes ms",
                 "bound: torch / (pools only - torch's convs + convs at peak)")


def columns(split: bool) -> tuple[tuple[str, ...], list[tuple[str, str, str]]]:
    """The variants a run times (ARCH_TRAIN_IMPLS, or with ``split`` the SPLIT ones) and its ratios
    (column, numerator, denominator)."""
    if split:
        return tuple(SPLIT), [(f"torch/{v}", TORCH, v) for v in tuple(SPLIT)[1:]]
    return ARCH_TRAIN_IMPLS, list(RATIOS)


def with_torch_layers(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> nn.Module:
    """``model`` (changed in place) with its cnnext layers of the given torch kinds back on torch's
    implementation: each cnnext layer subclasses its torch layer, whose forward it then runs again."""
    for module in model.modules():
        for kind in kinds:
            if isinstance(module, kind) and type(module) is not kind:
                module.__class__ = kind
    return model


def step_call(case: Architecture | str, impl: str,
              torch_kinds: tuple[type[nn.Module], ...] = ()) -> Callable[[], object]:
    """One checked training step of variant ``impl`` of an architecture or a seed model (by name),
    its layers of ``torch_kinds`` left on torch (see with_torch_layers)."""
    cpu = torch.device("cpu")
    if isinstance(case, Architecture):
        model = with_torch_layers(architecture_model(case, impl, cpu), torch_kinds)
        images, labels = architecture_batch(case, impl, cpu, case.batch)
        if impl.startswith("cnnext") and not torch_kinds:
            check_architecture(case, model, impl)
        return train_step_call("sgd", model, images, labels)
    model = with_torch_layers(train_model(case, impl, cpu), torch_kinds)
    images, labels = train_batch(case, cpu, impl=impl)
    if impl.startswith("cnnext"):
        reference = train_model(case, "torch", cpu)
        assert_matches(loss_and_grads(model, images, labels), loss_and_grads(reference, images.contiguous(), labels),
                       TRAIN_RTOL, common_scale=True)
    return train_step_call(case, model, images, labels)


def conv_bound(case: Architecture | str, peak_gflops: float, rounds: int) -> tuple[float, float, float]:
    """For one training step of ``case``: the GFLOP of its conv passes over the taps inside the input
    (ConvShape.flops_inside), their milliseconds at ``peak_gflops``, and torch's milliseconds for the
    same passes, each pass timed alone (medians of ``rounds``)."""
    flops = torch_seconds = 0.0
    for shape in model_conv_shapes(case):
        flops += shape.flops_inside(backward=True)
        for pass_ in CONV_PASSES:
            if not (pass_ == "grad_input" and shape.image_input):
                torch_seconds += medians({"torch": pass_calls(shape, pass_)["torch"]}, rounds)["torch"]
    return flops / 1e9, flops / peak_gflops / 1e6, torch_seconds * 1e3


def bound_cells(case: Architecture | str, results: list[dict[str, float]], peak_gflops: float,
                rounds: int) -> list[str]:
    """conv_bound's numbers and the ratio torch step / (pools-only step - torch's conv passes + the
    conv passes at the peak)."""
    gflop, at_peak, torch_convs = conv_bound(case, peak_gflops, rounds)
    torch_step, pools_only = (statistics.median(r[v] for r in results) * 1e3 for v in (TORCH, POOLS_ONLY))
    return [f"{gflop:.3f}", f"{at_peak:.2f}", f"{torch_convs:.2f}",
            f"{torch_step / (pools_only - torch_convs + at_peak):.2f}"]


def case_name(case: Architecture | str) -> str:
    return case.case() if isinstance(case, Architecture) else case


def round_times(case: Architecture | str, rounds: int, steps: int, split: bool = False) -> list[dict[str, float]]:
    """Per round, the median seconds of one training step of each variant of ``case``: the
    ARCH_TRAIN_IMPLS, or with ``split`` the SPLIT variants."""
    calls = {}
    variants, _ = columns(split)
    for variant in variants:
        impl = AUTO if split and variant != TORCH else variant
        calls[variant] = step_call(case, impl, SPLIT[variant] if split else ())
        calls[variant]()  # warm-up: first-call allocations and one-time set-up
    results = []
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        times: dict[str, float] = {}
        for impl in order:
            samples = []
            for _ in range(steps):
                start = time.perf_counter()
                calls[impl]()
                samples.append(time.perf_counter() - start)
            times[impl] = statistics.median(samples)
        results.append(times)
    return results


def table_row(case: Architecture | str, results: list[dict[str, float]], split: bool = False) -> str:
    """``| case | torch ms | ... | ratio median (min – max) | ... |``."""
    variants, ratios = columns(split)
    cells = [case_name(case)]
    cells += [f"{statistics.median(r[impl] for r in results) * 1e3:.1f}" for impl in variants]
    for _, num, den in ratios:
        values = [r[num] / r[den] for r in results]
        cells.append(f"{statistics.median(values):.2f} ({min(values):.2f} – {max(values):.2f})")
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures (default: all of "
                        + ", ".join(a.name for a in ARCHITECTURES) + ") or seed models ("
                        + ", ".join(TRAIN_MODELS) + ")")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1, help="steps per variant and round (median taken)")
    parser.add_argument("--threads", type=int, default=machine.default_threads())
    parser.add_argument("--split", action="store_true",
                        help="NCHW steps with only cnnext's convs, only its pools, or both (see above)")
    parser.add_argument("--peak", type=float, metavar="GFLOPS",
                        help="with --split: the FMA peak, for the bound on the ratio (see above)")
    args = parser.parse_args(argv)
    chosen: list[Architecture | str] = [a for a in ARCHITECTURES if not args.names or a.name in args.names]
    chosen += [name for name in TRAIN_MODELS if name in args.names]
    if not chosen:
        parser.error(f"no architecture or seed model among {args.names}")
    if args.peak is not None and (not args.split or args.peak <= 0):
        parser.error("--peak needs --split and a positive GFLOP/s")
    machine.configure_torch(args.threads)
    machine.configure_malloc(machine.default_malloc())
    start = machine.CpuClock.now()
    variants, ratios = columns(args.split)
    header = ["case", *(f"{v} ms" for v in variants), *(name for name, _, _ in ratios),
              *(BOUND_COLUMNS if args.peak else ())]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for case in chosen:
        results = round_times(case, args.rounds, args.steps, args.split)
        line = table_row(case, results, args.split)
        if args.peak:
            line += " " + " | ".join(bound_cells(case, results, args.peak, args.rounds)) + " |"
        lines.append(line)
        print(lines[-1], flush=True)
    end = machine.CpuClock.now()
    load = end.others_since(start) if start is not None and end is not None else "unknown"
    print(f"\n{machine.cpu_model()}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps;"
          f" other processes kept {load} cores busy on average\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
