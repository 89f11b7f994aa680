#!/usr/bin/env bash
# The GPU measurements of the project in one prepared run on a lent GPU machine (H100/H200).
#   bash bench/gpu_session.sh bench        TSP decode at 512^3 and 512x512x768, rflow-ct batch throughput at 256^3
#   bash bench/gpu_session.sh train [S]    retrain the demo model within S seconds (default 300)
# The machine has torch but not MONAI/nibabel: wheels carried in .whl/ are installed first. Results go
# to $OUT (at most 8 files come back): gpu_tsp.txt/json, batch_gpu.txt, demo-model.tar.part-*, logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1 || true
export PYTHONPATH=/tmp/site:$PWD:$PWD/MAISISynth PYTHONUNBUFFERED=1 MAISI_NO_PROGRESS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case "${1:-bench}" in
  bench)
    timeout 200 python3 bench/gpu_tsp.py 2>&1 | tee "$OUT/gpu_tsp.log"
    timeout 150 python3 bench/batch.py --model rflow-ct --size 256 256 256 --device cuda --samples 3 \
      --cache-dir /tmp/rflow-random 2>&1 | tee "$OUT/batch_gpu.txt"
    ;;
  train)
    budget=${2:-300}
    timeout $((budget + 150)) python3 bench/train_demo.py --out /tmp/demo-model --budget-s "$budget" 2>&1 | tail -n 200 > "$OUT/train.log"
    tail -n 40 "$OUT/train.log"
    tar -C /tmp -cf /tmp/demo-model.tar demo-model && split -b 15M /tmp/demo-model.tar "$OUT/demo-model.tar.part-"
    ls -la /tmp/demo-model "$OUT"
    ;;
esac
