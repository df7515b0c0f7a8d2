#!/usr/bin/env bash
# `make gpu-wheels-check`: the GPU report, tiny model on CPU, as the GPU machine would run it.
#
# A fresh Python 3.12 virtualenv gets only the GPU machine's own packages (bench/gpu_report/device-packages.txt,
# from PyPI), then .gpu-wheels/ is installed the way the device command installs it (--no-index
# --no-deps --target), and the report runs in a network namespace of its own with only loopback up:
# an import missing from the folder, or anything reaching for the network, fails here first.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY312="${PY312:-$(command -v python3.12 2>/dev/null || true)}"
[ -x "$PY312" ] && "$PY312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  || PY312="$(ls -d "$HOME"/.pyenv/versions/3.12.*/bin/python3.12 2>/dev/null | tail -1)"
[ -n "$PY312" ] || { echo "no python3.12 found (set PY312=/path/to/python3.12)"; exit 1; }
VENV="${GPU_CHECK_VENV:-$ROOT/.cache/gpu-check-venv}"
SITE="$(mktemp -d /tmp/gpu-check-site.XXXXXX)"
OUT="${GPU_CHECK_OUT:-$ROOT/.cache/gpu-check}"
trap 'rm -rf "$SITE"' EXIT
if [ ! -f "$VENV/.device-packages" ] || ! cmp -s "$VENV/.device-packages" "$ROOT/bench/gpu_report/device-packages.txt"; then
  rm -rf "$VENV"
  "$PY312" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q ${TORCH_WHEELS:+--find-links "$TORCH_WHEELS"} -r "$ROOT/bench/gpu_report/device-packages.txt"
  cp "$ROOT/bench/gpu_report/device-packages.txt" "$VENV/.device-packages"
fi
# Exactly the device command's install step.
"$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" "$ROOT"/.gpu-wheels/*.whl
mkdir -p "$OUT"
cd "$ROOT"
# No network but loopback (Ray and the closed loop talk over 127.0.0.1), as on the GPU machine.
unshare -n bash -c "ip link set lo up && PYTHONPATH='$SITE' HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 \
  '$VENV/bin/python' -m bench.gpu_report.report --out '$OUT' $*"
