"""
tools/gpu_check.sh and tools/gpu_check.py: the GPU legs as planned (devices, AMP, time caps),
the summary read from detectron2's metrics.json, refused outputs, and a dry run of the whole
check on the CPU at tiny sizes, so that the script cannot rot without a GPU.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

LEGS = [
    "benchmark_semantic",
    "benchmark_instance",
    "quickstart_semseg",
    "quickstart_instance",
    "quickstart_semseg_amp",
]


@pytest.fixture(scope="module")
def gpu_check():
    """tools/gpu_check.py as a module, with tools/ importable as when it runs as a script."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "tools"))


def option(command: list, key: str) -> str:
    """The value that follows ``key`` in ``command`` (the last one, as detectron2 merges)."""
    return command[len(command) - 1 - command[::-1].index(key) + 1]


def test_gpu_legs_run_on_cuda_within_8_minutes(gpu_check, tmp_path):
    legs = {leg.name: leg for leg in gpu_check.legs(tmp_path, dry_run=False)}
    assert list(legs) == LEGS
    assert sum(gpu_check.CAPS[name] for name in legs) < 8 * 60
    for name in ("benchmark_semantic", "benchmark_instance"):
        assert option(legs[name].command, "--device") == "cuda"
        assert option(legs[name].command, "--markdown") == str(tmp_path / f"{name}.md")
        assert "--quick" not in legs[name].command
    assert option(legs["benchmark_instance"].command, "--case") == "instance"
    for name in ("quickstart_semseg", "quickstart_instance", "quickstart_semseg_amp"):
        command = legs[name].command
        assert option(command, "MODEL.DEVICE") == "cuda" and legs[name].skip_reason is None
        assert option(command, "OUTPUT_DIR") == str(tmp_path / name)
        assert "SOLVER.MAX_ITER" not in command or name == "quickstart_semseg_amp"
    assert option(legs["quickstart_semseg"].command, "--config-file").endswith(
        "configs/pointrend_semseg.yaml"
    )
    assert option(legs["quickstart_instance"].command, "--config-file").endswith(
        "configs/quickstart/pointrend_instance.yaml"
    )
    amp = legs["quickstart_semseg_amp"].command
    assert option(amp, "SOLVER.AMP.ENABLED") == "True"
    assert option(amp, "SOLVER.MAX_ITER") == str(gpu_check.AMP_ITERATIONS)
    assert option(amp, "--config-file") == option(
        legs["quickstart_semseg"].command, "--config-file"
    )


def test_dry_run_legs_are_tiny_on_the_cpu_and_skip_amp(gpu_check, tmp_path):
    legs = {leg.name: leg for leg in gpu_check.legs(tmp_path, dry_run=True)}
    assert list(legs) == LEGS
    for name in ("benchmark_semantic", "benchmark_instance"):
        assert option(legs[name].command, "--device") == "cpu" and "--quick" in legs[name].command
    for name in ("quickstart_semseg", "quickstart_instance", "quickstart_semseg_amp"):
        assert option(legs[name].command, "MODEL.DEVICE") == "cpu"
        assert option(legs[name].command, "SOLVER.MAX_ITER") == "4"
    amp = legs["quickstart_semseg_amp"]
    assert "[AMPTrainer] CUDA is required for AMP training!" in amp.skip_reason
    assert option(amp.command, "SOLVER.AMP.ENABLED") == "True"  # the leg's command is kept


def test_training_figures_from_metrics_json(gpu_check, tmp_path):
    records = [
        {"iteration": 19, "time": 0.5, "data_time": 0.1, "total_loss": 2.0},
        {"iteration": 39, "time": 0.3, "data_time": 0.3},
        {"iteration": 59, "time": 0.4, "data_time": 0.2},
        # The evaluation's record, after the last iteration.
        {"iteration": 60, "sem_seg/mIoU": 70.5, "boundary_iou/mBIoU": 66.0, "sem_seg/fwIoU": 94},
    ]
    metrics = tmp_path / "metrics.json"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert gpu_check.training_figures(metrics) == {
        "time_s_per_iteration": 0.4,
        "data_time_s_per_iteration": 0.2,
        "iterations": 60,
        "metrics": {"sem_seg/mIoU": 70.5, "boundary_iou/mBIoU": 66.0},
    }
    assert gpu_check.training_figures(tmp_path / "missing.json") == {}
    with_amp = [
        {"leg": "quickstart_semseg", "time_s_per_iteration": 0.4},
        {"leg": "quickstart_semseg_amp", "time_s_per_iteration": 0.25},
    ]
    assert gpu_check.amp_comparison(with_amp) == (
        "Semantic quickstart, time per iteration: 0.2500 s with AMP, 0.4000 s without "
        "(AMP / FP32 = 0.625)."
    )
    assert gpu_check.amp_comparison(with_amp[:1]) is None


def test_gpu_check_refuses_a_folder_with_earlier_results(gpu_check, tmp_path, capsys):
    (tmp_path / "summary.json").write_text("earlier")
    (tmp_path / "install.log").write_text("kept")  # not a result of the check: allowed
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([str(tmp_path), "--dry-run"])
    assert exit_info.value.code == 2
    assert (
        f"{tmp_path} already holds results (summary.json); give a new folder (results are never "
        "overwritten)" in capsys.readouterr().err
    )
    assert (tmp_path / "summary.json").read_text() == "earlier"


def test_gpu_check_sh_names_a_wheelhouse_without_wheels(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), str(tmp_path / "out"), "--wheelhouse",
         str(wheelhouse), "--dry-run"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        f"gpu_check: --wheelhouse {wheelhouse} holds no pointrend_d2 and detectron2 wheels; "
        "write it with tools/make_wheelhouse.sh" in result.stderr
    )


@pytest.mark.slow
def test_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "gpu_check"
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), str(out), "--dry-run"],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "[gpu_check] quickstart_semseg_amp: skipped on the CPU" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    legs = {leg["leg"]: leg for leg in summary["legs"]}
    assert list(legs) == LEGS
    assert summary["device"] == "cpu" and summary["amp_comparison"] is None
    for name in LEGS[:4]:
        assert legs[name]["status"] == "ok" and legs[name]["wall_s"] > 0
        assert (out / f"{name}.log").is_file()
    assert legs["quickstart_semseg_amp"]["status"] == "skipped"
    assert "SOLVER.AMP.ENABLED True" in legs["quickstart_semseg_amp"]["command"]
    assert not (out / "quickstart_semseg_amp.log").exists()

    for name, case in (("benchmark_semantic", "inference"), ("benchmark_instance", "instance")):
        results = json.loads((out / f"{name}.json").read_text())
        assert results["device"] == "cpu" and len(results[case]) == 1
        assert all(check["tf32"] is None for check in results[case][0]["output_checks"])
        markdown = (out / f"{name}.md").read_text()
        assert markdown.startswith("# pointrend_d2 benchmark") and "| (d) vs (c) |" in markdown

    for name, metric in (("quickstart_semseg", "sem_seg/mIoU"), ("quickstart_instance", "segm/AP")):
        assert (out / name / "metrics.json").is_file()
        assert legs[name]["iterations"] == 4
        assert legs[name]["time_s_per_iteration"] > 0
        assert 0 <= legs[name]["metrics"][metric] <= 100
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("# pointrend_d2 GPU check")
    assert "| quickstart_semseg_amp | skipped |" in markdown
