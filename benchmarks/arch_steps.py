"""Interleaved training-step ratios of the standard architectures (issue 15's table).

Usage: ``python -m benchmarks.arch_steps [--rounds 7] [--steps 1] [--threads 2] [NAME ...]``

pytest-benchmark times one case after the other, so a change in the machine's load
between the torch and the cnnext case moves their ratio. Here each round times
``--steps`` training steps (forward, cross-entropy, backward, SGD) of every variant
of one architecture back to back — torch layers and ``cnnext.convert()`` (algo
auto), NCHW and channels_last — in an order that rotates from round to round;
each ratio is taken within a round, and the table gives the median over the
rounds and its range. The cnnext models' loss and gradients are checked against
the torch model's first (in float64, see ``ops.check_architecture``). Prints a markdown table and the CPU load other
processes put on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from benchmarks import machine
from benchmarks.impls import ARCH_TRAIN_IMPLS
from benchmarks.ops import architecture_batch, architecture_model, check_architecture, train_step_call
from benchmarks.shapes import ARCHITECTURES, Architecture

TORCH, AUTO, TORCH_CL, AUTO_CL = ARCH_TRAIN_IMPLS
RATIOS = (  # (column, numerator impl, denominator impl): > 1 means the denominator is faster
    ("torch/cnnext NCHW", TORCH, AUTO),
    ("torch/cnnext channels_last", TORCH_CL, AUTO_CL),
    ("cnnext NCHW ÷ cnnext channels_last", AUTO, AUTO_CL),
    ("torch NCHW ÷ torch channels_last", TORCH, TORCH_CL),
)


def round_times(arch: Architecture, rounds: int, steps: int) -> list[dict[str, float]]:
    """Per round, the median seconds of one training step of each variant of ``arch``."""
    cpu = torch.device("cpu")
    calls = {}
    for impl in ARCH_TRAIN_IMPLS:
        model = architecture_model(arch, impl, cpu)
        images, labels = architecture_batch(arch, impl, cpu, arch.batch)
        if impl.startswith("cnnext"):
            check_architecture(arch, model, impl)
        calls[impl] = train_step_call("sgd", model, images, labels)
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


def table_row(arch: Architecture, results: list[dict[str, float]]) -> str:
    """``| case | torch ms | ... | ratio median (min – max) | ... |``."""
    cells = [arch.case()]
    cells += [f"{statistics.median(r[impl] for r in results) * 1e3:.0f}" for impl in ARCH_TRAIN_IMPLS]
    for _, num, den in RATIOS:
        values = [r[num] / r[den] for r in results]
        cells.append(f"{statistics.median(values):.2f} ({min(values):.2f} – {max(values):.2f})")
    return "| " + " | ".join(cells) + " |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures (default: all of "
                        + ", ".join(a.name for a in ARCHITECTURES) + ")")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1, help="steps per variant and round (median taken)")
    parser.add_argument("--threads", type=int, default=machine.default_threads())
    args = parser.parse_args(argv)
    chosen = [a for a in ARCHITECTURES if not args.names or a.name in args.names]
    if not chosen:
        parser.error(f"no architecture among {args.names}")
    machine.configure_torch(args.threads)
    machine.configure_malloc(machine.default_malloc())
    start = machine.CpuClock.now()
    header = ["case", *(f"{impl} ms" for impl in ARCH_TRAIN_IMPLS), *(name for name, _, _ in RATIOS)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for arch in chosen:
        lines.append(table_row(arch, round_times(arch, args.rounds, args.steps)))
        print(lines[-1], flush=True)
    end = machine.CpuClock.now()
    load = end.others_since(start) if start is not None and end is not None else "unknown"
    print(f"\n{machine.cpu_model()}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps;"
          f" other processes kept {load} cores busy on average\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
