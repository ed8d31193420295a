"""build_info() and the import-time check that the running torch is the one cnnext was built for."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("built", [[], ["_build_config.py"]], ids=["nothing-built", "no-extension"])
def test_import_of_the_unbuilt_source_tree_says_how_out(tmp_path, built):
    """Run from a source tree whose cnnext/ lacks the build outputs (e.g. after a non-editable install):
    one ImportError naming both ways out, not Python's "partially initialized module" message."""
    package = Path(cnnext.__file__).parent
    shutil.copytree(package, tmp_path / "cnnext", ignore=shutil.ignore_patterns("*.so", "__pycache__", "_build_config.py"))
    for name in built:
        shutil.copy2(package / name, tmp_path / "cnnext" / name)
    result = subprocess.run([sys.executable, "-c", "import cnnext"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: cnnext is not built in") and "partially initialized" not in result.stderr
    assert "run from another directory" in last and "pip install --no-build-isolation -e ." in last


def test_plain_pip_install_stops_at_once_saying_what_to_run(tmp_path):
    """`pip install .` in the user's own words (build isolation on): pip's throw-away build environment has no
    torch, so the build backend stops before anything is downloaded or compiled (--no-index: a download
    attempt would fail differently) and prints the command that builds against the installed torch."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(tmp_path / "site"), str(repo)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "cnnext must be compiled against the torch it will run with" in output
    assert "pip install --no-build-isolation ." in output
    assert not (tmp_path / "site").exists()
