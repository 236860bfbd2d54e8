"""
Install pointrend_d2 into your own environment after PyTorch and detectron2 (README, "Install"):

    pip install -e .                 # the package and its runtime requirements
    pip install -e ".[dev]"          # and what the tests and linters need

Without a package index: tools/make_wheelhouse.sh writes the wheels to install from a folder.

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


# cityscapesscripts 2.3.0 (the latest) calls np.in1d, which numpy 2.4 removed; its instance
# evaluation (evaluator_type cityscapes_instance) needs numpy 1, as it dumps numpy 2's integer
# scalars to json.
CITYSCAPES = ["cityscapesscripts", "numpy<2.4"]
# torch.onnx's exporter needs onnxscript; onnxruntime runs the exported model. torch 2.11's
# torch.export refuses the model's dynamic image size (ConstraintViolationError); 2.13 and 2.14.1
# export it (checked on the CPU).
EXPORT = ["torch>=2.13", "onnx", "onnxscript", "onnxruntime"]
# The documentation site (mkdocs.yml): `mkdocs build --strict` runs in CI.
DOCS = ["mkdocs", "mkdocs-material", "mkdocstrings[python]", "mkdocstrings-python"]
# detectron2's runtime requirements that the list below does not already hold. Its wheel is
# installed with --no-deps (tools/detectron2_wheel.sh): its metadata pins numpy<2, which the code
# pointrend_d2 runs does not need, and leaves out fvcore and iopath, which it imports.
DETECTRON2 = [
    "iopath>=0.1.7",
    "matplotlib",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "cloudpickle",
    "tensorboard",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    # detectron2's LazyConfig formats configs with black.
    "black",
    "packaging",
]

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
    # What pointrend_d2, its tools and detectron2 import. detectron2 is not on PyPI under its own
    # name, so it is not listed: install it first (README, "Install").
    install_requires=[
        # Checked on the CPU (models, data, evaluation) with torch 2.11.0 (as on the GPU
        # machines, Python 3.12, numpy 2.4), 2.13.0 and 2.14.1 (the pinned environment).
        "torch>=2.11",
        # detectron2 imports torchvision but does not declare it.
        "torchvision",
        "fvcore>=0.1.5",
        # numpy 1 and 2 (pointrend_d2.evaluation reads labels without detectron2's copy=False).
        "numpy",
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
        *DETECTRON2,
    ],
    extras_require={
        "cityscapes": CITYSCAPES,
        "export": EXPORT,
        "dev": ["pytest", "hypothesis", "black", "isort", "ruff", *CITYSCAPES, *EXPORT, *DOCS],
    },
)
