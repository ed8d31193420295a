#!/usr/bin/env bash
# Compile-checks the CPU extension for 64-bit ARM Linux (aarch64) on an x86
# machine: every C++ source of the CPU extension with the cross compiler,
# against the installed torch's headers (they are the same on every
# architecture), into objects; then that every cnnext function one object
# calls is defined by some object, so that an ISA-specific file compiled to
# nothing on ARM cannot leave the dispatch table pointing at a missing kernel
# (that would otherwise only show as an "undefined symbol" at import on ARM).
#
# Linking is not checked: that would need an aarch64 libtorch.
#
# Usage: tools/check_aarch64_compile.sh
# Environment: AARCH64_CXX (default aarch64-linux-gnu-g++; Debian/Ubuntu:
# apt-get install g++-aarch64-linux-gnu), PYTHON (default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
CROSS=${AARCH64_CXX:-aarch64-linux-gnu-g++}
PYTHON=${PYTHON:-python3}
if ! command -v "$CROSS" >/dev/null 2>&1; then
  echo "check_aarch64_compile: $CROSS not found (apt-get install g++-aarch64-linux-gnu, or set AARCH64_CXX)" >&2
  exit 1
fi

# The standard torch's cpp_extension would pick, and the headers it compiles against.
read -r std abi torch_inc py_inc < <("$PYTHON" - <<'PY'
import sysconfig
import torch
from torch.utils.cpp_extension import include_paths
std = "c++20" if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 14) else "c++17"
print(std, int(torch._C._GLIBCXX_USE_CXX11_ABI), ":".join(include_paths()), sysconfig.get_paths()["include"])
PY
)
inc_flags=()
IFS=: read -r -a dirs <<<"$torch_inc"
for d in "${dirs[@]}" "$py_inc"; do
  inc_flags+=(-isystem "$d")
done

out=$(mktemp -d /tmp/cnnext-aarch64-check.XXXXXX)
trap 'rm -rf "$out"' EXIT

flags=(
  -std="$std" -O1 -fPIC -fopenmp -fno-math-errno -Wall -Wno-unused-parameter
  -D_GLIBCXX_USE_CXX11_ABI="$abi" -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H
  '-DCNNEXT_VERSION="check"' '-DCNNEXT_TORCH_VERSION="check"'
  "${inc_flags[@]}" -Icsrc
)
echo "$("$CROSS" --version | head -1), -std=$std"
shopt -s nullglob
for f in csrc/*.cpp csrc/cpu/*.cpp csrc/cpu/*/*.cpp; do
  echo "$CROSS -c $f"
  "$CROSS" "${flags[@]}" -c "$f" -o "$out/$(echo "$f" | tr / _).o"
done

NM=${CROSS%g++}nm
command -v "$NM" >/dev/null 2>&1 || NM=nm
"$NM" -C --defined-only "$out"/*.o | sed -n 's/^[0-9a-f]* [TWtV] //p' | grep '^cnnext::' | sort -u >"$out/defined.txt" || true
"$NM" -C --undefined-only "$out"/*.o | sed -n 's/^ *U //p' | grep '^cnnext::' | sort -u >"$out/needed.txt" || true
missing=$(comm -23 "$out/needed.txt" "$out/defined.txt")
if [[ -n "$missing" ]]; then
  echo "check_aarch64_compile: cnnext functions used but defined by no object on aarch64:" >&2
  echo "$missing" >&2
  exit 1
fi
echo "  $(wc -l <"$out/needed.txt") cnnext symbols used across files, all defined"
echo "check_aarch64_compile: OK"
