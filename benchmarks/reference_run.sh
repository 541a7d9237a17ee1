#!/usr/bin/env bash
# One grid on a GPU machine, without Ray or MLflow, into one archive of at most 16 MiB:
#   OUT=<folder> bash benchmarks/reference_run.sh table2
# writes $OUT/<grid>.tar.gz (the results table, the arrays its figures need, the provenance)
# and $OUT/log.txt. Then, in the checkout: python -m pipeline.reference unpack <grid>.tar.gz,
# and commit reports/reference/<grid>/. The budget is config/reference.yaml.
# The GPU machine's image may lack jsonschema and pooch: `make device-wheels` puts them in
# .device/wheels; the dataset files travel in .device/mirror (`make device-wheels` copies the
# grid's dataset there from ICSTN_DATA_MIRROR).
set -euo pipefail
GRID=${1:?usage: reference_run.sh GRID (a file of config/grids)}
OUT=${OUT:-/tmp/reference}
PY=${PYTHON:-python3}
WORK=${WORK:-$OUT/work}
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$PWD
LOG=$OUT/log.txt
for pkg in jsonschema pooch; do
  $PY -c "import $pkg" 2>/dev/null || $PY -m pip install -q --no-index --find-links .device/wheels "$pkg" >>"$LOG" 2>&1
done
EXP=$($PY -c "import yaml; print(yaml.safe_load(open('config/grids/$GRID.yaml'))['experiment'])")
export ICSTN_DATA_MIRROR=${ICSTN_DATA_MIRROR:-$PWD/.device/mirror}
$PY -m pipeline.fetch "$EXP" --raw "$WORK/raw" 2>&1 | tee -a "$LOG"
$PY -m pipeline.prepare "$EXP" --raw "$WORK/raw" --out "$WORK/processed" 2>&1 | tee -a "$LOG"
# EXTRA (JSON) overrides the profile, e.g. a dry run on a CPU: EXTRA='{"budget": {"iterations": 20, "seeds": 2}}'
SETTINGS=$($PY -c "import json, os, yaml
c = yaml.safe_load(open('config/config.yaml'))
c.update(yaml.safe_load(open('config/reference.yaml')))
c.update(json.loads(os.environ.get('EXTRA') or '{}'))
print(json.dumps(c))")
start=$(date +%s)
$PY -m pipeline.sweep --grid "config/grids/$GRID.yaml" --out "$WORK/results" --data "$WORK/processed" \
  --settings "$SETTINGS" --executor inline --no-tracking 2>&1 | tee -a "$LOG"
echo "sweep: $(($(date +%s) - start)) s" | tee -a "$LOG"
$PY -m pipeline.reference pack --results "$WORK/results" --grid "$GRID" --out "$OUT/$GRID.tar.gz" 2>&1 | tee -a "$LOG"
