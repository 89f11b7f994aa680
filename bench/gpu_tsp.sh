#!/usr/bin/env bash
# TSP decode on one CUDA GPU (H100/H200): 512x512x512 and 512x512x768, time and peak memory, plus an
# accuracy check; at most 8 minutes. Run from the repository root:
#   bash bench/gpu_tsp.sh [extra arguments for bench/gpu_tsp.py]
# The GPU machine has torch but not MONAI: wheels carried in .whl/ are installed to /tmp/site first when
# MONAI is missing. The summary table goes to stdout and to $OUT/gpu_tsp.txt (and .json) when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import monai" >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # less fragmentation between segment sizes
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 460 python3 bench/gpu_tsp.py --time-limit 300 --no-offload-variant "$@"
