#!/usr/bin/env python
"""
Peak memory (resident set size) of inference on huge images, each case in a fresh process:

* instance: tools/demo.py with the instance quickstart's model (configs/quickstart/
  pointrend_instance.yaml, random weights) on a 3000x4000 image (H x W), with no detection
  (TEST.DETECTIONS_PER_IMAGE 0), with 100 (--confidence-threshold 0, hence
  MODEL.ROI_HEADS.SCORE_THRESH_TEST 0, and TEST.DETECTIONS_PER_IMAGE 100), and with 100 and
  --show-points;
* semantic: the Predictor of the semantic quickstart (configs/pointrend_semseg.yaml, random
  weights) on a 4000x6000 image at full resolution (INPUT.MIN_SIZE_TEST 0), whole-image and tiled
  (TEST.TILE.SIZE, TEST.TILE.OVERLAP); then how the tiled logits differ from the whole-image ones,
  everywhere and outside the tiles' overlaps: max |difference| and argmax agreement.

    OMP_NUM_THREADS=1 python tools/bench_memory.py [--markdown memory.md]

Each case's peak is that of its own process (os.wait4), so the cases do not see each other's; it
includes the interpreter with torch and detectron2 loaded. Peak memory is not a timing: a busy
machine gives the same figures.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import detector_postprocess
from tabulate import tabulate

from pointrend_d2.config import setup_cfg
from pointrend_d2.data.inference_mapper import InferenceMapper
from pointrend_d2.modeling.tiling import tile_spans
from pointrend_d2.predictor import Predictor, build_model_input

REPO = Path(__file__).resolve().parents[1]
INSTANCE_CONFIG = REPO / "configs" / "quickstart" / "pointrend_instance.yaml"
SEMANTIC_CONFIG = REPO / "configs" / "pointrend_semseg.yaml"
INSTANCE_CASES = {
    # name: (TEST.DETECTIONS_PER_IMAGE, --show-points)
    "instance, no detection": (0, False),
    "instance, 100 detections": (100, False),
    "instance, 100 detections, --show-points": (100, True),
}
SEMANTIC_CASES = {
    # name: file stem of its logits
    "semantic, whole image": "whole",
    "semantic, tiled": "tiled",
}
# Rows of logits compared at a time, so that the comparison holds two slices, not two maps.
COMPARE_ROWS = 256


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=[*INSTANCE_CASES, *SEMANTIC_CASES],
        choices=[*INSTANCE_CASES, *SEMANTIC_CASES],
        metavar="CASE",
        help=f"cases to run (default all: {', '.join([*INSTANCE_CASES, *SEMANTIC_CASES])})",
    )
    parser.add_argument("--instance-size", type=int, nargs=2, default=(3000, 4000), metavar="HW")
    parser.add_argument("--semantic-size", type=int, nargs=2, default=(4000, 6000), metavar="HW")
    parser.add_argument("--tile-size", type=int, default=1024, help="TEST.TILE.SIZE when tiled")
    parser.add_argument("--tile-overlap", type=int, default=256, help="TEST.TILE.OVERLAP")
    parser.add_argument(
        "--semantic-weights",
        metavar="PTH",
        help="a trained checkpoint of the semantic config's model (default: random weights)",
    )
    parser.add_argument(
        "--semantic-opts",
        nargs="+",
        default=[],
        metavar="KEY VALUE",
        help="semantic config overrides for both runs, e.g. MODEL.SEM_SEG_HEAD.NORM ''",
    )
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables there")
    # A semantic case's process: --worker STEM --workdir DIR --opts KEY VALUE ...
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def write_image(path: Path, height: int, width: int, seed: int) -> None:
    """A smooth random colour image (coarse noise upsampled), written as PNG."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 16, 1), max(width // 16, 1), 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"Could not write {path}")


def save_random_weights(config: Path, opts: list[str], workdir: Path, name: str) -> str:
    """The config's model with seed-0 random weights, saved as ``workdir/name.pth``."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(str(config), [*opts, "MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(model, save_dir=str(workdir)).save(name)
    return str(workdir / f"{name}.pth")


def count_detections(weights: str, image: Path, detections_per_image: int) -> int:
    """How many detections the demo draws in an instance case (its postprocessing, no masks)."""
    cfg = setup_cfg(
        str(INSTANCE_CONFIG),
        ["MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
         "TEST.DETECTIONS_PER_IMAGE", detections_per_image],
    )  # fmt: skip
    predictor = Predictor(cfg)
    model_input = build_model_input(InferenceMapper(cfg), str(image))
    with torch.no_grad():
        (detections,) = predictor.model.inference([model_input], do_postprocess=False)
    detections.remove("pred_masks")
    return len(detector_postprocess(detections, model_input["height"], model_input["width"]))


def peak_rss_gib(command: list[str]) -> float:
    """Run ``command`` to completion; its peak resident set size in GiB (Linux: KiB units)."""
    process = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return usage.ru_maxrss / 2**20


def instance_command(
    weights: str, image: Path, output: Path, detections_per_image: int, show_points: bool
) -> list[str]:
    return [
        sys.executable, str(REPO / "tools" / "demo.py"),
        "--config-file", str(INSTANCE_CONFIG), "--input", str(image), "--output", str(output),
        "--confidence-threshold", "0", *(["--show-points"] if show_points else []),
        "--opts", "MODEL.WEIGHTS", weights, "TEST.DETECTIONS_PER_IMAGE", str(detections_per_image),
    ]  # fmt: skip


def semantic_opts(args: argparse.Namespace, weights: str, tile_size: int) -> list[str]:
    opts = [*args.semantic_opts, "MODEL.WEIGHTS", weights, "INPUT.MIN_SIZE_TEST", "0"]
    if tile_size:
        opts += ["TEST.TILE.SIZE", str(tile_size), "TEST.TILE.OVERLAP", str(args.tile_overlap)]
    return opts


def semantic_worker(workdir: Path, stem: str, opts: list[str]) -> None:
    """The semantic Predictor on ``workdir/semantic.png``; logits saved to ``workdir/stem.npy``."""
    predictor = Predictor(setup_cfg(str(SEMANTIC_CONFIG), opts))
    logits = predictor(str(workdir / "semantic.png"))["sem_seg"]
    np.save(workdir / f"{stem}.npy", logits.numpy())


def outside_overlaps(length: int, tile_size: int, overlap: int) -> np.ndarray:
    """(length,) bool: the pixels of an axis that lie in one tile only."""
    coverage = np.zeros(length, np.int64)
    for span in tile_spans(length, tile_size, overlap):
        coverage[span.start : span.stop] += 1
    return coverage == 1


def compare_logits(whole: Path, tiled: Path, tile_size: int, overlap: int) -> dict:
    """Max |difference| and argmax agreement of two (K, H, W) logit files, everywhere and
    outside the tiles' overlaps, a few rows at a time."""
    whole_logits, tiled_logits = np.load(whole, mmap_mode="r"), np.load(tiled, mmap_mode="r")
    height, width = whole_logits.shape[1:]
    single_rows = outside_overlaps(height, tile_size, overlap)
    single_cols = outside_overlaps(width, tile_size, overlap)
    stats = {region: {"max_abs": 0.0, "agree": 0, "pixels": 0} for region in ("all", "outside")}
    for top in range(0, height, COMPARE_ROWS):
        rows = slice(top, min(top + COMPARE_ROWS, height))
        a, b = np.asarray(whole_logits[:, rows]), np.asarray(tiled_logits[:, rows])
        difference = np.abs(a - b).max(axis=0)
        agree = a.argmax(axis=0) == b.argmax(axis=0)
        outside = single_rows[rows, None] & single_cols[None, :]
        for region, selected in (("all", np.ones_like(outside)), ("outside", outside)):
            stat = stats[region]
            if selected.any():
                stat["max_abs"] = max(stat["max_abs"], float(difference[selected].max()))
            stat["agree"] += int(agree[selected].sum())
            stat["pixels"] += int(selected.sum())
    return stats


def run_cases(args: argparse.Namespace, workdir: Path) -> tuple[list, dict | None]:
    """Run the selected cases; their table rows and the tiled-vs-whole comparison (if both)."""
    rows = []
    instance_cases = [name for name in INSTANCE_CASES if name in args.cases]
    if instance_cases:
        height, width = args.instance_size
        image = workdir / "instance.png"
        write_image(image, height, width, seed=0)
        weights = save_random_weights(INSTANCE_CONFIG, [], workdir, "instance")
        for name in instance_cases:
            detections_per_image, show_points = INSTANCE_CASES[name]
            command = instance_command(
                weights, image, workdir / "out", detections_per_image, show_points
            )
            detections = count_detections(weights, image, detections_per_image)
            rows.append([name, f"{height}x{width}", detections, peak_rss_gib(command)])
    semantic_cases = [name for name in SEMANTIC_CASES if name in args.cases]
    if semantic_cases:
        height, width = args.semantic_size
        write_image(workdir / "semantic.png", height, width, seed=1)
        weights = args.semantic_weights or save_random_weights(
            SEMANTIC_CONFIG, args.semantic_opts, workdir, "semantic"
        )
        for name in semantic_cases:
            stem = SEMANTIC_CASES[name]
            tile_size = args.tile_size if stem == "tiled" else 0
            command = [
                sys.executable, __file__, "--worker", stem, "--workdir", str(workdir),
                "--opts", *semantic_opts(args, weights, tile_size),
            ]  # fmt: skip
            rows.append([name, f"{height}x{width}", "", peak_rss_gib(command)])
    if len(semantic_cases) < 2:
        return rows, None
    comparison = compare_logits(
        workdir / "whole.npy", workdir / "tiled.npy", args.tile_size, args.tile_overlap
    )
    return rows, comparison


def format_report(args: argparse.Namespace, rows: list, comparison: dict | None) -> str:
    """The measurements as markdown tables."""
    peaks = {row[0]: row[3] for row in rows}
    # Each case against the one it should stay close to.
    references = dict.fromkeys(INSTANCE_CASES, "instance, no detection")
    references["semantic, tiled"] = "semantic, whole image"
    table = []
    for name, image, detections, peak in rows:
        reference = references.get(name)
        ratio = f"{peak / peaks[reference]:.2f}x {reference}" if reference in peaks else ""
        table.append([name, image, detections, f"{peak:.2f}", ratio])
    headers = ["case", "image (HxW)", "detections", "peak RSS (GiB)", "ratio"]
    report = tabulate(table, headers, tablefmt="pipe")
    if comparison is not None:
        tiles = f"TEST.TILE.SIZE {args.tile_size}, TEST.TILE.OVERLAP {args.tile_overlap}"
        weights = args.semantic_weights or "random weights"
        tiles += f"; {weights}; semantic overrides: {' '.join(args.semantic_opts) or 'none'}"
        lines = []
        for region, label in (("all", "every pixel"), ("outside", "outside the overlaps")):
            stat = comparison[region]
            agreement = 100 * stat["agree"] / max(stat["pixels"], 1)
            lines.append([label, stat["pixels"], f"{stat['max_abs']:.4g}", f"{agreement:.3f}%"])
        headers = ["tiled vs whole-image logits", "pixels", "max abs difference", "same argmax"]
        report += f"\n\nTiled: {tiles}.\n\n" + tabulate(lines, headers, tablefmt="pipe")
    return report


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        semantic_worker(Path(args.workdir), args.worker, args.opts)
        return
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as folder:
        workdir = Path(folder)
        rows, comparison = run_cases(args, workdir)
    report = format_report(args, rows, comparison)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")


if __name__ == "__main__":
    main()
