"""Suite-wide setup: fixed thread count and allocator, devices, machine info, the timing fixture.

Threads default to 2 (the development machines' core count); override with
``--bench-threads N`` or ``CNNEXT_BENCH_THREADS``. The allocator keeps freed
memory unless ``--bench-malloc system`` (or ``CNNEXT_BENCH_MALLOC``) says
otherwise (see ``machine.configure_malloc``). TF32 is switched off so that
torch on CUDA computes in float32, as cnnext does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from benchmarks import machine
from benchmarks.ops import Call, synchronized

WARMUP_CALLS = 2
DEVICES = (
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
)

CLOCK_AT_START = pytest.StashKey["machine.CpuClock | None"]()
MALLOC = pytest.StashKey[str]()

Measure = Callable[..., None]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-threads", type=int, default=None,
        help=f"torch.set_num_threads for the benchmarks (default ${machine.THREADS_ENV}"
             f" or {machine.DEFAULT_THREADS})",
    )
    parser.addoption(
        "--bench-malloc", choices=machine.MALLOC_MODES, default=None,
        help=f"glibc allocator mode (default ${machine.MALLOC_ENV} or {machine.MALLOC_MODES[0]});"
             " see benchmarks/README.md",
    )


def pytest_configure(config: pytest.Config) -> None:
    machine.configure_torch(config.getoption("--bench-threads") or machine.default_threads())
    malloc = config.getoption("--bench-malloc") or machine.default_malloc()
    config.stash[MALLOC] = machine.configure_malloc(malloc)
    config.stash[CLOCK_AT_START] = machine.CpuClock.now()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info.update(machine.describe(), malloc=config.stash[MALLOC])
    start, end = config.stash[CLOCK_AT_START], machine.CpuClock.now()
    if start is not None and end is not None:
        machine_info["other_load_cores"] = end.others_since(start)


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any],
) -> None:
    """Keep the statistics but not every round's raw time: the JSON stays small enough to commit."""
    for bench in output_json["benchmarks"]:
        bench["stats"].pop("data", None)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def smoke(benchmark: Any) -> bool:
    """True in the smoke run (``--benchmark-disable``: every case once, untimed), where the
    big cases (``smoke_batch``) run at a smaller batch."""
    return not benchmark.enabled


@pytest.fixture
def measure(benchmark: Any, device: torch.device) -> Measure:
    """``measure(call, group=..., **info)``: warm up, then time ``call`` with pytest-benchmark.

    ``group`` puts torch and cnnext of one shape side by side (prefixed by the
    device); ``info`` (kind, phase, case, impl, flops or bytes) goes to
    ``extra_info`` for the report, together with the device, the thread count
    and the page faults per warm-up call (fresh memory the call touched).
    """

    def run(call: Call, *, group: str, **info: Any) -> None:
        timed = synchronized(call, device)
        benchmark.group = f"{device.type} {group}"
        benchmark.extra_info.update(info, device=device.type, threads=torch.get_num_threads())
        if benchmark.enabled:
            faults = machine.page_faults()
            for _ in range(WARMUP_CALLS):
                timed()
            benchmark.extra_info["page_faults"] = (machine.page_faults() - faults) // WARMUP_CALLS
        benchmark(timed)

    return run
