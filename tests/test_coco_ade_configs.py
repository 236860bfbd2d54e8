"""
The COCO stuff-only and ADE20K-150 configs and their data: environment variables in the folder
paths of dataset specs.
"""

import uuid

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from PIL import Image

from pointrend_d2.data import register_folder_datasets_from_spec

SIZE = 64


def write_split(image_dir, label_dir, stems, num_classes):
    """Random 64x64 JPEG images and label PNGs of 4x4 blocks holding every class 0..num_classes-1
    once per image, the remaining blocks 255 (ignored)."""
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    rng = np.random.default_rng(len(stems) + num_classes)
    blocks_per_side = SIZE // 4
    for stem in stems:
        blocks = np.full(blocks_per_side**2, 255, dtype=np.uint8)
        blocks[:num_classes] = np.arange(num_classes)
        blocks = rng.permutation(blocks).reshape(blocks_per_side, blocks_per_side)
        label = np.kron(blocks, np.ones((4, 4), dtype=np.uint8))
        Image.fromarray(label).save(label_dir / f"{stem}.png")
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(image_dir / f"{stem}.jpg")


def test_spec_folders_expand_variables_and_home(tmp_path, monkeypatch):
    variable = f"POINTREND_D2_TEST_{uuid.uuid4().hex[:8].upper()}"
    data = tmp_path / "elsewhere"
    write_split(data / "images", tmp_path / "home" / "labels", ["a"], 3)
    monkeypatch.setenv(variable, str(data))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    name = f"expanded_{variable.lower()}"
    spec = tmp_path / "specs" / "spec.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "classes: [a, b, c]\n"
        f"datasets:\n  {name}: {{image_dir: '${{{variable}}}/images', label_dir: ~/labels}}\n"
    )
    assert register_folder_datasets_from_spec(str(spec)) == [name]
    assert MetadataCatalog.get(name).image_root == str(data / "images")
    assert MetadataCatalog.get(name).sem_seg_root == str(tmp_path / "home" / "labels")

    monkeypatch.delenv(variable)
    spec.write_text(
        "classes: [a, b, c]\n"
        f"datasets:\n  other_{name}: {{image_dir: ${variable}/images, label_dir: labels}}\n"
    )
    with pytest.raises(
        FileNotFoundError,
        match=rf"spec\.yaml: image_dir .* dataset 'other_{name}' .* {variable}, which is not set",
    ):
        register_folder_datasets_from_spec(str(spec))
