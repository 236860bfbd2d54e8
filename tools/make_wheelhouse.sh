#!/usr/bin/env bash
# Write into DIR every wheel that pointrend_d2 needs beside an installed torch and torchvision,
# for a machine that reaches no package index (run this where pip reaches PyPI):
#
#   bash tools/make_wheelhouse.sh PYTHON_VERSION PLATFORM DIR
#   bash tools/make_wheelhouse.sh 3.12 manylinux2014_x86_64 wheelhouse
#
# DIR gets: pointrend_d2's wheel built from this checkout; detectron2's, re-tagged py3-none-any
# as tools/install_env.sh installs it (tools/detectron2_wheel.sh); wheels built here for the
# requirements that PyPI has as source only (fvcore, antlr4-python3-runtime: pure Python); and
# the wheels for PYTHON_VERSION and PLATFORM of everything else that setup.py requires, torch and
# torchvision excepted. Packages the target already has (numpy, opencv, ...) are installed from
# it only where its version does not satisfy setup.py. On the target, with its python:
#
#   python -m pip install --no-index --find-links DIR --no-deps sal-detectron2
#   python -m pip install --no-index --find-links DIR pointrend_d2
#
# PYTHON (default python3) runs pip here; it need not be the target's version.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: bash tools/make_wheelhouse.sh PYTHON_VERSION PLATFORM DIR" >&2
  echo "  e.g. bash tools/make_wheelhouse.sh 3.12 manylinux2014_x86_64 wheelhouse" >&2
  exit 2
fi
python_version=$1 platform=$2 dir=$3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
  echo "make_wheelhouse: $dir exists and is not empty; give a new folder (nothing is overwritten)" >&2
  exit 2
fi
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "[make_wheelhouse] pointrend_d2 from $repo" >&2
# Built from a copy of the checkout's files (tracked and untracked, not ignored), so that the
# build leaves no build/ or *.egg-info in the checkout.
mkdir "$work/source"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
  | tar -C "$repo" --null -T - -cf - | tar -C "$work/source" -xf -
"$python" -m pip wheel -q --no-deps -w "$dir" "$work/source" >&2

echo "[make_wheelhouse] detectron2" >&2
bash "$repo/tools/detectron2_wheel.sh" "$dir" "$python" >/dev/null

# Source-only on PyPI, pure Python: one wheel fits every target. antlr4-python3-runtime 4.9 is
# the version omegaconf 2.1-2.3 and hydra-core 1.1-1.3 require.
echo "[make_wheelhouse] wheels of the source-only requirements" >&2
"$python" -m pip wheel -q --no-deps -w "$dir" "fvcore>=0.1.5" "antlr4-python3-runtime==4.9.*" >&2

# setup.py's requirements, as the built wheel declares them, without torch and torchvision
# (the target's own) and without the extras.
"$python" - "$dir"/pointrend_d2-*.whl >"$work/requirements.txt" <<'EOF'
import re
import sys
import zipfile
from email.parser import Parser

with zipfile.ZipFile(sys.argv[1]) as wheel:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(name).decode())
for requirement in metadata.get_all("Requires-Dist") or []:
    project = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
    if "extra ==" not in requirement and project not in ("torch", "torchvision"):
        print(requirement)
EOF
echo "[make_wheelhouse] wheels for Python $python_version on $platform:" \
  "$(tr '\n' ' ' <"$work/requirements.txt")" >&2
"$python" -m pip download -q --only-binary=:all: --python-version "$python_version" \
  --platform "$platform" --find-links "$dir" -d "$dir" -r "$work/requirements.txt" >&2
echo "[make_wheelhouse] $(ls "$dir" | wc -l) wheels in $dir" >&2
