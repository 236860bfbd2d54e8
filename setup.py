"""
Install pointrend_d2 into your own environment after PyTorch and detectron2 (README, "Install"):

    pip install -e .                 # the package and its runtime requirements
    pip install -e ".[dev]"          # and what the tests and linters need

Extras: ``cityscapes`` (official Cityscapes evaluation), ``export`` (ONNX export and runtime),
``dev`` (both, plus the test, lint and documentation tools). requirements.txt and
requirements-dev.txt pin the same packages for the environment that tools/with_env.sh builds.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """``__version__`` of pointrend_d2/__init__.py, read as text: importing the package would
    import torch and detectron2, which need not be installed when pip reads this file."""
    source = (HERE / "pointrend_d2" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__ = "([^"]+)"$', source, re.MULTILINE).group(1)


CITYSCAPES = ["cityscapesscripts"]
# torch.onnx's exporter needs onnxscript; onnxruntime runs the exported model.
EXPORT = ["onnx", "onnxscript", "onnxruntime"]
# The documentation site (mkdocs.yml): `mkdocs build --strict` runs in CI.
DOCS = ["mkdocs", "mkdocs-material", "mkdocstrings[python]", "mkdocstrings-python"]

setup(
    name="pointrend_d2",
    version=read_version(),
    description=(
        "PointRend semantic and instance segmentation (image segmentation as rendering) "
        "for detectron2"
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pointrend_d2", "pointrend_d2.*"]),
    python_requires=">=3.10",
    # What pointrend_d2 and its tools import. detectron2 is not on PyPI under its own name, so it
    # is not listed: install it first (README, "Install"); it brings its own requirements.
    install_requires=[
        "torch>=2.0",
        # detectron2 imports torchvision but does not declare it.
        "torchvision",
        "fvcore>=0.1.5",
        # detectron2's SemSegEvaluator, which our evaluators build on, reads the labels with
        # np.array(..., copy=False), which numpy 2 refuses ("Unable to avoid copy").
        "numpy<2",
        "opencv-python-headless>=4.5",
        "Pillow",
        # COCO json of the instance datasets and Boundary AP (pointrend_d2.data.coco_json,
        # pointrend_d2.evaluation.boundary_ap).
        "pycocotools",
        # Folder dataset spec files (pointrend_d2.data.folder).
        "pyyaml",
        # SafeCheckpointer's table of the tensors a checkpoint leaves unloaded.
        "tabulate",
        "tqdm",
    ],
    extras_require={
        "cityscapes": CITYSCAPES,
        "export": EXPORT,
        "dev": ["pytest", "hypothesis", "black", "isort", "ruff", *CITYSCAPES, *EXPORT, *DOCS],
    },
)
