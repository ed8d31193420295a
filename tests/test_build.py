"""build_info() and the import-time check that the running torch is the one cnnext was built for."""
from __future__ import annotations

import subprocess
import sys

import torch

import cnnext


def test_build_info_reports_the_build():
    info = cnnext.build_info()
    assert info["version"] == cnnext.__version__
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert "cuda_version" in info and "cuda_archs" in info
    assert info["cuda"] == torch.ops.cnnext.conv2d.default.has_kernel_for_dispatch_key("CUDA")


def test_import_against_another_torch_fails_clearly():
    code = (
        "import sys, types\n"
        "config = types.ModuleType('cnnext._build_config'); config.TORCH_VERSION = '1.0.0'\n"
        "sys.modules['cnnext._build_config'] = config\n"
        "try:\n    import cnnext\nexcept ImportError as e:\n    print(e)\nelse:\n    print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "1.0.0" in out and torch.__version__ in out and "pip install --no-build-isolation" in out
