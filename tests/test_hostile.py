"""Hostile arguments: no argument can crash the process, hang it, or return garbage.

Property-based (hypothesis, derandomized so every run draws the same cases) over the public
functions, the modules and the raw torch.ops.cnnext ops, with extreme integers (0, negatives,
2^31 +- 1, 2^62, 2^63 - 1, beyond int64), wrong list lengths, wrong dtypes and shapes, and bad
max-pool indices. Every case runs in a long-lived worker process (tests/hostile_worker.py, which
also holds the oracle): a crash or a hang fails that case, names it, and a fresh worker takes the
next one. Plain regression tests pin the examples of issue 18.
"""
from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnext

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "hostile_worker.py"
# A case that runs longer than this hangs (the slowest legitimate case takes well under a second).
CASE_TIMEOUT_S = 60.0


class Worker:
    """One worker process, fed cases over a pipe, restarted after it dies or hangs."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        return subprocess.Popen([sys.executable, str(WORKER)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def _read(self, n: int, deadline_s: float) -> bytes:
        data = b""
        fd = self.process.stdout.fileno()
        while len(data) < n:
            ready, _, _ = select.select([fd], [], [], deadline_s)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def run(self, case: dict) -> tuple[str, str]:
        """The worker's verdict on `case`, or ("crash"/"hang", detail) when the worker died or timed out on it."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        data = pickle.dumps(case)
        try:
            self.process.stdin.write(struct.pack("<Q", len(data)) + data)
            self.process.stdin.flush()
            (length,) = struct.unpack("<Q", self._read(8, CASE_TIMEOUT_S))
            return pickle.loads(self._read(length, CASE_TIMEOUT_S))
        except TimeoutError:
            self.stop()
            return "hang", f"no answer within {CASE_TIMEOUT_S} s"
        except (EOFError, BrokenPipeError):
            code = self.process.wait()
            self.process = None
            return "crash", f"worker exited with {code}"


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.stop()


def check(worker: Worker, case: dict) -> None:
    status, detail = worker.run(case)
    assert status in ("ok", "skip"), f"{status}: {detail}\ncase: {case}"


HOSTILE = settings(derandomize=True, database=None, deadline=None, max_examples=120,
                   suppress_health_check=list(HealthCheck))

EXTREME = [0, -1, -2, 2**31 - 1, 2**31, 2**31 + 1, -2**31, 2**32 + 3, 2**61 + 1, 2**62, 2**62 + 2, 2**63 - 1,
           -2**63, 10**6]
ints = st.one_of(st.integers(0, 4), st.sampled_from(EXTREME))
small_ints = st.integers(1, 3)


def pairs(elements=ints):
    """An int, or a tuple/list of 1 - 3 ints (2 is the legal length), as a user might pass."""
    return st.one_of(elements, st.tuples(elements, elements), st.lists(elements, min_size=1, max_size=3),
                     st.sampled_from([2**64, -2**64 - 1, None, 1.5, "2"]))


def legal_pairs(elements):
    """An int or a tuple of 2 ints drawn from `elements`."""
    return st.one_of(elements, st.tuples(elements, elements))


def lists(n: int):
    """A list of ints for an op argument of length n: mostly that length, sometimes not, extreme values."""
    return st.one_of(st.lists(ints, min_size=n, max_size=n), st.lists(ints, min_size=0, max_size=5))


def isas() -> list[str]:
    supported = cnnext._ops.CPU_ISAS
    return list(supported[supported.index(cnnext.build_info()["cpu_isa_detected"]):])


shapes4 = st.tuples(st.integers(0, 2), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))
float_dtypes = st.sampled_from([torch.float64, torch.float32])
ALGOS = ["auto", "direct", "im2col"]


def one_hostile(draw, fields: dict, hostile: dict) -> dict:
    """`fields` (a legal call) with none, one or two of them replaced by a hostile value: a legal call with
    one extreme argument reaches the kernels, where a call with many bad ones stops at the first check."""
    names = draw(st.lists(st.sampled_from(sorted(hostile)), max_size=2, unique=True))
    return {**fields, **{name: draw(hostile[name]) for name in names}}


@st.composite
def conv_cases(draw, api: str):
    g = draw(st.integers(1, 2))
    x = (draw(st.integers(0, 2)), g * draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    # The module's weight always matches its in_channels; the function's may not.
    per_group = x[1] // g if api == "module" else draw(st.sampled_from([x[1] // g] * 3 + [x[1] // g + 1]))
    w = (g * draw(st.integers(1, 2)), per_group, draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    legal = dict(stride=draw(legal_pairs(small_ints)), padding=draw(legal_pairs(st.integers(0, 2))),
                 dilation=draw(legal_pairs(small_ints)), groups=g)
    hostile = dict(stride=pairs(), padding=st.one_of(pairs(), st.sampled_from(["same", "valid", "full"])),
                   dilation=pairs(), groups=st.sampled_from([0, -1, 2**63 - 1, 3, 2**31]))
    return dict(kind="conv", api=api, x=x, w=w, bias=draw(st.booleans()), **one_hostile(draw, legal, hostile),
                algo=draw(st.sampled_from(["auto", "direct", "im2col"])), dtype=draw(float_dtypes))


@st.composite
def pool_cases(draw, api: str):
    kernel = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    legal = dict(kernel_size=kernel, stride=draw(st.one_of(st.none(), legal_pairs(small_ints))),
                 padding=(draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2))),
                 dilation=draw(legal_pairs(small_ints)))
    huge_kernel = st.sampled_from([2**31 - 1, 2**31 + 1, 2**62 + 2, 2**63 - 1])
    hostile = dict(kernel_size=pairs(), stride=pairs(), padding=pairs(), dilation=pairs())
    case = one_hostile(draw, legal, hostile)
    if draw(st.integers(0, 9)) == 0:  # a huge kernel with the most padding it allows
        k = draw(huge_kernel)
        case.update(kernel_size=k, padding=k // 2)
    return dict(kind="pool", api=api, x=draw(shapes4.filter(lambda s: min(s[1:]) > 0)), **case,
                ceil_mode=draw(st.booleans()), dtype=draw(float_dtypes), isa=draw(st.sampled_from(isas())))


@st.composite
def conv_op_cases(draw, op: str):
    dtype = draw(float_dtypes)
    x = draw(st.tuples(st.integers(0, 2), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9)))
    w = (draw(st.integers(1, 3)), x[1], draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    legal = dict(x=x, x_dtype=dtype, w=w, w_dtype=dtype, b=None, stride=[draw(small_ints), draw(small_ints)],
                 padding=draw(st.lists(st.integers(0, 2), min_size=4, max_size=4)),
                 dilation=[draw(small_ints), draw(small_ints)], groups=1, algo=draw(st.sampled_from(ALGOS)),
                 gy=None, sizes=None)
    other_dtype = st.sampled_from([torch.float16, torch.int64, torch.float32 if dtype == torch.float64 else torch.float64])
    hostile = dict(x=st.lists(st.integers(0, 4), min_size=2, max_size=5).map(tuple), x_dtype=other_dtype,
                   w=st.lists(st.integers(0, 3), min_size=2, max_size=5).map(tuple), w_dtype=other_dtype,
                   b=st.sampled_from([(w[0],), (7,), (1, 1)]), stride=lists(2), padding=lists(4), dilation=lists(2),
                   groups=st.sampled_from(EXTREME), algo=st.just("fast"), gy=shapes4, sizes=lists(4))
    return dict(kind="conv_op", op=op, dtype=dtype, **one_hostile(draw, legal, hostile))


@st.composite
def pool_backward_cases(draw):
    x = draw(st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(2, 8), st.integers(2, 8)))
    kernel = draw(st.integers(1, 2))
    outputs = x[0] * x[1] * (x[2] // kernel) * (x[3] // kernel)
    plane = x[2] * x[3]
    index = st.one_of(st.integers(0, plane - 1), st.sampled_from([-1, plane, plane + 1, -2**63, 2**63 - 1, 2**31]))
    indices = draw(st.one_of(st.none(), st.lists(index, min_size=outputs, max_size=outputs)))
    sizes = draw(st.one_of(st.none(), st.none(), lists(4), st.just([x[0], x[1], 2**62, 2**62]),
                           st.just([x[0], x[1], x[2] + 1, x[3]])))
    return dict(kind="pool_backward", x=x, kernel=kernel, indices=indices, sizes=sizes)


@HOSTILE
@given(case=conv_cases("functional"))
def test_functional_conv2d(worker, case):
    check(worker, case)


@HOSTILE
@given(case=conv_cases("module"))
def test_conv2d_module(worker, case):
    check(worker, case)


@HOSTILE
@given(case=pool_cases("functional"))
def test_functional_max_pool2d(worker, case):
    check(worker, case)


@HOSTILE
@given(case=pool_cases("module"))
def test_max_pool2d_module(worker, case):
    check(worker, case)


@pytest.mark.parametrize("op", ["conv2d", "conv2d_grad_input", "conv2d_grad_weight", "conv2d_grad_weight_bias",
                                "conv2d_grad_bias"])
@HOSTILE
@given(data=st.data())
def test_conv_ops(worker, op, data):
    check(worker, data.draw(conv_op_cases(op)))


@HOSTILE
@given(case=pool_backward_cases())
def test_max_pool2d_backward_op(worker, case):
    check(worker, case)


# The examples of issue 18, each once through the worker: they crashed, hung or returned zeros.
ISSUE_CASES = [
    pytest.param(dict(kind="conv", api="functional", x=(1, 1, 5, 5), w=(1, 1, 3, 3), bias=False, stride=2**60,
                      padding=0, dilation=1, groups=1, algo=algo, dtype=torch.float32), id=f"stride-2^60-{algo}")
    for algo in ("direct", "im2col")
] + [
    pytest.param(dict(kind="conv", api="functional", x=(1, 1, 5, 5), w=(1, 1, 9, 9), bias=False, stride=1,
                      padding=0, dilation=2**61, groups=1, algo=algo, dtype=torch.float32), id=f"dilation-2^61-{algo}")
    for algo in ("direct", "im2col")
] + [
    pytest.param(dict(kind="pool", api="functional", x=(1, 1, 1, 8), kernel_size=(1, 5), stride=1, padding=0,
                      dilation=(1, 2**62), ceil_mode=False, dtype=torch.float32, isa=isa), id=f"pool-dilation-{isa}")
    for isa in cnnext._ops.CPU_ISAS
] + [
    pytest.param(dict(kind="pool", api="functional", x=(1, 1, 9, 9), kernel_size=2**62 + 2, stride=1,
                      padding=2**61 + 1, dilation=1, ceil_mode=False, dtype=torch.float32, isa="baseline"),
                 id="pool-huge-kernel"),
    pytest.param(dict(kind="conv", api="functional", x=(1, 1, 5, 5), w=(1, 1, 3, 3), bias=False, stride=1,
                      padding=2**63 - 1, dilation=1, groups=1, algo="auto", dtype=torch.float32), id="padding-2^63-1"),
    pytest.param(dict(kind="pool_backward", x=(1, 2, 4, 4), kernel=2, indices=[0, 1, 16, 3, 4, -1, 6, 7],
                      sizes=None), id="pool-backward-bad-indices"),
]


@pytest.mark.parametrize("case", ISSUE_CASES)
def test_issue_examples(worker, case):
    if case.get("isa", "baseline") not in isas():
        pytest.skip(f"this CPU has no {case['isa']}")
    check(worker, case)


def test_issue_examples_directly():
    """The same examples in this process: the legal ones give PyTorch's result, the others a ValueError."""
    x, w = torch.randn(1, 1, 5, 5), torch.randn(1, 1, 3, 3)
    for algo in ("direct", "im2col"):
        got = cnnext.functional.conv2d(x, w, stride=2**60, algo=algo)
        torch.testing.assert_close(got, torch.nn.functional.conv2d(x, w, stride=2**60))
        with pytest.raises(ValueError, match="dilat"):
            cnnext.functional.conv2d(x, torch.randn(1, 1, 9, 9), dilation=2**61, algo=algo)
    with pytest.raises(ValueError, match="padding"):
        cnnext.functional.conv2d(x, w, padding=2**63 - 1)
    with pytest.raises(ValueError, match="dilation"):
        cnnext.functional.max_pool2d(torch.randn(1, 1, 1, 8), (1, 5), stride=1, dilation=(1, 2**62))
    with pytest.raises(ValueError, match="kernel_size"):
        cnnext.functional.max_pool2d(torch.randn(1, 1, 9, 9), 2**62 + 2, stride=1, padding=2**61 + 1)
    with pytest.raises(ValueError, match="indices"):
        torch.ops.cnnext.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.tensor([[[[0, 1, 2, 16]]]]).view(1, 1, 2, 2),
                                             [1, 1, 4, 4])
