#!/usr/bin/env python
"""
Make point annotations (PointSup) from a COCO instances json with masks: P points uniformly at
random in each object's box, labelled 1 inside its mask and 0 outside, seeded and reproducible
(the points of an object depend only on the seed and its annotation id, and the first 5 of its
10 points are its 5 points):

    python tools/make_point_annotations.py --json-file annotations/train.json \
        --image-root images/train --num-points 10 --output annotations/train_points10.json

The input is checked first as training checks it (errors name the file, image and annotation).
The output is the input with ``point_coords`` and ``point_labels`` instead of each object's
``segmentation``; crowd regions are kept as they are, annotations of zero area left out. Train
on it with MODEL.POINT_SUPERVISION.ENABLED True (docs: point supervision). The output file must
not exist: nothing is overwritten.
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

from pointrend_d2.data.point_sampling import write_point_annotations

logger = logging.getLogger("pointrend_d2.make_point_annotations")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json-file", required=True, help="COCO instances json with masks")
    parser.add_argument("--image-root", required=True, help="the folder of its images")
    parser.add_argument("--output", required=True, help="the json to write (must not exist)")
    parser.add_argument(
        "--num-points", type=int, default=10, help="points per object (PointSup: 10)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the points")
    args = parser.parse_args(argv)
    if args.num_points < 1:
        parser.error(f"--num-points {args.num_points}: must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    counts = write_point_annotations(
        args.json_file, args.image_root, args.output, args.num_points, args.seed
    )
    logger.info(
        "Wrote %s: %d objects with %d points each (%d inside, %d outside their mask), %d crowd "
        "regions kept, %d annotations of zero area left out (seed %d)",
        args.output,
        counts["objects"],
        args.num_points,
        counts["inside"],
        counts["outside"],
        counts["crowd"],
        counts["skipped"],
        args.seed,
    )
    return counts


if __name__ == "__main__":
    main()
