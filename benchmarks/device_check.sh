#!/usr/bin/env bash
# The GPU checks of the throughput work, in one run of about 5 minutes on an H100/H200:
#   1. tests/icstn/test_cuda.py: the captured fast path equals the plain path and the CPU;
#   2. benchmarks.throughput: the plain path against the fast path, K in {1, 3, 12, 32, 128}, for
#      IC-STN-4(a), STN(a) and the GTSRB IC-STN-4, with a profile of the top kernels, and the
#      batched-GEMM convolution against cuDNN's grouped one (icstn.layers.CONV) in one run;
#   3. trials sharing the GPU under MPS: 4 and 8 processes of K = 3 against 1 (benchmarks.sharing;
#      without MPS, 4 processes ran 1.01x one on an H200, so that is not measured again), and
#      models of different architectures in one process, back to back against one CUDA stream each;
#   4. the projected device-hours of the paper profile.
# Everything lands in two files under $OUT: results.jsonl (every measurement, one JSON object
# per line) and log.txt (the GPU, the tests, stderr). The machine's image has torch, pytest,
# numpy and pyyaml; jsonschema (for the grids of step 4) travels as wheels: `make device-wheels`
# puts them in .device/wheels; copy that folder to the GPU machine with the checkout.
# DEVICE=cpu STEPS=1 WARMUP=1 dry-runs the plumbing on a CPU (graph modes and MPS are then skipped).
#
# `benchmarks/device_check.sh conv` runs the convolution decision instead, in at most 8 minutes:
# the CUDA tests of the Triton convolution (tests/icstn/test_cuda.py -k triton), then
# benchmarks.conv_decision (kernels, the launch search and end-to-end steps; its table lands in
# $OUT/conv_table.txt, the launch settings it chose in $OUT/triton_launches.json: copy that to
# icstn/ and commit it). Without CUDA the decision says so in one line; DEVICE=cpu
# DECISION_ARGS='...' rehearses it on a CPU.
#
# A failing CUDA test does not stop the measurements, but the script then ends with status 1 and
# names the failing tests on its last lines (they are in log.txt too).
set -uo pipefail
PART=${1:-throughput}
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
CUDA_TESTS=${CUDA_TESTS:-tests/icstn/test_cuda.py}
LOG=$OUT/log.txt
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
$PY -c "import jsonschema" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels jsonschema >>"$LOG" 2>&1
FAILED=""
cuda_tests() {  # limit in seconds, then pytest's selection; the failing tests' names are kept for the end
  local limit=$1
  shift
  echo "== $CUDA_TESTS $*" | tee -a "$LOG"
  local out=$OUT/pytest.txt
  timeout "$limit" $PY -m pytest -q -rfE -p no:cacheprovider "$CUDA_TESTS" "$@" >"$out" 2>&1
  local rc=$?
  cat "$out" >>"$LOG"
  echo "exit $rc" | tee -a "$LOG"
  tail -n 3 "$out"
  if [ "$rc" -ne 0 ]; then
    local names
    names=$(grep -E '^(FAILED|ERROR) ' "$out" | cut -d' ' -f2 | tr '\n' ' ')
    FAILED="$FAILED${names:-$CUDA_TESTS (exit $rc: timed out or collected nothing)} "
  fi
}
finish() {  # status 1, naming the failing CUDA tests, where any failed
  if [ -n "$FAILED" ]; then
    echo "CUDA tests failed: $FAILED" | tee -a "$LOG"
    exit 1
  fi
  exit 0
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"

if [ "$PART" = conv ]; then
  cuda_tests 110 -k triton # skipped without CUDA: a CPU rehearsal still runs the command
  echo "== benchmarks.conv_decision" | tee -a "$LOG"
  # the launch search's winners over the checkout's: $OUT/triton_launches.json, for icstn/ (GPU.md)
  [ -f icstn/triton_launches.json ] && cp icstn/triton_launches.json "$OUT/"
  # SIGINT at the limit: the decision is still printed, from what was measured
  # shellcheck disable=SC2086 # DECISION_ARGS: more arguments, e.g. a CPU rehearsal's tiny budget
  timeout -s INT -k 15 330 $PY -m benchmarks.conv_decision --device "$DEVICE" --budget "${BUDGET:-270}" --table "$OUT/conv_table.txt" \
    --launches "$OUT/triton_launches.json" ${DECISION_ARGS:-} 2>>"$LOG" |
    tee -a "$RESULTS" | grep -v '"direction"' | cut -c1-240
  echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"
  cat "$OUT/conv_table.txt" 2>/dev/null
  finish
fi

[ "$DEVICE" != cpu ] && cuda_tests 100

run() {  # limit in seconds, then a benchmark module and its arguments
  local limit=$1
  shift
  echo "== $*" | tee -a "$LOG"
  timeout "$limit" $PY -m "$@" 2>>"$LOG" | tee -a "$RESULTS" | grep -v '"op"' | cut -c1-240
  echo "exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
bench() {  # limit, then throughput arguments; every run first measures its own baseline (eager, K = 1)
  local limit=$1
  shift
  run "$limit" benchmarks.throughput --device "$DEVICE" --steps "${STEPS:-30}" --warmup "${WARMUP:-5}" "$@"
}

bench 60 --model "IC-STN-4(a)" --modes batched+graph --k 1 3 12 32 128 --profile
bench 40 --model "IC-STN-4(a)" --modes batched+graph --k 3 12 128 --conv gemm  # against cuDNN's grouped kernels
bench 40 --experiment gtsrb --model IC-STN-4 --modes batched+graph --k 3 32 --conv gemm
bench 30 --model "STN(a)" --modes batched+graph --k 1 3 32 128
bench 60 --experiment gtsrb --model IC-STN-4 --modes batched+graph --k 1 3 12 32 128 --profile
bench 30 --model "IC-STN-4(a)" --modes batched+graph --k 3 --mix "IC-STN-4(a)" "STN(a)" "CNN(a)" "c-STN-4(a)"
# MPS: one server multiplexes the processes' kernels on the GPU; it changes no setting of the card
if [ "$DEVICE" != cpu ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if timeout 10 nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
    run 75 benchmarks.sharing --device "$DEVICE" --model "IC-STN-4(a)" --k 3 --processes 1 4 8 --seconds "${SHARE_SECONDS:-6}" --label mps
    echo quit | timeout 10 nvidia-cuda-mps-control >>"$LOG" 2>&1
    cat "$CUDA_MPS_LOG_DIRECTORY"/*.log >>"$LOG" 2>/dev/null
  else
    echo '{"mode": "processes:mps", "skipped": "nvidia-cuda-mps-control -d failed (log.txt)"}' | tee -a "$RESULTS"
  fi
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
fi
bench 60 --model "IC-STN-4(a)" --k --steps 20 --project
grep '"op"' "$RESULTS" | cut -c1-200
finish
