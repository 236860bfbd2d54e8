"""
The registered datasets as the config names them: here, instance training records when no image
has an annotation to train on.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from pointrend_d2.data.catalog import instance_training_records
from pointrend_d2.engine import Trainer
from tests.helpers import small_rcnn_cfg


@pytest.fixture
def unannotated_dataset(tmp_path, register_dataset) -> str:
    """A registered instance dataset of two 48x64 images, neither with an annotation."""
    rng = np.random.default_rng(0)
    records = []
    for index in range(2):
        path = tmp_path / f"empty_{index}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        records.append(
            {"file_name": str(path), "height": 48, "width": 64, "image_id": index,
             "annotations": []}
        )  # fmt: skip
    return register_dataset(records, "unannotated", thing_classes=["a"], evaluator_type="coco")


def training_cfg(name, tmp_path, filter_empty: bool):
    return small_rcnn_cfg(
        num_classes=1,
        **{
            "DATASETS.TRAIN": (name,),
            "DATASETS.TEST": (),
            "DATALOADER.FILTER_EMPTY_ANNOTATIONS": filter_empty,
            "DATALOADER.NUM_WORKERS": 0,
            "INPUT.MIN_SIZE_TRAIN": (48,),
            "INPUT.MAX_SIZE_TRAIN": 64,
            "SOLVER.IMS_PER_BATCH": 2,
            "SOLVER.MAX_ITER": 2,
            "SOLVER.STEPS": (),
            "SOLVER.WARMUP_ITERS": 0,
            "OUTPUT_DIR": str(tmp_path / "output"),
        },
    )


def test_no_annotated_image_advises_turning_the_filter_off(unannotated_dataset, tmp_path):
    advice = (
        rf"DATASETS.TRAIN \['{unannotated_dataset}'\]: none of its 2 images has an annotation "
        r"to train on .* To train on them as images of background only, set "
        r"DATALOADER.FILTER_EMPTY_ANNOTATIONS False"
    )
    with pytest.raises(ValueError, match=advice):
        instance_training_records([unannotated_dataset], filter_empty=True)
    with pytest.raises(ValueError, match=advice):
        Trainer.build_train_loader(training_cfg(unannotated_dataset, tmp_path, True))
    assert len(instance_training_records([unannotated_dataset], filter_empty=False)) == 2


def test_images_without_annotations_train_with_the_filter_off(unannotated_dataset, tmp_path):
    trainer = Trainer(training_cfg(unannotated_dataset, tmp_path, False))
    trainer.train()
    assert trainer.iter == 2  # both iterations done
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(np.isfinite(loss) for loss, _ in losses)
    # Nothing to find: the mask losses are 0, the box classifier learns background.
    assert trainer.storage.history("loss_mask").latest() == 0.0
    assert torch.isfinite(next(trainer.model.parameters())).all()
