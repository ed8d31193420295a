"""Train a seed CNN or a standard architecture on MNIST or Fashion-MNIST with cnnext's layers.

    python -m cnnext.train                       # lenet on MNIST (embedded sample if no full data)
    python -m cnnext.train --compare --plot curves.png
    torchrun --nproc_per_node=2 -m cnnext.train --ddp

With ``--compare`` the same model, from the same initial weights, batches and
dropout masks, is also trained with PyTorch's own layers, epoch by epoch in
turn, and a side-by-side table is printed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .data import DATASETS, default_root, load_datasets
from .fuse import fuse
from .models import ALGOS, MODELS, OPTIMIZERS, ModelSpec, build_model, make_optimizer

DEFAULT_MODEL = "lenet"
DEFAULT_EPOCHS = 8
EVAL_BATCH_SIZE = 1000

Adapter = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EpochStats:
    """What one epoch of one run measured (losses are per-image means over all ranks)."""

    train_loss: float
    test_loss: float
    test_acc: float
    seconds: float
    images: int

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class Run:
    """One model being trained: its label, module (maybe DDP-wrapped), optimizer and history."""

    label: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, world size and device (rank 0 of 1 without DDP)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _positive_int(text: str) -> int:
    """An option value that must be an integer >= 1; argparse reports the ArgumentTypeError's text."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """An option value that must be a number > 0 (not NaN); argparse reports the ArgumentTypeError's text."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; exits with a usage message on invalid options."""
    p = argparse.ArgumentParser(
        prog="python -m cnnext.train",
        description="Train a seed CNN or a standard architecture on MNIST / Fashion-MNIST with cnnext layers "
        "(and, with --compare, with PyTorch's layers side by side).",
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--model", choices=list(MODELS), default=DEFAULT_MODEL,
                   help=f"seed model (default {DEFAULT_MODEL}) or standard architecture with 1 input "
                   "channel and 10 classes; the 28x28 images are fitted to it: padded to 32x32 for "
                   "resnet18_cifar (and cifar_bn, 3 channels), resized to 64x64 for resnet18, vgg11 and "
                   "mobilenet_v2 (an epoch over the embedded sample is then 7 - 35 TFLOP of training, "
                   "several minutes on 2 cores; use --limit-train for less)")
    p.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=_positive_int, help="per process (default: the model's seed batch size)")
    p.add_argument("--lr", type=_positive_float, help="learning rate (default: the model's seed value)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the model's seed optimizer")
    p.add_argument("--algo", choices=ALGOS, default="auto", help="cnnext convolution algorithm")
    p.add_argument("--fuse", action="store_true",
                   help="run the cnnext model through cnnext.fuse (ReLU after max-pool; identical results)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", type=Path, default=default_root(),
                   help="full datasets live in DATA_DIR/<dataset>/ (default $CNNEXT_DATA or %(default)s)")
    p.add_argument("--download", action="store_true", help="download the full dataset if it is missing")
    p.add_argument("--seed", type=int, default=0, help="initial weights, batch order and dropout")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads per process")
    p.add_argument("--limit-train", type=_positive_int, metavar="N", help="train on the first N images only")
    p.add_argument("--limit-test", type=_positive_int, metavar="N", help="test on the first N images only")
    p.add_argument("--save", type=Path, metavar="PATH",
                   help="save the trained cnnext model's state_dict (loads into the layers='torch' model too)")
    p.add_argument("--compare", action="store_true", help="also train with PyTorch's layers and compare")
    p.add_argument("--plot", type=Path, metavar="PATH", help="save training curves as a PNG")
    p.add_argument("--ddp", action="store_true",
                   help="DistributedDataParallel; run under torchrun (gloo on CPU, nccl on CUDA)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device available")
    if args.ddp and "RANK" not in os.environ:
        p.error("--ddp needs torchrun, e.g. torchrun --nproc_per_node=2 -m cnnext.train --ddp")
    if args.plot and importlib.util.find_spec("matplotlib") is None:  # checked now, not after training
        p.error("--plot needs matplotlib, which is not installed: pip install matplotlib")
    return args


def setup_dist(args: argparse.Namespace) -> Dist:
    """Join the torchrun process group when --ddp is given; pick this process's device."""
    if not args.ddp:
        return Dist(0, 1, torch.device(args.device))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def adapt_input(x: torch.Tensor, spec: ModelSpec, background: float) -> torch.Tensor:
    """Fit a (N, 1, 28, 28) batch to the model's input: to spec.image_size by padding
    with ``background`` (spec.fit "pad": cifar_bn and resnet18_cifar take 32x32) or
    by bilinear resizing (spec.fit "resize": the ImageNet-stem models take 64x64),
    then repeat the channel to spec.in_channels (cifar_bn takes 3 channels); returns
    ``x`` itself when it already fits."""
    size = spec.image_size
    if spec.fit == "resize" and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    elif (pad := size - x.shape[-1]):
        x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=background)
    if spec.in_channels != x.shape[1]:
        x = x.expand(-1, spec.in_channels, -1, -1)
    return x


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, ctx: Dist) -> Iterator[torch.Tensor]:
    """Index tensors of this rank's batches for one epoch.

    One permutation of range(n), the same on every rank for a given (seed,
    epoch), split into world_size equal shards (the last n % world_size
    images are left out so every rank runs the same number of steps), each
    shard cut into batches of ``batch_size`` (the last may be smaller).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator)
    per_rank = n // ctx.world_size
    yield from order[ctx.rank * per_rank : (ctx.rank + 1) * per_rank].split(batch_size)


def _all_reduce_sum(values: list[float], ctx: Dist) -> list[float]:
    """Sum ``values`` over all ranks (no-op without DDP)."""
    if ctx.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def train_epoch(
    run: Run,
    data: tuple[torch.Tensor, torch.Tensor],
    batches: list[torch.Tensor],
    adapt: Adapter,
    bar: tqdm | None = None,
) -> tuple[float, int]:
    """One pass of ``run`` over ``batches`` (index tensors) of ``data`` = (images, labels),
    each batch passed through ``adapt`` before the model; ``bar`` (if given) advances per image.

    Returns (sum of per-image losses, number of images) on this rank and
    appends each step's mean loss to ``run.step_losses``.
    """
    images, labels = data
    run.model.train()
    total, count = 0.0, 0
    for index in batches:
        x, y = adapt(images[index]), labels[index]
        run.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(run.model(x), y)
        loss.backward()
        run.optimizer.step()
        value = loss.item()
        run.step_losses.append(value)
        total += value * len(y)
        count += len(y)
        if bar is not None:
            bar.set_postfix(loss=f"{total / count:.4f}", refresh=False)
            bar.update(len(y))
    return total, count


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], adapt: Adapter, ctx: Dist) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of ``model`` on ``data``, each rank
    evaluating every world_size-th image and the sums combined over ranks."""
    images, labels = data
    images, labels = images[ctx.rank :: ctx.world_size], labels[ctx.rank :: ctx.world_size]
    model.eval()
    loss, correct = 0.0, 0.0
    for x, y in zip(images.split(EVAL_BATCH_SIZE), labels.split(EVAL_BATCH_SIZE)):
        out = model(adapt(x))
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    loss, correct, n = _all_reduce_sum([loss, correct, float(len(labels))], ctx)
    return loss / n, correct / n


def _make_run(label: str, layers: str, args: argparse.Namespace, spec: ModelSpec, ctx: Dist) -> Run:
    """Build the model (seeded), move it to the device, wrap it in DDP if asked, and its optimizer."""
    model = build_model(spec.name, layers=layers, algo=args.algo, seed=args.seed).to(ctx.device)
    if layers == "cnnext" and args.fuse:
        model = fuse(model)
    if args.ddp:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    optimizer = make_optimizer(args.optimizer or spec, model.parameters(), args.lr)
    return Run(label, model, optimizer)


@dataclass(frozen=True)
class Data:
    """The tensors a run trains and tests on, and how to describe them."""

    train: tuple[torch.Tensor, torch.Tensor]  # images (N, 1, 28, 28) float32, labels (N,) int64
    test: tuple[torch.Tensor, torch.Tensor]
    title: str  # "MNIST" or "Fashion-MNIST"
    background: float  # the normalised value of a blank pixel
    source: str  # e.g. "embedded sample: 8000 train / 2000 test images"


def load_data(args: argparse.Namespace, ctx: Dist) -> Data:
    """Load --dataset (full data, downloaded if asked, else the embedded sample),
    cut to --limit-train / --limit-test, on this process's device. Under DDP
    rank 0 downloads alone (the others then find its files, or fall back to
    the embedded sample as it did) and only rank 0 prints."""
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if ctx.is_main else (lambda message: None)
    if args.ddp and args.download and not ctx.is_main:
        dist.barrier()  # let rank 0 download first
    train, test = load_datasets(args.dataset, args.data_dir, download=args.download and ctx.is_main, log=log)
    if args.ddp and args.download and ctx.is_main:
        dist.barrier()
    train_pair, test_pair = (
        (ds.images[:limit].to(ctx.device), ds.labels[:limit].to(ctx.device))
        for ds, limit in ((train, args.limit_train), (test, args.limit_test))
    )
    kind = "embedded sample" if train.source == "embedded" else "full data"
    source = f"{kind}: {len(train_pair[1])} train / {len(test_pair[1])} test images"
    return Data(train_pair, test_pair, train.title, -train.mean / train.std, source)


def _seconds_per_epoch(run: Run) -> float:
    return sum(e.seconds for e in run.epochs) / len(run.epochs)


def print_table(runs: list[Run]) -> None:
    """Print the side-by-side summary of two runs: cnnext first, torch second."""
    rows = [
        ("test accuracy", [f"{r.epochs[-1].test_acc:.2%}" for r in runs]),
        ("final test loss", [f"{r.epochs[-1].test_loss:.4f}" for r in runs]),
        ("final train loss", [f"{r.epochs[-1].train_loss:.4f}" for r in runs]),
        ("time / epoch", [f"{_seconds_per_epoch(r):.2f} s" for r in runs]),
        ("throughput", [f"{sum(e.images for e in r.epochs) / sum(e.seconds for e in r.epochs):.0f} img/s"
                        for r in runs]),
    ]
    width = max(16, *(len(r.label) + 2 for r in runs))
    print(f"\n{'':<18}" + "".join(f"{r.label:>{width}}" for r in runs))
    for name, cells in rows:
        print(f"{name:<18}" + "".join(f"{c:>{width}}" for c in cells))
    ratio = _seconds_per_epoch(runs[1]) / _seconds_per_epoch(runs[0])
    print(f"speed ratio {runs[0].label} / {runs[1].label}: {ratio:.2f}x "
          f"(time per epoch of {runs[1].label} over that of {runs[0].label}; above 1 means cnnext is faster)")


def save_plot(path: Path, runs: list[Run], title: str) -> None:
    """Save a PNG with each run's per-step training loss and per-epoch test accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        ax_loss.plot(run.step_losses, label=run.label, alpha=0.8, linewidth=0.8)
        ax_acc.plot(range(1, len(run.epochs) + 1), [100 * e.test_acc for e in run.epochs],
                    marker="o", label=run.label)
    ax_loss.set(xlabel="optimizer step", ylabel="training loss (cross-entropy)", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)")
    ax_acc.set_xticks(range(1, max(len(r.epochs) for r in runs) + 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fit(runs: list[Run], data: Data, spec: ModelSpec, args: argparse.Namespace, ctx: Dist) -> None:
    """Train every run for args.epochs epochs, the runs taking turns each epoch on the
    same batches and dropout masks; append each epoch's EpochStats and print it (rank 0)."""
    batch_size = args.batch_size or spec.batch_size

    def adapt(x: torch.Tensor) -> torch.Tensor:
        return adapt_input(x, spec, data.background)

    for epoch in range(1, args.epochs + 1):
        batches = list(epoch_batches(len(data.train[1]), batch_size, seed=args.seed, epoch=epoch, ctx=ctx))
        for run in runs:
            torch.manual_seed(args.seed * 1_000_003 + epoch * 1009 + ctx.rank)  # same dropout masks for every run
            # A progress bar only on a terminal: in a log the per-epoch lines below say it all.
            with tqdm(total=sum(len(b) for b in batches), desc=f"epoch {epoch}/{args.epochs} {run.label}",
                      unit="img", leave=False, disable=not (ctx.is_main and sys.stderr.isatty()),
                      file=sys.stderr, mininterval=0.1) as bar:
                start = time.perf_counter()
                local_loss, local_count = train_epoch(run, data.train, batches, adapt, bar)
                seconds = time.perf_counter() - start
            loss_sum, count, seconds = _all_reduce_sum([local_loss, float(local_count), seconds], ctx)
            test_loss, test_acc = evaluate(run.model, data.test, adapt, ctx)
            stats = EpochStats(loss_sum / count, test_loss, test_acc, seconds / ctx.world_size, int(count))
            run.epochs.append(stats)
            if ctx.is_main:
                print(f"epoch {epoch}/{args.epochs} {run.label:>14}: train loss {stats.train_loss:.4f}  "
                      f"test loss {stats.test_loss:.4f}  test acc {stats.test_acc:.2%}  "
                      f"{stats.seconds:.2f} s ({stats.images_per_second:.0f} img/s)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cnnext.train`` and ``cnnext-train``; returns the exit status."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = setup_dist(args)
    try:
        spec = MODELS[args.model]
        data = load_data(args, ctx)
        runs = [_make_run(f"cnnext({args.algo}{'+fuse' if args.fuse else ''})", "cnnext", args, spec, ctx)]
        if args.compare:
            runs.append(_make_run("torch", "torch", args, spec, ctx))
        title = f"{spec.name} on {data.title}"
        if ctx.is_main:
            adapted = (spec.in_channels, spec.image_size) != (1, 28)
            print(f"cnnext-train: {title} ({data.source}), {ctx.device.type}, "
                  f"{ctx.world_size} process(es) x {torch.get_num_threads()} thread(s)")
            print(f"  batch {args.batch_size or spec.batch_size}/process, {args.optimizer or spec.optimizer} "
                  f"lr {runs[0].optimizer.param_groups[0]['lr']:g}, {args.epochs} epoch(s), seed {args.seed}, "
                  f"layers: {' vs '.join(r.label for r in runs)}"
                  + (f"; input {'resized' if spec.fit == 'resize' else 'padded'} to "
                     f"{spec.in_channels}x{spec.image_size}x{spec.image_size}" if adapted else ""),
                  flush=True)
        fit(runs, data, spec, args, ctx)
        if ctx.is_main:
            _report(runs, args, f"{title} ({data.source})")
    finally:
        if args.ddp:
            dist.destroy_process_group()
    return 0


def _report(runs: list[Run], args: argparse.Namespace, title: str) -> None:
    """Print the final summary (table with --compare) and write --save / --plot outputs."""
    if args.compare:
        print_table(runs)
    else:
        print(f"final: {runs[0].label} test accuracy {runs[0].epochs[-1].test_acc:.2%}, "
              f"{_seconds_per_epoch(runs[0]):.2f} s/epoch")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        model = runs[0].model
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.save)
        print(f"saved {runs[0].label} state_dict to {args.save}")
    if args.plot:
        save_plot(args.plot, runs, title)
        print(f"saved training curves to {args.plot}")


if __name__ == "__main__":
    sys.exit(main())
