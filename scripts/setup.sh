#!/usr/bin/env bash
# Set up MAISISynth in ./.venv on a fresh Debian/Ubuntu machine.
#   bash scripts/setup.sh          engine + demo model (CPU torch)
#   bash scripts/setup.sh --test   + everything the test suite needs (Debian packages, slicer-core, Qt, DICOM tools)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

SYSTEM_PACKAGES=(xvfb xauth libgl1 libgl1-mesa-dri libegl1 libegl-mesa0 libxkbcommon-x11-0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1
  libxcb-xfixes0 libfontconfig1 libdbus-1-3 dicom3tools dcmtk dcm2niix orthanc orthanc-dicomweb)

if [ "$with_tests" = 1 ]; then
  missing=()
  for p in "${SYSTEM_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "error: the tests need these Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
      exit 2
    fi
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A CPU build of torch is enough for the demo model and the tests; GPU users install their CUDA build first.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
if [ "$with_tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[test,dicom,train,desktop,server]"
else
  .venv/bin/python -m pip install -q -e ".[dicom]"
fi
echo "MAISISynth is set up in .venv ($(.venv/bin/maisi --version))"
