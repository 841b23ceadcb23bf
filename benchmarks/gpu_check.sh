#!/usr/bin/env bash
# The prepared accelerator check (fast-inference issue). Run on a lent GPU machine from the
# repository root, e.g. with the device tool:
#   bash benchmarks/gpu_check.sh            (writes $OUT/gpu-check.json and paper-*.npz)
# Needs only python3 with torch, numpy, scipy and safetensors (all on the device image);
# the package is used from the working tree, nothing is installed. About 7 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results/gpu}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/gpu_check.py --out "$OUT" --budget "${BUDGET:-420}" "$@"
