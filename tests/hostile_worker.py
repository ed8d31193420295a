"""The child process of tests/test_hostile.py: runs hostile-argument cases through cnnext and PyTorch.

A crash or a hang of a cnnext kernel must fail one case, not end the test run, so the cases run
here, in a process of their own that the parent restarts when it dies. Protocol: the parent
writes each case (a dict, see ``run_case``) pickled and preceded by its length (8 bytes, little
endian) to stdin; the worker answers on its original stdout the same way with a verdict,
``(status, detail)``: status "ok" (cnnext did what the oracle says), "skip" (the case would
allocate too much to be worth running) or "mismatch" (detail says how).

The oracle: where the exact geometry (Python's unbounded ints) has no valid, representable
result, cnnext must raise; where torch.nn.functional raises, cnnext must raise; where both
succeed, cnnext's values (and max-pool indices) must equal PyTorch's. "Raise" means a
ValueError, TypeError or RuntimeError (or a subclass) whose message names an argument.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys

import torch
import torch.nn.functional as F

import cnnext

ops = torch.ops.cnnext
INT64_MAX = 2**63 - 1
ERRORS = (ValueError, TypeError, RuntimeError)
# Words a useful message contains: the name of an argument, or of the tensor it shapes.
ARGUMENT_WORDS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups", "kernel", "output", "algo",
                  "indices", "size", "channels", "int", "dtype", "device", "tensor", "argument")
# Cases whose exact output would hold more elements than this are skipped: they can only test the allocator.
MAX_OUTPUT = 200_000


class Mismatch(Exception):
    """cnnext did not do what the oracle says."""


def _ints(value, n: int):
    """value as a list of n Python ints (int or sequence of 1 or n ints), or None if it is no such thing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value] * n
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) == n:
            return list(value)
        if len(value) == 1:
            return list(value) * n
    return None


def conv_output_shape(x, w, stride, padding, dilation, groups):
    """The exact (N, C_out, OH, OW) of a convolution with padding [top, left, bottom, right], or None when it
    has none, or when a quantity on the way does not fit in int64."""
    if len(x) != 4 or len(w) != 4 or groups is None or groups <= 0 or groups > INT64_MAX:
        return None
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or w[2] < 1 or w[3] < 1:
        return None
    if x[1] % groups or w[0] % groups or w[1] * groups != x[1]:
        return None
    out = []
    for size, k, s, d, before, after in zip(x[2:], w[2:], stride, dilation, padding[:2], padding[2:]):
        padded, span = size + before + after, d * (k - 1) + 1
        if max(s, d, before, after, padded, span) > INT64_MAX or padded < span:
            return None
        out.append((padded - span) // s + 1)
    shape = (x[0], w[0], *out)
    return shape if representable(shape) else None


def representable(shape) -> bool:
    """Whether a contiguous float64 tensor of `shape` has strides and bytes within int64 (as c10 computes them)."""
    strides = _numel(max(v, 1) for v in shape[1:])
    return strides * 8 <= INT64_MAX and _numel(shape) * 8 <= INT64_MAX


def too_large(shape) -> bool:
    """Whether a case with this exact output (or a batch of it) would take too long to check."""
    return _numel((1, *shape[1:])) > MAX_OUTPUT


def pool_output_shape(x, kernel, stride, padding, dilation, ceil_mode):
    """The exact output shape of max_pool2d under PyTorch's rules (arguments in C int range), or None."""
    if len(x) != 4 or min(x[1:]) < 1:
        return None
    if any(v > 2**31 - 1 for v in (*kernel, *stride, *padding, *dilation)):
        return None
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        return None
    out = []
    for size, k, s, p, d in zip(x[2:], kernel, stride, padding, dilation):
        if p > k // 2:
            return None
        o = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= size + p:
            o -= 1
        if o < 1:
            return None
        out.append(o)
    return (x[0], x[1], *out) if representable((x[0], x[1], *out)) else None


def _numel(shape) -> int:
    n = 1
    for v in shape:
        n *= v
    return n


def _call(fn):
    """(result, None) or (None, exception) for an allowed exception; other exceptions are mismatches."""
    try:
        return fn(), None
    except ERRORS as exc:
        return None, exc
    except Exception as exc:  # noqa: BLE001 - any other type is what the oracle rejects
        raise Mismatch(f"raised {type(exc).__name__} (not ValueError/TypeError/RuntimeError): {exc}") from exc


def _check_raised(exc, why: str):
    if exc is None:
        raise Mismatch(f"returned a result where {why}")
    message = str(exc).lower()
    if not any(word in message for word in ARGUMENT_WORDS):
        raise Mismatch(f"{type(exc).__name__} names no argument: {exc}")


def _same(actual, expected, what: str, exact: bool = False):
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        got = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
        raise Mismatch(f"{what}: shape {got}, expected {tuple(expected.shape)}")
    if exact or not expected.is_floating_point():
        ok = torch.equal(actual, expected)
    else:
        tol = 1e-10 if expected.dtype == torch.float64 else 1e-4
        ok = torch.allclose(actual, expected, rtol=tol, atol=tol, equal_nan=True)
    if not ok:
        raise Mismatch(f"{what}: values differ, max error {(actual - expected).abs().max().item()}")


def _compare(reference, got, exact_shape, what: str, exact_values: bool = False):
    """The oracle, given PyTorch's and cnnext's outcomes and the exact shape (None: no valid result)."""
    (expected, torch_exc), (actual, cnnext_exc) = reference, got
    if exact_shape is None:
        _check_raised(cnnext_exc, "the geometry has no representable result")
    elif torch_exc is not None:
        _check_raised(cnnext_exc, f"torch raised {type(torch_exc).__name__}: {torch_exc}")
    elif cnnext_exc is not None:
        raise Mismatch(f"raised {type(cnnext_exc).__name__} where torch succeeds: {cnnext_exc}")
    else:
        pairs = zip(actual, expected) if isinstance(expected, tuple) else [(actual, expected)]
        for i, (a, e) in enumerate(pairs):
            _same(a, e, f"{what} output {i}", exact=exact_values)


def _tensor(shape, dtype, seed: int):
    generator = torch.Generator().manual_seed(seed)
    if dtype in (torch.float32, torch.float64):
        return torch.randn(shape, dtype=dtype, generator=generator)
    return torch.randint(-3, 4, shape, generator=generator).to(dtype)


def _ref(fn):
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - PyTorch's failures are all "it raises"
        return None, exc


def conv_case(c: dict):
    """Functional conv2d or the Conv2d module with arbitrary geometry arguments."""
    x = _tensor(c["x"], c["dtype"], 1)
    w = _tensor(c["w"], c["dtype"], 2)
    b = _tensor((c["w"][0],), c["dtype"], 3) if c["bias"] else None
    stride, padding, dilation, groups = c["stride"], c["padding"], c["dilation"], c["groups"]
    s2, d2 = _ints(stride, 2), _ints(dilation, 2)
    pads = None
    if s2 and d2 and padding == "same":
        pads = _same_padding(c["w"], s2, d2)
    elif s2 and d2 and padding == "valid":
        pads = [0, 0, 0, 0]
    elif s2 and d2 and _ints(padding, 2):
        pads = _ints(padding, 2) * 2
    exact = None
    if pads and isinstance(groups, int) and not isinstance(groups, bool):
        exact = conv_output_shape(c["x"], c["w"], s2, pads, d2, groups)
    if exact is not None and too_large(exact):
        return "skip", "large output"
    if c["api"] == "module":
        def run():
            m = cnnext.Conv2d(c["x"][1], c["w"][0], tuple(c["w"][2:]), stride, padding, dilation, groups,
                              bias=c["bias"], dtype=c["dtype"], algo=c["algo"])
            with torch.no_grad():
                m.weight.copy_(w)
                if b is not None:
                    m.bias.copy_(b)
            return m(x)
    else:
        def run():
            return cnnext.functional.conv2d(x, w, b, stride, padding, dilation, groups, algo=c["algo"])
    reference = (exact_conv(x, w, b, s2, pads, d2, groups), None) if exact is not None else (None, None)
    _compare(reference, _call(run), exact, "conv2d")
    return "ok", ""


def pool_case(c: dict):
    """Functional max_pool2d or the MaxPool2d module, on one of the CPU instruction sets."""
    x = _tensor(c["x"], c["dtype"], 4)
    k, s, p, d = c["kernel_size"], c["stride"], c["padding"], c["dilation"]
    k2, p2, d2 = _ints(k, 2), _ints(p, 2), _ints(d, 2)
    s2 = k2 if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _ints(s, 2)
    exact = None
    if k2 and s2 and p2 and d2:
        exact = pool_output_shape(c["x"], k2, s2, p2, d2, c["ceil_mode"])
    if exact is not None and too_large(exact):
        return "skip", "large output"
    cnnext.set_cpu_isa(c["isa"])
    args = (k, s, p, d)
    if exact is None:  # PyTorch itself is not asked: out of range arguments can make it allocate without bound
        reference = (None, None)
    elif c["api"] == "module":
        reference = _ref(lambda: torch.nn.MaxPool2d(*args, return_indices=True, ceil_mode=c["ceil_mode"])(x))
    else:
        reference = _ref(lambda: F.max_pool2d(x, *args, ceil_mode=c["ceil_mode"], return_indices=True))
    if c["api"] == "module":
        got = _call(lambda: cnnext.MaxPool2d(*args, return_indices=True, ceil_mode=c["ceil_mode"])(x))
    else:
        got = _call(lambda: cnnext.functional.max_pool2d(x, *args, ceil_mode=c["ceil_mode"], return_indices=True))
    _compare(reference, got, exact, "max_pool2d", exact_values=True)
    return "ok", ""


def exact_conv(x, w, b, stride, padding, dilation, groups):
    """The convolution with padding [top, left, bottom, right], from its definition: for each kernel tap,
    the input pixels it reads (positions in Python's exact ints, so any stride, padding or dilation
    works), gathered and summed. Differentiable, so it also gives the gradients."""
    n, _, height, width = x.shape
    out_ch, per_group, kh_n, kw_n = w.shape
    oh_n = (height + padding[0] + padding[2] - dilation[0] * (kh_n - 1) - 1) // stride[0] + 1
    ow_n = (width + padding[1] + padding[3] - dilation[1] * (kw_n - 1) - 1) // stride[1] + 1
    xg = x.reshape(n, groups, per_group, height, width)
    wg = w.reshape(groups, out_ch // groups, per_group, kh_n, kw_n)
    out = x.new_zeros(n, groups, out_ch // groups, oh_n, ow_n)
    for kh in range(kh_n):
        rows = [o * stride[0] - padding[0] + kh * dilation[0] for o in range(oh_n)]
        row_ok = torch.tensor([0 <= r < height for r in rows])
        if not row_ok.any():
            continue
        row_index = torch.tensor([r if 0 <= r < height else 0 for r in rows])
        for kw in range(kw_n):
            cols = [o * stride[1] - padding[1] + kw * dilation[1] for o in range(ow_n)]
            col_ok = torch.tensor([0 <= c < width for c in cols])
            if not col_ok.any():
                continue
            col_index = torch.tensor([c if 0 <= c < width else 0 for c in cols])
            patch = xg[:, :, :, row_index][:, :, :, :, col_index] * (row_ok[:, None] & col_ok[None, :])
            out = out + torch.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, kh, kw])
    out = out.reshape(n, out_ch, oh_n, ow_n)
    return out if b is None else out + b.reshape(1, -1, 1, 1)


def _same_padding(w, stride, dilation):
    """padding="same" as [top, left, bottom, right], or None where PyTorch rejects it (strided)."""
    if stride != [1, 1]:
        return None
    totals = [d * (k - 1) for d, k in zip(dilation, w[2:])]
    return [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]


def _well_formed(lists, tensors, dtype) -> bool:
    """Whether the op arguments are lists of int64 ints of the schema's lengths and tensors of dtype ``dtype``."""
    for value, n in lists:
        if not isinstance(value, list) or len(value) != n or any(v < -2**63 or v > INT64_MAX for v in value):
            return False
    return all(t.dtype == dtype for t in tensors)


def _conv_dtype(op: str, case_dtype: torch.dtype, x: torch.Tensor, dilation) -> torch.dtype:
    """The one dtype the op's tensors must share: the case's float dtype, or for the conv2d forward op an
    integer input's (as in PyTorch: dilated convolutions of integers in int64 only)."""
    integer = not x.dtype.is_floating_point and x.dtype != torch.bool
    dilated = not isinstance(dilation, list) or any(d != 1 for d in dilation)
    if op == "conv2d" and integer and (x.dtype == torch.int64 or not dilated):
        return x.dtype
    return case_dtype


def conv_op_case(c: dict):
    """The raw ops: conv2d and its three gradients, with arbitrary lists, shapes, dtypes and sizes."""
    dtype = c["dtype"]
    x = _tensor(c["x"], c["x_dtype"], 1)
    w = _tensor(c["w"], c["w_dtype"], 2)
    b = _tensor(c["b"], c["w_dtype"], 3) if c["b"] is not None else None
    stride, padding, dilation, groups, algo = c["stride"], c["padding"], c["dilation"], c["groups"], c["algo"]
    geometry_ok = _well_formed([(stride, 2), (padding, 4), (dilation, 2)], [x, w] + ([b] if b is not None else []),
                               _conv_dtype(c["op"], dtype, x, dilation)) and -2**63 <= groups <= INT64_MAX and algo in ("auto", "direct", "im2col")
    exact = conv_output_shape(tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups) if geometry_ok \
        else None
    if b is not None and exact is not None and tuple(b.shape) != (w.shape[0],):
        exact = None
    if exact is not None and too_large(exact):
        return "skip", "large output"
    op = c["op"]
    if op == "conv2d":
        reference = (exact_conv(x, w, b, stride, padding, dilation, groups), None) if exact is not None else (None, None)
        got = _call(lambda: ops.conv2d(x, w, b, stride, padding, dilation, groups, algo))
        _compare(reference, got, exact, op)
        return "ok", ""
    # Gradients: grad_output shaped as the exact output (or as the case says), sizes as lists.
    gy_shape = c["gy"] if c["gy"] is not None else (exact if exact is not None else (1, 1, 1, 1))
    gy = _tensor(gy_shape, dtype, 5)
    if exact is not None and tuple(gy.shape) != exact:
        exact = None
    sizes = c["sizes"]
    if op == "conv2d_grad_input":
        size_ok = sizes is None or sizes == list(x.shape)
        sizes = list(x.shape) if sizes is None else sizes
        run = lambda: ops.conv2d_grad_input(gy, w, sizes, stride, padding, dilation, groups, algo)  # noqa: E731
        wanted = 0
    elif op == "conv2d_grad_bias":
        size_ok = True
        run = lambda: ops.conv2d_grad_bias(gy)  # noqa: E731
        wanted = 2
    else:
        size_ok = sizes is None or sizes == list(w.shape)
        sizes = list(w.shape) if sizes is None else sizes
        fn = ops.conv2d_grad_weight if op == "conv2d_grad_weight" else ops.conv2d_grad_weight_bias
        run = lambda: fn(gy, x, sizes, stride, padding, dilation, groups, algo)  # noqa: E731
        wanted = 1
    if op == "conv2d_grad_bias":
        exact = (gy.shape[1],) if gy.dim() == 4 and gy.is_floating_point() else None
        reference = (gy.sum((0, 2, 3)), None) if exact is not None else (None, None)
    elif exact is None or not size_ok:
        exact, reference = None, (None, None)
    else:
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        br = torch.zeros(w.shape[0], dtype=dtype, requires_grad=True)
        exact_conv(xr, wr, br, stride, padding, dilation, groups).backward(gy)
        # A tensor no tap reads gets no gradient at all: zeros.
        grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in (xr, wr, br))
        reference = ((grads[1], grads[2]) if op == "conv2d_grad_weight_bias" else grads[wanted], None)
    _compare(reference, _call(run), exact, op)
    return "ok", ""


def pool_backward_case(c: dict):
    """max_pool2d_backward with indices from a real forward, or hostile ones, and arbitrary input sizes."""
    x = _tensor(c["x"], torch.float64, 4)
    _, indices = F.max_pool2d(x, c["kernel"], return_indices=True)
    if c["indices"] is not None:  # as many as there are outputs
        indices = torch.tensor(c["indices"], dtype=torch.int64).reshape(indices.shape)
    gy = _tensor(indices.shape, torch.float64, 6)
    sizes = c["sizes"] if c["sizes"] is not None else list(x.shape)
    plane = sizes[2] * sizes[3] if len(sizes) == 4 else 0
    valid = (len(sizes) == 4 and sizes[:2] == list(gy.shape[:2]) and min(sizes) >= 0 and sizes[2] > 0 and sizes[3] > 0
             and representable(sizes) and bool(((indices >= 0) & (indices < plane)).all()))
    if valid and too_large(sizes):
        return "skip", "large input"

    def reference():
        n, ch = sizes[0], sizes[1]
        flat = torch.zeros(n * ch, plane, dtype=gy.dtype)
        flat.scatter_add_(1, indices.reshape(n * ch, -1), gy.reshape(n * ch, -1))
        return flat.reshape(sizes)

    expected = _ref(reference) if valid else (None, None)
    _compare(expected, _call(lambda: ops.max_pool2d_backward(gy, indices, sizes)), tuple(sizes) if valid else None,
             "max_pool2d_backward", exact_values=True)
    return "ok", ""


CASES = {"conv": conv_case, "pool": pool_case, "conv_op": conv_op_case, "pool_backward": pool_backward_case}


def run_case(case: dict):
    """The verdict on one case (see the module docstring)."""
    try:
        return CASES[case["kind"]](case)
    except Mismatch as exc:
        return "mismatch", str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug of the oracle, reported as such, not as a crash
        return "oracle error", f"{type(exc).__name__}: {exc}"


def _read(stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def main() -> None:
    # The protocol owns the original stdout; anything the code under test prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    torch.set_num_threads(1)
    while True:
        try:
            (length,) = struct.unpack("<Q", _read(stdin, 8))
        except EOFError:
            return
        verdict = run_case(pickle.loads(_read(stdin, length)))
        data = pickle.dumps(verdict)
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    main()
