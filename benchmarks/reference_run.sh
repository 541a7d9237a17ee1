#!/usr/bin/env bash
# One grid on a GPU machine, without Ray or MLflow, into one archive of at most 16 MiB:
#   OUT=<folder> bash benchmarks/reference_run.sh table2
# writes $OUT/<grid>.tar.gz (the results table, the arrays its figures need, the provenance)
# and $OUT/log.txt. Then, in the checkout: python -m pipeline.reference unpack <grid>.tar.gz,
# and commit reports/reference/<grid>/. The profile is config/reference.yaml, with two more
# choices made here:
#   SEEDS (default 5): seeds per model. A profile's budget only lowers a grid's seeds, so the
#     run trains a copy of the grid with seeds 0..SEEDS-1: a GPU trains them side by side. The
#     report judges a cell from 3 seeds on; fewer seeds buy more iterations (on an H200, 16 seeds
#     fitted 2,500 iterations, where MNIST's (a) models still sit near chance).
#   FIT (default 150): seconds of training steps. The grid's models are timed first
#     (benchmarks.throughput --project --fit) and the iterations lowered until the steps fit.
#     FIT=0 keeps the profile's iterations.
# The GPU machine's image may lack jsonschema and pooch: `make device-wheels` puts them in
# .device/wheels; the dataset files travel in .device/mirror (`make device-wheels` copies the
# grid's dataset there from ICSTN_DATA_MIRROR).
set -euo pipefail
GRID=${1:?usage: reference_run.sh GRID (a file of config/grids)}
OUT=${OUT:-/tmp/reference}
PY=${PYTHON:-python3}
WORK=${WORK:-$OUT/work}
SEEDS=${SEEDS:-5}
FIT=${FIT:-150}
EXTRA=${EXTRA:-"{}"}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/log.txt
for pkg in jsonschema pooch; do
  $PY -c "import $pkg" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels "$pkg" >>"$LOG" 2>&1
done
# the grid with SEEDS seeds, and the profile's settings pointing at it (pipeline.reference prepare)
# EXTRA (JSON) overrides the profile, e.g. a dry run on a CPU: EXTRA='{"budget": {"iterations": 20}}'
PREPARE=(-m pipeline.reference prepare --grid "$GRID" --work "$WORK" --seeds "$SEEDS" --extra "$EXTRA")
EXP=$($PY "${PREPARE[@]}")
export ICSTN_DATA_MIRROR=${ICSTN_DATA_MIRROR:-$PWD/.device/mirror}
$PY -m pipeline.fetch "$EXP" --raw "$WORK/raw" 2>&1 | tee -a "$LOG"
$PY -m pipeline.prepare "$EXP" --raw "$WORK/raw" --out "$WORK/processed" 2>&1 | tee -a "$LOG"
if [ "$FIT" != 0 ]; then
  $PY -m benchmarks.throughput --config "$WORK/settings.json" --grids "$GRID" --fit "$FIT" --project --k --steps 20 \
    2>>"$LOG" | tee -a "$LOG" "$OUT/fit.jsonl"
  $PY "${PREPARE[@]}" --fit "$OUT/fit.jsonl" >/dev/null
  echo "iterations fitted to $FIT s: $(grep '"fit"' "$OUT/fit.jsonl" | tail -n 1)" | tee -a "$LOG"
fi
start=$(date +%s)
$PY -m pipeline.sweep --grid "$WORK/grids/$GRID.yaml" --out "$WORK/results" --data "$WORK/processed" \
  --settings "$(cat "$WORK/settings.json")" --executor inline --no-tracking 2>&1 | tee -a "$LOG"
echo "sweep: $(($(date +%s) - start)) s" | tee -a "$LOG"
$PY -m pipeline.reference pack --results "$WORK/results" --grid "$GRID" --out "$OUT/$GRID.tar.gz" 2>&1 | tee -a "$LOG"
