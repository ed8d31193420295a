"""Time against batch size (1 → 256) for one seed conv layer and one pool, torch vs cnnext.

Usage: ``python -m benchmarks.scaling [--device cpu] [--threads 2] [--malloc steady]``

Both cases run forward+backward (the training workload). Each point is the
median of repeated calls after a warm-up, and every cnnext call is checked
against torch first. Writes a log-log plot, ``benchmarks/scaling.png`` for the
CPU (``scaling-<device>.png`` otherwise), which RESULTS.md links.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from benchmarks.impls import CONV_IMPLS, POOL_IMPLS
from benchmarks.machine import (
    MALLOC_MODES, CpuClock, configure_malloc, configure_torch, default_malloc, default_threads,
)
from benchmarks.ops import (
    CONV_RTOL, POOL_RTOL, Call, assert_matches, conv_call, conv_problem, pool_call, pool_problem,
    synchronized,
)
from benchmarks.shapes import ConvShape, PoolShape, find

CONV_LAYER = "lenet.conv2"
POOL_LAYER = "lenet.pool1"
BATCHES: tuple[int, ...] = tuple(2**i for i in range(9))
WARMUP_CALLS = 2
MIN_REPEATS = 5
HERE = Path(__file__).parent

Curves = dict[str, list[float]]  # implementation -> median seconds per batch size


def median_time(call: Call, device: torch.device, budget: float) -> float:
    """Median seconds of one call: at least MIN_REPEATS calls and ``budget`` seconds in all."""
    timed = synchronized(call, device)
    for _ in range(WARMUP_CALLS):
        timed()
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < MIN_REPEATS or time.perf_counter() < deadline:
        start = time.perf_counter()
        timed()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_curves(shape: ConvShape, device: torch.device, budget: float) -> Curves:
    curves: Curves = {impl: [] for impl in CONV_IMPLS}
    for batch in BATCHES:
        problem = conv_problem(shape.with_batch(batch), device, backward=True)
        expected = conv_call(problem, "torch")()
        for impl in CONV_IMPLS:
            call = conv_call(problem, impl)
            assert_matches(call(), expected, CONV_RTOL)
            curves[impl].append(median_time(call, device, budget))
    return curves


def pool_curves(shape: PoolShape, device: torch.device, budget: float) -> Curves:
    curves: Curves = {impl: [] for impl in POOL_IMPLS}
    for batch in BATCHES:
        problem = pool_problem(shape.with_batch(batch), device, backward=True)
        expected = pool_call(problem, "torch")()
        for impl in POOL_IMPLS:
            call = pool_call(problem, impl)
            assert_matches(call(), expected, POOL_RTOL)
            curves[impl].append(median_time(call, device, budget))
    return curves


def plot(panels: Sequence[tuple[str, Curves]], title: str, out: Path) -> None:
    """Log-log time against batch, one panel per layer, with a dotted line ∝ batch for reference."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for ax, (name, curves) in zip(axes, panels, strict=True):
        for impl, seconds in curves.items():
            ax.plot(BATCHES, [s * 1e3 for s in seconds], marker="o", label=impl)
        anchor = curves["torch"][-1] * 1e3
        ax.plot(BATCHES, [anchor * b / BATCHES[-1] for b in BATCHES], ":", color="gray",
                label="∝ batch")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median ms", title=name)
        ax.set_xticks(BATCHES, [str(batch) for batch in BATCHES])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def print_table(name: str, curves: Curves) -> None:
    print(f"\n{name}: median ms per batch size")
    print("batch " + " ".join(f"{impl:>14}" for impl in curves))
    for i, batch in enumerate(BATCHES):
        print(f"{batch:5d} " + " ".join(f"{curves[impl][i] * 1e3:14.3f}" for impl in curves))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--malloc", choices=MALLOC_MODES, default=default_malloc())
    parser.add_argument("--budget", type=float, default=0.25, help="seconds of timing per point")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch(args.threads)
    malloc = configure_malloc(args.malloc)
    device = torch.device(args.device)
    out = args.out or HERE / ("scaling.png" if device.type == "cpu" else f"scaling-{device.type}.png")

    conv, pool = find(CONV_LAYER), find(POOL_LAYER)
    start = CpuClock.now()
    panels = [
        (f"conv2d fwd+bwd {str(conv.with_batch(1)).replace(' N1 ', ' ')}",
         conv_curves(conv, device, args.budget)),
        (f"max_pool2d fwd+bwd {str(pool.with_batch(1)).replace(' N1 ', ' ')}",
         pool_curves(pool, device, args.budget)),
    ]
    for name, curves in panels:
        print_table(name, curves)
    end = CpuClock.now()
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} threads"
    title = (f"{device.type} ({hardware}), torch {torch.__version__}, malloc {malloc},"
             f" {time.strftime('%Y-%m-%d')}")
    if start is not None and end is not None:
        title += f", other work on the CPU: {end.others_since(start)} cores"
    plot(panels, title, out)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
