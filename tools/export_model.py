#!/usr/bin/env python
"""
Export a trained semantic model (PointRend on SemanticFPN or DeepLabV3, or their plain
baselines) to a torch.export program or an ONNX model, subdivision included, and check it against
the eager model:

    python tools/export_model.py --config-file configs/pointrend_semseg.yaml \
        --format onnx --output exported/ MODEL.WEIGHTS output/pointrend_semseg/model_final.pth

It writes ``<output>/model.pt2`` (--format torch_export) or ``<output>/model.onnx`` (--format
onnx, opset 18), and ``<output>/pointrend_d2_export.json`` (input format, test-time resize, class
names) for ``pointrend_d2.deploy.ExportedPredictor`` and ``tools/demo.py --exported``. The program
takes a (1, 3, H, W) uint8 image in INPUT.FORMAT order, any H, W >= 2, and returns (1, K, H, W)
float32 logits. Then it runs the program and the eager model on random images (--check-size) and
prints their largest logit difference and argmax agreement (exit status 1 if the argmax disagrees
anywhere).
"""

import argparse
import logging
import sys

import torch
from detectron2.utils.logger import setup_logger

from pointrend_d2.config import setup_cfg
from pointrend_d2.deploy import ExportedPredictor
from pointrend_d2.deploy.export import EXPORT_FORMATS, compare_with_eager, export_model
from pointrend_d2.predictor import Predictor

logger = logging.getLogger("pointrend_d2.export_model")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", required=True, help="folder for the program and metadata")
    parser.add_argument(
        "--example-size",
        type=int,
        nargs=2,
        default=(128, 192),
        metavar=("H", "W"),
        help="size of the example image traced (any size runs afterwards)",
    )
    parser.add_argument(
        "--check-size",
        type=int,
        nargs=2,
        action="append",
        metavar=("H", "W"),
        help="size of a random image to compare with the eager model, repeatable (default: "
        "100x150 and 320x416)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the comparison")
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="also load MODEL.WEIGHTS whose unpickling can run code, from a source you trust "
        "(sets MODEL.ALLOW_UNSAFE_PICKLE)",
    )
    parser.add_argument(
        "opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="pointrend_d2")
    cfg = setup_cfg(args.config_file, args.opts)
    if args.allow_unsafe_pickle:
        cfg.MODEL.ALLOW_UNSAFE_PICKLE = True
    cfg.freeze()
    path = export_model(
        cfg,
        args.output,
        args.format,
        config_file=args.config_file,
        example_size=tuple(args.example_size),
    )
    logger.info("Wrote %s", path)
    if args.no_check:
        return 0
    eager_cfg = cfg.clone()
    eager_cfg.defrost()
    eager_cfg.MODEL.DEVICE = "cpu"
    eager = Predictor(eager_cfg).model
    exported = ExportedPredictor(args.output)
    generator = torch.Generator().manual_seed(0)
    agree = True
    for height, width in args.check_size or [(100, 150), (320, 416)]:
        image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)
        check = compare_with_eager(eager, exported.run, image)
        logger.info(
            "%dx%d: max |logit difference| %.2e (%.2e of the largest), argmax agreement %.6f",
            height,
            width,
            check["max_abs_diff"],
            check["max_rel_diff"],
            check["argmax_agreement"],
        )
        agree &= check["argmax_agreement"] == 1.0
    if not agree:
        logger.error("The exported program's argmax differs from the eager model's")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
