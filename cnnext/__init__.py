"""cnnext: hand-written convolution and pooling kernels (C++ for the CPU, CUDA for the GPU) as PyTorch layers.

    import cnnext
    model = cnnext.convert(model)        # every nn.Conv1d/2d, Max/AvgPool2d, AdaptiveAvgPool2d: cnnext
    model = cnnext.fuse(model)           # ReLU -> max-pool chains pool first (torch.fx)
    cnnext.functional.conv2d(x, w, b, stride=1, padding="same", algo="im2col")
    cnnext.onnx.export(model, (x,))      # ONNX Conv / MaxPool (torch.onnx.export, dynamo=True)
"""
__version__ = "0.1.0"

from . import functional, onnx
from ._ops import build_info, set_cpu_isa
from .convert import convert
from .fuse import fuse
from .modules import AdaptiveAvgPool2d, AvgPool2d, Conv1d, Conv2d, MaxPool2d, ReLUMaxPool2d

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv1d", "Conv2d", "MaxPool2d", "ReLUMaxPool2d", "build_info", "convert",
    "functional", "fuse", "onnx", "set_cpu_isa", "__version__",
]
