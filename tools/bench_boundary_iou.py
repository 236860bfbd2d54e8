#!/usr/bin/env python
"""
Time Boundary IoU per image, single-threaded, at Cityscapes size (1024 x 2048, 19 classes):

    python tools/bench_boundary_iou.py [--height 1024 --width 2048 --num-classes 19 --repeats 5]

Prints the time of ``boundary_iou_counts`` (both bands and all per-class counts of one image)
next to the official recipe run per class (pad, erode d times, subtract) for the two bands.
"""

import argparse
import time

import cv2
import numpy as np
import torch

from pointrend_d2.evaluation import boundary_distance, boundary_iou_counts


def synthetic_label_maps(height: int, width: int, num_classes: int, seed: int = 0):
    """A blocky ground truth with an ignore region and a prediction that differs near edges."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, num_classes, size=(height // 64, width // 64)).astype(np.uint8)
    gt = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)
    gt[-height // 8 :, width // 4 : -width // 4] = 255  # an "ego vehicle"
    # The prediction: the ground truth warped by a smooth random displacement of a few pixels.
    flow = cv2.resize(rng.normal(0, 4, (height // 128, width // 128, 2)), (width, height))
    grid_y, grid_x = np.mgrid[:height, :width].astype(np.float32)
    pred = cv2.remap(
        np.where(gt == 255, 0, gt).astype(np.uint8),
        grid_x + flow[..., 0].astype(np.float32),
        grid_y + flow[..., 1].astype(np.float32),
        cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return gt.astype(np.int64), pred.astype(np.int64)


def per_class_official_bands(label_map: np.ndarray, num_classes: int, distance: int) -> None:
    """The official recipe, one padded binary erosion per class (for comparison only)."""
    for c in range(num_classes):
        mask = (label_map == c).astype(np.uint8)
        padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=distance)
        mask - eroded[1:-1, 1:-1]


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--dilation-ratio", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    gt, pred = synthetic_label_maps(args.height, args.width, args.num_classes)
    distance = boundary_distance(args.height, args.width, args.dilation_ratio)
    ours = best_time(
        lambda: boundary_iou_counts(gt, pred, args.num_classes, 255, distance), args.repeats
    )
    official = best_time(
        lambda: [per_class_official_bands(m, args.num_classes, distance) for m in (gt, pred)],
        args.repeats,
    )
    print(
        f"{args.height}x{args.width}, {args.num_classes} classes, d = {distance} px, 1 thread, "
        f"best of {args.repeats}:"
    )
    print(f"  boundary_iou_counts (both bands + all counts): {ours * 1000:7.1f} ms / image")
    print(f"  official per-class erosions (bands only):      {official * 1000:7.1f} ms / image")


if __name__ == "__main__":
    main()
