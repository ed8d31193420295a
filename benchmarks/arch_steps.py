"""Interleaved training-step ratios of the standard architectures (issue 15's table) and
of the seed models, NCHW and channels_last.

Usage: ``python -m benchmarks.arch_steps [--rounds 7] [--steps 1] [--threads 2] [NAME ...]``
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
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from benchmarks import machine
from benchmarks.impls import ARCH_TRAIN_IMPLS
from benchmarks.ops import (
    TRAIN_RTOL, architecture_batch, architecture_model, assert_matches, check_architecture, loss_and_grads,
    train_batch, train_model, train_step_call,
)
from benchmarks.shapes import ARCHITECTURES, TRAIN_MODELS, Architecture

TORCH, AUTO, TORCH_CL, AUTO_CL = ARCH_TRAIN_IMPLS
RATIOS = (  # (column, numerator impl, denominator impl): > 1 means the denominator is faster
    ("torch/cnnext NCHW", TORCH, AUTO),
    ("torch/cnnext channels_last", TORCH_CL, AUTO_CL),
    ("cnnext NCHW ÷ cnnext channels_last", AUTO, AUTO_CL),
    ("torch NCHW ÷ torch channels_last", TORCH, TORCH_CL),
)


def step_call(case: Architecture | str, impl: str) -> Callable[[], object]:
    """One checked training step of variant ``impl`` of an architecture or a seed model (by name)."""
    cpu = torch.device("cpu")
    if isinstance(case, Architecture):
        model = architecture_model(case, impl, cpu)
        images, labels = architecture_batch(case, impl, cpu, case.batch)
        if impl.startswith("cnnext"):
            check_architecture(case, model, impl)
        return train_step_call("sgd", model, images, labels)
    model = train_model(case, impl, cpu)
    images, labels = train_batch(case, cpu, impl=impl)
    if impl.startswith("cnnext"):
        reference = train_model(case, "torch", cpu)
        assert_matches(loss_and_grads(model, images, labels), loss_and_grads(reference, images.contiguous(), labels),
                       TRAIN_RTOL, common_scale=True)
    return train_step_call(case, model, images, labels)


def case_name(case: Architecture | str) -> str:
    return case.case() if isinstance(case, Architecture) else case


def round_times(case: Architecture | str, rounds: int, steps: int) -> list[dict[str, float]]:
    """Per round, the median seconds of one training step of each variant of ``case``."""
    calls = {}
    for impl in ARCH_TRAIN_IMPLS:
        calls[impl] = step_call(case, impl)
        calls[impl]()  # warm-up: first-call allocations and one-time set-up
    results = []
    for r in range(rounds):
        order = ARCH_TRAIN_IMPLS[r % len(ARCH_TRAIN_IMPLS):] + ARCH_TRAIN_IMPLS[:r % len(ARCH_TRAIN_IMPLS)]
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


def table_row(case: Architecture | str, results: list[dict[str, float]]) -> str:
    """``| case | torch ms | ... | ratio median (min – max) | ... |``."""
    cells = [case_name(case)]
    cells += [f"{statistics.median(r[impl] for r in results) * 1e3:.0f}" for impl in ARCH_TRAIN_IMPLS]
    for _, num, den in RATIOS:
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
    args = parser.parse_args(argv)
    chosen: list[Architecture | str] = [a for a in ARCHITECTURES if not args.names or a.name in args.names]
    chosen += [name for name in TRAIN_MODELS if name in args.names]
    if not chosen:
        parser.error(f"no architecture or seed model among {args.names}")
    machine.configure_torch(args.threads)
    machine.configure_malloc(machine.default_malloc())
    start = machine.CpuClock.now()
    header = ["case", *(f"{impl} ms" for impl in ARCH_TRAIN_IMPLS), *(name for name, _, _ in RATIOS)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for case in chosen:
        lines.append(table_row(case, round_times(case, args.rounds, args.steps)))
        print(lines[-1], flush=True)
    end = machine.CpuClock.now()
    load = end.others_since(start) if start is not None and end is not None else "unknown"
    print(f"\n{machine.cpu_model()}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps;"
          f" other processes kept {load} cores busy on average\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
