"""Count random conv2d / max_pool2d configurations whose CPU results change with the thread count.

For each random configuration (batch, channels, groups, plane, kernel, stride,
padding, dilation, bias; float32 or float64) the forward value and every
gradient are computed under ``torch.set_num_threads(1)`` and under ``N``
threads, and compared bitwise (``torch.equal``), for cnnext (each algo) and for
``torch.nn.functional``. Prints the counts of configurations with any
difference. Usage: ``python tools/thread_reproducibility.py [--configs 392]
[--threads 2] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

import cnnext


def random_conv(rnd: random.Random) -> dict:
    """One conv2d configuration with a non-empty output; sizes span the kernels' code paths."""
    while True:
        groups = rnd.choice([1, 1, 1, 2, 3])
        cfg = dict(
            batch=rnd.choice([1, 2, 3, 5, 8, 16, 33]),
            in_per_group=rnd.choice([1, 2, 3, 8, 16, 32]),
            out_per_group=rnd.choice([1, 4, 8, 16, 32, 64]),
            groups=groups,
            size=(rnd.randint(1, 40), rnd.randint(1, 40)),
            kernel=(rnd.randint(1, 5), rnd.randint(1, 5)),
            stride=(rnd.randint(1, 3), rnd.randint(1, 3)),
            padding=(rnd.randint(0, 2), rnd.randint(0, 2)),
            dilation=(rnd.randint(1, 2), rnd.randint(1, 2)),
            bias=rnd.random() < 0.8,
            dtype=rnd.choice([torch.float32, torch.float64]),
        )
        extent = [d * (k - 1) + 1 for d, k in zip(cfg["dilation"], cfg["kernel"])]
        if all(s + 2 * p >= e for s, p, e in zip(cfg["size"], cfg["padding"], extent)):
            return cfg


def conv_tensors(cfg: dict, seed: int) -> tuple[torch.Tensor, ...]:
    """Random input, weight, bias (or None) and output gradient for ``cfg``."""
    gen = torch.Generator().manual_seed(seed)
    g, dtype = cfg["groups"], cfg["dtype"]
    x = torch.randn(cfg["batch"], cfg["in_per_group"] * g, *cfg["size"], generator=gen, dtype=dtype)
    w = torch.randn(cfg["out_per_group"] * g, cfg["in_per_group"], *cfg["kernel"], generator=gen, dtype=dtype)
    b = torch.randn(w.shape[0], generator=gen, dtype=dtype) if cfg["bias"] else None
    out = F.conv2d(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], g)
    return x, w, b, torch.randn(out.shape, generator=gen, dtype=dtype)


def conv_results(conv, cfg: dict, tensors) -> list[torch.Tensor]:
    """[output, grad_input, grad_weight, grad_bias?] of ``conv`` (an F.conv2d-like callable)."""
    x, w, b, dy = (t.detach().requires_grad_() if t is not None else None for t in tensors)
    y = conv(x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"])
    y.backward(dy)
    return [y.detach(), x.grad, w.grad] + ([b.grad] if b is not None else [])


def differs(compute, threads: int) -> bool:
    """Whether compute()'s tensors under 1 thread and under ``threads`` threads are not all bitwise equal."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compute()
        torch.set_num_threads(threads)
        many = compute()
    finally:
        torch.set_num_threads(previous)
    return not all(torch.equal(a, b) for a, b in zip(one, many))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=392)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    impls = {"torch": F.conv2d}
    for algo in ("direct", "im2col", "auto"):
        impls[f"cnnext {algo}"] = lambda *a, algo=algo: cnnext.functional.conv2d(*a, algo=algo)
    counts = dict.fromkeys(impls, 0)
    for i in range(args.configs):
        cfg = random_conv(rnd)
        tensors = conv_tensors(cfg, args.seed * 100003 + i)
        for name, conv in impls.items():
            counts[name] += differs(lambda: conv_results(conv, cfg, tensors), args.threads)
    for name, count in counts.items():
        print(f"conv2d {name}: {count} of {args.configs} configurations differ between 1 and {args.threads} threads")
    pool_counts = {"torch": 0, "cnnext": 0}
    for i in range(args.configs):
        gen = torch.Generator().manual_seed(i)
        k, s = rnd.randint(1, 4), rnd.randint(1, 3)
        shape = (rnd.choice([1, 4, 16]), rnd.choice([1, 3, 16]), rnd.randint(k, 30), rnd.randint(k, 30))
        dtype = rnd.choice([torch.float32, torch.float64])
        x = torch.randn(shape, generator=gen, dtype=dtype).round(decimals=1)  # ties, as after ReLU
        for name, pool in (("torch", F.max_pool2d), ("cnnext", cnnext.functional.max_pool2d)):
            def compute(pool=pool):
                xi = x.clone().requires_grad_()
                y = pool(xi, k, s, k // 2)
                y.backward(torch.ones_like(y))
                return [y.detach(), xi.grad]
            pool_counts[name] += differs(compute, args.threads)
    for name, count in pool_counts.items():
        print(f"max_pool2d {name}: {count} of {args.configs} configurations differ between 1 and {args.threads} threads")


if __name__ == "__main__":
    main()
