"""Narrowing torch and cnnext to one CPU instruction set, for benchmarks as on a CPU without AVX-512.

``CNNEXT_BENCH_ISA=avx2`` (or ``baseline``) sets the variables that narrow ATen's kernels, oneDNN and MKL
and cnnext's kernels. They only take effect if set before torch (and MKL) load, so the benchmarks package
applies them when it is imported (before its conftest imports torch) and refuses to run narrowed if torch
was loaded first. Torch-free on purpose.
"""

from __future__ import annotations

import os
import sys

ISA_ENV = "CNNEXT_BENCH_ISA"
NARROWING: dict[str, dict[str, str]] = {
    "avx512": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "CNNEXT_CPU_ISA": "avx2"},
    "baseline": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "CNNEXT_CPU_ISA": "baseline"},
}
"""Per ISA, the environment that narrows torch and cnnext to it (avx512: the machine's best, unchanged)."""


def apply_from_env() -> str | None:
    """Narrow to ``$CNNEXT_BENCH_ISA`` (None when unset); raises if it is unknown or torch is already loaded."""
    isa = os.environ.get(ISA_ENV, "").strip()
    if not isa:
        return None
    if isa not in NARROWING:
        raise ValueError(f"{ISA_ENV} must be one of {', '.join(NARROWING)}, got {isa!r}")
    wanted = NARROWING[isa]
    if "torch" in sys.modules and any(os.environ.get(k) != v for k, v in wanted.items()):
        raise RuntimeError(f"{ISA_ENV}={isa}: torch was imported before the benchmarks package; set "
                           + " ".join(f"{k}={v}" for k, v in wanted.items()) + " in the environment instead")
    os.environ.update(wanted)
    return isa
