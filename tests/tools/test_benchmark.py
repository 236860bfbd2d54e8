"""
tools/benchmark.py (semantic and instance cases) and tools/benchmark_export.py: smoke runs that
report in their documented format (not timings), as printed, JSON and markdown; and the shared
harness (tools/benchmark_harness.py): reports written part by part, TF32 control, refused
outputs.
"""

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, small_fpn_cfg


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(tool: str, output_dir, *arguments: str):
    """Run ``tools/<tool>`` with ``arguments``, ``--json`` and ``--markdown`` files in
    ``output_dir``; (completed process, the JSON results, the markdown text). Fails with the
    tool's stderr if it exits non-zero."""
    json_file, markdown_file = output_dir / "results.json", output_dir / "results.md"
    command = [
        sys.executable, str(REPO / "tools" / tool), *arguments,
        "--json", str(json_file), "--markdown", str(markdown_file),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(json_file.read_text()), markdown_file.read_text()


def assert_timings_ordered(case: dict, kinds, variants) -> None:
    """Every timing of the case's ``kinds`` has min <= median <= max, for every variant."""
    for kind in kinds:
        for variant in variants:
            timing = case[kind][variant]
            assert timing["min"] <= timing["median"] <= timing["max"]


def assert_markdown_header(markdown: str, tool: str, arguments) -> None:
    """The markdown starts with the run's date, machine, torch version and exact command."""
    lines = markdown.splitlines()
    assert lines[0].startswith("# pointrend_d2 benchmark")
    for key in ("date", "machine", "torch", "device", "threads", "TF32"):
        assert any(line.startswith(f"- {key}: ") for line in lines[:12]), key
    command = next(line for line in lines if line.startswith("- command: "))
    assert f"tools/{tool} {' '.join(arguments)}" in command
    assert "- TF32: does not apply on the CPU" in lines


@pytest.mark.slow
def test_benchmark_quick_run_reports_all_parts(tmp_path):
    result, results, markdown = run_tool("benchmark.py", tmp_path, "--quick")
    assert results["variants"] == ["semantic_fpn", "reference", "ours", "ours_topk"]
    (case,) = results["inference"]
    assert (case["height"], case["width"], case["num_classes"]) == (64, 96, 19)
    assert_timings_ordered(case, ("refinement_ms", "whole_ms"), results["variants"])
    for variant in results["variants"]:
        assert set(case["memory_mib"][variant]) == {"head", "whole"}
    checks = {(c["variant"], c["expected"]): c for c in case["output_checks"]}
    assert set(checks) == {("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours")}
    for check in checks.values():
        assert check["tf32"] is None  # the CPU: TF32 does not apply
        assert check["argmax_equal"] is True
        assert check["max_abs_logit_diff"] < 1e-4
    # The two selections refine the same cells with the same point head: identical logits.
    assert checks["ours_topk", "ours"]["max_abs_logit_diff"] == 0
    assert set(results["training"]["step_ms"]) == {"semantic_fpn", "ours"}
    # Printed and written: a table per part, with ratios to (b), (a) and (c).
    for heading in (
        "64x96, 19 classes: refinement (ms",
        "64x96, 19 classes: whole (ms",
        "64x96, 19 classes: peak memory growth (MiB)",
        "64x96, 19 classes: outputs compared",
        "Training step, batch 2 of 64x96",
    ):
        assert heading in result.stdout, heading
        assert f"### {heading}" in markdown, heading
    for text in ("(c) ours, bounded", "(d) ours, top-k", "/ (c)", "(d) vs (c)"):
        assert text in result.stdout and text in markdown, text
    assert "| (d) vs (c) | n/a | 0.00e+00 | yes |" in markdown
    assert "| NO |" not in markdown
    assert_markdown_header(markdown, "benchmark.py", ["--quick"])


@pytest.mark.slow
def test_benchmark_instance_quick_run_reports_tables_and_identical_masks(tmp_path):
    result, results, markdown = run_tool("benchmark.py", tmp_path, "--case", "instance", "--quick")
    assert results["variants"] == ["mask_rcnn", "reference", "ours", "ours_topk", "implicit"]
    (case,) = results["instance"]
    assert (case["height"], case["width"], case["detections"]) == (96, 160, 6)
    assert_timings_ordered(case, ("head_ms", "head_paste_ms"), results["variants"])
    assert set(case["memory_mib"]) == set(results["variants"])
    assert "VmHWM" in results["memory_method"]
    checks = {(c["variant"], c["expected"]): c for c in case["output_checks"]}
    assert set(checks) == {("ours", "reference"), ("ours_topk", "reference"), ("ours_topk", "ours")}
    for check in checks.values():
        assert check["shape"] == [6, 96, 160] and check["tf32"] is None
        assert check["masks_equal"] is True and check["differing_pixels"] == 0
    # Printed and written: both timing tables with their ratios, memory, the mask comparisons.
    for text in (
        "mask head (ms",
        "mask head + paste (ms",
        "peak memory of mask head + paste",
        "pasted masks compared",
        "(a) Mask R-CNN 28x28",
        "(b) d2 PointRend",
        "(c) ours, bounded",
        "(d) ours, top-k",
        "(e) ours, Implicit PointRend",
        "/ (b)",
        "/ (a)",
        "/ (c)",
        "VmHWM",
    ):
        assert text in result.stdout and text in markdown, text
    assert "| (c) vs (b) | n/a | 6 x 96 x 160 | identical | 0 of 92160 |" in markdown
    assert "DIFFER" not in result.stdout
    assert_markdown_header(markdown, "benchmark.py", ["--case", "instance", "--quick"])


@pytest.mark.slow
def test_benchmark_export_quick_run_reports_all_variants(tmp_path):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(small_fpn_cfg(5).dump())
    arguments = ["--config-file", str(config_file), "--random-weights", "--size", "64", "96",
                 "--repeats", "1"]  # fmt: skip
    result, results, markdown = run_tool("benchmark_export.py", tmp_path, *arguments)
    assert set(results["whole_ms"]) == {"eager_bounded", "eager_topk", "torch_export", "onnx"}
    assert set(results["export_s"]) == {"torch_export", "onnx"}
    for check in results["output_checks"].values():
        assert check["argmax_agreement"] == 1.0 and check["max_rel_diff"] < 1e-4
    for text in ("Export time: ", "/ bounded", "torch.export (.pt2)", "ONNX Runtime vs eager"):
        assert text in result.stdout and text in markdown, text
    assert "- onnxruntime: " in markdown and "- weights: random" in markdown
    assert_markdown_header(markdown, "benchmark_export.py", arguments)


def test_benchmark_refuses_an_existing_output_file_before_measuring(tmp_path):
    existing = tmp_path / "earlier.md"
    existing.write_text("earlier results")
    command = [sys.executable, str(REPO / "tools" / "benchmark.py"), "--markdown", str(existing)]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 2
    assert (
        f"--markdown {existing}: the file exists; give a new path (results are never "
        "overwritten)" in result.stderr
    )
    assert existing.read_text() == "earlier results"
    assert "timing" not in result.stderr


@pytest.fixture(scope="module")
def harness():
    return load_tool("benchmark_harness")


def test_report_writes_each_part_as_it_is_added(harness, tmp_path, capsys):
    json_file, markdown_file = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    header = {"date": "D", "command": "python tools/x.py --flag"}
    report = harness.Report("Title", header, json_file, markdown_file)
    assert (
        markdown_file.read_text() == "# Title\n\n- date: D\n- command: `python tools/x.py --flag`\n"
    )
    first = harness.Table("first (ms)", ["variant", "median"], [["(a) x", "1.5"]])
    report.add(first)
    report.save({"cases": [1]})
    # Written before the next part is measured: a run killed here keeps the first part.
    assert markdown_file.read_text().endswith(
        "### first (ms)\n\n| variant | median |\n|---|---:|\n| (a) x | 1.5 |\n"
    )
    assert json.loads(json_file.read_text()) == {"cases": [1]}
    report.add("a paragraph")
    report.save({"cases": [1, 2]})
    assert markdown_file.read_text().endswith("| (a) x | 1.5 |\n\na paragraph\n")
    assert json.loads(json_file.read_text()) == {"cases": [1, 2]}
    # The JSON is replaced whole (through a .partial file that is renamed).
    assert sorted(p.name for p in json_file.parent.iterdir()) == ["r.json", "r.md"]
    printed = capsys.readouterr().out
    assert "date: D; command: python tools/x.py --flag" in printed
    assert "first (ms)\nvariant  median\n(a) x       1.5" in printed


def test_tf32_is_set_for_the_block_and_restored(harness):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    try:
        matmul.allow_tf32, cudnn.allow_tf32 = False, True  # torch's defaults
        for enabled in (False, True):
            with harness.tf32(enabled):
                assert (matmul.allow_tf32, cudnn.allow_tf32) == (enabled, enabled)
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
        with harness.tf32(None):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved
    assert harness.tf32_settings(torch.device("cuda")) == [False, True]
    assert harness.tf32_settings(torch.device("cpu")) == [None]


def test_benchmark_names_why_cuda_cannot_be_used(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    benchmark = load_tool("benchmark")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--device", "cuda", "--quick"])
    assert exit_info.value.code == 2
    assert "--device cuda: torch.cuda.is_available() is False (torch " in capsys.readouterr().err


def test_parity_checks_run_under_each_tf32_setting(monkeypatch):
    """The GPU's bookkeeping, run on the CPU: the checks are repeated with TF32 off and on (the
    flags are set even where they change nothing), each labelled, in JSON and in the table."""
    monkeypatch.syspath_prepend(str(REPO / "tools"))
    semantic = load_tool("benchmark_semantic")
    seen = []

    class RecordingTf32:
        def __init__(self, enabled):
            self.enabled = enabled

        def __enter__(self):
            seen.append(self.enabled)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(semantic, "tf32_settings", lambda device: [False, True])
    monkeypatch.setattr(semantic, "tf32", RecordingTf32)
    models = semantic.build_models(semantic.VARIANTS, 3, 18, "cpu")
    checks = semantic.output_checks(models, semantic.random_image(64, 64))
    assert seen == [False, True]
    assert [(c["variant"], c["expected"], c["tf32"]) for c in checks] == [
        (*pair, enabled) for enabled in (False, True) for pair in semantic.OUTPUT_CHECKS
    ]
    # The same float32 computation on the CPU either way.
    assert checks[:3] == [{**c, "tf32": False} for c in checks[3:]]
    case = {
        "height": 64, "width": 64, "num_classes": 3, "output_checks": checks,
        "refinement_ms": {"ours": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 1}},
        "whole_ms": {"ours": {"median": 2.0, "min": 2.0, "max": 2.0, "n": 1}},
    }  # fmt: skip
    table = semantic.case_tables(case)[-1]
    assert [row[:2] for row in table.rows] == [
        [f"{a} vs {b}", tf32] for tf32 in ("off", "on") for a, b in
        (("(c)", "(b)"), ("(d)", "(b)"), ("(d)", "(c)"))
    ]  # fmt: skip
