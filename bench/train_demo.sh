#!/usr/bin/env bash
# Retrain the shipped demo model (all stages, phantoms generated on the fly) into OUT_DIR.
#   bash bench/train_demo.sh OUT_DIR [--budget-s 420] [other bench/train_demo.py options]
#   bash bench/train_demo.sh OUT_DIR --smoke          # tiny CPU run that checks the whole script
# OUT_DIR defaults to $OUT (the device machine's output folder). PYTHON selects the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-}}"
if [ -z "$OUT_DIR" ]; then
    echo "usage: bash bench/train_demo.sh OUT_DIR [options]" >&2
    exit 2
fi
[ "$#" -gt 0 ] && shift
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python}" bench/train_demo.py --out "$OUT_DIR" "$@"
