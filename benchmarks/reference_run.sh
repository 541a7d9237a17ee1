#!/usr/bin/env bash
# Grow a grid's reference by one run of MINUTES minutes of training, on a GPU machine:
#   OUT=<folder> bash benchmarks/reference_run.sh table2 8
# restores the committed reference (reports/reference/<grid>/) as the results folder of a sweep,
# runs the paper profile's sweep of the grid (config/config.yaml, inline, no MLflow) with the time
# limit MINUTES (every trial then checkpoints and stops), and packs the folder back into
# $OUT/<grid>.tar.gz (at most 16 MiB, this run's provenance appended), with $OUT/log.txt. Then, in
# the checkout: python -m pipeline.reference unpack <grid>.tar.gz, and commit reports/reference/<grid>/.
# The next run continues every trial exactly where this one stopped; runs add up to the grid's budget.
#   SEEDS (default 5): seeds per model; a reference keeps them from its first run on (they are in
#     its trials' keys). The report judges a cell from 3 seeds on.
#   REFERENCE (default reports/reference): where the reference is restored from.
#   EXTRA (JSON) overrides the profile, e.g. a dry run on a CPU: EXTRA='{"budget": {"iterations": 40}}'
# The GPU machine's image may lack jsonschema and pooch: `make device-wheels` puts them in
# .device/wheels; the dataset files travel in .device/mirror (`make device-wheels` copies the
# grid's dataset there from ICSTN_DATA_MIRROR).
set -euo pipefail
GRID=${1:?usage: reference_run.sh GRID MINUTES (GRID: a file of config/grids)}
MINUTES=${2:?usage: reference_run.sh GRID MINUTES (MINUTES: minutes of training)}
OUT=${OUT:-/tmp/reference}
PY=${PYTHON:-python3}
WORK=${WORK:-$(mktemp -d)}
SEEDS=${SEEDS:-5}
REFERENCE=${REFERENCE:-reports/reference}
EXTRA=${EXTRA:-"{}"}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LOG=$OUT/log.txt
for pkg in jsonschema pooch; do
  $PY -c "import $pkg" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels "$pkg" >>"$LOG" 2>&1
done
EXP=$($PY -m pipeline.reference prepare --grid "$GRID" --work "$WORK" --seeds "$SEEDS" --extra "$EXTRA")
export ICSTN_DATA_MIRROR=${ICSTN_DATA_MIRROR:-$PWD/.device/mirror}
$PY -m pipeline.fetch "$EXP" --raw "$WORK/raw" 2>&1 | tee -a "$LOG"
$PY -m pipeline.prepare "$EXP" --raw "$WORK/raw" --out "$WORK/processed" 2>&1 | tee -a "$LOG"
$PY -m pipeline.reference restore --grid "$GRID" --results "$WORK/results" --reference "$REFERENCE" 2>&1 | tee -a "$LOG"
start=$(date +%s)
$PY -m pipeline.sweep --grid "$WORK/grids/$GRID.yaml" --out "$WORK/results" --data "$WORK/processed" \
  --settings "$(cat "$WORK/settings.json")" --executor inline --no-tracking --stop-after "${MINUTES}m" 2>&1 | tee -a "$LOG"
seconds=$(($(date +%s) - start))
echo "sweep: $seconds s" | tee -a "$LOG"
$PY -m pipeline.reference pack --results "$WORK/results" --grid "$GRID" --out "$OUT/$GRID.tar.gz" --seconds "$seconds" 2>&1 | tee -a "$LOG"
