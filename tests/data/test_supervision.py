"""
A config that trains from points must train on data with points, and sparse point labels must be
trained from points: errors at startup (the Trainer, before it builds the model) that name the
dataset and MODEL.POINT_SUPERVISION.ENABLED.
"""

import pytest
from detectron2.structures import BoxMode

from pointrend_d2.data.supervision import check_training_supervision
from pointrend_d2.engine import Trainer
from tests.helpers import small_fpn_cfg, small_rcnn_cfg

THINGS = {"thing_classes": ["a", "b"], "evaluator_type": "coco"}
STUFF = {"stuff_classes": ["a", "b", "c", "d", "e"], "evaluator_type": "sem_seg"}


def instance_record(with_points: bool) -> dict:
    annotation = {"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
    if with_points:
        annotation.update(point_coords=[[1.0, 1.0]], point_labels=[1])
    else:
        annotation["segmentation"] = [[0, 0, 4, 0, 4, 4]]
    return {"file_name": "a.png", "height": 8, "width": 8, "annotations": [annotation]}


def test_matching_data_passes(register_dataset):
    points = register_dataset([instance_record(True)], **THINGS)
    masks = register_dataset([instance_record(False)], **THINGS)
    sparse = register_dataset([{"file_name": "a.png"}], **STUFF, sparse_labels=True)
    dense = register_dataset([{"file_name": "a.png"}], **STUFF)
    check_training_supervision([points, sparse], True)
    check_training_supervision([masks, dense], False)
    check_training_supervision([points], False)  # the mask head refuses it if it has no masks


@pytest.mark.parametrize(
    "kind,point_supervision,message",
    [
        (
            "masks",
            True,
            r"MODEL.POINT_SUPERVISION.ENABLED is True, but DATASETS.TRAIN dataset 'test_\w+' has "
            r"no point annotations \(point_coords, point_labels\): make them from its masks with "
            r"tools/make_point_annotations.py",
        ),
        (
            "dense",
            True,
            r"MODEL.POINT_SUPERVISION.ENABLED is True, but DATASETS.TRAIN dataset 'test_\w+' has "
            r"full label maps, not sparse point labels: .*tools/make_point_labels.py",
        ),
        (
            "sparse",
            False,
            r"DATASETS.TRAIN dataset 'test_\w+' has sparse point labels \(sparse_labels\), which "
            r"train only with MODEL.POINT_SUPERVISION.ENABLED True",
        ),
    ],
)
def test_data_that_does_not_fit_the_config_is_named(
    register_dataset, kind, point_supervision, message
):
    name = {
        "masks": lambda: register_dataset([instance_record(False)], **THINGS),
        "dense": lambda: register_dataset([{"file_name": "a.png"}], **STUFF),
        "sparse": lambda: register_dataset([{"file_name": "a.png"}], **STUFF, sparse_labels=True),
    }[kind]()
    with pytest.raises(ValueError, match=message):
        check_training_supervision([name], point_supervision)


def test_trainer_checks_before_building_the_model(register_dataset, monkeypatch):
    masks = register_dataset([instance_record(False)], **THINGS)
    cfg = small_rcnn_cfg(
        num_classes=2,
        **{
            "MODEL.POINT_SUPERVISION.ENABLED": True,
            "DATASETS.TRAIN": (masks,),
            "DATASETS.TEST": (),
        },
    )
    monkeypatch.setattr(Trainer, "build_model", classmethod(lambda cls, cfg: pytest.fail()))
    with pytest.raises(ValueError, match=rf"dataset '{masks}' has no point annotations"):
        Trainer(cfg)
    # A head that cannot train from points is named there too.
    cfg.merge_from_list(["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"])
    with pytest.raises(ValueError, match=r"MODEL.ROI_MASK_HEAD.NAME='MaskRCNNConvUpsampleHead'"):
        Trainer(cfg)
    sparse = register_dataset([{"file_name": "a.png"}], **STUFF, sparse_labels=True)
    semantic = small_fpn_cfg(**{"DATASETS.TRAIN": (sparse,), "DATASETS.TEST": ()})
    with pytest.raises(ValueError, match=rf"dataset '{sparse}' has sparse point labels"):
        Trainer(semantic)
