#!/usr/bin/env bash
# Run a command inside the pinned pointrend_d2 environment, building it on first use:
#   bash tools/with_env.sh python tools/train_net.py --config-file configs/pointrend_semseg.yaml
# The environment is a venv of third-party packages cached outside the clone and shared by every
# clone (see tools/install_env.sh). This checkout is not installed into it: it is put first on
# PYTHONPATH, so `import pointrend_d2` is always this checkout's code, and two clones that use the
# venv at the same time never switch the package under each other.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(bash "$repo/tools/install_env.sh")
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo"
exec "$@"
