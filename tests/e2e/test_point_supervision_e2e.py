"""
End to end through tools/train_net.py: the point-supervision quickstarts (shrunk and short) train
on the embedded point-labelled splits, with the losses at the labelled points, and are evaluated
against the full masks and labels of the val splits by the usual evaluators.
"""

import math
import re

import pytest

from tests.helpers import FAST_OPTS, INSTANCE_FAST_OPTS, config_path, read_metrics, run_train_net

SEMANTIC_OPTS = [*FAST_OPTS, "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "256"]

CASES = {
    "pointrend_instance_points.yaml": (INSTANCE_FAST_OPTS, "loss_mask_point", r"Task: segm"),
    "mask_rcnn_instance_points.yaml": (INSTANCE_FAST_OPTS, "loss_mask", r"Task: boundary"),
    "pointrend_semseg_points.yaml": (SEMANTIC_OPTS, "loss_sem_seg_point", r"mIoU,fwIoU"),
    "deeplabv3_pointrend_semseg_points.yaml": (SEMANTIC_OPTS, "loss_sem_seg_point", r"mIoU"),
}


@pytest.mark.slow
@pytest.mark.parametrize("config_name", list(CASES))
def test_point_supervised_quickstart_trains_and_evaluates(tmp_path, config_name):
    options, loss_name, evaluated = CASES[config_name]
    output = run_train_net(
        "--config-file", str(config_path(config_name)),
        *options, "SOLVER.MAX_ITER", "10", "OUTPUT_DIR", str(tmp_path),
    )  # fmt: skip
    losses = [m[loss_name] for m in read_metrics(tmp_path) if loss_name in m]
    assert losses and all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    assert re.search(evaluated, output), output[-3000:]
