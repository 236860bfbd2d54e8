#!/usr/bin/env python
"""
Eager against exported inference, in one process, on the same (1, 3, H, W) uint8 image:

  eager, bounded    the eager model with the "bounded" subdivision selection (CPU default)
  eager, top-k      the eager model with the "topk" selection (what the exported graphs contain)
  torch.export      the .pt2 program (torch.export.load), torch's CPU threads
  ONNX Runtime      the .onnx model on onnxruntime's CPU provider, --threads intra-op threads

The model is exported with pointrend_d2.deploy.export (as tools/export_model.py does) into a
temporary folder; timings are interleaved after a warm-up, as in tools/benchmark.py, and ratios
are taken between medians of the same run. Each exported output is checked against the eager one.

    python tools/benchmark_export.py --random-weights      # R-50-FPN PointRend, 19 classes,
                                                           # 512x1024; about 5 minutes on 2 cores
    python tools/benchmark_export.py --config-file CFG --size 1024 2048 MODEL.WEIGHTS model.pth
"""

import argparse
import importlib.metadata
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark import ratio, time_interleaved  # tools/benchmark.py, beside this script
from detectron2.modeling import build_model

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.config import setup_cfg
from pointrend_d2.deploy import ExportedPredictor
from pointrend_d2.deploy.export import EXPORT_FORMATS, compare_with_eager, export_model
from pointrend_d2.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "SemanticSegmentation" / "Base-PointRend-Semantic-FPN.yaml"
# The default model: tools/benchmark.py's R-50-FPN PointRend with 19 classes.
DEFAULT_OPTS = ["MODEL.RESNETS.DEPTH", "50", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "19"]
LABELS = {
    "eager_bounded": "eager, bounded",
    "eager_topk": "eager, top-k",
    "torch_export": "torch.export (.pt2)",
    "onnx": "ONNX Runtime",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help=f"model config (default: {DEFAULT_CONFIG.name} with {' '.join(DEFAULT_OPTS)})",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="time random weights (seed 0) instead of MODEL.WEIGHTS",
    )
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument(
        "opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser.parse_args(argv)


def build_cfg(args: argparse.Namespace, workdir: Path):
    """The benchmarked config, with MODEL.WEIGHTS a saved random model under --random-weights."""
    if args.config_file:
        cfg = setup_cfg(args.config_file, args.opts)
    else:
        cfg = setup_cfg(str(DEFAULT_CONFIG), DEFAULT_OPTS + list(args.opts))
    cfg.MODEL.DEVICE = "cpu"
    if args.random_weights:
        torch.manual_seed(0)
        SafeCheckpointer(build_model(cfg), save_dir=str(workdir)).save("random")
        cfg.MODEL.WEIGHTS = str(workdir / "random.pth")
    return cfg


def eager_model(cfg, selection: str):
    """The eager model of ``cfg`` with the given subdivision selection, weights loaded."""
    cfg = cfg.clone()
    cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECTION = selection
    return Predictor(cfg).model


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="pointrend_benchmark_export_"))
    cfg = build_cfg(args, workdir)
    export_s, predictors = {}, {}
    for export_format in EXPORT_FORMATS:
        print(f"exporting {export_format} ...", file=sys.stderr)
        start = time.perf_counter()
        export_model(cfg, str(workdir / export_format), export_format)
        export_s[export_format] = time.perf_counter() - start
        predictors[export_format] = ExportedPredictor(
            str(workdir / export_format), num_threads=args.threads
        )
    eager = {"bounded": eager_model(cfg, "bounded"), "topk": eager_model(cfg, "topk")}
    height, width = args.size
    image = torch.randint(
        0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    fns = {
        "eager_bounded": lambda: eager["bounded"]([{"image": image[0]}]),
        "eager_topk": lambda: eager["topk"]([{"image": image[0]}]),
        **{f: (lambda p=p: p.run(image)) for f, p in predictors.items()},
    }
    print(f"timing {height}x{width} ...", file=sys.stderr)
    results = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "torch": torch.__version__,
        "onnxruntime": importlib.metadata.version("onnxruntime"),
        "threads": args.threads,
        "config": args.config_file or f"{DEFAULT_CONFIG.name} {' '.join(DEFAULT_OPTS)}",
        "weights": "random" if args.random_weights else cfg.MODEL.WEIGHTS,
        "height": height,
        "width": width,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "export_s": export_s,
        "whole_ms": time_interleaved(fns, args.repeats, torch.device("cpu")),
        "output_checks": {
            f: compare_with_eager(eager["bounded"], p.run, image) for f, p in predictors.items()
        },
    }
    shutil.rmtree(workdir)
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def print_report(results: dict) -> None:
    """Print the results as a table."""
    print(
        f"\nMachine: {results['machine']}; torch {results['torch']}, onnxruntime "
        f"{results['onnxruntime']}, {results['threads']} threads; {results['config']}, "
        f"{results['weights']} weights, batch 1"
    )
    print("Export time: " + ", ".join(f"{f} {s:.1f} s" for f, s in results["export_s"].items()))
    times = results["whole_ms"]
    repeats = times["eager_bounded"]["n"]
    print(
        f"\n{results['height']}x{results['width']}, {results['num_classes']} classes: whole model "
        f"on a uint8 image (ms, median [min-max] of {repeats})"
    )
    print(f"{'variant':<22}{'median':>10}{'min':>10}{'max':>10}{'/ bounded':>11}{'/ top-k':>10}")
    for variant, t in times.items():
        print(
            f"{LABELS[variant]:<22}{t['median']:>10.1f}{t['min']:>10.1f}{t['max']:>10.1f}"
            f"{ratio(t['median'], times['eager_bounded']['median']):>11.3f}"
            f"{ratio(t['median'], times['eager_topk']['median']):>10.3f}"
        )
    print()
    for export_format, check in results["output_checks"].items():
        print(
            f"{LABELS[export_format]} vs eager output: max |logit difference| "
            f"{check['max_abs_diff']:.2e} ({check['max_rel_diff']:.2e} of the largest), argmax "
            f"agreement {check['argmax_agreement']:.6f}"
        )


if __name__ == "__main__":
    main()
