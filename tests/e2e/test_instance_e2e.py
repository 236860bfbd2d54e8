"""
End to end through tools/train_net.py on the embedded instance dataset: train the instance
quickstart (shrunk) on the CPU, write checkpoints, evaluate with --eval-only (bbox, mask and
Boundary AP through COCOBoundaryEvaluator), continue with --resume.
"""

import re

import pytest

from tests.helpers import INSTANCE_FAST_OPTS, config_path, read_metrics, run_train_net


def copypaste_row(output: str, task: str) -> list[float]:
    """The AP, AP50, ... values that detectron2 prints for ``task`` ("bbox", "segm", ...)."""
    match = re.search(
        rf"copypaste: Task: {task}\n.*copypaste: AP,AP50,AP75,APs,APm,APl\n.*copypaste: (\S+)",
        output,
    )
    assert match is not None, output[-3000:]
    return [float(value) for value in match.group(1).split(",")]


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["pointrend_instance.yaml", "mask_rcnn_instance.yaml"])
def test_instance_train_eval_resume(tmp_path, config_name):
    config = str(config_path(config_name))
    out = tmp_path / "run"
    run_train_net(
        "--config-file", config,
        *INSTANCE_FAST_OPTS, "SOLVER.MAX_ITER", "40", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert (out / "model_0000019.pth").is_file() and (out / "model_final.pth").is_file()
    metrics = [m for m in read_metrics(out) if "total_loss" in m]
    losses = {m["iteration"]: m["total_loss"] for m in metrics}
    # Each logged loss is the median of the previous 20 iterations.
    assert losses[39] < losses[19], losses
    if config_name.startswith("pointrend"):
        assert all("loss_mask_point" in m for m in metrics)

    output = run_train_net(
        "--config-file", config, "--eval-only", *INSTANCE_FAST_OPTS,
        "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval"),
    )  # fmt: skip
    for task in ("bbox", "segm", "boundary"):
        ap = copypaste_row(output, task)[0]
        assert 0 <= ap <= 100, (task, ap)

    output = run_train_net(
        "--config-file", config, "--resume",
        *INSTANCE_FAST_OPTS, "SOLVER.MAX_ITER", "50", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(out),
    )  # fmt: skip
    assert "Starting training from iteration 40" in output, output[-3000:]
