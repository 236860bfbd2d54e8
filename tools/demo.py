#!/usr/bin/env python
"""
Segment images with a trained model, or with an exported one, and write coloured overlays:

    python tools/demo.py --config-file configs/pointrend_semseg.yaml \
        --input 'photos/*.jpg' --output demo_out [--show-points] --opts MODEL.WEIGHTS model.pth
    python tools/demo.py --config-file configs/quickstart/pointrend_instance.yaml \
        --input 'photos/*.jpg' --output demo_out [--show-points] [--confidence-threshold 0.5] \
        --opts MODEL.WEIGHTS model.pth
    python tools/demo.py --exported exported/ --input 'photos/*.jpg' --output demo_out

--input is an image, a folder (its images) or a glob. For every image ``<stem>`` it writes
``<output>/<stem>.png`` and, with --show-points (PointRend models, eager only),
``<output>/<stem>_step<k>.png`` for each subdivision step k. Images that share a stem (x.png and
x.jpg, or a/x.png and b/x.png) are told apart by the rest of their path (x_png, x_jpg; a_x_png,
b_x_png), which the log says. --output must not be the folder of an input image: the outputs
never replace an input, nor each other.

Semantic models (and exported ones): the prediction over the image in the dataset's colours; the
step panels show the points re-predicted at that step over the image, and beside it the
uncertainty map that chose them. Class names and colours come from the metadata of DATASETS.TEST[0]
(or TRAIN[0]), or of the exported folder (tools/export_model.py).

Instance models (MODEL.META_ARCHITECTURE GeneralizedRCNN): the detections with a score of at least
--confidence-threshold (default 0.5; it also sets MODEL.ROI_HEADS.SCORE_THRESH_TEST), drawn by
detectron2's Visualizer (masks, boxes, class names, scores; names from the ``thing_classes`` of
DATASETS.TEST[0], or TRAIN[0]). The step panels (ROI_MASK_HEAD.NAME PointRendInstanceMaskHead)
show each detection's re-predicted points in image coordinates, one colour per detection, and
beside them the masks after that step.
"""

import argparse
import glob
import logging
import os
import re
from collections import defaultdict

import cv2
import numpy as np
import tqdm
from detectron2.config import CfgNode
from detectron2.data import Metadata, MetadataCatalog
from detectron2.utils.logger import setup_logger

from pointrend_d2 import PointRendInstanceMaskHead, PointRendSemanticHead
from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.data.image_io import ImageReader
from pointrend_d2.deploy import ExportedPredictor
from pointrend_d2.deploy.export import class_names_and_colors, dataset_checkpoint_mismatch
from pointrend_d2.predictor import Predictor
from pointrend_d2.visualization import (
    InstanceSubdivisionStep,
    draw_instance_subdivision_step,
    draw_subdivision_step,
    overlay_instances,
    overlay_sem_seg,
    trace_instance_subdivision,
    trace_subdivision,
)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Score below which instance models' detections are not drawn, unless --confidence-threshold.
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
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
        "--confidence-threshold",
        type=float,
        default=None,
        metavar="SCORE",
        help=f"instance models: draw detections scoring at least this "
        f"(default {DEFAULT_CONFIDENCE_THRESHOLD})",
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


def output_stems(paths: list[str], output: str, show_points: bool) -> dict[str, str]:
    """
    The stem of each input image's outputs in the folder ``output``: the image's stem, or for
    images that share one (compared case-insensitively), their paths below their common folder
    with separators and dots as "_" (logged).

    Raises:
        SystemExit: ``output`` is a file, or the folder of an input image (its outputs could
            replace inputs); or two images' outputs would still have one name.
    """
    if os.path.exists(output) and not os.path.isdir(output):
        raise SystemExit(f"--output {output} is a file; it must be a folder (created if missing)")
    output_folder = os.path.realpath(output)
    by_stem = defaultdict(list)
    for path in paths:
        if os.path.realpath(os.path.dirname(path) or ".") == output_folder:
            raise SystemExit(
                f"--output {output} is the folder of the input image {path}: the outputs would "
                "be written among the inputs and could replace them (an input <stem>.png by its "
                "overlay). Choose another --output folder"
            )
        by_stem[os.path.splitext(os.path.basename(path))[0].casefold()].append(path)
    stems = {}
    for same_stem in by_stem.values():
        if len(same_stem) == 1:
            stems[same_stem[0]] = os.path.splitext(os.path.basename(same_stem[0]))[0]
            continue
        folder = os.path.commonpath([os.path.abspath(path) for path in same_stem])
        for path in same_stem:
            stems[path] = re.sub(r"[./\\]", "_", os.path.relpath(os.path.abspath(path), folder))
        logger.warning(
            "Images %s share a stem: their outputs are named %s",
            ", ".join(same_stem),
            ", ".join(f"{stems[path]}.png" for path in same_stem),
        )
    _check_unique_outputs(stems, show_points)
    return stems


def _check_unique_outputs(stems: dict[str, str], show_points: bool) -> None:
    """Raise SystemExit if two images' outputs (``<stem>.png``, ``<stem>_step<k>.png`` with
    ``show_points``) would have one name."""
    owner = {}
    for path, stem in stems.items():
        other = owner.setdefault(stem.casefold(), path)
        if other != path:
            raise SystemExit(
                f"Images {other} and {path} would both be written to {stem}.png: rename one"
            )
    if not show_points:
        return
    for path, stem in stems.items():
        match = re.fullmatch(r"(.*)_step\d+", stem.casefold())
        if match and match.group(1) in owner:
            raise SystemExit(
                f"The --show-points panel {stem}.png of {owner[match.group(1)]} would replace the "
                f"overlay of {path}: rename {path}, or leave out --show-points"
            )


def demo_metadata(class_names: list[str], class_colors: list[list[int]] | None) -> Metadata:
    """Metadata for the overlays; classes without known colours get a fixed random palette."""
    if class_colors is None:
        palette = np.random.default_rng(0).integers(0, 256, (len(class_names), 3))
        class_colors = palette.tolist()
    return Metadata(name="pointrend_d2_demo").set(
        stuff_classes=list(class_names), stuff_colors=class_colors
    )


def is_instance_config(cfg: CfgNode) -> bool:
    """Whether ``cfg`` is an instance (Mask R-CNN) model rather than a semantic one."""
    return cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"


def instance_metadata(cfg: CfgNode) -> Metadata:
    """
    Metadata for drawing detections: ``thing_classes`` (and ``thing_colors`` if any) of the first
    of DATASETS.TEST, DATASETS.TRAIN whose metadata has them (dataset specs registered first),
    else "class 0", "class 1", ...

    Raises:
        ValueError: that dataset's class count differs from MODEL.ROI_HEADS.NUM_CLASSES, which
            the loaded checkpoint fits.
    """
    register_datasets_from_config(cfg)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    fields = {"thing_classes": [f"class {i}" for i in range(num_classes)]}
    for name in (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN):
        metadata = MetadataCatalog.get(name)
        if metadata.get("thing_classes"):
            if len(metadata.thing_classes) != num_classes:
                raise dataset_checkpoint_mismatch(
                    cfg,
                    name,
                    len(metadata.thing_classes),
                    f"MODEL.ROI_HEADS.NUM_CLASSES={num_classes}",
                )
            fields = {"thing_classes": list(metadata.thing_classes)}
            if metadata.get("thing_colors"):
                fields["thing_colors"] = [list(c) for c in metadata.thing_colors]
            break
    return Metadata(name="pointrend_d2_demo").set(**fields)


def build_predictor(args: argparse.Namespace) -> tuple[Predictor | ExportedPredictor, Metadata]:
    """The eager or exported predictor of the command line, and its classes' metadata."""
    if args.exported:
        if args.show_points or args.opts:
            raise SystemExit(
                "--show-points and --opts need the eager model (--config-file), not --exported"
            )
        if args.confidence_threshold is not None:
            raise SystemExit(
                "--confidence-threshold is for instance models; --exported is semantic"
            )
        predictor = ExportedPredictor(args.exported)
        metadata = predictor.metadata
        return predictor, demo_metadata(metadata.class_names, metadata.class_colors)
    cfg = setup_cfg(args.config_file, args.opts)
    if is_instance_config(cfg):
        if args.confidence_threshold is None:
            args.confidence_threshold = DEFAULT_CONFIDENCE_THRESHOLD
        # As detectron2's demo: detections below the threshold are not even given masks.
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    elif args.confidence_threshold is not None:
        raise SystemExit(
            "--confidence-threshold is for instance models (MODEL.META_ARCHITECTURE "
            f"GeneralizedRCNN), not {cfg.MODEL.META_ARCHITECTURE}"
        )
    cfg.freeze()
    predictor = Predictor(cfg)
    if is_instance_config(cfg):
        mask_head = getattr(predictor.model.roi_heads, "mask_head", None)
        if args.show_points and not isinstance(mask_head, PointRendInstanceMaskHead):
            raise SystemExit("--show-points needs ROI_MASK_HEAD.NAME PointRendInstanceMaskHead")
        return predictor, instance_metadata(cfg)
    if args.show_points and not isinstance(predictor.model.sem_seg_head, PointRendSemanticHead):
        raise SystemExit("--show-points needs SEM_SEG_HEAD.NAME PointRendSemanticHead")
    return predictor, demo_metadata(*class_names_and_colors(cfg))


def draw_semantic(
    predictor: Predictor | ExportedPredictor,
    metadata: Metadata,
    path: str,
    rgb: np.ndarray,
    show_points: bool,
) -> list[np.ndarray]:
    """The overlay of a semantic model's prediction, then its step panels if ``show_points``."""
    labels = predictor(path)["sem_seg"].argmax(dim=0).cpu().numpy()
    pictures = [overlay_sem_seg(rgb, labels, metadata)]
    if show_points:
        steps = trace_subdivision(predictor.model, predictor.model_input(path))
        pictures += [draw_subdivision_step(rgb, step, k) for k, step in enumerate(steps, start=1)]
    return pictures


def draw_instances(
    predictor: Predictor,
    metadata: Metadata,
    path: str,
    rgb: np.ndarray,
    show_points: bool,
    confidence_threshold: float,
) -> list[np.ndarray]:
    """
    The overlay of an instance model's detections scoring at least ``confidence_threshold``, then
    its step panels (of the same detections) if ``show_points``.
    """
    if not show_points:
        instances = predictor(path)["instances"].to("cpu")
        keep = instances.scores >= confidence_threshold
        return [overlay_instances(rgb, instances[keep], metadata)]
    # The traced run is the model's inference (tested): one run gives detections and steps.
    instances, steps = trace_instance_subdivision(predictor.model, predictor.model_input(path))
    keep = instances.scores >= confidence_threshold
    pictures = [overlay_instances(rgb, instances[keep], metadata)]
    for index, step in enumerate(steps, start=1):
        kept = InstanceSubdivisionStep(step.points[keep.numpy()], step.masks[keep], step.resolution)
        pictures.append(draw_instance_subdivision_step(rgb, kept, index))
    return pictures


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    paths = list_inputs(args.input)
    stems = output_stems(paths, args.output, args.show_points)
    predictor, metadata = build_predictor(args)
    os.makedirs(args.output, exist_ok=True)

    instance = isinstance(predictor, Predictor) and is_instance_config(predictor.cfg)
    read_rgb = ImageReader("RGB")  # as the predictors read it: the same pixels, oriented alike
    num_written = 0
    for path in tqdm.tqdm(paths, disable=len(paths) == 1, unit="image"):
        rgb = read_rgb(path)
        if instance:
            pictures = draw_instances(
                predictor, metadata, path, rgb, args.show_points, args.confidence_threshold
            )
        else:
            pictures = draw_semantic(predictor, metadata, path, rgb, args.show_points)
        write_png(os.path.join(args.output, f"{stems[path]}.png"), pictures[0])
        for index, panel in enumerate(pictures[1:], start=1):
            write_png(os.path.join(args.output, f"{stems[path]}_step{index}.png"), panel)
        num_written += len(pictures)
    logger.info("Wrote %d PNG(s) for %d image(s) to %s", num_written, len(paths), args.output)


def write_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"Could not write {path}")


if __name__ == "__main__":
    main()
