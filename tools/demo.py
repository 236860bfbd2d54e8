#!/usr/bin/env python
"""
Segment images with a trained model, or with an exported one, and write coloured overlays:

    python tools/demo.py --config-file configs/pointrend_semseg.yaml \
        --input 'photos/*.jpg' --output demo_out [--show-points] --opts MODEL.WEIGHTS model.pth
    python tools/demo.py --exported exported/ --input 'photos/*.jpg' --output demo_out

--input is an image, a folder (its images) or a glob. For every image ``<stem>`` it writes
``<output>/<stem>.png`` (the prediction over the image in the dataset's colours) and, with
--show-points (PointRend models, eager only), ``<output>/<stem>_step<k>.png`` for each
subdivision step k: the points re-predicted at that step over the image, and beside it the
uncertainty map that chose them. Class names and colours come from the metadata of
DATASETS.TEST[0] (or TRAIN[0]), or of the exported folder (tools/export_model.py).
"""

import argparse
import glob
import logging
import os

import cv2
import numpy as np
import tqdm
from detectron2.data import Metadata
from detectron2.utils.logger import setup_logger

from pointrend_d2 import PointRendSemanticHead
from pointrend_d2.config import setup_cfg
from pointrend_d2.data.mapper import read_image_file
from pointrend_d2.deploy import ExportedPredictor
from pointrend_d2.export import class_names_and_colors
from pointrend_d2.predictor import Predictor
from pointrend_d2.visualization import draw_subdivision_step, overlay_sem_seg, trace_subdivision

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("pointrend_d2.demo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE", help="the eager model's config")
    model.add_argument(
        "--exported", metavar="DIR", help="an exported model's folder (tools/export_model.py)"
    )
    parser.add_argument("--input", required=True, help="an image, a folder or a glob")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument(
        "--show-points", action="store_true", help="also write one panel per subdivision step"
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser.parse_args(argv)


def list_inputs(pattern: str) -> list[str]:
    """The image files named by ``pattern``: one file, the images in a folder, or a glob."""
    if os.path.isdir(pattern):
        paths = [os.path.join(pattern, name) for name in os.listdir(pattern)]
    elif os.path.isfile(pattern):
        return [pattern]
    else:
        paths = glob.glob(os.path.expanduser(pattern))
    paths = sorted(p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        raise FileNotFoundError(f"No images found for --input {pattern!r}")
    return paths


def demo_metadata(class_names: list[str], class_colors: list[list[int]] | None) -> Metadata:
    """Metadata for the overlays; classes without known colours get a fixed random palette."""
    if class_colors is None:
        palette = np.random.default_rng(0).integers(0, 256, (len(class_names), 3))
        class_colors = palette.tolist()
    return Metadata(name="pointrend_d2_demo").set(
        stuff_classes=list(class_names), stuff_colors=class_colors
    )


def build_predictor(args: argparse.Namespace) -> tuple[Predictor | ExportedPredictor, Metadata]:
    """The eager or exported predictor of the command line, and its classes' metadata."""
    if args.exported:
        if args.show_points or args.opts:
            raise SystemExit(
                "--show-points and --opts need the eager model (--config-file), not --exported"
            )
        predictor = ExportedPredictor(args.exported)
        metadata = predictor.metadata
        return predictor, demo_metadata(metadata.class_names, metadata.class_colors)
    cfg = setup_cfg(args.config_file, args.opts)
    cfg.freeze()
    predictor = Predictor(cfg)
    if args.show_points and not isinstance(predictor.model.sem_seg_head, PointRendSemanticHead):
        raise SystemExit("--show-points needs SEM_SEG_HEAD.NAME PointRendSemanticHead")
    return predictor, demo_metadata(*class_names_and_colors(cfg))


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    predictor, metadata = build_predictor(args)
    os.makedirs(args.output, exist_ok=True)

    paths = list_inputs(args.input)
    for path in tqdm.tqdm(paths, disable=len(paths) == 1, unit="image"):
        rgb = np.asarray(read_image_file(path, "Image").convert("RGB"))
        labels = predictor(path)["sem_seg"].argmax(dim=0).cpu().numpy()
        stem = os.path.splitext(os.path.basename(path))[0]
        write_png(os.path.join(args.output, f"{stem}.png"), overlay_sem_seg(rgb, labels, metadata))
        if args.show_points:
            steps = trace_subdivision(predictor.model, predictor.model_input(path))
            for index, step in enumerate(steps, start=1):
                panel = draw_subdivision_step(rgb, step, index)
                write_png(os.path.join(args.output, f"{stem}_step{index}.png"), panel)
    logger.info("Wrote %d image(s) to %s", len(paths), args.output)


def write_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"Could not write {path}")


if __name__ == "__main__":
    main()
