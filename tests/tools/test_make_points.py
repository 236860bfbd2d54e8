"""tools/make_point_annotations.py and tools/make_point_labels.py on small files: what they write
trains (it passes the checks), is reproducible, and never overwrites anything."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from pointrend_d2.data import load_folder_dataset
from pointrend_d2.data.coco_json import load_checked_coco_json
from tests.helpers import REPO


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_coco(tmp_path) -> str:
    """A 16x20 image with two polygon objects; the json's path."""
    Image.new("RGB", (20, 16)).save(tmp_path / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "height": 16, "width": 20}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 9, 7],
             "segmentation": [[1, 1, 10, 1, 1, 8]]},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [12, 4, 6, 10],
             "segmentation": [[12, 4, 18, 4, 18, 14, 12, 14]]},
        ],
    }  # fmt: skip
    (tmp_path / "full.json").write_text(json.dumps(coco))
    return str(tmp_path / "full.json")


def test_make_point_annotations(tmp_path):
    make = tool("make_point_annotations")
    json_file = write_coco(tmp_path)
    output = str(tmp_path / "points.json")
    arguments = ["--json-file", json_file, "--image-root", str(tmp_path), "--num-points", "12"]
    counts = make.main([*arguments, "--output", output])
    assert counts["objects"] == 2 and counts["inside"] + counts["outside"] == 24
    records = load_checked_coco_json(output, str(tmp_path))
    assert [len(a["point_coords"]) for a in records[0]["annotations"]] == [12, 12]
    make.main([*arguments, "--output", str(tmp_path / "again.json")])
    assert (tmp_path / "again.json").read_text() == (tmp_path / "points.json").read_text()
    before = (tmp_path / "points.json").read_text()
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        make.main([*arguments, "--output", output, "--seed", "1"])
    assert (tmp_path / "points.json").read_text() == before


def test_make_point_labels(tmp_path, capsys):
    make = tool("make_point_labels")
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    labels = np.zeros((16, 20), np.uint8)
    labels[:, 10:] = 1
    for stem in ("a", "b"):
        Image.fromarray(labels).save(tmp_path / "labels" / f"{stem}.png")
        Image.new("RGB", (20, 16)).save(tmp_path / "images" / f"{stem}.png")
    output = str(tmp_path / "points")
    arguments = ["--label-dir", str(tmp_path / "labels"), "--points-per-class", "3"]
    assert make.main([*arguments, "--output", output]) == 2
    records = load_folder_dataset(str(tmp_path / "images"), output, sparse_labels=True)
    sparse = np.asarray(Image.open(records[0]["sem_seg_file_name"]))
    assert sorted(np.unique(sparse, return_counts=True)[1].tolist()) == [3, 3, 16 * 20 - 6]
    with pytest.raises(SystemExit):
        make.main([*arguments, "--output", output])
    assert "exists; give a new folder (nothing is overwritten)" in capsys.readouterr().err
