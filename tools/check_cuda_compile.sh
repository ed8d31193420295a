#!/usr/bin/env bash
# Compile-checks the CUDA backend on a machine without a GPU.
#
#  1. every csrc/cuda/*.cu with plain nvcc, for sm_80 and sm_90, with the
#     flags torch's CUDAExtension adds (no half operators/conversions,
#     relaxed constexpr), warnings on;
#  2. every csrc/cuda/*.cpp (the thin torch layer) with the host compiler,
#     into objects, against the installed torch's headers;
#  3. (when both ran) that every cnnext::cuda::launch:: function the thin
#     layer calls is defined by the nvcc objects, i.e. that the launchers'
#     explicit template instantiations match their uses (a mismatch would
#     otherwise only show as an "undefined symbol" at import on a GPU box).
#
# The CPU wheel lacks the generated c10/cuda/impl/cuda_cmake_macros.h;
# c10/cuda/CUDAMacros.h skips it when C10_CUDA_NO_CMAKE_CONFIGURE_FILE is
# defined, and that file only matters for Windows DLL exports, so step 2
# needs no stub header.
#
# Usage: tools/check_cuda_compile.sh [--kernels-only | --host-only]
# Environment: NVCC (default nvcc), CXX (default g++), PYTHON (default
# python3), CNNEXT_CHECK_ARCHS (default "80 90"), CNNEXT_CHECK_VERBOSE=1 to
# print ptxas register/shared-memory usage.
# Exits non-zero on the first compile error.
set -euo pipefail

cd "$(dirname "$0")/.."
mode=${1:-all}
case "$mode" in
  all | --kernels-only | --host-only) ;;
  *)
    echo "usage: $0 [--kernels-only | --host-only]" >&2
    exit 2
    ;;
esac

NVCC=${NVCC:-nvcc}
CXX=${CXX:-g++}
PYTHON=${PYTHON:-python3}
archs=${CNNEXT_CHECK_ARCHS:-80 90}

out=$(mktemp -d /tmp/cnnext-cuda-check.XXXXXX)
trap 'rm -rf "$out"' EXIT

shopt -s nullglob
cu_files=(csrc/cuda/*.cu)
cpp_files=(csrc/cuda/*.cpp)

if [[ "$mode" != --host-only ]]; then
  if ! command -v "$NVCC" >/dev/null 2>&1; then
    echo "check_cuda_compile: nvcc not found (set NVCC)" >&2
    exit 1
  fi
  if ((${#cu_files[@]} == 0)); then
    echo "check_cuda_compile: no csrc/cuda/*.cu files" >&2
    exit 1
  fi
  gencode=()
  for a in $archs; do
    gencode+=(-gencode "arch=compute_${a},code=sm_${a}")
  done
  nvcc_flags=(
    -std=c++17 -O3 --expt-relaxed-constexpr
    -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
    -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
    -Xcompiler -Wall -Xcompiler -fPIC
    "${gencode[@]}" -Icsrc
  )
  if [[ "${CNNEXT_CHECK_VERBOSE:-0}" != 0 ]]; then
    nvcc_flags+=(-Xptxas -v)
  fi
  echo "nvcc: $("$NVCC" --version | tail -1)"
  for f in "${cu_files[@]}"; do
    obj="$out/$(basename "$f" .cu).o"
    echo "nvcc [sm ${archs}] $f"
    "$NVCC" "${nvcc_flags[@]}" -c "$f" -o "$obj"
  done
fi

if [[ "$mode" != --kernels-only ]]; then
  if ((${#cpp_files[@]} == 0)); then
    echo "check_cuda_compile: no csrc/cuda/*.cpp files" >&2
    exit 1
  fi
  get_inc='from torch.utils.cpp_extension import include_paths; print(" ".join(include_paths()))'
  if ! torch_inc=$("$PYTHON" -c "$get_inc" 2>/dev/null); then
    echo "check_cuda_compile: torch is not importable with $PYTHON; cannot check the thin layer" >&2
    exit 1
  fi
  abi=$("$PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
  # The CUDA runtime headers the thin layer needs (cuda_runtime_api.h, ...).
  cuda_inc=""
  if command -v "$NVCC" >/dev/null 2>&1; then
    nvcc_dir=$(dirname "$(readlink -f "$(command -v "$NVCC")")")
    for d in "$nvcc_dir/../targets/x86_64-linux/include" "$nvcc_dir/../include" /usr/local/cuda/include; do
      if [[ -f "$d/cuda_runtime_api.h" ]]; then
        cuda_inc=$d
        break
      fi
    done
  fi
  # A wrapper script may hide the real nvcc; ask it where its headers are.
  if [[ -z "$cuda_inc" ]] && command -v "$NVCC" >/dev/null 2>&1; then
    cuda_inc=$("$NVCC" -v -x cu -E /dev/null -o /dev/null 2>&1 |
      sed -n 's/^#\$ INCLUDES="-I\([^"]*\)".*/\1/p' | head -1)
  fi
  if [[ -z "$cuda_inc" || ! -f "$cuda_inc/cuda_runtime_api.h" ]]; then
    echo "check_cuda_compile: CUDA include directory not found" >&2
    exit 1
  fi
  inc_flags=()
  for d in $torch_inc; do
    inc_flags+=(-isystem "$d")
  done
  cxx_flags=(
    -std=c++17 -O1 -fPIC -Wall -Wextra -Wno-unused-parameter
    -DCNNEXT_WITH_CUDA -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -D_GLIBCXX_USE_CXX11_ABI="$abi"
    "${inc_flags[@]}" -isystem "$cuda_inc" -Icsrc
  )
  for f in "${cpp_files[@]}"; do
    echo "$CXX -c $f"
    "$CXX" "${cxx_flags[@]}" -c "$f" -o "$out/$(basename "$f" .cpp).host.o"
  done
fi

if [[ "$mode" == all ]]; then
  echo "checking that the launchers the thin layer uses are instantiated"
  nm -C --defined-only "$out"/*.o 2>/dev/null | sed -n 's/^[0-9a-f]* [TW] //p' |
    { grep 'cnnext::cuda::launch::' || true; } | sort -u >"$out/defined.txt"
  nm -C --undefined-only "$out"/*.host.o | sed -n 's/^ *U //p' |
    { grep 'cnnext::cuda::launch::' || true; } | sort -u >"$out/needed.txt"
  if [[ ! -s "$out/needed.txt" ]]; then
    echo "check_cuda_compile: found no launcher calls in the thin layer objects (is nm working?)" >&2
    exit 1
  fi
  missing=$(comm -23 "$out/needed.txt" "$out/defined.txt")
  if [[ -n "$missing" ]]; then
    echo "check_cuda_compile: the thin layer calls launchers no .cu file instantiates:" >&2
    echo "$missing" >&2
    exit 1
  fi
  echo "  $(wc -l <"$out/needed.txt") launcher symbols needed, all defined"
fi

echo "check_cuda_compile: OK"
