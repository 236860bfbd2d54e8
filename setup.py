"""Install pointrend_d2 with ``pip install -e .``; install detectron2 first (see README)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="pointrend_d2",
    version="0.1.0",
    description="PointRend semantic segmentation (image segmentation as rendering) for detectron2",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pointrend_d2", "pointrend_d2.*"]),
    python_requires=">=3.10",
    # detectron2 is not on PyPI under its own name: install it first (README, "Install").
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "fvcore>=0.1.5",
        "iopath>=0.1.7",
        "opencv-python-headless>=4.5",
        "pycocotools>=2.0.2",
        "numpy<2",
        "Pillow",
        "tqdm",
    ],
    extras_require={"cityscapes": ["cityscapesscripts"], "dev": ["pytest", "hypothesis"]},
)
