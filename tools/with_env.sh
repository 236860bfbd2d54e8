#!/usr/bin/env bash
# Run a command inside the pinned pointrend_d2 environment, building it on first use:
#   bash tools/with_env.sh python tools/train_net.py --config-file configs/pointrend_semseg.yaml
# The environment is a venv cached outside the clone (see tools/install_env.sh); this checkout is
# installed into it in editable mode, so `import pointrend_d2` is always this checkout.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$repo/tools/install_env.sh")
# Asked from / so that the current directory cannot shadow the installed package.
installed=$(cd / && "$venv/bin/python" -c "import os, pointrend_d2; print(os.path.dirname(os.path.dirname(pointrend_d2.__file__)))" 2>/dev/null || true)
if [ "$installed" != "$repo" ]; then
  echo "[with_env] pip install -e $repo" >&2
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2
fi
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
cd "$repo"
exec "$@"
