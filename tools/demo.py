#!/usr/bin/env python
"""
Segment images with a trained model and write coloured overlays:

    python tools/demo.py --config-file configs/pointrend_semseg.yaml \
        --input 'photos/*.jpg' --output demo_out [--show-points] --opts MODEL.WEIGHTS model.pth

--input is an image, a folder (its images) or a glob. For every image ``<stem>`` it writes
``<output>/<stem>.png`` (the prediction over the image in the dataset's colours) and, with
--show-points (PointRend models only), ``<output>/<stem>_step<k>.png`` for each subdivision step
k: the points re-predicted at that step over the image, and beside it the uncertainty map that
chose them. Class names and colours come from the metadata of DATASETS.TEST[0] (or TRAIN[0]).
"""

import argparse
import glob
import logging
import os

import cv2
import numpy as np
import torch
import tqdm
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from pointrend_d2 import PointRendSemanticHead, add_pointrend_config
from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.visualization import draw_subdivision_step, overlay_sem_seg, trace_subdivision

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("pointrend_d2.demo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, help="an image, a folder or a glob")
    parser.add_argument("--output", required=True, help="folder for the PNGs")
    parser.add_argument(
        "--show-points", action="store_true", help="also write one panel per subdivision step"
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser.parse_args(argv)


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


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


def demo_metadata(cfg: CfgNode):
    """Metadata with stuff_classes and stuff_colors, from the config's datasets if possible."""
    for name in (*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN):
        metadata = MetadataCatalog.get(name)
        if metadata.get("stuff_classes"):
            return metadata
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    metadata = MetadataCatalog.get("__pointrend_d2_demo_unknown_dataset")
    if not metadata.get("stuff_classes"):
        palette = np.random.default_rng(0).integers(0, 256, (num_classes, 3))
        metadata.set(
            stuff_classes=[f"class {i}" for i in range(num_classes)],
            stuff_colors=palette.tolist(),
        )
    return metadata


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    cfg = setup_cfg(args)
    register_datasets_from_config(cfg)
    metadata = demo_metadata(cfg)
    model = build_model(cfg).eval()
    SafeCheckpointer(model, allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE).load(
        cfg.MODEL.WEIGHTS
    )
    if args.show_points and not isinstance(model.sem_seg_head, PointRendSemanticHead):
        raise SystemExit("--show-points needs SEM_SEG_HEAD.NAME PointRendSemanticHead")
    resize = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )
    os.makedirs(args.output, exist_ok=True)

    paths = list_inputs(args.input)
    for path in tqdm.tqdm(paths, disable=len(paths) == 1, unit="image"):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"Could not read image {path}")
        rgb = bgr[:, :, ::-1]
        height, width = rgb.shape[:2]
        model_image = rgb if cfg.INPUT.FORMAT == "RGB" else bgr
        resized = resize.get_transform(model_image).apply_image(model_image)
        batched_input = {
            "image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float(),
            "height": height,
            "width": width,
        }
        with torch.no_grad():
            labels = model([batched_input])[0]["sem_seg"].argmax(dim=0).cpu().numpy()
        stem = os.path.splitext(os.path.basename(path))[0]
        write_png(os.path.join(args.output, f"{stem}.png"), overlay_sem_seg(rgb, labels, metadata))
        if args.show_points:
            for index, step in enumerate(trace_subdivision(model, batched_input), start=1):
                panel = draw_subdivision_step(rgb, step, index)
                write_png(os.path.join(args.output, f"{stem}_step{index}.png"), panel)
    logger.info("Wrote %d image(s) to %s", len(paths), args.output)


def write_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"Could not write {path}")


if __name__ == "__main__":
    main()
