"""How the benchmarks set torch up, and what they ran on: CPU, cores, threads, torch, GPU, cnnext."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import torch

import cnnext
from benchmarks.isa import ISA_ENV

THREADS_ENV = "CNNEXT_BENCH_THREADS"
DEFAULT_THREADS = 2
"""The development and CI machines' core count."""

MALLOC_ENV = "CNNEXT_BENCH_MALLOC"
MALLOC_MODES = ("steady", "system")
"""steady: glibc keeps freed memory for reuse; system: glibc's defaults (see configure_malloc)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30


def default_threads() -> int:
    """Benchmark thread count: ``$CNNEXT_BENCH_THREADS``, else DEFAULT_THREADS."""
    return int(os.environ.get(THREADS_ENV, DEFAULT_THREADS))


def default_malloc() -> str:
    """Allocator mode: ``$CNNEXT_BENCH_MALLOC``, else "steady"."""
    return os.environ.get(MALLOC_ENV, MALLOC_MODES[0])


def configure_malloc(mode: str) -> str:
    """Set glibc's allocator up for ``mode`` and return the mode in effect.

    By default glibc hands large freed blocks back to the kernel, so the next
    call of the same op page-faults its buffers in again; in a VM a fault costs
    microseconds, enough to dominate a millisecond kernel, and how often it
    happens depends on what ran before. "steady" keeps freed memory (no mmap
    per block, no trimming), as a warmed-up training loop would see it.
    """
    if mode not in MALLOC_MODES:
        raise ValueError(f"unknown malloc mode {mode!r}; expected one of {', '.join(MALLOC_MODES)}")
    if mode == "system":
        return mode
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or not all(mallopt(option, _KEEP_BYTES)
                                  for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD)):
        return "system (no glibc mallopt)"
    return mode


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


def page_faults() -> int:
    """Page faults of this process so far: each is a first touch of fresh memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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
        "bench_isa": os.environ.get(ISA_ENV) or "best",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
