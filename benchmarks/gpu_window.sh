#!/usr/bin/env bash
# A GPU window's whole command: the convolution decision (its CUDA tests first), then one run that
# grows a reference, each in its own folder of $OUT; both run, and it ends non-zero if either failed.
#   OUT=<folder> bash benchmarks/gpu_window.sh GRID MINUTES
# $OUT/decision/: device_check.sh conv (log.txt, results.jsonl, conv_table.txt, triton_launches.json)
# $OUT/reference/: reference_run.sh GRID MINUTES (GRID.tar.gz, log.txt)
# Then, in the checkout: python -m pipeline.reference unpack $OUT/reference/<grid>.tar.gz (and commit
# the folder it names); cp $OUT/decision/triton_launches.json icstn/; log the window in benchmarks/GPU.md.
# MINUTES: the window's minutes less the decision's 8 and about 3 more (wheels, data, pack).
# tests/workflow/test_gpu_window.py rehearses it on a CPU with tiny budgets, so that a window never
# meets a broken command.
set -uo pipefail
GRID=${1:?usage: gpu_window.sh GRID MINUTES (GRID: a name of config/grids, or a grid file)}
MINUTES=${2:?usage: gpu_window.sh GRID MINUTES}
ROOT=${OUT:-/tmp/gpu_window}
status=0
OUT=$ROOT/decision bash benchmarks/device_check.sh conv || status=$?
OUT=$ROOT/reference bash benchmarks/reference_run.sh "$GRID" "$MINUTES" || status=$?
echo "gpu window: exit $status (decision: $ROOT/decision/log.txt, reference: $ROOT/reference/log.txt)"
exit "$status"
