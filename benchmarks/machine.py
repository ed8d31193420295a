"""How the benchmarks set torch up, and what they ran on: CPU, cores, threads, torch, GPU, cnnext."""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import time
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


@dataclasses.dataclass(frozen=True)
class CpuClock:
    """Wall time, CPU time all processes spent busy, and CPU time of this process (seconds)."""

    wall: float
    busy: float
    own: float

    @classmethod
    def now(cls) -> CpuClock | None:
        """A reading, or None where /proc/stat is missing (not Linux)."""
        stat = Path("/proc/stat")
        if not stat.exists():
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.read_text().split()[1:9])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.monotonic(), busy, usage.ru_utime + usage.ru_stime)

    def others_since(self, start: CpuClock) -> float:
        """Cores kept busy on average by other processes (or the hypervisor) since ``start``."""
        other = (self.busy - start.busy) - (self.own - start.own)
        return round(max(other, 0.0) / (self.wall - start.wall), 2)


def describe() -> dict[str, Any]:
    """Machine facts recorded with every run (and shown in RESULTS.md)."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
        "cnnext": {key: str(value) for key, value in cnnext.build_info().items()},
    }
