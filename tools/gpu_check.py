#!/usr/bin/env python
"""
The GPU check, run by tools/gpu_check.sh (after its optional install from a wheelhouse): on one
GPU, in at most 8 minutes, each leg below in turn, every result written to OUT as it comes.

  benchmark_semantic.{json,md}  tools/benchmark.py --device cuda (whole models, output parity with
                                TF32 off and on, in-process peak memory)
  benchmark_instance.{json,md}  tools/benchmark.py --case instance --device cuda
  quickstart_semseg/            the semantic quickstart (configs/pointrend_semseg.yaml) on the GPU
  quickstart_instance/          the instance quickstart (configs/quickstart/pointrend_instance.yaml)
  quickstart_semseg_amp/        the semantic quickstart with SOLVER.AMP.ENABLED, a short schedule
                                without evaluation: time per iteration with AMP
  <leg>.log                     each leg's output
  summary.{md,json}             each leg's status, wall time, command, time and data time per
                                iteration (metrics.json) and final metrics; rewritten after each leg

Each leg runs under a time cap (the caps add up to less than 8 minutes); a leg past its cap is
stopped, recorded as timed out, and keeps what it wrote. A failing leg does not stop the others;
the exit status is 1 if any leg failed or timed out.

--dry-run runs the same legs on the CPU at tiny sizes (benchmarks --quick, 4 training iterations
of small crops), so that tests/tools/test_gpu_check.py keeps the script from rotting; the AMP leg
is skipped there with its reason (detectron2's AMPTrainer requires CUDA), its command recorded.

    python tools/gpu_check.py OUT [--dry-run]
"""

import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from benchmark_harness import Table, markdown_header, run_header

REPO = Path(__file__).resolve().parents[1]
SEMANTIC_CONFIG = "configs/pointrend_semseg.yaml"
INSTANCE_CONFIG = "configs/quickstart/pointrend_instance.yaml"
# Caps in seconds, not estimates (no GPU figure was measured when they were set): together under
# 8 minutes, the benchmark's share as issue 17 asks (under 3 minutes for the semantic run).
CAPS = {
    "benchmark_semantic": 140,
    "benchmark_instance": 60,
    "quickstart_semseg": 110,
    "quickstart_instance": 110,
    "quickstart_semseg_amp": 50,
}
AMP_ITERATIONS = 200
# --dry-run: tiny sizes on the CPU, under caps wide enough for a busy 2-core machine.
DRY_RUN_CAP_FACTOR = 5
DRY_RUN_BENCHMARK = ["--quick", "--no-memory", "--threads", "1"]
DRY_RUN_TRAINING = [
    "SOLVER.MAX_ITER", "4",
    "SOLVER.STEPS", "()",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip
DRY_RUN_SEMANTIC = ["INPUT.CROP.SIZE", "(128, 128)", "INPUT.MIN_SIZE_TEST", "128",
                    "INPUT.MAX_SIZE_TEST", "256"]  # fmt: skip
DRY_RUN_INSTANCE = ["MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE", "10"]
AMP_SKIPPED_ON_CPU = (
    "skipped on the CPU: detectron2's AMPTrainer runs CUDA autocast and refuses the CPU "
    '("[AMPTrainer] CUDA is required for AMP training!")'
)
# The final metrics reported per training leg (metrics.json keys).
METRICS = ("sem_seg/mIoU", "boundary_iou/mBIoU", "bbox/AP", "segm/AP", "boundary/AP")


@dataclasses.dataclass
class Leg:
    name: str
    command: list[str]
    # The training output folder, for legs that train.
    output_dir: Path | None = None
    # Why the leg does not run here (None: it runs).
    skip_reason: str | None = None


def legs(out: Path, dry_run: bool) -> list[Leg]:
    """The legs of the check, writing under ``out``."""
    device = "cpu" if dry_run else "cuda"
    python = sys.executable

    def benchmark(name: str, *arguments: str) -> Leg:
        command = [
            python, str(REPO / "tools" / "benchmark.py"), *arguments, "--device", device,
            "--json", str(out / f"{name}.json"), "--markdown", str(out / f"{name}.md"),
        ]  # fmt: skip
        return Leg(name, command + (DRY_RUN_BENCHMARK if dry_run else []))

    def training(name: str, config: str, *options: str, dry_run_options=()) -> Leg:
        command = [python, str(REPO / "tools" / "train_net.py"), "--config-file",
                   str(REPO / config), "MODEL.DEVICE", device, *options,
                   "OUTPUT_DIR", str(out / name)]  # fmt: skip
        if dry_run:
            command += [*DRY_RUN_TRAINING, *dry_run_options]
        return Leg(name, command, output_dir=out / name)

    amp = training(
        "quickstart_semseg_amp", SEMANTIC_CONFIG, "SOLVER.AMP.ENABLED", "True",
        "SOLVER.MAX_ITER", str(AMP_ITERATIONS), "SOLVER.STEPS", "()", "DATASETS.TEST", "()",
        dry_run_options=DRY_RUN_SEMANTIC,
    )  # fmt: skip
    amp.skip_reason = AMP_SKIPPED_ON_CPU if device == "cpu" else None
    return [
        benchmark("benchmark_semantic"),
        benchmark("benchmark_instance", "--case", "instance"),
        training("quickstart_semseg", SEMANTIC_CONFIG, dry_run_options=DRY_RUN_SEMANTIC),
        training("quickstart_instance", INSTANCE_CONFIG, dry_run_options=DRY_RUN_INSTANCE),
        amp,
    ]


def run_leg(leg: Leg, out: Path, cap_s: float) -> dict:
    """Run ``leg`` with its output in ``out/<name>.log``, stopping it (and the processes it
    started) after ``cap_s`` seconds; its record for the summary."""
    record = {"leg": leg.name, "command": subprocess.list2cmdline(leg.command)}
    if leg.skip_reason:
        print(f"[gpu_check] {leg.name}: {leg.skip_reason}", flush=True)
        return {**record, "status": "skipped", "reason": leg.skip_reason}
    print(f"[gpu_check] {leg.name} (at most {cap_s:.0f} s) ...", flush=True)
    start = time.monotonic()
    with open(out / f"{leg.name}.log", "w") as log:
        process = subprocess.Popen(
            leg.command,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its data loaders
        )
        try:
            status = "ok" if process.wait(timeout=cap_s) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = "timed out"
    record.update(status=status, wall_s=round(time.monotonic() - start, 1))
    if status == "failed":
        record["reason"] = f"exit status {process.returncode}; see {leg.name}.log"
    if leg.output_dir is not None:
        record.update(training_figures(leg.output_dir / "metrics.json"))
    print(f"[gpu_check] {leg.name}: {status} after {record['wall_s']} s", flush=True)
    return record


def training_figures(metrics_file: Path) -> dict:
    """Time and data time per iteration (medians of detectron2's metrics.json, which smooths
    them over 20 iterations) and the final metrics, from what the run wrote."""
    if not metrics_file.is_file():
        return {}
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    figures = {}
    for key in ("time", "data_time"):
        values = [r[key] for r in records if key in r]
        if values:
            figures[f"{key}_s_per_iteration"] = statistics.median(values)
    # The evaluation's record comes after the last iteration's, numbered MAX_ITER.
    iterations = [r["iteration"] for r in records if "time" in r]
    if iterations:
        figures["iterations"] = max(iterations) + 1
    final = {k: r[k] for r in records for k in METRICS if k in r}
    if final:
        figures["metrics"] = final
    return figures


def summary_table(records: list) -> Table:
    def cell(value, digits=3):
        return "" if value is None else f"{value:.{digits}f}"

    rows = [
        [
            r["leg"],
            r["status"],
            cell(r.get("wall_s"), 1),
            str(r.get("iterations", "")),
            cell(r.get("time_s_per_iteration"), 4),
            cell(r.get("data_time_s_per_iteration"), 4),
            ", ".join(f"{k} {v:.2f}" for k, v in r.get("metrics", {}).items()),
            r.get("reason", ""),
        ]
        for r in records
    ]
    return Table(
        "Legs",
        ["leg", "status", "wall (s)", "iterations", "s / iteration", "data s / iteration",
         "final metrics", "note"],
        rows,
    )  # fmt: skip


def amp_comparison(records: list) -> str | None:
    """Time per iteration with AMP against without, when both legs measured it."""
    times = {r["leg"]: r.get("time_s_per_iteration") for r in records}
    fp32, amp = times.get("quickstart_semseg"), times.get("quickstart_semseg_amp")
    if not (fp32 and amp):
        return None
    return (
        f"Semantic quickstart, time per iteration: {amp:.4f} s with AMP, {fp32:.4f} s without "
        f"(AMP / FP32 = {amp / fp32:.3f})."
    )


def write_summary(out: Path, header: dict, records: list) -> None:
    """summary.json and summary.md: the header and every leg so far (rewritten each time)."""
    comparison = amp_comparison(records)
    summary = {**header, "legs": records, "amp_comparison": comparison}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["# pointrend_d2 GPU check", "", *markdown_header(header)]
    lines += ["", summary_table(records).markdown(), ""]
    lines += [comparison, ""] if comparison else []
    lines += ["Commands:", ""] + [f"- {r['leg']}: `{r['command']}`" for r in records]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="results folder (new, or without earlier results)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    args = parser.parse_args(argv)
    planned = legs(args.out, args.dry_run)
    names = {leg.name for leg in planned} | {"summary"}
    if args.out.is_dir():
        existing = sorted(p.name for p in args.out.iterdir() if p.name.split(".")[0] in names)
        if existing:
            parser.error(
                f"{args.out} already holds results ({', '.join(existing)}); give a new folder "
                "(results are never overwritten)"
            )
    if not args.dry_run and not torch.cuda.is_available():
        parser.error(
            f"torch.cuda.is_available() is False (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda}): run on a GPU machine, or --dry-run for the CPU check"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.dry_run else "cuda")
    header = run_header(
        device,
        torch.get_num_threads(),
        mode="dry run on the CPU, tiny sizes" if args.dry_run else "one GPU",
    )
    del header["threads"], header["TF32"]  # each benchmark's own header says them
    records = []
    for leg in planned:
        cap_s = CAPS[leg.name] * (DRY_RUN_CAP_FACTOR if args.dry_run else 1)
        records.append(run_leg(leg, args.out, cap_s))
        write_summary(args.out, header, records)
    print(summary_table(records).text(), flush=True)
    if amp_comparison(records):
        print(amp_comparison(records), flush=True)
    return 0 if all(r["status"] in ("ok", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
