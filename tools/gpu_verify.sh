#!/usr/bin/env bash
# Verifies cnnext on a GPU machine in one command (within 9 minutes):
#
#  1. build: pip install --no-build-isolation --no-deps . for the visible GPU's
#     architecture (TORCH_CUDA_ARCH_LIST from nvidia-smi's compute_cap); the
#     steps below are skipped when it fails;
#  2. tests: the suite's CUDA cases (`-k cuda`: the cuda parameter of every
#     device-parametrized test, and tests/test_cuda.py). The CPU cases are CI's;
#     the two CPU-only builders are left out (test_isa_builds.py rebuilds the
#     package for narrower CPUs; test_cuda_emulation.py runs the kernels on the
#     CPU, which a GPU supersedes);
#  3. the GPU benchmarks (benchmarks/, CUDA cases: cnnext against torch,
#     i.e. cuDNN, with TF32 off);
#  4. compute-sanitizer memcheck and racecheck on a small run of every CUDA
#     kernel (both conv algorithms incl. the untiled direct fallback and
#     chunked im2col, max-pool, float32 and float16);
#  5. the report benchmarks/results/gpu-<gpu>-<date>.md: GPU model, versions,
#     pass/fail counts, sanitizer verdicts, per-layer timings. Logs and the
#     benchmark JSON go to benchmarks/results/gpu-<gpu>-<date>-logs/. With
#     OUT set (a lent machine's output folder), the report and a tarball of
#     the logs are copied there too.
#
# Every step has a time limit (STEP_LIMITS below, about 8 minutes in all), so
# the report is written even when a step hangs. Exits non-zero when a step failed.
#
# Usage: tools/gpu_verify.sh
# Needs: nvidia-smi, nvcc, a CUDA build of torch, ninja, pytest, pytest-benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PYTHON=${PYTHON:-python}

declare -A STEP_LIMITS=([build]=210 [tests]=120 [benchmarks]=120 [memcheck]=45 [racecheck]=40)

export PYTHONUNBUFFERED=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)
if [[ -z "$gpu" || -z "$cap" ]]; then
  echo "gpu_verify: no GPU visible to nvidia-smi" >&2
  exit 1
fi
slug=$(echo "$gpu" | tr '[:upper:]' '[:lower:]' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
stem=benchmarks/results/gpu-$slug-$(date +%F)
logs=$repo/$stem-logs
report=$repo/$stem.md
mkdir -p "$logs"

declare -A status seconds
# run_step NAME COMMAND...: runs it under its time limit (SIGINT first, so pytest still writes its summary),
# output to $logs/NAME.log.
run_step() {
  local name=$1
  shift
  local start=$SECONDS rc=0
  echo "== $name (limit ${STEP_LIMITS[$name]} s)"
  timeout -s INT -k 15 "${STEP_LIMITS[$name]}" "$@" >"$logs/$name.log" 2>&1 || rc=$?
  seconds[$name]=$((SECONDS - start))
  case $rc in
    0) status[$name]=passed ;;
    124 | 130 | 137) status[$name]="timed out" ;;
    *) status[$name]="failed (exit $rc)" ;;
  esac
  echo "   ${status[$name]} in ${seconds[$name]} s"
  if [[ $rc != 0 ]]; then
    grep -m 30 -E "error|Error|FAILED|undefined" "$logs/$name.log"
    tail -15 "$logs/$name.log"
  fi
}
# skip NAME: marks a step not run because the build failed.
skip() { status[$1]="not run (build failed)"; }

# 1. build
export TORCH_CUDA_ARCH_LIST=$cap CNNEXT_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
run_step build "$PYTHON" -m pip install --no-build-isolation --no-deps .

# The tests and benchmarks run in a copy without the package's sources, so
# that `import cnnext` finds the installed build rather than ./cnnext.
work=$(mktemp -d /tmp/cnnext-gpu-verify.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r tests benchmarks csrc pyproject.toml README.md "$work/"
cd "$work"

# 2. tests
built=${status[build]}
# With pytest-xdist, a test that crashes the process loses one worker, not the rest of the run.
xdist=()
"$PYTHON" -c "import xdist" 2>/dev/null && xdist=(-n 4)
if [[ $built == passed ]]; then
  run_step tests "$PYTHON" -m pytest tests -q -rfE -p no:cacheprovider -k cuda --tb=short "${xdist[@]}" \
    --ignore=tests/test_isa_builds.py --ignore=tests/test_cuda_emulation.py --junitxml="$logs/tests.xml"
fi

# 3. benchmarks (CUDA cases only), and their report
if [[ $built == passed ]]; then
  run_step benchmarks "$PYTHON" -m pytest benchmarks -q -p no:cacheprovider -k cuda --benchmark-only \
    --benchmark-max-time=0.05 --benchmark-min-rounds=5 --benchmark-json="$logs/benchmarks.json"
fi
if [[ -s "$logs/benchmarks.json" ]]; then
  "$PYTHON" -m benchmarks.report "$logs/benchmarks.json" --out "$logs/benchmarks.md" >/dev/null
fi

# 4. compute-sanitizer on one small call of every kernel
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
cat >sanitize_case.py <<'EOF'
"""One small call of every CUDA kernel (`direct`: only the direct convolution's, the ones with shared memory)."""
import os
import sys

import torch

import cnnext.functional as CF

configs = [("direct", {}), ("direct", {"CNNEXT_CUDA_DIRECT_GENERIC": "1"}), ("im2col", {}),
           ("im2col", {"CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES": "2048"})]
direct_only = sys.argv[1:] == ["direct"]
torch.manual_seed(0)
for dtype in (torch.float32, torch.float16):
    for algo, env in configs[:2] if direct_only else configs:
        os.environ.pop("CNNEXT_CUDA_DIRECT_GENERIC", None)
        os.environ.pop("CNNEXT_CUDA_IM2COL_WORKSPACE_BYTES", None)
        os.environ.update(env)
        for groups, dilation in [(1, 1), (2, 2)]:
            x = torch.randn(2, 4, 9, 11, device="cuda", dtype=dtype, requires_grad=True)
            w = torch.randn(6, 4 // groups, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
            b = torch.randn(6, device="cuda", dtype=dtype, requires_grad=True)
            y = CF.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=dilation, groups=groups, algo=algo)
            (y * torch.randn_like(y)).sum().backward()
    if not direct_only:
        x = torch.randn(2, 3, 9, 11, device="cuda", dtype=dtype, requires_grad=True)
        y = CF.max_pool2d(x, 3, stride=2, padding=1)
        (y * torch.randn_like(y)).sum().backward()
torch.cuda.synchronize()
print("all kernels ran")
EOF
# Without the caching allocator every tensor is its own allocation, so memcheck sees overruns between them.
[[ $built == passed ]] && run_step memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool memcheck --error-exitcode 99 \
  --print-limit 20 "$PYTHON" sanitize_case.py
# Only the tiled direct kernels use shared memory.
[[ $built == passed ]] && run_step racecheck "$sanitizer" --tool racecheck --racecheck-report hazard --error-exitcode 99 --print-limit 20 \
  "$PYTHON" sanitize_case.py direct


# 5. the report
STEPS="build tests benchmarks memcheck racecheck"
for s in $STEPS; do [[ -n ${status[$s]:-} ]] || skip "$s"; done
{
  echo "# cnnext on $gpu ($(date +%F))"
  echo
  if [[ -n ${CNNEXT_COMMIT:-} ]]; then
    commit=$CNNEXT_COMMIT
  else
    commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(
      git -C "$repo" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  fi
  echo "Written by \`tools/gpu_verify.sh\` at commit $commit. Logs: \`$stem-logs/\`."
  echo
  echo "- GPU: $gpu, compute capability $cap, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  echo "- $("$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")' 2>&1 | tail -1)"
  echo "- cnnext: $("$PYTHON" -c 'import cnnext; print(cnnext.build_info())' 2>&1 | tail -1)"
  echo
  echo "| step | result | seconds |"
  echo "| --- | --- | --- |"
  for s in $STEPS; do echo "| $s | ${status[$s]:-not run} | ${seconds[$s]:-} |"; done
  echo
  if [[ -s "$logs/tests.xml" ]]; then
    echo "## Tests"
    echo
    "$PYTHON" - "$logs/tests.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(f"{total - failures - errors - skipped} passed, {failures} failed, {errors} errors, {skipped} skipped")
print()
for case in suite.iter("testcase"):
    for kind in ("failure", "error"):
        node = case.find(kind)
        if node is not None:
            message = (node.get("message") or "").splitlines()[0][:200] if node.get("message") else ""
            print(f"- {kind}: `{case.get('classname')}.{case.get('name')}`: {message}")
EOF
    echo
  fi
  for tool in memcheck racecheck; do
    echo "## compute-sanitizer $tool"
    echo
    echo '```'
    [[ -f "$logs/$tool.log" ]] && grep -E "ERROR SUMMARY|RACECHECK SUMMARY|all kernels ran|Invalid|Race|Hazard" "$logs/$tool.log" | head -20
    echo '```'
    echo
  done
  if [[ -s "$logs/benchmarks.md" ]]; then
    echo "## Benchmarks (cnnext against torch/cuDNN, per layer)"
    echo
    # The benchmark report's own title and preamble are replaced by this file's.
    sed -e '1,/^## /{/^## /!d}' -e 's/^#/##/' "$logs/benchmarks.md"
  fi
} >"$report"
echo "wrote $report"
if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
  cp "$report" "$OUT/"
  tar -C "$(dirname "$logs")" -czf "$OUT/$(basename "$logs").tar.gz" "$(basename "$logs")"
fi
cat "$report"

for s in $STEPS; do
  [[ ${status[$s]:-} == passed ]] || exit 1
done
