"""
What tools/benchmark.py's cases (benchmark_semantic.py, benchmark_instance.py) and
tools/benchmark_export.py share: interleaved timings, peak memory, TF32 control for the parity
checks, and the report, printed and written (JSON, markdown) part by part as it is measured, so
that a run cut short keeps everything it measured.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

try:
    from detectron2.projects import point_rend as REFERENCE_POINT_REND
except ImportError:  # a detectron2 without projects/: the reference variants are left out
    REFERENCE_POINT_REND = None

# The subdivision selection of pointrend_d2's variants, in both cases.
SELECTION = {"ours": "bounded", "ours_topk": "topk"}


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a timer measures it (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Run each closure ``warmup`` then ``repeats`` times, interleaved (so that the machine's
    drift hits all alike), without gradients; times in ms."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                fn()
            synchronize(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return {
        name: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t)}
        for name, t in times.items()
    }


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


def _proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_growth_mib(run: Callable[[], object], device: torch.device) -> float:
    """
    How far the memory in use rises above its current value while ``run()`` runs, in MiB: the
    allocated memory on a GPU (``torch.cuda.max_memory_allocated`` after a reset, in this process),
    the resident set size on the CPU. On the CPU the kernel's peak (VmHWM) is first reset to the
    current RSS (``/proc/self/clear_refs``), as ``getrusage``'s peak also counts what this process
    (and, across exec, its parent) held before.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _proc_status_kib("VmRSS")
    run()
    return (_proc_status_kib("VmHWM") - before) / 1024


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "growth of torch.cuda.max_memory_allocated over the run, in this process"
    return (
        "growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the run, "
        "fresh process each"
    )


def tf32_settings(device: torch.device) -> list:
    """The TF32 settings the parity checks run under: off and on on a GPU; None (TF32 does not
    apply) on the CPU."""
    return [False, True] if device.type == "cuda" else [None]


@contextlib.contextmanager
def tf32(enabled: bool | None) -> Iterator[None]:
    """
    cuBLAS matrix products and cuDNN convolutions in TF32 (``enabled``) or in full FP32, restored
    afterwards; None changes nothing. The settings matter to parity: by torch's defaults cuDNN
    convolutions (the reference's point head, a Conv1d) run in TF32 while matrix products (ours, a
    baddbmm) stay in FP32, which alone makes their logits differ by far more than FP32 rounding.
    """
    if enabled is None:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def tf32_label(enabled: bool | None) -> str:
    return {None: "n/a", False: "off", True: "on"}[enabled]


def tf32_note(device: torch.device) -> str:
    """The TF32 line of a report's header."""
    if device.type != "cuda":
        return "does not apply on the CPU"
    return (
        "parity checks run with TF32 off and on (torch.backends.cuda.matmul.allow_tf32 = "
        "torch.backends.cudnn.allow_tf32 = False / True); timings with this process's settings "
        f"(matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN {torch.backends.cudnn.allow_tf32})"
    )


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what ``platform`` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> str:
    """The machine in words: CPU model and core count, and the GPU on CUDA."""
    description = f"{cpu_model()}, {os.cpu_count()} cores"
    if device.type == "cuda":
        description += f"; {torch.cuda.get_device_name(device)}"
    return description


def check_device(parser: argparse.ArgumentParser, device: str) -> torch.device:
    """``--device`` as a torch.device, or a parser error that says why it cannot be used."""
    try:
        device = torch.device(device)
    except RuntimeError as error:
        parser.error(f"--device {device}: {error}; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            f"--device {device}: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}); run with --device cpu or on a GPU machine"
        )
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {device}: the benchmarks run on cpu or cuda")
    return device


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=Path, help="write the results to this (new) JSON file, case by case"
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="PATH",
        help="write the tables to this (new) markdown file, headed by the date, the machine, "
        "torch and the command line, case by case as measured (e.g. docs/results/NAME.md)",
    )


def check_new_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--json and --markdown name files that do not exist yet: a benchmark never overwrites a
    result (checked before anything is measured)."""
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None and path.exists():
            parser.error(
                f"{flag} {path}: the file exists; give a new path (results are never overwritten)"
            )


class Table:
    """A table of formatted cells: printed aligned, written as markdown."""

    def __init__(self, title: str, columns: list[str], rows: list[list[str]]):
        self.title, self.columns, self.rows = title, columns, rows

    def text(self) -> str:
        widths = [
            max(len(str(row[i])) for row in [self.columns, *self.rows])
            for i in range(len(self.columns))
        ]
        lines = [f"\n{self.title}"]
        for row in [self.columns, *self.rows]:
            cells = [f"{row[0]:<{widths[0]}}"]
            cells += [f"{cell:>{width}}" for cell, width in zip(row[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|---" + "|---:" * (len(self.columns) - 1) + "|")
        lines += ["| " + " | ".join(map(str, row)) + " |" for row in self.rows]
        return "\n".join(lines)


def timing_table(title: str, times: dict, labels: dict, ratio_columns) -> Table:
    """Median, min and max (ms) per variant of ``times``, and the median's ratio to each
    ``(heading, variant)`` of ``ratio_columns`` present in ``times``."""
    ratio_columns = [(heading, ref) for heading, ref in ratio_columns if ref in times]
    repeats = next(iter(times.values()))["n"]
    rows = [
        [labels[v], f"{t['median']:.1f}", f"{t['min']:.1f}", f"{t['max']:.1f}"]
        + [f"{ratio(t['median'], times[ref]['median']):.3f}" for _, ref in ratio_columns]
        for v, t in times.items()
    ]
    return Table(
        f"{title} (ms, median [min-max] of {repeats})",
        ["variant", "median", "min", "max", *(heading for heading, _ in ratio_columns)],
        rows,
    )


def run_header(device: torch.device, threads: int, **extra: str) -> dict:
    """The lines heading a report: date, machine, versions, the exact command line, settings."""
    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(device),
        "torch": torch.__version__
        + (f" (CUDA {torch.version.cuda})" if device.type == "cuda" else ""),
        "command": shlex.join(["python", *sys.argv]),
        "device": str(device),
        "threads": threads,
        "TF32": tf32_note(device),
    }
    header.update(extra)
    return header


def markdown_header(header: dict) -> list[str]:
    """The header as markdown list items, the command line as code."""
    return [
        f"- {key}: `{value}`" if key == "command" else f"- {key}: {value}"
        for key, value in header.items()
    ]


class Report:
    """
    Results printed and written as they come: each ``add`` prints its tables and paragraphs and
    appends them to the markdown file; each ``save`` rewrites the JSON file (atomically) with the
    results so far.
    """

    def __init__(
        self, title: str, header: dict, json_path: Path | None, markdown_path: Path | None
    ):
        self.header, self.json_path, self.markdown_path = header, json_path, markdown_path
        for path in (json_path, markdown_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        print("; ".join(f"{key}: {value}" for key, value in header.items()), flush=True)
        if markdown_path is not None:
            lines = [f"# {title}", ""] + markdown_header(header)
            markdown_path.write_text("\n".join(lines) + "\n")

    def add(self, *blocks: Table | str) -> None:
        """Print ``blocks`` (tables, or paragraphs of text) and append them to the markdown."""
        for block in blocks:
            print(block.text() if isinstance(block, Table) else f"\n{block}", flush=True)
        if self.markdown_path is not None:
            with open(self.markdown_path, "a") as f:
                for block in blocks:
                    f.write("\n" + (block.markdown() if isinstance(block, Table) else block) + "\n")

    def save(self, results: dict) -> None:
        if self.json_path is None:
            return
        partial = self.json_path.with_name(self.json_path.name + ".partial")
        partial.write_text(json.dumps(results, indent=2))
        os.replace(partial, self.json_path)
