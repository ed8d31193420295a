"""pytest-benchmark suite comparing cnnext with PyTorch, its report and scaling plot.

Run ``pytest benchmarks/ --benchmark-only``; see benchmarks/README.md.
"""
