#!/usr/bin/env bash
# Write detectron2's wheel, installable on any CPython 3, into DIR and print its path:
#   bash tools/detectron2_wheel.sh DIR [PYTHON]
# detectron2 is not on PyPI under its own name. `sal-detectron2` is a wheel of its main branch,
# tagged cp310 because of a CUDA `_C` extension that pointrend_d2 does not use; its Python code
# runs on 3.10 and later, so the wheel is copied under the py3-none-any tag. Install it with
# --no-deps: its metadata pins numpy<2, which the code pointrend_d2 runs does not need (setup.py
# lists detectron2's runtime requirements instead). PYTHON (default python3) runs pip.
set -euo pipefail
version=0.7.2
dir=${1:?usage: detectron2_wheel.sh DIR [PYTHON]}
python=${2:-python3}
download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
  "sal-detectron2==$version" -d "$download" >&2
mkdir -p "$dir"
wheel="$dir/sal_detectron2-$version-py3-none-any.whl"
cp "$download"/sal_detectron2-"$version"-*.whl "$wheel"
echo "$wheel"
