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
Export times, timings and checks are printed, and written to --json and --markdown, as each is
measured.

    python tools/benchmark_export.py --random-weights      # R-50-FPN PointRend, 19 classes,
                                                           # 512x1024; about 5 minutes on 2 cores
    python tools/benchmark_export.py --config-file CFG --size 1024 2048 MODEL.WEIGHTS model.pth
    python tools/benchmark_export.py --random-weights --markdown docs/results/export-cpu.md
"""

import argparse
import importlib.metadata
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchmark_harness import (
    Report,
    Table,
    add_output_arguments,
    check_new_outputs,
    run_header,
    time_interleaved,
    timing_table,
)
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


def argument_parser() -> argparse.ArgumentParser:
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
    add_output_arguments(parser)
    parser.add_argument(
        "opts", default=[], nargs=argparse.REMAINDER, help="config overrides KEY VALUE ..."
    )
    return parser


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
    parser = argument_parser()
    args = parser.parse_args(argv)
    check_new_outputs(parser, args)
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="pointrend_benchmark_export_"))
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir)


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Export, time and check, reporting each part as it is measured."""
    cfg = build_cfg(args, workdir)
    height, width = args.size
    report = Report(
        "pointrend_d2 benchmark: eager against exported",
        run_header(
            torch.device("cpu"),
            args.threads,
            onnxruntime=importlib.metadata.version("onnxruntime"),
            config=args.config_file or f"{DEFAULT_CONFIG.name} {' '.join(DEFAULT_OPTS)}",
            weights="random" if args.random_weights else cfg.MODEL.WEIGHTS,
        ),
        args.json,
        args.markdown,
    )
    results = {
        **report.header,
        "height": height,
        "width": width,
        "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        "export_s": {},
    }
    predictors = {}
    for export_format in EXPORT_FORMATS:
        print(f"exporting {export_format} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        export_model(cfg, str(workdir / export_format), export_format)
        results["export_s"][export_format] = time.perf_counter() - start
        predictors[export_format] = ExportedPredictor(
            str(workdir / export_format), num_threads=args.threads
        )
    report.add(
        "Export time: "
        + ", ".join(f"{LABELS[f]} {s:.1f} s" for f, s in results["export_s"].items())
    )
    report.save(results)
    eager = {"bounded": eager_model(cfg, "bounded"), "topk": eager_model(cfg, "topk")}
    image = torch.randint(
        0, 256, (1, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    fns = {
        "eager_bounded": lambda: eager["bounded"]([{"image": image[0]}]),
        "eager_topk": lambda: eager["topk"]([{"image": image[0]}]),
        **{f: (lambda p=p: p.run(image)) for f, p in predictors.items()},
    }
    print(f"timing {height}x{width} ...", file=sys.stderr, flush=True)
    results["whole_ms"] = time_interleaved(fns, args.repeats, torch.device("cpu"))
    report.add(
        timing_table(
            f"{height}x{width}, {results['num_classes']} classes: whole model on a uint8 image, "
            "batch 1",
            results["whole_ms"],
            LABELS,
            (("/ bounded", "eager_bounded"), ("/ top-k", "eager_topk")),
        )
    )
    report.save(results)
    results["output_checks"] = {
        f: compare_with_eager(eager["bounded"], p.run, image) for f, p in predictors.items()
    }
    report.add(checks_table(results["output_checks"]))
    report.save(results)
    return results


def checks_table(checks: dict) -> Table:
    """Each exported output against the eager one."""
    rows = [
        [
            f"{LABELS[export_format]} vs eager",
            f"{check['max_abs_diff']:.2e}",
            f"{check['max_rel_diff']:.2e}",
            f"{check['argmax_agreement']:.6f}",
        ]
        for export_format, check in checks.items()
    ]
    return Table(
        "Exported outputs against the eager model's (CPU: TF32 does not apply)",
        ["output", "max |logit difference|", "of the largest", "argmax agreement"],
        rows,
    )


if __name__ == "__main__":
    main()
