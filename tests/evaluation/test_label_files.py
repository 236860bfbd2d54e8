"""Label files read for evaluation under numpy 1 and 2 (CI runs numpy 2)."""

import numpy as np
import pytest
import torch
from PIL import Image

from pointrend_d2.evaluation import SemSegIoUEvaluator, read_label_map


@pytest.mark.parametrize(
    "labels",
    [
        np.array([[0, 1, 255], [4, 4, 2]], dtype=np.uint8),  # PIL mode L
        np.array([[0, 300, 65535], [7, 1000, 2]], dtype=np.uint16),  # PIL mode I;16
    ],
    ids=["uint8", "uint16"],
)
def test_read_label_map_converts_to_a_new_writable_array(tmp_path, labels):
    path = tmp_path / "labels.png"
    Image.fromarray(labels).save(path)
    read = read_label_map(str(path), dtype=int)
    assert read.dtype == np.dtype(int) and read.flags.writeable
    np.testing.assert_array_equal(read, labels)
    # The evaluators write into it (SemSegEvaluator maps the ignore label to K).
    read[read == labels.max()] = -1
    np.testing.assert_array_equal(read_label_map(str(path), dtype=int), labels)
    assert read_label_map(str(path)).dtype == labels.dtype


def test_sem_seg_iou_evaluator_reads_labels_under_the_installed_numpy(tmp_path, register_dataset):
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], dtype=np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    name = register_dataset(
        [{"file_name": "image.png", "sem_seg_file_name": str(tmp_path / "gt.png")}],
        stuff_classes=["a", "b"],
        ignore_label=255,
        evaluator_type="sem_seg",
    )
    evaluator = SemSegIoUEvaluator(name, distributed=False)
    assert evaluator.sem_seg_loading_fn is read_label_map
    evaluator.reset()
    prediction = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])  # one of the 7 scored pixels wrong
    scores = torch.nn.functional.one_hot(prediction, 2).permute(2, 0, 1).float()
    evaluator.process([{"file_name": "image.png"}], [{"sem_seg": scores}])
    results = evaluator.evaluate()["sem_seg"]
    # a: 3 pixels, 2 right, none predicted wrongly as a: IoU 2/3; b: 4 right of 5 predicted: 4/5.
    assert results["IoU-a"] == pytest.approx(100 * 2 / 3)
    assert results["IoU-b"] == pytest.approx(100 * 4 / 5)
    assert results["pACC"] == pytest.approx(100 * 6 / 7)
