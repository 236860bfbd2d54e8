#!/usr/bin/env python
"""
Seeded comparisons on the embedded data: train each variant of a task with each seed (the same
schedule and seed; only what the variant names differs) through tools/train_net.py, then write
the table of their final evaluations:

    python tools/seeded_runs.py instance --seeds 0 1 2 --jobs 2
    python tools/seeded_runs.py thin-semantic --seeds 0 1 2 --jobs 2

Point supervision against full supervision (the first variant; point variants as a percentage
of it):

* instance: PointRend Mask R-CNN from full masks, 10 and 5 points per object; mask AP and
  Boundary AP on textured_shapes_instances_val.
* semantic, deeplab: SemanticFPN or DeepLabV3 PointRend from full labels and from 20 labelled
  pixels per class per image; mIoU and mBIoU on textured_shapes_sem_seg_val (full labels).

Small and thin objects (each variant's difference from the first, in points):

* thin-semantic: the semantic quickstart (paper's training points) against a quarter of its
  training points on the ground truth's boundaries (MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO),
  and against that plus the 7 x 7 image pixels around each point (MODEL.POINT_HEAD.
  IMAGE_PATCH_SIZE); mIoU, mBIoU and IoU per class.
* thin-instance: the instance quickstart's Mask R-CNN against PointRend, and against PointRend
  with its mask head trained on the ground-truth-matched proposals instead of the predicted boxes
  (MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES False, as Mask R-CNN), and with 14 x 14 coarse masks
  (MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION); mask AP, APs, AP50, AP75, Boundary AP and wire
  mask AP.

--variants compares only some of a task's variants, each against the first of them in the task's
order.

Each run's OUTPUT_DIR is ``<output-root>/<task>_<variant>_seed<k>``. A run whose metrics.json
already holds its final evaluation is not trained again, and an interrupted one continues from
its last checkpoint (--resume), so the command can be re-run after a crash. --jobs N trains N runs
at a time, each with the machine's cores divided among them as OMP_NUM_THREADS (each one's console
output then goes to ``<run>/console.log``); on a CPU, several 1-thread trainings finish sooner
than the same ones one after another with all threads. A training's numbers depend on its thread
count (the order of float sums), so compare runs made with the same --jobs on the same machine.
The table (with the date, machine, threads, commit and commands) goes to --results, by default
``docs/results/<date>-<task's page>.md``, which must not exist. --dry-run prints the commands
only. Each run is a quickstart training (a quarter of an hour to half an hour with one CPU
thread).
"""

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]


class Variant(NamedTuple):
    name: str
    config: str
    options: tuple[str, ...] = ()


class Task(NamedTuple):
    variants: tuple[Variant, ...]
    #: (metrics.json key, column title) of the evaluation results in the table.
    metrics: tuple[tuple[str, str], ...]
    dataset: str
    #: The results page's name: docs/results/<date>-<page>.md.
    page: str
    #: How the other variants compare with the first: "ratio" (a percentage of it) or
    #: "difference" (in points).
    comparison: str


INSTANCE_POINTS = "configs/quickstart/pointrend_instance_points.yaml"
INSTANCE_VAL = "textured_shapes_instances_val (16 images of 256x384)"
SEMANTIC_VAL = "textured_shapes_sem_seg_val (12 images of 512x1024)"
SEMANTIC_METRICS = (("sem_seg/mIoU", "mIoU"), ("boundary_iou/mBIoU", "mBIoU"))
TASKS = {
    "instance": Task(
        (
            Variant("full", "configs/quickstart/pointrend_instance.yaml"),
            Variant("points10", INSTANCE_POINTS),
            Variant(
                "points5",
                INSTANCE_POINTS,
                ("DATASETS.TRAIN", '("textured_shapes_instances_train_points5",)'),
            ),
        ),
        (("segm/AP", "mask AP"), ("boundary/AP", "Boundary AP")),
        INSTANCE_VAL,
        "point-supervision-instance",
        "ratio",
    ),
    "semantic": Task(
        (
            Variant("full", "configs/pointrend_semseg.yaml"),
            Variant("points20", "configs/quickstart/pointrend_semseg_points.yaml"),
        ),
        SEMANTIC_METRICS,
        SEMANTIC_VAL,
        "point-supervision-semantic",
        "ratio",
    ),
    "deeplab": Task(
        (
            Variant("full", "configs/quickstart/deeplabv3_pointrend_semseg.yaml"),
            Variant("points20", "configs/quickstart/deeplabv3_pointrend_semseg_points.yaml"),
        ),
        SEMANTIC_METRICS,
        SEMANTIC_VAL,
        "point-supervision-deeplab",
        "ratio",
    ),
    "thin-semantic": Task(
        (
            Variant("paper", "configs/pointrend_semseg.yaml"),
            Variant(
                "boundary25",
                "configs/pointrend_semseg.yaml",
                ("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", "0.25"),
            ),
            Variant(
                "boundary25_patch7",
                "configs/pointrend_semseg.yaml",
                (
                    *("MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO", "0.25"),
                    *("MODEL.BACKBONE.NAME", "build_backbone_with_image"),
                    *("MODEL.POINT_HEAD.IMAGE_PATCH_SIZE", "7"),
                ),
            ),
        ),
        SEMANTIC_METRICS
        + tuple((f"sem_seg/IoU-{name}", f"IoU {name}") for name in ("wire", "dot", "ring", "blob")),
        SEMANTIC_VAL,
        "thin-semantic",
        "difference",
    ),
    "thin-instance": Task(
        (
            Variant("mask_rcnn", "configs/quickstart/mask_rcnn_instance.yaml"),
            Variant("pointrend", "configs/quickstart/pointrend_instance.yaml"),
            Variant(
                "pointrend_gt_boxes",
                "configs/quickstart/pointrend_instance.yaml",
                ("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "False"),
            ),
            Variant(
                "pointrend_coarse14",
                "configs/quickstart/pointrend_instance.yaml",
                (
                    *("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION", "14"),
                    *("MODEL.POINT_HEAD.SUBDIVISION_STEPS", "4"),
                ),
            ),
        ),
        (
            ("segm/AP", "mask AP"),
            ("segm/APs", "APs"),
            ("segm/AP50", "AP50"),
            ("segm/AP75", "AP75"),
            ("boundary/AP", "Boundary AP"),
            ("segm/AP-wire", "wire AP"),
        ),
        INSTANCE_VAL,
        "thin-instance",
        "difference",
    ),
}


def run_dir(root: Path, task: str, variant: Variant, seed: int) -> Path:
    return root / f"{task}_{variant.name}_seed{seed}"


def train_command(variant: Variant, seed: int, output_dir: Path, resume: bool) -> list[str]:
    return [
        sys.executable,
        "tools/train_net.py",
        "--config-file",
        variant.config,
        *(["--resume"] if resume else []),
        *variant.options,
        "SEED",
        str(seed),
        "OUTPUT_DIR",
        str(output_dir),
    ]


def final_metrics(output_dir: Path, keys: list[str]) -> dict | None:
    """The last metrics.json entry that holds every one of ``keys`` (the final evaluation)."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return None
    found = None
    for line in path.read_text().splitlines():
        entry = json.loads(line) if line.strip() else {}
        if all(key in entry for key in keys):
            found = entry
    return found


def results_table(task: str, variants: list[Variant], metrics: dict, seeds: list[int]) -> str:
    """
    The markdown table: per seed and on average, each variant's metrics, and each other variant's
    against the first (same seed; the mean row: of the means), as the task's comparison says.

    Args:
        variants: the task's variants compared, its first one first.
        metrics: ``(variant name, seed) -> metrics.json entry``.
    """
    columns = TASKS[task].metrics
    reference = variants[0].name
    ratio = TASKS[task].comparison == "ratio"
    header = ["seed"] + [f"{v.name}: {' / '.join(title for _, title in columns)}" for v in variants]
    header += [
        f"{v.name} {'/' if ratio else '-'} {reference}, {title}"
        for v in variants[1:]
        for _, title in columns
    ]
    rows = []

    def row(label: str, values: dict) -> list[str]:
        cells = [label]
        for variant in variants:
            cells.append(" / ".join(f"{values[variant.name, key]:.2f}" for key, _ in columns))
        for variant in variants[1:]:
            for key, _ in columns:
                value, base = values[variant.name, key], values[reference, key]
                if ratio:
                    cells.append(f"{100 * value / base:.0f}%" if base else "nan")
                else:
                    cells.append(f"{value - base:+.2f}")
        return cells

    for seed in seeds:
        values = {(v.name, key): metrics[v.name, seed][key] for v in variants for key, _ in columns}
        rows.append(row(str(seed), values))
    means = {
        (v.name, key): sum(metrics[v.name, s][key] for s in seeds) / len(seeds)
        for v in variants
        for key, _ in columns
    }
    rows.append(row("mean", means))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def threads_per_run(jobs: int) -> int:
    """The CPU threads of each of ``jobs`` trainings at a time: the cores divided among them."""
    return max(1, (os.cpu_count() or 1) // jobs)


def train(command: list[str], output_dir: Path, jobs: int) -> None:
    """Runs one training; with several at a time, with its share of the cores and its console
    output in ``<output_dir>/console.log``."""
    if jobs == 1:
        subprocess.run(command, cwd=REPO, check=True)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_run(jobs))}
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "console.log", "a") as console:
        subprocess.run(command, cwd=REPO, check=True, env=env, stdout=console, stderr=console)


def results_page(
    task: str, variants: list[Variant], metrics: dict, seeds: list[int], root: Path, jobs: int
) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,  # outside a git checkout the page says "unknown"
    ).stdout.strip()
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}"
    seed_list = " ".join(map(str, seeds))
    command = f"bash tools/with_env.sh python tools/seeded_runs.py {task} --seeds {seed_list}"
    if len(variants) < len(TASKS[task].variants):
        command += " --variants " + " ".join(variant.name for variant in variants)
    command += f" --jobs {jobs}" if jobs > 1 else ""
    # A run's numbers depend on its thread count, not on what ran beside it.
    threads = threads_per_run(jobs) if jobs > 1 else os.environ.get("OMP_NUM_THREADS", "all cores")
    lines = [
        f"*Written by `tools/seeded_runs.py` on {datetime.date.today()}, commit "
        f"{commit or 'unknown'}, on {machine}, CPU threads per training: {threads}; final "
        f"evaluation of each run in {root}.*",
        "",
        "```bash",
        command,
        "```",
        "",
        "It trains, for each seed:",
        "",
    ]
    for variant in variants:
        options = " ".join(shlex.quote(option) for option in variant.options)
        lines.append(f"* {variant.name}: `{variant.config}` {options}".rstrip())
    lines += [
        "",
        f"Evaluated on {TASKS[task].dataset}.",
        "",
        results_table(task, variants, metrics, seeds),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants",
        nargs="+",
        help="compare only these of the task's variants (at least 2; the first in the task's "
        "order is the one the others are compared with)",
    )
    parser.add_argument("--output-root", type=Path, default=Path("output/seeded_runs"))
    parser.add_argument("--results", type=Path, help="the table's file (must not exist)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--jobs", type=int, default=1, help="trainings at a time, sharing the CPU cores (>= 1)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: must be 1 or more")
    names = [variant.name for variant in TASKS[args.task].variants]
    unknown = sorted(set(args.variants or []) - set(names))
    if unknown:
        parser.error(f"--variants {' '.join(unknown)}: {args.task}'s variants are {names}")
    if args.variants is not None and len(set(args.variants)) < 2:
        parser.error(f"--variants {' '.join(args.variants)}: name 2 or more to compare")
    if args.results is None:
        args.results = REPO / "docs/results" / f"{datetime.date.today()}-{TASKS[args.task].page}.md"
    if args.results.exists() and not args.dry_run:
        parser.error(f"--results {args.results} exists; give a new file (nothing is overwritten)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    task = TASKS[args.task]
    variants = [v for v in task.variants if args.variants is None or v.name in args.variants]
    keys = [key for key, _ in task.metrics]
    missing = []
    for seed in args.seeds:
        for variant in variants:
            output_dir = run_dir(args.output_root, args.task, variant, seed)
            if final_metrics(output_dir, keys) is None:
                resume = (output_dir / "last_checkpoint").is_file()
                missing.append((train_command(variant, seed, output_dir, resume), output_dir))
    for command, _ in missing:
        print(shlex.join(command), flush=True)
    if args.dry_run:
        return {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        trainings = [pool.submit(train, *run, args.jobs) for run in missing]
        try:
            for training in concurrent.futures.as_completed(trainings):
                training.result()
        except subprocess.CalledProcessError:
            pool.shutdown(cancel_futures=True)  # the running ones finish, no other one starts
            raise
    metrics = {}
    for seed in args.seeds:
        for variant in variants:
            output_dir = run_dir(args.output_root, args.task, variant, seed)
            metrics[variant.name, seed] = final_metrics(output_dir, keys)
            if metrics[variant.name, seed] is None:
                raise RuntimeError(
                    f"{output_dir}/metrics.json holds no final evaluation ({keys}) after the "
                    "training: is DATASETS.TEST set?"
                )
    page = results_page(args.task, variants, metrics, args.seeds, args.output_root, args.jobs)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "x") as f:  # never overwrites
        f.write(page)
    print(page)
    return metrics


if __name__ == "__main__":
    main()
