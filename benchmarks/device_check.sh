#!/usr/bin/env bash
# The GPU checks of the throughput work, in one run of about 5 minutes on an H100/H200:
#   1. tests/test_cuda.py: the captured fast path equals the plain path and the CPU;
#   2. benchmarks.throughput: eager against the fast path, k in {1, 32, 128}, for IC-STN-4(a),
#      STN(a) and the GTSRB IC-STN-4, with a profile of the top kernels;
#   3. models of different architectures sharing the GPU: back to back against CUDA streams;
#   4. the projected device-hours of the paper profile.
# Results go to $OUT (JSON lines and logs). The machine's image has torch, pytest, numpy and
# pyyaml; jsonschema (for the grids of step 4) travels as wheels: `make device-wheels` puts them
# in .device/wheels, which the device tool's `carry` takes along.
set -uo pipefail
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
PY=${PYTHON:-python3}
$PY -c "import jsonschema" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels jsonschema
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

step() {  # name, limit in seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$@" >"$OUT/$name.jsonl" 2>"$OUT/$name.log"
  echo "exit $?" >>"$OUT/$name.log"
  grep -v '"op"' "$OUT/$name.jsonl" | cut -c1-220
}

step test_cuda 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
cp "$OUT/test_cuda.jsonl" "$OUT/test_cuda.txt" && tail -3 "$OUT/test_cuda.txt"
# DEVICE=cpu STEPS=1 WARMUP=1 dry-runs the plumbing here (graph modes are then skipped)
B="$PY -m benchmarks.throughput --device ${DEVICE:-cuda} --steps ${STEPS:-30} --warmup ${WARMUP:-5}"
step icstn4a 90 $B --model "IC-STN-4(a)" --modes graph batched batched+graph --k 1 32 128 --profile
step stn_a 40 $B --model "STN(a)" --k 1 32 128
step gtsrb_icstn4 60 $B --experiment gtsrb --model IC-STN-4 --k 1 32 128 --profile
step mix 40 $B --model "IC-STN-4(a)" --k 3 --mix "IC-STN-4(a)" "STN(a)" "CNN(a)" "c-STN-4(a)"
step project 120 $B --model "IC-STN-4(a)" --k 1 --modes batched+graph --project
grep '"op"' "$OUT/icstn4a.jsonl" "$OUT/gtsrb_icstn4.jsonl" | cut -c1-260
