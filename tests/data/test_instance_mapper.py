"""
The instance dataset mapper: detectron2's DatasetMapper, reading images through the checked
reader (every failed read names the file; EXIF orientation as detectron2 applies it).
"""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.structures import BoxMode
from PIL import Image

from pointrend_d2.data import InstanceDatasetMapper
from pointrend_d2.engine import Trainer
from tests.helpers import small_rcnn_cfg, write_exif_image


def instance_cfg(**overrides):
    """The tiny instance config, images resized to 48 px, no random flip."""
    options = {
        "INPUT.MIN_SIZE_TRAIN": (48,),
        "INPUT.MAX_SIZE_TRAIN": 64,
        "INPUT.MIN_SIZE_TEST": 48,
        "INPUT.MAX_SIZE_TEST": 64,
        "INPUT.RANDOM_FLIP": "none",
        "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": 1,
        **overrides,
    }
    return small_rcnn_cfg(num_classes=2, **options)


def record(file_name, height=32, width=40) -> dict:
    """An instance record of two polygon annotations in a ``height`` x ``width`` image."""
    annotations = [
        {"bbox": [4.0, 4.0, 12.0, 10.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
         "segmentation": [[4.0, 4.0, 16.0, 4.0, 16.0, 14.0, 4.0, 14.0]], "iscrowd": 0},
        {"bbox": [20.0, 10.0, 15.0, 15.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1,
         "segmentation": [[20.0, 10.0, 35.0, 10.0, 27.0, 25.0]], "iscrowd": 0},
    ]  # fmt: skip
    return {"file_name": str(file_name), "height": height, "width": width, "image_id": 1,
            "annotations": annotations}  # fmt: skip


def write_image(path, size=(32, 40)) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return str(path)


def write_truncated_image(path) -> str:
    """A PNG cut in half: its header (size) reads, its pixels do not."""
    write_image(path, size=(64, 80))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize("is_train", [True, False])
def test_maps_as_detectron2s_dataset_mapper(tmp_path, is_train):
    cfg = instance_cfg()
    sample = record(write_image(tmp_path / "a.png"))
    ours = InstanceDatasetMapper(cfg, is_train=is_train)(sample)
    theirs = DatasetMapper(cfg, is_train=is_train)(sample)
    assert ours.keys() == theirs.keys()
    assert torch.equal(ours["image"], theirs["image"])
    if is_train:
        ours, theirs = ours["instances"], theirs["instances"]
        assert ours.image_size == theirs.image_size and len(ours) == 2
        assert torch.equal(ours.gt_boxes.tensor, theirs.gt_boxes.tensor)
        assert torch.equal(ours.gt_classes, theirs.gt_classes)
        assert torch.equal(ours.gt_masks.tensor, theirs.gt_masks.tensor)
    else:
        assert "annotations" not in ours and ours["height"] == 32


def test_truncated_image_is_named(tmp_path):
    path = write_truncated_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match=r"Image file .*cut\.png is not a readable image: .*trunc"):
        InstanceDatasetMapper(instance_cfg(), is_train=True)(record(path, 64, 80))


def test_truncated_image_is_named_by_the_training_loader(tmp_path, register_dataset):
    """Trainer's loader for instance datasets reads through the checked reader."""
    name = register_dataset(
        [record(write_truncated_image(tmp_path / "cut.png"), 64, 80)],
        "truncated",
        thing_classes=["a", "b"],
        evaluator_type="coco",
    )
    loader = Trainer.build_train_loader(instance_cfg(**{"DATASETS.TRAIN": (name,)}))
    with pytest.raises(ValueError, match=r"Image file .*cut\.png is not a readable image"):
        next(iter(loader))


def test_record_of_a_phone_photo_as_stored_is_named_with_the_exif_advice(tmp_path):
    # Stored 40x32 (HxW), displayed 32x40: the record below says 40x32, the size as stored.
    photo = write_exif_image(tmp_path / "photo.jpg", 6, (40, 32))
    mapper = InstanceDatasetMapper(instance_cfg(), is_train=True)
    assert mapper(record(photo))["image"].shape[1:] == (48, 60)  # the displayed 32x40, resized
    message = (
        r"Image file .*photo\.jpg is 32x40 \(HxW\) as displayed \(stored 40x32 with EXIF "
        r"orientation 6: shown rotated 90° clockwise\) but its dataset record says 40x32; that "
        r"is its size as stored, .* save the image without its EXIF orientation tag"
    )
    with pytest.raises(SizeMismatchError, match=message):
        mapper(record(photo, height=40, width=32))
