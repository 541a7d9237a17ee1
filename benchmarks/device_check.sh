#!/usr/bin/env bash
# The GPU checks of the throughput work, in one run of at most 6 minutes on an H100/H200:
#   1. tests/test_cuda.py: the captured fast path equals the plain path and the CPU;
#   2. benchmarks.throughput: eager against the fast path, k in {1, 32, 128}, for IC-STN-4(a),
#      STN(a) and the GTSRB IC-STN-4, with a profile of the top kernels;
#   3. models of different architectures sharing the GPU: back to back against CUDA streams;
#   4. the projected device-hours of the paper profile.
# Everything lands in two files under $OUT: results.jsonl (every measurement, one JSON object
# per line) and log.txt (the GPU, the tests, stderr). The machine's image has torch, pytest,
# numpy and pyyaml; jsonschema (for the grids of step 4) travels as wheels: `make device-wheels`
# puts them in .device/wheels; copy that folder to the GPU machine with the checkout.
# DEVICE=cpu STEPS=1 WARMUP=1 dry-runs the plumbing on a CPU (graph modes are then skipped).
set -uo pipefail
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
PY=${PYTHON:-python3}
LOG=$OUT/log.txt
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
$PY -c "import jsonschema" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels jsonschema >>"$LOG" 2>&1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"

echo "== tests/test_cuda.py" | tee -a "$LOG"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py >>"$LOG" 2>&1
echo "exit $?" | tee -a "$LOG"

bench() {  # limit in seconds, then benchmark arguments
  local limit=$1
  shift
  echo "== throughput $*" | tee -a "$LOG"
  timeout "$limit" $PY -m benchmarks.throughput --device "${DEVICE:-cuda}" --steps "${STEPS:-30}" --warmup "${WARMUP:-5}" "$@" \
    2>>"$LOG" | tee -a "$RESULTS" | grep -v '"op"' | cut -c1-240
  echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

# every bench also measures its own baseline first: one model, eager, plain path
bench 20 --model "IC-STN-4(a)" --modes graph --k 1
bench 60 --model "IC-STN-4(a)" --modes batched batched+graph --k 1 32 128 --profile
bench 30 --model "STN(a)" --modes batched+graph --k 1 32 128
bench 45 --experiment gtsrb --model IC-STN-4 --modes batched batched+graph --k 1 32 128 --profile
bench 30 --model "IC-STN-4(a)" --modes batched+graph --k 3 --mix "IC-STN-4(a)" "STN(a)" "CNN(a)" "c-STN-4(a)"
bench 60 --model "IC-STN-4(a)" --modes batched+graph --k 1 --project
grep '"op"' "$RESULTS" | cut -c1-260
