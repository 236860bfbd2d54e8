"""tools/demo.py and the subdivision traces behind --show-points, on tiny random-weight semantic
and instance models."""

import importlib.util
import logging
import shutil
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
from pointrend_d2.deploy.export import export_model
from pointrend_d2.visualization import trace_instance_subdivision, trace_subdivision
from tests.helpers import REPO, config_path, small_fpn_cfg, small_rcnn_cfg

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


def test_demo_refuses_an_output_folder_that_holds_an_input(tmp_path, tiny_val_images):
    """Its overlays would replace inputs of the same name: refused before anything is read."""
    _, val_images = tiny_val_images
    inputs = tmp_path / "photos"
    shutil.copytree(val_images, inputs)
    before = {path.name: path.read_bytes() for path in inputs.iterdir()}
    demo = load_tool("demo")
    for input_arg in (str(inputs), str(inputs / "val_0000.png"), str(inputs / "*.png")):
        with pytest.raises(SystemExit) as error:
            demo.main(["--config-file", "any.yaml", "--input", input_arg, "--output", str(inputs)])
        assert str(error.value) == (
            f"--output {inputs} is the folder of the input image {inputs / 'val_0000.png'}: the "
            "outputs would be written among the inputs and could replace them (an input "
            "<stem>.png by its overlay). Choose another --output folder"
        )
    assert {path.name: path.read_bytes() for path in inputs.iterdir()} == before
    with pytest.raises(SystemExit, match=r"--output .*val_0000.png is a file; it must be a folder"):
        demo.main(["--config-file", "any.yaml", "--input", str(inputs), "--output",
                   str(inputs / "val_0000.png")])  # fmt: skip


def test_demo_names_apart_the_outputs_of_images_that_share_a_stem(
    tmp_path, tiny_val_images, caplog
):
    _, val_images = tiny_val_images
    inputs = tmp_path / "photos"
    inputs.mkdir()
    shutil.copy(val_images / "val_0000.png", inputs / "x.png")
    Image.open(val_images / "val_0001.png").save(inputs / "x.jpg", quality=95)
    config, weights, _ = tiny_model_files(tmp_path / "model")
    output = tmp_path / "demo"
    with caplog.at_level(logging.INFO, logger="pointrend_d2.demo"):
        load_tool("demo").main(
            ["--config-file", config, "--input", str(inputs), "--output", str(output),
             "--show-points", "--opts", "MODEL.WEIGHTS", weights]
        )  # fmt: skip
    expected = {
        f"x_{ext}{panel}.png" for ext in ("jpg", "png") for panel in ("", "_step1", "_step2")
    }
    assert {path.name for path in output.iterdir()} == expected
    assert not np.array_equal(read_png(output / "x_png.png"), read_png(output / "x_jpg.png"))
    messages = [record.getMessage() for record in caplog.records]
    assert (
        f"Images {inputs / 'x.jpg'}, {inputs / 'x.png'} share a stem: their outputs are named "
        "x_jpg.png, x_png.png"
    ) in messages
    assert f"Wrote 6 PNG(s) for 2 image(s) to {output}" in messages


def test_output_stems_tell_apart_images_of_one_name_in_several_folders(tmp_path):
    demo = load_tool("demo")
    paths = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "y.png")]
    assert demo.output_stems(paths, str(tmp_path / "out"), show_points=False) == {
        paths[0]: "a_x_png",
        paths[1]: "b_x_png",
        paths[2]: "y",
    }
    # A step panel of one image would be the overlay of another.
    paths = [str(tmp_path / "y.png"), str(tmp_path / "y_step1.png")]
    assert demo.output_stems(paths, str(tmp_path / "out"), show_points=False)
    with pytest.raises(SystemExit, match=r"panel y_step1.png of .*y.png would replace the overlay"):
        demo.output_stems(paths, str(tmp_path / "out"), show_points=True)


def test_demo_with_another_dataset_says_it_disagrees_with_the_checkpoint(
    tmp_path, tiny_val_images, register_dataset
):
    """A dataset of 3 classes for a 5-class checkpoint: setting NUM_CLASSES to 3 would only fail
    on the checkpoint, so the message names the dataset and the checkpoint."""
    _, val_images = tiny_val_images
    three_classes = register_dataset([], stuff_classes=["a", "b", "c"])
    config, weights, _ = tiny_model_files(tmp_path)
    with pytest.raises(ValueError) as error:
        load_tool("demo").main(
            ["--config-file", config, "--input", str(val_images), "--output", str(tmp_path / "o"),
             "--opts", "MODEL.WEIGHTS", weights, "DATASETS.TEST", f"('{three_classes}',)"]
        )  # fmt: skip
    assert str(error.value) == (
        f"Dataset '{three_classes}' (DATASETS.TEST) has 3 classes, but the model has "
        f"MODEL.SEM_SEG_HEAD.NUM_CLASSES=5, which its checkpoint {weights} fits: the dataset and "
        "the checkpoint disagree. Name in DATASETS.TEST the dataset that the checkpoint was "
        "trained on (its class names label the outputs)"
    )
    assert not (tmp_path / "o").exists()


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
    assert model.sem_seg_head.point_settings.subdivision_selection == selection
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


INSTANCE_HEIGHT, INSTANCE_WIDTH = 96, 160


def tiny_instance_cfg(**overrides):
    """A random-weight tiny PointRend Mask R-CNN's config: 4 classes (textured_shapes_instances_val
    gives their names), 96x160 test images, at most 20 detections."""
    return small_rcnn_cfg(
        num_classes=4,
        **{
            "DATASETS.TEST": ("textured_shapes_instances_val",),
            "INPUT.MIN_SIZE_TEST": INSTANCE_HEIGHT,
            "INPUT.MAX_SIZE_TEST": INSTANCE_WIDTH,
            "TEST.DETECTIONS_PER_IMAGE": 20,
            **overrides,
        },
    )


def tiny_instance_model_files(tmp_path, **overrides):
    """A config file and a checkpoint of a :func:`tiny_instance_cfg` model; returns their paths."""
    tmp_path.mkdir(exist_ok=True)
    cfg = tiny_instance_cfg(**overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("tiny")
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(cfg.dump())
    return str(config_path), str(tmp_path / "tiny.pth")


@pytest.fixture
def instance_image(tmp_path):
    """A random 96x160 RGB image file."""
    rng = np.random.default_rng(0)
    path = tmp_path / "shapes.png"
    image = rng.integers(0, 256, (INSTANCE_HEIGHT, INSTANCE_WIDTH, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_demo_draws_instances_and_their_subdivision_points(tmp_path, instance_image):
    config, weights = tiny_instance_model_files(tmp_path / "model")
    demo = load_tool("demo")
    common = ["--config-file", config, "--input", str(instance_image), "--confidence-threshold",
              "0.0"]  # fmt: skip
    demo.main([*common, "--output", str(tmp_path / "plain"), "--opts", "MODEL.WEIGHTS", weights])
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["shapes.png"]
    image = read_png(instance_image)
    overlay = read_png(tmp_path / "plain" / "shapes.png")
    assert overlay.shape == (INSTANCE_HEIGHT, INSTANCE_WIDTH, 3)
    assert not np.array_equal(overlay, image)

    output = tmp_path / "points"
    demo.main([*common, "--output", str(output), "--show-points", "--opts", "MODEL.WEIGHTS",
               weights])  # fmt: skip
    # 7x7 coarse masks: the point head predicts a 28x28 grid, then 3 steps to 224x224.
    expected = {"shapes.png"} | {f"shapes_step{k}.png" for k in (1, 2, 3)}
    assert {p.name for p in output.iterdir()} == expected
    assert read_png(output / "shapes.png").shape == (INSTANCE_HEIGHT, INSTANCE_WIDTH, 3)
    dimmed = (image.astype(np.float32) * 0.6).astype(np.uint8)
    panels = [read_png(output / f"shapes_step{k}.png") for k in (1, 2, 3)]
    for panel in panels:
        assert panel.shape == (INSTANCE_HEIGHT, 2 * INSTANCE_WIDTH, 3)
        points_view, masks_view = panel[:, :INSTANCE_WIDTH], panel[:, INSTANCE_WIDTH:]
        assert not np.array_equal(points_view, overlay)
        # Points drawn over the dimmed image (the caption covers at most a strip at the top).
        changed = (points_view[20:] != dimmed[20:]).any(axis=2)
        assert changed.sum() > 200
        assert not np.array_equal(masks_view[20:], dimmed[20:])
    assert not np.array_equal(panels[0], panels[1])


def test_trace_instance_subdivision_matches_model_inference():
    torch.manual_seed(0)
    model = build_model(tiny_instance_cfg()).eval()
    image = torch.randint(0, 256, (3, INSTANCE_HEIGHT, INSTANCE_WIDTH)).float()
    # An output image twice the input's size: points are reported in output pixels.
    batched_input = {"image": image, "height": 2 * INSTANCE_HEIGHT, "width": 2 * INSTANCE_WIDTH}
    with torch.no_grad():
        expected = model([batched_input])[0]["instances"]
    instances, steps = trace_instance_subdivision(model, batched_input)
    assert len(instances) == 20
    for field in ("pred_boxes", "scores", "pred_classes", "pred_masks"):
        actual, wanted = instances.get(field), expected.get(field)
        if field == "pred_boxes":
            actual, wanted = actual.tensor, wanted.tensor
        if field == "pred_masks":  # BoxMasks, pasted when read
            actual = torch.stack(list(actual))
        assert torch.equal(actual, wanted), field
    assert [step.resolution for step in steps] == [56, 112, 224]
    assert torch.equal(torch.stack(list(steps[-1].masks)), expected.pred_masks)
    boxes = instances.pred_boxes.tensor.numpy()
    for step in steps:
        assert step.points.shape == (20, 784, 2)
        assert len(step.masks) == 20
        assert step.masks.image_size == (2 * INSTANCE_HEIGHT, 2 * INSTANCE_WIDTH)
        # Each detection's points lie in its box (cell centres: strictly inside).
        assert (step.points >= boxes[:, None, :2] - 1e-3).all()
        assert (step.points <= boxes[:, None, 2:] + 1e-3).all()
    assert not np.array_equal(steps[0].points, steps[1].points)


def test_demo_instance_model_with_another_dataset_names_the_disagreement(
    tmp_path, instance_image, register_dataset
):
    config, weights = tiny_instance_model_files(tmp_path / "model")
    two_classes = register_dataset([], thing_classes=["a", "b"], evaluator_type="coco")
    with pytest.raises(ValueError) as error:
        load_tool("demo").main(
            ["--config-file", config, "--input", str(instance_image), "--output",
             str(tmp_path / "o"), "--opts", "MODEL.WEIGHTS", weights,
             "DATASETS.TEST", f"('{two_classes}',)"]
        )  # fmt: skip
    assert str(error.value).startswith(
        f"Dataset '{two_classes}' (DATASETS.TEST) has 2 classes, but the model has "
        f"MODEL.ROI_HEADS.NUM_CLASSES=4, which its checkpoint {weights} fits: the dataset and the "
        "checkpoint disagree."
    )


def test_demo_instance_baseline_and_flag_errors(tmp_path, instance_image):
    """A Mask R-CNN baseline draws detections but has no subdivision; --confidence-threshold is
    for instance models only."""
    config, weights = tiny_instance_model_files(
        tmp_path / "baseline",
        **{"MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
           "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2", "MODEL.ROI_MASK_HEAD.NUM_CONV": 1},
    )  # fmt: skip
    demo = load_tool("demo")
    output = tmp_path / "out"
    args = ["--config-file", config, "--input", str(instance_image), "--output", str(output),
            "--confidence-threshold", "0.0", "--opts", "MODEL.WEIGHTS", weights]  # fmt: skip
    demo.main(args)
    assert read_png(output / "shapes.png").shape == (INSTANCE_HEIGHT, INSTANCE_WIDTH, 3)
    with pytest.raises(SystemExit, match="PointRendInstanceMaskHead"):
        demo.main(args[:-3] + ["--show-points"] + args[-3:])
    semantic = [
        "--config-file",
        str(config_path("pointrend_semseg.yaml")),
        "--input",
        str(instance_image),
        "--output",
        str(output),
        "--confidence-threshold",
        "0.5",
    ]
    with pytest.raises(SystemExit, match="for instance models"):
        demo.main(semantic)  # fmt: skip
    with pytest.raises(SystemExit, match="for instance models"):
        demo.main(["--exported", str(tmp_path), *semantic[2:]])
