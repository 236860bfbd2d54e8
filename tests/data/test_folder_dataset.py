"""Custom folder datasets: pairing, errors naming the file, spec files, training on one."""

import json
import struct
import uuid
import zlib

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from pointrend_d2.data import (
    SemanticDatasetMapper,
    load_folder_dataset,
    register_datasets_from_config,
    register_folder_dataset,
)
from pointrend_d2.engine import Trainer
from tests.helpers import REPO, small_fpn_cfg, write_exif_image


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_pair(image_dir, label_dir, stem, size=(48, 64), image_ext=".jpg", label_size=None):
    """A random RGB image and a label PNG with classes 0-2 and a few ignore pixels."""
    rng = np.random.default_rng(zlib.crc32(stem.encode()))
    height, width = size
    (image_dir / stem).parent.mkdir(parents=True, exist_ok=True)
    (label_dir / stem).parent.mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(image_dir / f"{stem}{image_ext}")
    label_height, label_width = label_size or size
    label = np.zeros((label_height, label_width), dtype=np.uint8)
    label[:, label_width // 3 :] = 1
    label[label_height // 2 :, 2 * label_width // 3 :] = 2
    label[:3, :3] = 255
    Image.fromarray(label).save(label_dir / f"{stem}.png")


def test_datasets_registered_by_a_test_are_removed_after_it(pytester):
    """The fixtures of tests/conftest.py, in a pytest run of their own: what a test registers,
    by any means, is gone after it; what was registered before stays."""
    prefix = unique("cleanup")
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(f"""
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from pointrend_d2.data import register_folder_dataset

        def test_registers(register_dataset, tmp_path):
            name = register_dataset([{{"file_name": "a.png"}}], "{prefix}", stuff_classes=["a"])
            assert DatasetCatalog.get(name) == [{{"file_name": "a.png"}}]
            assert MetadataCatalog.get(name).stuff_classes == ["a"]
            (tmp_path / "images").mkdir()
            (tmp_path / "labels").mkdir()
            register_folder_dataset(
                "{prefix}_folder", tmp_path / "images", tmp_path / "labels", ["a"]
            )
            MetadataCatalog.get("{prefix}_metadata_only")
        """)
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    assert [name for name in DatasetCatalog.list() if name.startswith(prefix)] == []
    assert [name for name in MetadataCatalog.list() if name.startswith(prefix)] == []
    assert "textured_shapes_sem_seg_train" in DatasetCatalog.list()
    assert MetadataCatalog.get("textured_shapes_sem_seg_train").stuff_classes


def test_pairs_by_stem_sorted_with_sizes(tmp_path):
    for stem in ("b", "a", "sub/c"):
        write_pair(tmp_path / "images", tmp_path / "labels", stem)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    dicts = load_folder_dataset(str(tmp_path / "images"), str(tmp_path / "labels"))
    assert [d["image_id"] for d in dicts] == ["a", "b", "sub/c"]
    assert dicts[0]["file_name"] == str(tmp_path / "images" / "a.jpg")
    assert dicts[0]["sem_seg_file_name"] == str(tmp_path / "labels" / "a.png")
    assert (dicts[2]["height"], dicts[2]["width"]) == (48, 64)


def test_image_without_label_is_named(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "labels", "ok")
    write_pair(tmp_path / "images", tmp_path / "labels", "orphan")
    (tmp_path / "labels" / "orphan.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"orphan\.jpg has no label .*orphan\.png"):
        load_folder_dataset(str(tmp_path / "images"), str(tmp_path / "labels"))


def test_label_without_image_is_named(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "labels", "ok")
    write_pair(tmp_path / "images", tmp_path / "labels", "stray")
    (tmp_path / "images" / "stray.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"stray\.png has no image"):
        load_folder_dataset(str(tmp_path / "images"), str(tmp_path / "labels"))


def test_size_mismatch_is_named(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "labels", "wrong", label_size=(48, 60))
    with pytest.raises(ValueError, match=r"wrong\.png is 48x60 .*wrong\.jpg is 48x64"):
        load_folder_dataset(str(tmp_path / "images"), str(tmp_path / "labels"))
    # Without the check, the pair is listed without sizes.
    dicts = load_folder_dataset(
        str(tmp_path / "images"), str(tmp_path / "labels"), check_sizes=False
    )
    assert len(dicts) == 1 and "height" not in dicts[0]


def write_phone_photo(tmp_path, label_size) -> tuple[str, str]:
    """A phone photo stored 64x96 (HxW) with EXIF orientation 6 (displayed 96x64) and a label
    PNG of ``label_size``; (image_dir, label_dir)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    write_exif_image(tmp_path / "images" / "photo.jpg", 6, (64, 96))
    labels = np.zeros(label_size, np.uint8)
    labels[: label_size[0] // 2] = 1
    Image.fromarray(labels).save(tmp_path / "labels" / "photo.png")
    return str(tmp_path / "images"), str(tmp_path / "labels")


def semantic_mapper() -> SemanticDatasetMapper:
    return SemanticDatasetMapper(
        True, augmentations=[], image_format="BGR", num_classes=3, ignore_value=255
    )


def test_phone_photo_pairs_with_a_label_drawn_as_displayed(tmp_path):
    (record,) = load_folder_dataset(*write_phone_photo(tmp_path, (96, 64)))
    assert (record["height"], record["width"]) == (96, 64)
    out = semantic_mapper()(record)
    assert out["image"].shape == (3, 96, 64) and out["sem_seg"].shape == (96, 64)
    # The label's top half is class 1: the rotated image lines up with it.
    assert out["sem_seg"][:48].eq(1).all() and out["sem_seg"][48:].eq(0).all()


def move_exif_behind_the_pixels(path) -> None:
    """Rewrites a PNG with its eXIf chunk after the image data, where some writers put it."""
    data = path.read_bytes()
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append(data[position : position + length + 12])
        position += length + 12
    exif = [chunk for chunk in chunks if chunk[4:8] == b"eXIf"]
    others = [chunk for chunk in chunks if chunk[4:8] != b"eXIf"]
    assert len(exif) == 1 and others[-1][4:8] == b"IEND"
    path.write_bytes(data[:8] + b"".join(others[:-1] + exif + others[-1:]))


def test_png_with_its_exif_behind_the_pixels_is_oriented_too(tmp_path):
    images, labels = write_phone_photo(tmp_path, (96, 64))
    photo = tmp_path / "images" / "photo.png"
    write_exif_image(photo, 6, (64, 96))
    (tmp_path / "images" / "photo.jpg").unlink()
    move_exif_behind_the_pixels(photo)
    (record,) = load_folder_dataset(images, labels)
    assert (record["height"], record["width"]) == (96, 64)
    assert semantic_mapper()(record)["image"].shape == (3, 96, 64)


# A label of the photo as stored, and one of neither orientation: label size -> the error.
LABELS_THAT_DO_NOT_FIT = {
    "as_stored": (
        (64, 96),
        r"Label file .*photo\.png is 64x96 \(HxW\) but its image .*photo\.jpg is 96x64 \(HxW\) "
        r"as displayed \(stored 64x96 with EXIF orientation 6: shown rotated 90° clockwise\): "
        r"the label fits the image as stored, .* save the image without its EXIF orientation tag",
    ),
    "neither": (
        (90, 64),
        r"photo\.png is 90x64 \(HxW\) but its image .*photo\.jpg is 96x64 \(HxW\) as displayed "
        r"\(stored 64x96 with EXIF orientation 6: .*\): they differ in either orientation",
    ),
}


@pytest.mark.parametrize("case", LABELS_THAT_DO_NOT_FIT, ids=list(LABELS_THAT_DO_NOT_FIT))
def test_label_that_does_not_fit_the_photo_as_displayed_says_each_orientation(tmp_path, case):
    label_size, message = LABELS_THAT_DO_NOT_FIT[case]
    folders = write_phone_photo(tmp_path, label_size)
    with pytest.raises(ValueError, match=message):
        load_folder_dataset(*folders)
    # The mapper, reading the decoded files, gives the same error.
    (record,) = load_folder_dataset(*folders, check_sizes=False)
    with pytest.raises(ValueError, match=message):
        semantic_mapper()(record)


@pytest.mark.usefixtures("temporary_datasets")
def test_register_metadata_and_idempotence(tmp_path):
    write_pair(tmp_path / "images", tmp_path / "labels", "a", image_ext=".png")
    name = unique("folder")
    register_folder_dataset(name, tmp_path / "images", tmp_path / "labels", ["x", "y", "z"])
    metadata = MetadataCatalog.get(name)
    assert metadata.stuff_classes == ["x", "y", "z"] and len(metadata.stuff_colors) == 3
    assert metadata.ignore_label == 255 and metadata.evaluator_type == "sem_seg"
    assert len(DatasetCatalog.get(name)) == 1
    register_folder_dataset(name, tmp_path / "images", tmp_path / "labels", ["x", "y", "z"])
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="already registered"):
        register_folder_dataset(name, tmp_path / "other", tmp_path / "labels", ["x", "y", "z"])
    with pytest.raises(ValueError, match="one RGB colour per class"):
        register_folder_dataset(unique("bad"), tmp_path / "images", tmp_path / "labels", ["x"], [])
    with pytest.raises(FileNotFoundError, match="missing"):
        register_folder_dataset(unique("bad"), tmp_path / "missing", tmp_path / "labels", ["x"])


def spec_cfg(spec, **options):
    """The small 3-class config with ``spec`` in DATASETS.FOLDER_SPECS."""
    return small_fpn_cfg(num_classes=3, **{"DATASETS.FOLDER_SPECS": [str(spec)], **options})


@pytest.mark.usefixtures("temporary_datasets")
def test_yaml_spec_with_classes_file(tmp_path):
    write_pair(tmp_path / "data" / "img", tmp_path / "data" / "lbl", "a")
    (tmp_path / "classes.txt").write_text("sky\nroad\n\ncar\n")
    name = unique("yaml_spec")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "classes_file: classes.txt\n"
        "colors: [[1, 2, 3], [4, 5, 6], [7, 8, 9]]\n"
        f"datasets:\n  {name}: {{image_dir: data/img, label_dir: data/lbl}}\n"
    )
    assert register_datasets_from_config(spec_cfg(spec)) == [name]
    assert MetadataCatalog.get(name).stuff_classes == ["sky", "road", "car"]
    assert MetadataCatalog.get(name).stuff_colors[2] == [7, 8, 9]


@pytest.mark.usefixtures("temporary_datasets")
def test_unknown_spec_key_is_named(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"classes": ["a"], "datasets": {}, "colours": []}))
    with pytest.raises(ValueError, match=r"unknown keys \['colours'\]"):
        register_datasets_from_config(spec_cfg(spec))


@pytest.mark.usefixtures("temporary_datasets")
def test_spec_classes_that_disagree_with_num_classes_fail_before_training(tmp_path, monkeypatch):
    write_pair(tmp_path / "images", tmp_path / "labels", "a")
    name = unique("mismatch")
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "classes": ["a", "b", "c", "d"],
                "datasets": {name: {"image_dir": "images", "label_dir": "labels"}},
            }
        )
    )
    cfg = spec_cfg(spec, **{"DATASETS.TRAIN": (name,), "DATASETS.TEST": ()})
    # Registering does not check the classes: the Trainer does, before it builds the model.
    assert register_datasets_from_config(cfg) == [name]
    monkeypatch.setattr(Trainer, "build_model", classmethod(lambda cls, cfg: pytest.fail()))
    with pytest.raises(ValueError, match=f"NUM_CLASSES=3 but dataset '{name}' has 4 classes"):
        Trainer(cfg)


@pytest.mark.usefixtures("temporary_datasets")
def test_train_and_evaluate_coco_stuff_style_folders(tmp_path):
    """COCO-Stuff layout: JPEG images, single-channel label PNGs, registered from a JSON spec
    named in the config, trained for 2 iterations and evaluated, all through the engine."""
    root = tmp_path / "coco_stuff_like"
    for split, count in (("train2017", 3), ("val2017", 2)):
        for index in range(count):
            write_pair(root / split, root / "stuffthingmaps_detectron2" / split, f"{index:012d}")
    train_name, val_name = unique("stuff_train"), unique("stuff_val")
    spec = root / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "classes": ["things", "grass", "sky"],
                "image_ext": ".jpg",
                "datasets": {
                    train_name: {
                        "image_dir": "train2017",
                        "label_dir": "stuffthingmaps_detectron2/train2017",
                    },
                    val_name: {
                        "image_dir": "val2017",
                        "label_dir": "stuffthingmaps_detectron2/val2017",
                    },
                },
            }
        )
    )
    cfg = small_fpn_cfg(num_classes=3)
    cfg.merge_from_list(
        [
            "DATASETS.FOLDER_SPECS", [str(spec)],
            "DATASETS.TRAIN", (train_name,),
            "DATASETS.TEST", (val_name,),
            "INPUT.MIN_SIZE_TRAIN", (48,),
            "INPUT.MAX_SIZE_TRAIN", 64,
            "INPUT.MIN_SIZE_TEST", 48,
            "INPUT.MAX_SIZE_TEST", 64,
            "SOLVER.IMS_PER_BATCH", 2,
            "SOLVER.MAX_ITER", 2,
            "SOLVER.STEPS", (),
            "DATALOADER.NUM_WORKERS", 0,
            "OUTPUT_DIR", str(tmp_path / "output"),
        ]
    )  # fmt: skip
    assert register_datasets_from_config(cfg) == [train_name, val_name]
    trainer = Trainer(cfg)
    trainer.train()
    results = Trainer.test(cfg, trainer.model)
    assert set(results["sem_seg"]) >= {"mIoU", "IoU-grass"}
    assert results["boundary_iou"]["mIoU"] == pytest.approx(results["sem_seg"]["mIoU"])
    assert 0 <= results["boundary_iou"]["mBIoU"] <= 100
