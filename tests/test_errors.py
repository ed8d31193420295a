"""Bad input raises a Python exception naming the argument, through the Python API and through
torch.ops.cnnext directly (the compiled op checks its own arguments)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnext
from cnnext import functional as CF

ops = torch.ops.cnnext
ERRORS = (ValueError, TypeError, RuntimeError)


def conv_op(x, w, b=None, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1, algo="auto"):
    return ops.conv2d(x, w, b, list(stride), list(padding), list(dilation), groups, algo)


x4, w4 = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)

# (description, python call, direct op call, word the message must contain)
CONV_CASES = [
    ("input rank", lambda: CF.conv2d(torch.randn(8, 8), w4), lambda: conv_op(torch.randn(4, 8, 8), w4), "input"),
    ("weight rank", lambda: CF.conv2d(x4, torch.randn(6, 4, 3)), lambda: conv_op(x4, torch.randn(6, 4, 3)), "weight"),
    ("channel mismatch", lambda: CF.conv2d(x4, torch.randn(6, 3, 3, 3)),
     lambda: conv_op(x4, torch.randn(6, 3, 3, 3)), "channels"),
    ("groups zero", lambda: CF.conv2d(x4, w4, groups=0), lambda: conv_op(x4, w4, groups=0), "groups"),
    ("groups negative", lambda: CF.conv2d(x4, w4, groups=-2), lambda: conv_op(x4, w4, groups=-2), "groups"),
    ("groups not dividing", lambda: CF.conv2d(x4, torch.randn(6, 1, 3, 3), groups=3),
     lambda: conv_op(x4, torch.randn(6, 1, 3, 3), groups=3), "groups"),
    ("stride zero", lambda: CF.conv2d(x4, w4, stride=0), lambda: conv_op(x4, w4, stride=(0, 1)), "stride"),
    ("stride negative", lambda: CF.conv2d(x4, w4, stride=(1, -1)), lambda: conv_op(x4, w4, stride=(1, -1)), "stride"),
    ("padding negative", lambda: CF.conv2d(x4, w4, padding=-1), lambda: conv_op(x4, w4, padding=(0, -1, 0, 0)),
     "padding"),
    ("dilation zero", lambda: CF.conv2d(x4, w4, dilation=0), lambda: conv_op(x4, w4, dilation=(0, 1)), "dilation"),
    ("kernel larger than padded input", lambda: CF.conv2d(torch.randn(1, 4, 2, 2), w4),
     lambda: conv_op(torch.randn(1, 4, 2, 2), w4), "kernel size"),
    ("dilated kernel larger than input", lambda: CF.conv2d(x4, w4, dilation=4),
     lambda: conv_op(x4, w4, dilation=(4, 4)), "kernel size"),
    ("bool input", lambda: CF.conv2d(x4.bool(), w4.bool()), lambda: conv_op(x4.bool(), w4.bool()), "floating"),
    ("integer input, float weight", lambda: CF.conv2d(x4.long(), w4), lambda: conv_op(x4.long(), w4), "dtype"),
    ("dtype mismatch", lambda: CF.conv2d(x4, w4.double()), lambda: conv_op(x4, w4.double()), "dtype"),
    ("bias size", lambda: CF.conv2d(x4, w4, torch.randn(5)), lambda: conv_op(x4, w4, torch.randn(5)), "bias"),
    ("bias rank", lambda: CF.conv2d(x4, w4, torch.randn(6, 1)), lambda: conv_op(x4, w4, torch.randn(6, 1)), "bias"),
    ("bias dtype", lambda: CF.conv2d(x4, w4, torch.randn(6).double()),
     lambda: conv_op(x4, w4, torch.randn(6).double()), "bias"),
    ("unknown algo", lambda: CF.conv2d(x4, w4, algo="winograd"), lambda: conv_op(x4, w4, algo="winograd"), "algo"),
    ("padding list length", lambda: CF.conv2d(x4, w4, padding=(1, 1, 1)),
     lambda: ops.conv2d(x4, w4, None, [1, 1], [1, 1], [1, 1], 1, "auto"), "padding"),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv2d_rejects(case):
    _, python_call, op_call, word = case
    for call in (python_call, op_call):
        with pytest.raises(ERRORS, match=f"(?i){word}"):
            call()


def test_conv2d_rejects_what_torch_rejects_for_same_padding():
    with pytest.raises(ValueError, match="padding='same'"):
        CF.conv2d(x4, w4, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding"):
        CF.conv2d(x4, w4, padding="full")
    with pytest.raises(RuntimeError):
        F.conv2d(x4, w4, stride=2, padding="same")


def test_conv2d_backward_ops_check_their_arguments():
    gy = torch.randn(2, 6, 6, 6)
    with pytest.raises(ValueError, match="grad_output"):
        ops.conv2d_grad_input(gy[:, :, :5], w4, [2, 4, 8, 8], [1, 1], [0, 0, 0, 0], [1, 1], 1, "direct")
    with pytest.raises(ValueError, match="grad_output"):
        ops.conv2d_grad_weight(gy[:1], x4, [6, 4, 3, 3], [1, 1], [0, 0, 0, 0], [1, 1], 1, "im2col")
    with pytest.raises(ValueError, match="input"):
        ops.conv2d_grad_input(gy, w4, [2, 4, 8], [1, 1], [0, 0, 0, 0], [1, 1], 1, "direct")
    with pytest.raises(ValueError, match="grad_output"):
        ops.conv2d_grad_bias(torch.randn(6, 6))


POOL_CASES = [
    ("input rank", dict(input=torch.randn(8, 8), kernel_size=2), "input"),
    ("empty channels", dict(input=torch.randn(1, 0, 8, 8), kernel_size=2), "input"),
    ("kernel zero", dict(kernel_size=0), "kernel_size"),
    ("stride zero", dict(kernel_size=2, stride=0), "stride"),
    ("padding negative", dict(kernel_size=2, padding=-1), "padding"),
    ("padding over half kernel", dict(kernel_size=2, padding=2), "padding"),
    ("dilation zero", dict(kernel_size=2, dilation=0), "dilation"),
    ("output too small", dict(input=torch.randn(1, 1, 2, 2), kernel_size=3), "too small"),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_max_pool2d_rejects(case):
    _, kwargs, word = case
    kwargs = dict(kwargs)
    x = kwargs.pop("input", torch.randn(2, 3, 8, 8))
    with pytest.raises(ERRORS):
        F.max_pool2d(x, **kwargs)  # PyTorch rejects it too
    with pytest.raises(ERRORS, match=f"(?i){word}"):
        CF.max_pool2d(x, **kwargs)
    if x.dim() == 4:
        k = kwargs["kernel_size"]
        pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
        args = (x, pair(k), pair(kwargs.get("stride", k)), pair(kwargs.get("padding", 0)),
                pair(kwargs.get("dilation", 1)), False)
        with pytest.raises(ERRORS, match=f"(?i){word}"):
            ops.max_pool2d(*args)


def test_max_pool2d_rejects_bool_input():
    """PyTorch's CPU max_pool2d takes floating and integer tensors (tests/test_integer.py), not bool."""
    x = torch.randint(0, 2, (1, 1, 4, 4)).bool()
    with pytest.raises(TypeError, match="Bool"):
        CF.max_pool2d(x, 2)
    with pytest.raises(TypeError, match="Bool"):
        ops.max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], False)


def test_max_pool2d_backward_op_checks_indices():
    gy = torch.randn(1, 2, 3, 3)
    with pytest.raises(TypeError, match="indices"):
        ops.max_pool2d_backward(gy, torch.zeros(1, 2, 3, 3, dtype=torch.int32), [1, 2, 6, 6])
    with pytest.raises(ValueError, match="indices"):
        ops.max_pool2d_backward(gy, torch.zeros(1, 2, 3, 2, dtype=torch.int64), [1, 2, 6, 6])
    with pytest.raises(ValueError, match="input_size"):
        ops.max_pool2d_backward(gy, torch.zeros(1, 2, 3, 3, dtype=torch.int64), [2, 2, 6, 6])


def test_modules_reject_unknown_algo():
    with pytest.raises(ValueError, match="algo"):
        cnnext.Conv2d(1, 2, 3, algo="fft")
    with pytest.raises(ValueError, match="algo"):
        cnnext.convert(torch.nn.Conv2d(1, 2, 3), algo="fft")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_device_mismatch_is_rejected():
    w = torch.randn(6, 4, 3, 3, device="cuda")
    with pytest.raises(ERRORS, match="device"):
        CF.conv2d(x4, w)
    with pytest.raises(ERRORS, match="device"):
        conv_op(x4.cuda(), w, torch.randn(6))
