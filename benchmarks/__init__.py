"""pytest-benchmark suite comparing cnnext with PyTorch, its report and scaling plot.

Run ``pytest benchmarks/ --benchmark-only``; see benchmarks/README.md. ``CNNEXT_BENCH_ISA=avx2`` (or
``baseline``) narrows torch and cnnext to that instruction set (benchmarks/isa.py).
"""

from benchmarks import isa as _isa

_isa.apply_from_env()
