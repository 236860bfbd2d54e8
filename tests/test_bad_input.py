"""
Bad input: missing, corrupt and mismatched files, odd image modes, invalid labels, tiny and
elongated images, ignored crops, non-finite pixels, empty datasets and a NUM_CLASSES that
disagrees with the dataset. Each gets a clear error naming the file or key, or a logged fallback.
"""

import logging
import re

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from PIL import Image

from pointrend_d2.data import SemanticDatasetMapper
from pointrend_d2.data.catalog import load_dataset_records, validate_dataset_classes
from pointrend_d2.engine import Trainer, build_evaluator
from tests.helpers import small_fpn_cfg

NUM_CLASSES = 5


def mapper(num_classes=NUM_CLASSES, augmentations=(), is_train=False) -> SemanticDatasetMapper:
    return SemanticDatasetMapper(
        is_train,
        augmentations=list(augmentations),
        image_format="BGR",
        num_classes=num_classes,
        ignore_value=255,
    )


def write_sample(tmp_path, image=None, labels=None, name="sample", image_ext=".png") -> dict:
    """An image and label file (random 12x16 RGB, classes 0-4 and 255 by default); the record."""
    rng = np.random.default_rng(0)
    if image is None:
        image = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    if labels is None:
        labels = Image.fromarray(np.tile(np.array([0, 1, 2, 3, 4, 255], np.uint8), (12, 3))[:, :16])
    record = {
        "file_name": str(tmp_path / f"{name}{image_ext}"),
        "sem_seg_file_name": str(tmp_path / f"{name}_labels.png"),
    }
    image.save(record["file_name"])
    labels.save(record["sem_seg_file_name"])
    return record


def test_valid_sample_maps_to_tensors(tmp_path):
    out = mapper()(write_sample(tmp_path))
    assert out["image"].shape == (3, 12, 16) and out["image"].dtype == torch.uint8
    assert out["sem_seg"].dtype == torch.int64
    assert set(out["sem_seg"].unique().tolist()) == {0, 1, 2, 3, 4, 255}
    assert "sem_seg_file_name" not in out


def test_missing_image_is_named(tmp_path):
    record = write_sample(tmp_path)
    record["file_name"] = str(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"Image file .*gone\.png does not exist"):
        mapper()(record)


def test_missing_label_is_named(tmp_path):
    record = write_sample(tmp_path)
    record["sem_seg_file_name"] = str(tmp_path / "gone_labels.png")
    with pytest.raises(FileNotFoundError, match=r"Label file .*gone_labels\.png does not exist"):
        mapper()(record)


def test_corrupt_image_is_named(tmp_path):
    record = write_sample(tmp_path)
    with open(record["file_name"], "wb") as f:
        f.write(b"this is not a PNG file")
    with pytest.raises(ValueError, match=r"Image file .*sample\.png is not a readable image"):
        mapper()(record)


def test_truncated_label_is_named(tmp_path):
    record = write_sample(tmp_path, labels=Image.fromarray(np.zeros((120, 160), np.uint8) + 1))
    record["file_name"] = write_sample(tmp_path, image=Image.new("RGB", (160, 120)), name="big")[
        "file_name"
    ]
    with open(record["sem_seg_file_name"], "rb") as f:
        data = f.read()
    with open(record["sem_seg_file_name"], "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"Label file .*sample_labels\.png is not a readable"):
        mapper()(record)


def test_image_and_label_of_different_sizes_are_named(tmp_path):
    record = write_sample(tmp_path, labels=Image.new("L", (15, 12)))
    with pytest.raises(
        ValueError,
        match=r"sample_labels\.png is 12x15 \(HxW\) but its image .*sample\.png is 12x16",
    ):
        mapper()(record)


def test_record_size_that_disagrees_with_the_image_is_named(tmp_path):
    record = {**write_sample(tmp_path), "height": 13, "width": 16}
    with pytest.raises(SizeMismatchError, match=r"sample\.png"):
        mapper()(record)


def test_label_values_that_are_neither_class_nor_ignore_are_named(tmp_path):
    labels = np.zeros((12, 16), np.uint8)
    labels[0, :3] = [5, 7, 254]
    record = write_sample(tmp_path, labels=Image.fromarray(labels))
    message = (
        r"Label file .*sample_labels\.png has values \[5, 7, 254\] that are neither a class "
        r"index \(0\.\.4, MODEL\.SEM_SEG_HEAD\.NUM_CLASSES=5\) nor the ignore value 255 "
        r"\(MODEL\.SEM_SEG_HEAD\.IGNORE_VALUE\)"
    )
    with pytest.raises(ValueError, match=message):
        mapper()(record)


def test_one_foreground_logit_takes_labels_zero_and_one(tmp_path):
    labels = np.zeros((12, 16), np.uint8)
    labels[4:, 4:] = 1
    labels[0] = 255
    out = mapper(num_classes=1)(write_sample(tmp_path, labels=Image.fromarray(labels)))
    assert set(out["sem_seg"].unique().tolist()) == {0, 1, 255}
    labels[1, 1] = 2
    record = write_sample(tmp_path, labels=Image.fromarray(labels), name="two")
    with pytest.raises(ValueError, match=r"values \[2\] .*\(0\.\.1, .*NUM_CLASSES=1\)"):
        mapper(num_classes=1)(record)


def test_colour_labels_are_refused(tmp_path):
    record = write_sample(tmp_path, labels=Image.new("RGB", (16, 12)))
    with pytest.raises(ValueError, match=r"sample_labels\.png has PIL mode RGB; labels must be"):
        mapper()(record)


def test_palette_and_16_bit_labels_are_class_indices(tmp_path):
    indices = np.tile(np.array([0, 1, 2, 3, 4, 255], np.uint8), (12, 3))[:, :16]
    palette_labels = Image.fromarray(indices, mode="L").convert("P")
    palette_labels.putpalette([value for i in range(256) for value in (255 - i, i, 7)])
    palette_labels.putdata(indices.ravel().tolist())
    assert palette_labels.mode == "P"
    # detectron2's DatasetMapper reads labels as luminance ("L"), which scrambles palette indices.
    out = mapper()(write_sample(tmp_path, labels=palette_labels))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), indices)

    wide_labels = Image.fromarray(indices.astype(np.uint16))
    assert wide_labels.mode.startswith("I;16")
    out = mapper()(write_sample(tmp_path, labels=wide_labels, name="wide"))
    np.testing.assert_array_equal(out["sem_seg"].numpy(), indices)


@pytest.mark.parametrize(
    "mode,expected_bgr",
    [("L", [90, 90, 90]), ("LA", [90, 90, 90]), ("RGBA", [30, 20, 10]), ("P", [30, 20, 10])],
)
def test_other_8_bit_images_are_converted_with_a_note(tmp_path, caplog, mode, expected_bgr):
    rgb = Image.new("RGB", (16, 12), (10, 20, 30))
    if mode in ("L", "LA"):
        image = Image.new(mode, (16, 12), 90)
    elif mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = rgb.convert(mode)
    the_mapper = mapper()
    with caplog.at_level(logging.INFO, logger="pointrend_d2.data.image_io"):
        first = the_mapper(write_sample(tmp_path, image=image))
        the_mapper(write_sample(tmp_path, image=image, name="second"))
    assert first["image"].shape == (3, 12, 16)
    assert first["image"][:, 0, 0].tolist() == expected_bgr
    notes = [r.getMessage() for r in caplog.records if f"mode {mode}: converted" in r.getMessage()]
    assert len(notes) == 1 and "sample.png" in notes[0], notes


@pytest.mark.parametrize(
    "pixels", [np.full((12, 16), 40000, np.uint16), np.full((12, 16), np.nan, np.float32)]
)
def test_16_bit_and_float_images_are_refused(tmp_path, pixels):
    # PNG has no float format; TIFF does.
    image_ext = ".tiff" if pixels.dtype == np.float32 else ".png"
    record = write_sample(tmp_path, image=Image.fromarray(pixels), name="deep", image_ext=image_ext)
    with pytest.raises(ValueError, match=r"Image file .*deep\.(png|tiff) has PIL mode (I;16|F)"):
        mapper()(record)


def test_crop_bigger_than_the_image_and_1x1_images(tmp_path):
    """RandomCrop_CategoryAreaConstraint clips the crop to the image; a 1x1 image passes."""
    crop = T.RandomCrop_CategoryAreaConstraint("absolute", (128, 128), 0.75, 255)
    train_mapper = mapper(augmentations=[crop, T.RandomFlip()], is_train=True)
    out = train_mapper(write_sample(tmp_path))
    assert out["image"].shape == (3, 12, 16) and out["sem_seg"].shape == (12, 16)
    one_pixel = write_sample(
        tmp_path, image=Image.new("RGB", (1, 1)), labels=Image.new("L", (1, 1), 255), name="dot"
    )
    out = train_mapper(one_pixel)
    assert out["image"].shape == (3, 1, 1) and out["sem_seg"].tolist() == [[255]]


@pytest.fixture(scope="module")
def model():
    """GroupNorm everywhere, as in configs/pointrend_semseg.yaml. The coarse head's GN has 32
    groups: at 32 channels (conftest's default) a 1x1 p5 map leaves one value per group, which
    GroupNorm refuses, so the head gets 64, as in that config."""
    torch.manual_seed(0)
    overrides = {"MODEL.RESNETS.NORM": "GN", "MODEL.SEM_SEG_HEAD.CONVS_DIM": 64}
    return build_model(small_fpn_cfg(num_classes=NUM_CLASSES, **overrides))


# Smaller than the coarse stride (4), smaller than the padding (32), elongated, odd.
TINY_AND_ODD_SIZES = [(1, 1), (1, 2), (3, 5), (2, 150), (150, 1), (33, 65)]


@pytest.mark.parametrize("height,width", TINY_AND_ODD_SIZES)
def test_inference_on_tiny_and_elongated_images(model, height, width):
    """Padded to 32, the coarse map has fewer cells than SUBDIVISION_NUM_POINTS (600)."""
    model.eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.rand(3, height, width) * 255}])
    assert result["sem_seg"].shape == (NUM_CLASSES, height, width)
    assert torch.isfinite(result["sem_seg"]).all()


def test_training_on_a_batch_of_tiny_and_elongated_images(model):
    model.train()
    batch = [
        {
            "image": torch.rand(3, height, width) * 255,
            "sem_seg": torch.randint(0, NUM_CLASSES, (height, width)),
        }
        for height, width in TINY_AND_ODD_SIZES
    ]
    try:
        with EventStorage():
            losses = model(batch)
        sum(losses.values()).backward()
    finally:
        model.zero_grad()
        model.eval()
    assert all(torch.isfinite(loss) and loss > 0 for loss in losses.values()), losses


def test_all_ignored_crop_gives_zero_losses_not_nan(model):
    model.train()
    batch = [{"image": torch.rand(3, 64, 64) * 255, "sem_seg": torch.full((64, 64), 255)}] * 2
    try:
        with EventStorage():
            losses = model(batch)
        sum(losses.values()).backward()
        gradients = [p.grad for p in model.parameters() if p.grad is not None]
    finally:
        model.zero_grad()
        model.eval()
    assert losses.keys() == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(loss.item() == 0.0 for loss in losses.values()), losses
    assert gradients and all(torch.isfinite(g).all() and not g.any() for g in gradients)


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_pixels_are_a_clear_error_at_forward_time(model, bad_value):
    image = torch.rand(3, 40, 40) * 255
    image[1, 5, 7] = bad_value
    model.eval()
    with pytest.raises(FloatingPointError, match="input images .* non-finite"), torch.no_grad():
        model([{"image": image}])


@pytest.fixture
def register_records(register_dataset):
    """``register_records(records, classes)``: the name of a new sem_seg dataset, removed after
    the test."""
    return lambda records, classes: register_dataset(
        records, "bad_input", stuff_classes=classes, ignore_label=255, evaluator_type="sem_seg"
    )


def test_empty_dataset_and_empty_dataset_list_are_named(register_records):
    name = register_records([], ["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match=f"Dataset '{name}' in DATASETS.TRAIN has no images"):
        load_dataset_records([name], "DATASETS.TRAIN")
    with pytest.raises(ValueError, match=r"DATASETS.TRAIN is empty"):
        load_dataset_records([], "DATASETS.TRAIN")
    cfg = small_fpn_cfg(**{"DATASETS.TRAIN": (name,), "DATALOADER.NUM_WORKERS": 0})
    with pytest.raises(ValueError, match=f"Dataset '{name}' in DATASETS.TRAIN has no images"):
        Trainer.build_train_loader(cfg)


def test_empty_test_dataset_fails_at_trainer_construction(tmp_path, monkeypatch, register_records):
    train = register_records([write_sample(tmp_path)], ["a", "b", "c", "d", "e"])
    test = register_records([], ["a", "b", "c", "d", "e"])
    cfg = small_fpn_cfg(**{"DATASETS.TRAIN": (train,), "DATASETS.TEST": (test,)})
    # Before the model is built, not at the first evaluation.
    monkeypatch.setattr(Trainer, "build_model", classmethod(lambda cls, cfg: pytest.fail()))
    with pytest.raises(ValueError, match=f"Dataset '{test}' in DATASETS.TEST has no images"):
        Trainer(cfg)


def test_num_classes_that_disagrees_with_the_dataset_fails_before_training(monkeypatch):
    cfg = small_fpn_cfg(
        num_classes=4,
        **{"DATASETS.TRAIN": ("textured_shapes_sem_seg_train",), "DATASETS.TEST": ()},
    )
    monkeypatch.setattr(Trainer, "build_model", classmethod(lambda cls, cfg: pytest.fail()))
    message = re.escape(
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES=4 but dataset 'textured_shapes_sem_seg_train' has 5 "
        "classes ['background', 'blob', 'ring', 'wire', 'dot']: set NUM_CLASSES to 5"
    )
    with pytest.raises(ValueError, match=message):
        Trainer(cfg)
    # --eval-only builds the evaluator for each test dataset, which checks too.
    with pytest.raises(ValueError, match=message.replace("_train", "_val")):
        build_evaluator(cfg, "textured_shapes_sem_seg_val")


def test_one_foreground_logit_is_allowed_on_a_two_class_dataset(register_records):
    two_classes = register_records([], ["background", "object"])
    validate_dataset_classes(small_fpn_cfg(num_classes=1), [two_classes])
    validate_dataset_classes(small_fpn_cfg(num_classes=2), [two_classes])
    with pytest.raises(ValueError, match=r"set NUM_CLASSES to 2 \(or 1 for a sigmoid foreground"):
        validate_dataset_classes(small_fpn_cfg(num_classes=3), [two_classes])
    five_classes = register_records([], list("abcde"))
    with pytest.raises(ValueError, match="NUM_CLASSES=1 but dataset .* has 5 classes"):
        validate_dataset_classes(small_fpn_cfg(num_classes=1), [five_classes])
