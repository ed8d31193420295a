"""cnnext: hand-written conv2d and max_pool2d kernels (C++ for the CPU, CUDA for the GPU) as PyTorch layers.

    import cnnext
    model = cnnext.convert(model)        # every nn.Conv2d / nn.MaxPool2d now runs on cnnext
    model = cnnext.fuse(model)           # ReLU -> max-pool chains pool first (torch.fx)
    cnnext.functional.conv2d(x, w, b, stride=1, padding="same", algo="im2col")
    cnnext.onnx.export(model, (x,))      # ONNX Conv / MaxPool (torch.onnx.export, dynamo=True)
"""
__version__ = "0.1.0"

from . import functional, onnx
from ._ops import build_info, set_cpu_isa
from .convert import convert
from .fuse import fuse
from .modules import Conv2d, MaxPool2d, ReLUMaxPool2d

__all__ = [
    "Conv2d", "MaxPool2d", "ReLUMaxPool2d", "build_info", "convert", "functional", "fuse", "onnx", "set_cpu_isa",
    "__version__",
]
