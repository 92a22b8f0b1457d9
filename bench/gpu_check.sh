#!/usr/bin/env bash
# The prepared GPU check: one go, at most ~8 minutes, results as JSON in $OUT (or $1).
# Prepare first, here: bash bench/gpu_prepare.sh; then, on the device (carry .gpu):
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu-check-out}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if [ -d .gpu/whl ] && ls .gpu/whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/nvidia-smi.csv" 2>&1 || true
timeout 470 "$PY" bench/gpu_check.py --out "$OUT_DIR" --budget 450 "${@:2}" 2>&1 | tee "$OUT_DIR/gpu_check.log"
