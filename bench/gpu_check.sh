#!/usr/bin/env bash
# GPU readiness in one short run: on a machine with an NVIDIA GPU and nothing installed
# beyond this repository, install the project with its GPU extra into .venv-gpu, fetch the
# sample slide, then run bench/gpu_check.py (Cellpose-SAM and ResNet-50 in bfloat16 on real
# tiles, cuML on synthetic cells, one `kedro run --env gpu`). Prints tiles/s, crops/s,
# seconds per stage and every error. Without a GPU it says so and exits 0.
#
#   bash bench/gpu_check.sh            # whole check (aim: under 8 minutes, install included)
#   bash bench/gpu_check.sh --quick    # tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
export KEDRO_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 DVC_NO_ANALYTICS=1
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): nothing to check."
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
start=$(date +%s)
VENV=${VENV:-.venv-gpu}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || exit 1
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip || exit 1
"$VENV/bin/python" -m pip install --quiet -e ".[gpu]" || exit 1
echo "install: $(($(date +%s) - start)) s"
"$VENV/bin/python" scripts/get_sample_slide.py data/01_raw/slides || exit 1
"$VENV/bin/python" bench/gpu_check.py --device cuda "$@"
status=$?
echo "gpu_check: $(($(date +%s) - start)) s in all, exit $status"
exit $status
