#!/usr/bin/env python
"""
Make sparse point labels for semantic segmentation from full label maps: N pixels per class per
image, chosen uniformly among that class's pixels, the ignore value everywhere else; seeded and
reproducible (each file's points depend only on the seed and its path, and the 10 points of a
class are among its 20):

    python tools/make_point_labels.py --label-dir labels/train --points-per-class 20 \
        --output point_labels/train

Every label file under --label-dir (recursively) is written as a PNG at the same relative path
under --output, which must not exist (it is written into a temporary folder and renamed into
place: nothing is overwritten). Register the images with these labels as a folder dataset with
``sparse_labels: true`` and train with MODEL.POINT_SUPERVISION.ENABLED True (docs: point
supervision).
"""

import argparse
import logging
import os

from detectron2.utils.logger import setup_logger

from pointrend_d2.data.generated_splits import write_split_once
from pointrend_d2.data.point_sampling import write_sparse_label_folder

logger = logging.getLogger("pointrend_d2.make_point_labels")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--label-dir", required=True, help="folder of full label maps")
    parser.add_argument("--output", required=True, help="folder to write (must not exist)")
    parser.add_argument("--points-per-class", type=int, default=20, help="N per class and image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the points")
    parser.add_argument("--ignore-label", type=int, default=255, help="label of unlabelled pixels")
    parser.add_argument("--label-ext", default=".png", help="extension of the label files")
    args = parser.parse_args(argv)
    if args.points_per_class < 1:
        parser.error(f"--points-per-class {args.points_per_class}: must be >= 1")
    if not os.path.isdir(args.label_dir):
        parser.error(f"--label-dir {args.label_dir} is not a folder")
    if os.path.exists(args.output):
        parser.error(f"--output {args.output} exists; give a new folder (nothing is overwritten)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    output = os.path.abspath(args.output)
    parameters = {
        "label_dir": os.path.abspath(args.label_dir),
        "points_per_class": args.points_per_class,
        "seed": args.seed,
        "ignore_label": args.ignore_label,
    }
    written = []

    def write(folder: str) -> None:
        written.append(
            write_sparse_label_folder(
                args.label_dir,
                folder,
                args.points_per_class,
                args.seed,
                args.ignore_label,
                args.label_ext,
            )
        )

    write_split_once(
        os.path.dirname(output),
        output,
        os.path.basename(output),
        parameters,
        write,
        f"{args.points_per_class} labelled pixels per class of the labels in {args.label_dir}",
    )
    logger.info("Wrote %d sparse label maps to %s (seed %d)", written[0], output, args.seed)
    return written[0]


if __name__ == "__main__":
    main()
