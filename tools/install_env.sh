#!/usr/bin/env bash
# Create (or reuse) the pinned CPU environment for pointrend_d2 and print its directory.
#
# The venv lives outside the clone, keyed by a hash of the requirements files, this script and
# tools/detectron2_wheel.sh, so CI and fresh clones reuse it. Override its parent folder with
# POINTREND_D2_ENV_ROOT. It holds the third-party packages only: tools/with_env.sh puts the calling
# clone first on PYTHONPATH, so clones that share the venv never install themselves into it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
key=$(cat "$repo/requirements.txt" "$repo/requirements-dev.txt" "$repo/tools/install_env.sh" \
  "$repo/tools/detectron2_wheel.sh" | sha256sum | cut -c1-16)
root=${POINTREND_D2_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/pointrend_d2}
venv="$root/venv-$key"
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3

if [ ! -f "$venv/.complete" ]; then
  echo "[install_env] building $venv (first run: downloads about 6 GB)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip wheel setuptools >&2
  "$venv/bin/python" -m pip install -q -r "$repo/requirements-dev.txt" >&2
  wheels=$(mktemp -d)
  wheel=$(bash "$repo/tools/detectron2_wheel.sh" "$wheels" "$venv/bin/python")
  "$venv/bin/python" -m pip install -q --no-deps "$wheel" >&2
  rm -rf "$wheels"
  "$venv/bin/python" -c "import torch, torchvision, detectron2, cv2; print('[install_env] torch', torch.__version__, 'detectron2', detectron2.__version__)" >&2
  touch "$venv/.complete"
fi
echo "$venv"
