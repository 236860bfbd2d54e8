#!/usr/bin/env python
"""
PointRend against a baseline, side by side on crops around ground-truth boundaries where the two
predictions disagree most; writes one figure (PNG):

    python tools/compare.py \
        --pointrend configs/pointrend_semseg.yaml output/pointrend_semseg/model_final.pth \
        --baseline configs/quickstart/semantic_fpn_semseg.yaml \
            output/semantic_fpn_semseg/model_final.pth \
        --output docs/pointrend_vs_baseline.png

Each row is one crop: the image, the ground truth, the baseline, PointRend (labels in the
dataset's colours over a faint copy of the image, ignore in black). Each prediction is captioned
with its accuracy on the crop's ground-truth boundary pixels (within 3 px of a label change).
Crops come from the dataset's images (default: DATASETS.TEST[0] of the PointRend config).
"""

import argparse
import logging
from typing import NamedTuple

import cv2
import numpy as np
import tqdm
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.data.image_io import ImageReader
from pointrend_d2.evaluation import boundary_band, read_label_map
from pointrend_d2.predictor import Predictor
from pointrend_d2.visualization import colorize_labels

# Boundary pixels for choosing crops and for the captions: within this distance of a label change.
BOUNDARY_DISTANCE = 3
logger = logging.getLogger("pointrend_d2.compare")


class Crop(NamedTuple):
    score: int  # GT-boundary pixels where the two predictions disagree
    image_index: int
    top: int
    left: int


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("pointrend", "baseline"):
        parser.add_argument(
            f"--{name}", nargs=2, required=True, metavar=("CONFIG", "WEIGHTS"), help=f"{name} model"
        )
    parser.add_argument("--output", required=True, help="the figure, a .png file")
    parser.add_argument("--dataset", help="dataset name (default: DATASETS.TEST[0])")
    parser.add_argument("--max-images", type=int, default=12, help="images searched for crops")
    parser.add_argument("--num-crops", type=int, default=4, help="rows of the figure")
    parser.add_argument("--crop-size", type=int, default=96, help="crop side in image pixels")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour zoom of crops")
    return parser.parse_args(argv)


def load_predictor(config_file: str, weights: str) -> tuple[CfgNode, Predictor]:
    cfg = setup_cfg(config_file, ["MODEL.WEIGHTS", weights])
    cfg.freeze()
    register_datasets_from_config(cfg)
    return cfg, Predictor(cfg)


def best_crops(
    disagreement: np.ndarray, crop_size: int, image_index: int, count: int
) -> list[Crop]:
    """
    Up to ``count`` non-overlapping crop windows with the most disagreement pixels.

    Args:
        disagreement: (H, W) bool map of the pixels to cover.
        crop_size: window side, at most min(H, W).
        image_index: stored in the returned crops.
    """
    integral = cv2.integral(disagreement.astype(np.uint8))  # (H + 1, W + 1)
    # Pixel count of every window, indexed by its top-left corner.
    sums = (
        integral[crop_size:, crop_size:]
        - integral[:-crop_size, crop_size:]
        - integral[crop_size:, :-crop_size]
        + integral[:-crop_size, :-crop_size]
    )
    crops = []
    for _ in range(count):
        top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
        if sums[top, left] <= 0:
            break
        crops.append(Crop(int(sums[top, left]), image_index, int(top), int(left)))
        # No later window may overlap this one.
        sums[
            max(top - crop_size + 1, 0) : top + crop_size,
            max(left - crop_size + 1, 0) : left + crop_size,
        ] = -1
    return crops


def caption(tile: np.ndarray, text: str) -> None:
    """Writes ``text`` in the top-left corner of ``tile`` (in place), white on a dark outline."""
    for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(tile, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, thickness)


def figure_row(sample, crop: Crop, crop_size: int, scale: int, colors) -> np.ndarray:
    """
    One row of the figure: image, ground truth, baseline, PointRend at ``crop``, zoomed by
    ``scale``; predictions captioned with their accuracy on the crop's ground-truth boundary.

    Args:
        sample: (RGB image, GT labels, [baseline labels, PointRend labels], GT boundary mask).
    """
    image, gt, predictions, gt_boundary = sample
    window = (slice(crop.top, crop.top + crop_size), slice(crop.left, crop.left + crop_size))
    faint_image = image[window].astype(np.float32) * 0.25
    tiles = [np.ascontiguousarray(image[window])]
    for labels in (gt, *predictions):
        tiles.append(
            (colorize_labels(labels[window], colors) * 0.75 + faint_image).astype(np.uint8)
        )
    tiles = [
        cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for tile in tiles
    ]
    boundary = gt_boundary[window]
    for tile, labels in zip(tiles[2:], predictions, strict=True):
        accuracy = (labels[window] == gt[window])[boundary].mean()
        caption(tile, f"boundary acc {100 * accuracy:.0f}%")
    return np.concatenate(tiles, axis=1)


def stack_rows(rows: list[np.ndarray], titles) -> np.ndarray:
    """The rows one under another, 4 px apart, under a white header with the column titles."""
    width = rows[0].shape[1]
    header = np.full((22, width, 3), 255, dtype=np.uint8)
    for column, title in enumerate(titles):
        origin = (column * width // len(titles) + 6, 16)
        cv2.putText(header, title, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    separator = np.full((4, width, 3), 255, dtype=np.uint8)
    return np.concatenate([header] + [part for row in rows for part in (row, separator)][:-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    pointrend_cfg, pointrend = load_predictor(*args.pointrend)
    _, baseline = load_predictor(*args.baseline)
    dataset_name = args.dataset or pointrend_cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset_name)
    records = DatasetCatalog.get(dataset_name)[: args.max_images]

    read_rgb = ImageReader("RGB")
    samples = []
    for record in tqdm.tqdm(records, unit="image"):
        rgb = read_rgb(record["file_name"])
        gt = read_label_map(record["sem_seg_file_name"], dtype=int)
        predictions = [
            predictor(record["file_name"])["sem_seg"].argmax(dim=0).cpu().numpy()
            for predictor in (baseline, pointrend)
        ]
        gt_boundary = boundary_band(gt, BOUNDARY_DISTANCE) & (gt != metadata.ignore_label)
        samples.append((rgb, gt, predictions, gt_boundary))
    crop_size = min([args.crop_size] + [min(gt.shape) for _, gt, _, _ in samples])
    candidates = []
    for index, (_, _, predictions, gt_boundary) in enumerate(samples):
        disagreement = gt_boundary & (predictions[0] != predictions[1])
        candidates += best_crops(disagreement, crop_size, index, 2)
    crops = sorted(candidates, reverse=True)[: args.num_crops]
    if not crops:
        raise SystemExit("The two models agree on every ground-truth boundary pixel: no crops")

    rows = [
        figure_row(samples[crop.image_index], crop, crop_size, args.scale, metadata.stuff_colors)
        for crop in crops
    ]
    figure = stack_rows(rows, ("image", "ground truth", "baseline", "PointRend"))
    if not cv2.imwrite(args.output, figure[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"Could not write {args.output}")
    logger.info("Wrote %s (%d crops from %s)", args.output, len(rows), dataset_name)


if __name__ == "__main__":
    main()
