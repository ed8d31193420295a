"""How the benchmarks set torch up, and what they ran on: CPU, cores, threads, torch, GPU, cnnext."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

import cnnext

THREADS_ENV = "CNNEXT_BENCH_THREADS"
DEFAULT_THREADS = 2
"""The development and CI machines' core count."""


def default_threads() -> int:
    """Benchmark thread count: ``$CNNEXT_BENCH_THREADS``, else DEFAULT_THREADS."""
    return int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))


def configure_torch(threads: int) -> None:
    """Fix the thread count, and keep torch on CUDA in float32 (no TF32), as cnnext computes."""
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average: above ~0 on an otherwise idle machine means competing work."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def describe() -> dict[str, Any]:
    """Machine facts recorded with every run (and shown in RESULTS.md)."""
    return {
        "load_average_end": load_average(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
        "cnnext": {key: str(value) for key, value in cnnext.build_info().items()},
    }
