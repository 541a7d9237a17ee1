#!/usr/bin/env bash
# Grow a grid's reference by one run of MINUTES minutes of training, on a GPU machine or a CPU:
#   OUT=<folder> bash benchmarks/reference_run.sh table2 8
#   OUT=<folder> SEEDS=3 nice -n 19 bash benchmarks/reference_run.sh table1 120     # a CPU, at low priority
#   OUT=<folder> bash benchmarks/reference_run.sh config/references/table2.yaml 60   # a reference-only grid
# GRID is a name of config/grids or a grid file. The run bounds the reference's size first and
# refuses, before any compute, a grid whose reference could exceed its cap (naming the seeds that
# fit); restores the committed reference (reports/reference/<grid>/ of a GPU, <grid>-cpu/ of a CPU)
# as the results folder of a sweep; runs the paper profile's sweep of the grid (config/config.yaml,
# inline, no MLflow) in P processes on that one folder with the time limit MINUTES (every trial then
# checkpoints and stops); and packs the folder into $OUT/<grid>.tar.gz, this run's provenance
# appended, with $OUT/log.txt. It packs whatever the sweep's exit: what was trained before a
# failure is kept. Then, in the checkout: python -m pipeline.reference unpack $OUT/<grid>.tar.gz,
# and commit the folder it names. The next run continues every trial exactly where this one stopped.
#   SEEDS (default 5): seeds per model; a reference keeps them from its first run on (they are in
#     its trials' keys). The report judges a cell from 3 seeds on.
#   PROCESSES: sweeps sharing the results folder (each trial goes to one of them). Default: on a
#     GPU with MPS (nvidia-cuda-mps-control), 8 (eight K = 3 processes ran 2.01x one on an H200),
#     else 1; on a CPU, one per core (nproc), each with one torch thread.
#   REFERENCE (default reports/reference): where the reference is restored from.
#   PYTHON (default python3; e.g. .venv/bin/python). WORK (default: a temporary folder).
#   EXTRA (JSON) overrides the profile, e.g. a dry run: EXTRA='{"budget": {"iterations": 40}}'
# The GPU machine's image may lack jsonschema and pooch: `make device-wheels` puts them in
# .device/wheels; the dataset files travel in .device/mirror (`make device-wheels` copies the
# grid's dataset there from ICSTN_DATA_MIRROR).
set -uo pipefail
GRID=${1:?usage: reference_run.sh GRID MINUTES (GRID: a name of config/grids, or a grid file)}
MINUTES=${2:?usage: reference_run.sh GRID MINUTES (MINUTES: minutes of training)}
OUT=${OUT:-/tmp/reference}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
SEEDS=${SEEDS:-5}
REFERENCE=${REFERENCE:-reports/reference}
EXTRA=${EXTRA:-"{}"}
NAME=$(basename "${GRID%.y*ml}")
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/log.txt
say() { echo "$*" | tee -a "$LOG"; }
for pkg in jsonschema pooch; do
  $PY -c "import $pkg" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels "$pkg" >>"$LOG" 2>&1
done
# before any compute: the size bound against the cap, the data, the committed reference
EXP=$($PY -m pipeline.reference prepare --grid "$GRID" --work "$WORK" --seeds "$SEEDS" --extra "$EXTRA" 2> >(tee -a "$LOG" >&2)) || exit 2
KIND=$($PY -c "import torch; print('GPU' if torch.cuda.is_available() else 'CPU')")
export ICSTN_DATA_MIRROR=${ICSTN_DATA_MIRROR:-$PWD/.device/mirror}
{ $PY -m pipeline.fetch "$EXP" --raw "$WORK/raw" && $PY -m pipeline.prepare "$EXP" --raw "$WORK/raw" --out "$WORK/processed"; } 2>&1 |
  tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "error: the data of $EXP could not be fetched or prepared (log.txt)"; exit 2; }
$PY -m pipeline.reference restore --grid "$NAME" --results "$WORK/results" --reference "$REFERENCE" --kind "$KIND" 2>&1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 2

MPS=""
if [ "$KIND" = GPU ]; then
  THREADS=""
  if [ -z "${PROCESSES:-}" ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=$WORK/mps-pipe CUDA_MPS_LOG_DIRECTORY=$WORK/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    # one server multiplexes the processes' kernels on the GPU; it changes no setting of the card
    timeout 10 nvidia-cuda-mps-control -d >>"$LOG" 2>&1 && MPS=on
  fi
  PROCESSES=${PROCESSES:-$([ -n "$MPS" ] && echo 8 || echo 1)}
else
  PROCESSES=${PROCESSES:-$(nproc)}
  THREADS=1
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per process
fi
say "reference of $NAME on a $KIND: $PROCESSES process(es)${MPS:+ under MPS}${THREADS:+, $THREADS torch thread each}, $MINUTES min"

start=$(date +%s)
pids=()
for i in $(seq 1 "$PROCESSES"); do
  $PY -m pipeline.sweep --grid "$WORK/grids/$NAME.yaml" --out "$WORK/results" --data "$WORK/processed" \
    --settings "$(cat "$WORK/settings.json")" --executor inline --no-tracking --stop-after "${MINUTES}m" \
    >"$WORK/sweep$i.log" 2>&1 &
  pids+=($!)
done
# a TERM or Ctrl-C of this script stops the sweeps at their next step (checkpoints written); the pack follows
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for i in "${!pids[@]}"; do
  while true; do
    wait "${pids[$i]}"
    rc=$?
    kill -0 "${pids[$i]}" 2>/dev/null || break # a trap ended the wait, not the process
  done
  [ "$rc" -eq 0 ] || status=$rc
  cat "$WORK/sweep$((i + 1)).log" >>"$LOG"
done
trap - TERM INT
seconds=$(($(date +%s) - start))
[ -n "$MPS" ] && { echo quit | timeout 10 nvidia-cuda-mps-control >>"$LOG" 2>&1; }
tail -n 3 "$WORK/sweep1.log"
say "sweep: $seconds s, exit $status"
# whatever the sweep's exit: the trials it finished and the checkpoints it wrote
$PY -m pipeline.reference pack --results "$WORK/results" --grid "$NAME" --out "$OUT/$NAME.tar.gz" --seconds "$seconds" \
  --plan "$WORK/plan.json" --processes "$PROCESSES" ${THREADS:+--threads "$THREADS"} 2>&1 | tee -a "$LOG"
packed=${PIPESTATUS[0]}
if [ "$packed" -eq 0 ]; then
  say "unpack it in the checkout: $PY -m pipeline.reference unpack $OUT/$NAME.tar.gz, then commit the folder it names"
fi
[ "$packed" -eq 0 ] || exit "$packed"
exit "$status"
