"""tools/demo.py and the subdivision trace behind --show-points, on a tiny random-weight model."""

import importlib.util
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_textured_shapes
from pointrend_d2.export import export_model
from pointrend_d2.visualization import trace_subdivision
from tests.helpers import REPO, small_fpn_cfg

HEIGHT, WIDTH = 128, 256


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_val_images(tmp_path_factory):
    """Name and image folder of a tiny textured-shapes val split (2 images of 128x256)."""
    root = tmp_path_factory.mktemp("textured_shapes")
    prefix = f"demo_test_{uuid.uuid4().hex[:8]}"
    register_textured_shapes(
        str(root), num_train=2, num_val=2, height=HEIGHT, width=WIDTH, prefix=prefix
    )
    DatasetCatalog.get(f"{prefix}_val")  # generates the split
    return f"{prefix}_val", Path(MetadataCatalog.get(f"{prefix}_val").image_root)


def tiny_model_files(tmp_path, head="PointRendSemanticHead"):
    """A config file and a checkpoint of a random-weight tiny model; returns their paths and
    the config."""
    tmp_path.mkdir(exist_ok=True)
    cfg = small_fpn_cfg(
        num_classes=5,
        **{
            "MODEL.SEM_SEG_HEAD.NAME": head,
            "DATASETS.TEST": ("textured_shapes_sem_seg_val",),  # for class names and colours
            "INPUT.MIN_SIZE_TEST": HEIGHT,
            "INPUT.MAX_SIZE_TEST": WIDTH,
        },
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("tiny")
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(cfg.dump())
    return str(config_path), str(tmp_path / "tiny.pth"), cfg


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_demo_writes_overlays_and_subdivision_panels(tmp_path, tiny_val_images):
    _, tiny_val_images = tiny_val_images
    config, weights, _ = tiny_model_files(tmp_path)
    output = tmp_path / "demo"
    load_tool("demo").main(
        ["--config-file", config, "--input", str(tiny_val_images), "--output", str(output),
         "--show-points", "--opts", "MODEL.WEIGHTS", weights]
    )  # fmt: skip
    stems = ["val_0000", "val_0001"]
    expected = {f"{s}.png" for s in stems} | {f"{s}_step{k}.png" for s in stems for k in (1, 2)}
    assert {p.name for p in output.iterdir()} == expected
    for stem in stems:
        overlay = read_png(output / f"{stem}.png")
        image = read_png(tiny_val_images / f"{stem}.png")
        assert overlay.shape == (HEIGHT, WIDTH, 3)
        assert not np.array_equal(overlay, image)
        panels = [read_png(output / f"{stem}_step{k}.png") for k in (1, 2)]
        for panel in panels:
            assert panel.shape == (HEIGHT, 2 * WIDTH, 3)
            assert not np.array_equal(panel[:, :WIDTH], overlay)
            # Refined points are drawn in pure-ish red on a dimmed image.
            red = (panel[:, :WIDTH, 0] == 255) & (panel[:, :WIDTH, 1] == 40)
            assert red.sum() > 100
        assert not np.array_equal(panels[0], panels[1])


def test_demo_single_file_glob_and_errors(tmp_path, tiny_val_images):
    _, tiny_val_images = tiny_val_images
    demo = load_tool("demo")
    assert demo.list_inputs(str(tiny_val_images / "val_0001.png")) == [
        str(tiny_val_images / "val_0001.png")
    ]
    assert len(demo.list_inputs(str(tiny_val_images / "*_0000.png"))) == 1
    with pytest.raises(FileNotFoundError, match="No images found"):
        demo.list_inputs(str(tmp_path / "nothing*.png"))
    config, weights, _ = tiny_model_files(tmp_path, head="SemSegFPNHead")
    output = tmp_path / "baseline"
    args = ["--config-file", config, "--input", str(tiny_val_images / "val_0000.png"),
            "--output", str(output), "--opts", "MODEL.WEIGHTS", weights]  # fmt: skip
    demo.main(args)  # a baseline model draws overlays ...
    assert [p.name for p in output.iterdir()] == ["val_0000.png"]
    with pytest.raises(SystemExit, match="PointRendSemanticHead"):
        demo.main(args[:-3] + ["--show-points"] + args[-3:])  # ... but has no subdivision


def test_demo_runs_an_exported_model(tmp_path, tiny_val_images):
    """--exported draws the same overlays as the eager model it was exported from."""
    _, tiny_val_images = tiny_val_images
    config, weights, _ = tiny_model_files(tmp_path)
    exported = tmp_path / "exported"
    export_model(setup_cfg(config, ["MODEL.WEIGHTS", weights]), str(exported), "torch_export")
    demo = load_tool("demo")
    common = ["--input", str(tiny_val_images), "--output"]
    demo.main(["--exported", str(exported), *common, str(tmp_path / "from_exported")])
    demo.main(
        ["--config-file", config, *common, str(tmp_path / "eager"), "--opts", "MODEL.WEIGHTS",
         weights]
    )  # fmt: skip
    for stem in ("val_0000", "val_0001"):
        overlay = read_png(tmp_path / "from_exported" / f"{stem}.png")
        assert overlay.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(overlay, read_png(tmp_path / "eager" / f"{stem}.png"))
    with pytest.raises(SystemExit, match="need the eager model"):
        demo.main(["--exported", str(exported), *common, str(tmp_path / "x"), "--show-points"])


@pytest.mark.parametrize("selection", ["bounded", "topk"])
@pytest.mark.parametrize("num_classes", [1, 5])
def test_trace_matches_model_inference(selection, num_classes):
    cfg = small_fpn_cfg(num_classes, **{"MODEL.POINT_HEAD.SUBDIVISION_SELECTION": selection})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.sem_seg_head.subdivision_selection == selection
    image = torch.randint(0, 256, (3, HEIGHT, WIDTH)).float()
    with torch.no_grad():
        expected = model([{"image": image}])[0]["sem_seg"].argmax(dim=0).numpy()
    # An output image twice the input's size: points are reported in output pixels.
    steps = trace_subdivision(model, {"image": image, "height": 2 * HEIGHT, "width": 2 * WIDTH})
    assert len(steps) == 2
    np.testing.assert_array_equal(steps[-1].labels, expected)
    for step_index, step in enumerate(steps, start=1):
        grid = (HEIGHT // 4 * 2**step_index, WIDTH // 4 * 2**step_index)
        assert step.uncertainty.shape == step.labels.shape == grid
        assert step.points.shape == (600, 2)
        assert step.points.min() >= 0
        assert (step.points.max(axis=0) <= [2 * WIDTH, 2 * HEIGHT]).all()


def test_compare_writes_figure(tmp_path, tiny_val_images):
    dataset_name, _ = tiny_val_images
    pointrend_config, pointrend_weights, _ = tiny_model_files(tmp_path / "pointrend")
    baseline_config, baseline_weights, _ = tiny_model_files(tmp_path / "baseline", "SemSegFPNHead")
    figure_path = tmp_path / "figure.png"
    load_tool("compare").main(
        ["--pointrend", pointrend_config, pointrend_weights,
         "--baseline", baseline_config, baseline_weights,
         "--dataset", dataset_name, "--output", str(figure_path),
         "--num-crops", "3", "--crop-size", "64", "--scale", "2"]
    )  # fmt: skip
    figure = read_png(figure_path)
    # A 22-pixel header, then 3 rows of 128-pixel tiles separated by 4 pixels; 4 columns.
    assert figure.shape == (22 + 3 * 128 + 2 * 4, 4 * 128, 3)
    image_tile, gt_tile = figure[22:150, :128], figure[22:150, 128:256]
    assert not np.array_equal(image_tile, gt_tile)
