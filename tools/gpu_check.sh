#!/usr/bin/env bash
# The GPU check of issue 17, on a machine with one GPU and its own torch (see tools/gpu_check.py
# for the legs and what each writes):
#
#   bash tools/gpu_check.sh OUT [--wheelhouse DIR] [--dry-run]
#
# --wheelhouse DIR first installs pointrend_d2's requirements from a folder that
# tools/make_wheelhouse.sh wrote (no package index needed), with the two commands the docs give;
# its output goes to OUT/install.log. Then tools/gpu_check.py runs the benchmarks and the
# quickstarts from this checkout, writing every result to OUT as it goes. --dry-run: the same
# legs on the CPU at tiny sizes (tests/tools/test_gpu_check.py). PYTHON (default python3) is the
# python with torch.
set -euo pipefail
usage="usage: bash tools/gpu_check.sh OUT [--wheelhouse DIR] [--dry-run]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
out="" wheelhouse="" check_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --wheelhouse) wheelhouse=${2:?$usage}; shift 2 ;;
    --dry-run) check_args+=(--dry-run); shift ;;
    -*) echo "$usage" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "$usage" >&2; exit 2; }; out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "$usage" >&2; exit 2; }
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "gpu_check: $out is not empty; give a new folder (results are never overwritten)" >&2
  exit 2
fi
mkdir -p "$out"
if [ -n "$wheelhouse" ]; then
  if ! ls "$wheelhouse"/pointrend_d2-*.whl "$wheelhouse"/sal_detectron2-*-py3-none-any.whl \
    >/dev/null 2>&1; then
    echo "gpu_check: --wheelhouse $wheelhouse holds no pointrend_d2 and detectron2 wheels;" \
      "write it with tools/make_wheelhouse.sh" >&2
    exit 2
  fi
  echo "[gpu_check] installing from $wheelhouse (log: $out/install.log)"
  {
    "$python" -m pip install --no-index --find-links "$wheelhouse" --no-deps sal-detectron2
    "$python" -m pip install --no-index --find-links "$wheelhouse" pointrend_d2
  } >"$out/install.log" 2>&1
fi
# This checkout's code first, as tools/with_env.sh does (an installed pointrend_d2 is shadowed).
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$repo/tools/gpu_check.py" "$out" ${check_args[@]+"${check_args[@]}"}
