"""CPU results do not depend on the thread count: values and gradients are bitwise the same under 1, 2 and 3
threads (fixed-order reductions, thread-independent GEMM blocking), for both conv2d algorithms and max_pool2d."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnext import functional as CF

THREADS = (1, 2, 3)


def under_each_thread_count(compute: Callable[[], list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """compute()'s tensors under each of THREADS (torch.set_num_threads), restoring the caller's count."""
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in THREADS:
            torch.set_num_threads(threads)
            results.append(compute())
        return results
    finally:
        torch.set_num_threads(previous)


def assert_bitwise_equal(results: list[list[torch.Tensor]], names: list[str]) -> None:
    for threads, result in zip(THREADS[1:], results[1:]):
        for name, first, other in zip(names, results[0], result):
            assert torch.equal(first, other), f"{name} differs between 1 and {threads} threads"


def random_conv_config(rng: np.random.Generator) -> dict:
    """Random geometry with a non-empty output. Batches up to 19 cut into several reduction chunks; channel counts
    of 16 and 32 take the channel-vector kernels, others the pixel-vector ones."""
    while True:
        groups = int(rng.choice([1, 1, 2, 3]))
        config = dict(
            batch=int(rng.choice([1, 2, 5, 9, 19])),
            cin=int(rng.choice([1, 3, 8, 16])) * groups,
            cout=int(rng.choice([4, 8, 16, 32])) * groups,
            size=(int(rng.integers(1, 25)), int(rng.integers(1, 25))),
            kernel=(int(rng.integers(1, 5)), int(rng.integers(1, 5))),
            stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=(int(rng.integers(0, 3)), int(rng.integers(0, 3))),
            dilation=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            groups=groups,
            bias=bool(rng.integers(0, 4) > 0),
        )
        extent = [d * (k - 1) + 1 for d, k in zip(config["dilation"], config["kernel"])]
        if all(s + 2 * p >= e for s, p, e in zip(config["size"], config["padding"], extent)):
            return config


def conv_results(config: dict, algo: str, dtype: torch.dtype, seed: int) -> Callable[[], list[torch.Tensor]]:
    """A function computing [output, grad_input, grad_weight, (grad_bias)] of cnnext's conv2d on fixed random data."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(config["batch"], config["cin"], *config["size"], generator=gen, dtype=dtype)
    w = torch.randn(config["cout"], config["cin"] // config["groups"], *config["kernel"], generator=gen, dtype=dtype)
    b = torch.randn(config["cout"], generator=gen, dtype=dtype) if config["bias"] else None
    geometry = (config["stride"], config["padding"], config["dilation"], config["groups"])
    grad = torch.randn(F.conv2d(x, w, b, *geometry).shape, generator=gen, dtype=dtype)

    def compute() -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
        out = CF.conv2d(leaves[0], leaves[1], leaves[2] if b is not None else None, *geometry, algo=algo)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad)]

    return compute


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_conv2d_random_configs_same_bits_for_any_thread_count(algo, dtype, rng):
    for i in range(12):
        config = random_conv_config(rng)
        results = under_each_thread_count(conv_results(config, algo, dtype, seed=i))
        names = ["output", "grad_input", "grad_weight", "grad_bias"]
        try:
            assert_bitwise_equal(results, names)
        except AssertionError as error:
            raise AssertionError(f"{config}: {error}") from None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize(
    "config",
    [
        # One sample: a single GEMM per pass, whose reductions (576 weight taps, 3600 pixels) a threaded BLAS splits.
        dict(batch=1, cin=64, cout=64, size=(12, 12), kernel=(3, 3), padding=(1, 1)),
        dict(batch=1, cin=8, cout=16, size=(60, 60), kernel=(3, 3), padding=(1, 1)),
        # A seed layer (cnn_small.conv2) at its batch size: 32 samples in 8 reduction chunks.
        dict(batch=32, cin=16, cout=16, size=(28, 28), kernel=(3, 3), padding=(1, 1)),
        # More samples than 8 chunks of whole GEMM blocks: lenet.conv3's 9-pixel planes.
        dict(batch=37, cin=64, cout=64, size=(5, 5), kernel=(3, 3)),
    ],
    ids=["one-sample-deep", "one-sample-wide", "cnn_small.conv2", "lenet.conv3"],
)
def test_conv2d_layers_same_bits_for_any_thread_count(config, algo, dtype):
    config = dict(dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=True), **config)
    results = under_each_thread_count(conv_results(config, algo, dtype, seed=5))
    assert_bitwise_equal(results, ["output", "grad_input", "grad_weight", "grad_bias"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_max_pool2d_same_bits_for_any_thread_count(dtype, rng):
    """Overlapping windows (stride < kernel) whose gradients add up in the input, with ties (rounded inputs)."""
    for i in range(8):
        kernel = int(rng.integers(2, 5))
        stride, padding = int(rng.integers(1, kernel)), int(rng.integers(0, kernel // 2 + 1))
        shape = (int(rng.choice([1, 3, 9])), int(rng.choice([1, 5, 16])), int(rng.integers(kernel, 30)),
                 int(rng.integers(kernel, 30)))
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(shape, generator=gen).round(decimals=1).to(dtype)
        grad = torch.randn(F.max_pool2d(x.float(), kernel, stride, padding).shape, generator=gen).to(dtype)

        def compute() -> list[torch.Tensor]:
            leaf = x.clone().requires_grad_()
            out, indices = CF.max_pool2d(leaf, kernel, stride, padding, return_indices=True)
            return [out.detach(), indices, torch.autograd.grad(out, leaf, grad)[0]]

        assert_bitwise_equal(under_each_thread_count(compute), ["output", "indices", "grad_input"])
