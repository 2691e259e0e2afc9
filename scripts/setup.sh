#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine: headless OpenGL system packages,
# a virtual environment at .venv, torch 2.13.0 first, then gen3d with its dev extra; it ends by
# saying which torch build it installed, what `device: auto` will use, and the EGL devices.
# torch comes from pip's configured index (whatever build that serves); TORCH_INDEX_URL picks
# one, e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (CPU) or .../whl/cu128 (CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
GL_PKGS="libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root or sudo to run: $*" >&2; exit 1; fi
}

missing=""
for p in $GL_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then missing="$missing python3-venv"; fi
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq $missing
  else
    echo "setup: please install the headless OpenGL libraries ($GL_PKGS) with your package manager" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
stamp=.venv/.gen3d-installed
INDEX=${TORCH_INDEX_URL:-}
want=$( (cat pyproject.toml; if [ -n "$INDEX" ]; then echo "$INDEX"; fi) | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  $VPY -m pip install -q --upgrade pip
  # torch pinned first, so that gen3d's looser requirement does not pick another version
  if [ -n "$INDEX" ]; then  # a build asked for: replace whatever build is there
    $VPY -m pip install -q --force-reinstall torch==2.13.0 --index-url "$INDEX"
  else
    $VPY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
      || $VPY -m pip install -q torch==2.13.0
  fi
  $VPY -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
echo "setup: done (.venv ready)"
# what was installed and what it can use: the torch build, the learner's GPU, the EGL devices
$VPY scripts/machine_report.py || echo "setup: no usable OpenGL device; the renderer will not start (see above)" >&2
