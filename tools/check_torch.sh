#!/usr/bin/env bash
# Builds cnnext against another torch release and runs the kernel tests with it:
# how CI proves both ends of the torch range README.md states.
#
#   tools/check_torch.sh VERSION [PYTEST ARGS...]
#
# The release is installed into a virtual environment kept outside the clone,
# $CNNEXT_CI_CACHE/venv-torch-VERSION (default ~/.cache/cnnext-ci): PyPI's torch
# wheels are CUDA builds of several GB with their libraries, so a machine installs
# each release once. cnnext is built in build/torch-VERSION/, a copy of the
# working tree's sources, so the tree's own build is left alone.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 VERSION [PYTEST ARGS...]" >&2; exit 2; }
version=$1
shift
cd "$(dirname "$0")/.."
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/test_conv2d.py tests/test_pool.py tests/test_errors.py tests/test_build.py)

venv=${CNNEXT_CI_CACHE:-$HOME/.cache/cnnext-ci}/venv-torch-$version
py=$venv/bin/python
has_release() { "$py" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; }
if ! has_release; then
  echo "installing torch $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Without pip's configuration files: this machine's configuration caps torch at the release on its
  # disk, and this check is about the other releases.
  PIP_CONFIG_FILE=/dev/null "$py" -m pip install -q "torch==$version" numpy pytest hypothesis ninja "setuptools>=64" wheel
  has_release
fi

dest=build/torch-$version
rm -rf "$dest"
mkdir -p "$dest"
git ls-files -z --cached --others --exclude-standard -- setup.py pyproject.toml README.md csrc cnnext tests tools |
  xargs -0 tar cf - --ignore-failed-read 2>/dev/null | tar xf - -C "$dest"
cd "$dest"
echo "building cnnext against $("$py" -c 'import torch; print("torch", torch.__version__)')"
CNNEXT_CUDA=0 "$py" setup.py -q build_ext --inplace > build.log 2>&1 || { tail -40 build.log; exit 1; }
"$py" -m pytest -q -p no:cacheprovider "${tests[@]}"
