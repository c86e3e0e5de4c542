#!/usr/bin/env bash
# One idempotent setup for `make demo`, `make test` and CI: system libraries (apt, when run as root on
# Debian/Ubuntu), a virtual environment (.venv), CPU torch first (so nothing pulls a CUDA build),
# then the project with every CPU extra at the pins of requirements-ci.txt. A second run reinstalls
# nothing that did not change: each step leaves a stamp holding the hash of what it installed from.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}      # a GPU machine: TORCH_SPEC=torch (CUDA build), or skip with TORCH_SPEC=
APT_PACKAGES="libusb-1.0-0 libgomp1 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglib2.0-0 libosmesa6 chromium"

say() { echo "[setup] $*" >&2; }

# 1. System libraries: pyrealsense2 and open3d (libusb, OpenMP), headless MuJoCo (Mesa EGL/OSMesa), Chromium (page tests).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    say "apt: installing $(echo $missing)"
    (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null) \
      || say "apt step failed; continuing (MuJoCo rendering, RealSense or page tests may be skipped)"
  fi
elif command -v apt-get >/dev/null 2>&1; then
  for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || say "note: apt package $p is missing (sudo apt-get install $p)"; done
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV" || { say "python3 -m venv failed: on Debian/Ubuntu, apt-get install python3-venv"; exit 1; }
fi
PIP="$VENV/bin/python -m pip"

stamp_ok() { [ -f "$VENV/.stamp-$1" ] && [ "$(cat "$VENV/.stamp-$1")" = "$2" ]; }
stamp() { echo "$2" > "$VENV/.stamp-$1"; }

# 3. pip itself and CPU torch (before anything that depends on torch).
if ! stamp_ok torch "$TORCH_SPEC"; then
  $PIP install -q --upgrade pip
  if [ -n "$TORCH_SPEC" ]; then say "pip: $TORCH_SPEC"; $PIP install -q "$TORCH_SPEC"; fi
  stamp torch "$TORCH_SPEC"
fi

# 4. The project (editable) with every CPU extra, at CI's pins.
inputs=$(cat setup.py package.xml requirements-ci.txt | sha256sum | cut -d' ' -f1)
if ! stamp_ok project "$inputs"; then
  say "pip: requirements-ci.txt and -e .[all-cpu]"
  $PIP install -q -r requirements-ci.txt
  $PIP install -q -e ".[all-cpu]"
  stamp project "$inputs"
else
  say "up to date ($VENV)"
fi
