"""
Export (pointrend_d2.deploy.export, tools/export_model.py) and the exported-artifact predictor
(pointrend_d2.deploy): the programs against the eager model on images of several sizes, and the
errors for bad configs, checkpoints, images, artifact folders, damaged programs and failed writes.
Tiny random-weight models; the ONNX and DeepLabV3 exports are marked slow.
"""

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from pointrend_d2.checkpoint import CheckpointMismatchError, FileWriteError, SafeCheckpointer
from pointrend_d2.config import setup_cfg
from pointrend_d2.deploy import METADATA_FILE, ExportedPredictor
from pointrend_d2.deploy.export import compare_with_eager, export_model
from pointrend_d2.deploy.exported_predictor import UnreadableArtifactError
from pointrend_d2.modeling.deeplab_head import DeepLabV3CoarseHead
from pointrend_d2.modeling.semantic_seg import PointRendSemanticHead
from pointrend_d2.predictor import Predictor
from tests.helpers import REPO, small_deeplab_cfg, small_fpn_cfg

EXAMPLE_SIZE = (128, 192)
# The example's size; not a multiple of 32; larger than the example; a grid smaller than N (600
# points; 16x32 cells at the first step) so that N is clipped inside the program. (A 32x32 padded
# image fails in eager too: GroupNorm refuses the 1x1 stride-32 map.)
CHECK_SIZES = [EXAMPLE_SIZE, (100, 150), (320, 416), (20, 50)]
MODELS = {
    "fpn": lambda: small_fpn_cfg(5),
    "deeplab": lambda: small_deeplab_cfg(5),
    # The point head also reads 3 x 3 image patches from the backbone's "image" map.
    "fpn_image_patches": lambda: small_fpn_cfg(
        5,
        **{
            "MODEL.BACKBONE.NAME": "build_backbone_with_image",
            "MODEL.POINT_HEAD.IMAGE_PATCH_SIZE": 3,
        },
    ),
    "fpn_baseline": lambda: small_fpn_cfg(
        5, **{"MODEL.SEM_SEG_HEAD.NAME": "SemanticFPNCoarseHead"}
    ),
    "deeplab_baseline": lambda: small_deeplab_cfg(
        5, **{"MODEL.SEM_SEG_HEAD.NAME": "DeepLabV3CoarseHead"}
    ),
}


def predictors_initialised_near_zero(model) -> list:
    """The classifiers that start at std 0.001: PointRend's point-head predictor and DeepLabV3's."""
    head, layers = model.sem_seg_head, []
    if isinstance(head, PointRendSemanticHead):
        layers.append(head.point_head.predictor)
        head = head.coarse_sem_seg_head
    if isinstance(head, DeepLabV3CoarseHead):
        layers.append(head.predictor)
    return layers


def save_model(cfg, directory) -> tuple[str, str]:
    """
    A random-weight model of ``cfg`` saved as a checkpoint and a config file in ``directory``,
    with predictors of ordinary scale: their initial std 0.001 makes their logits near zero, and
    the comparisons below would then say little about the refined (or DeepLabV3's) logits.
    """
    torch.manual_seed(0)
    cfg = cfg.clone()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 160
    model = build_model(cfg)
    with torch.no_grad():
        for predictor in predictors_initialised_near_zero(model):
            predictor.weight.normal_(0, predictor.weight[0].numel() ** -0.5)
    SafeCheckpointer(model, save_dir=str(directory)).save("model")
    config_file = directory / "config.yaml"
    config_file.write_text(cfg.dump())
    return str(config_file), str(directory / "model.pth")


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict:
    """Config file and weights of each model in MODELS, by name."""
    return {
        name: save_model(make_cfg(), tmp_path_factory.mktemp(name))
        for name, make_cfg in MODELS.items()
    }


def load_cfg(config_file: str, weights: str):
    return setup_cfg(config_file, ["MODEL.WEIGHTS", weights])


@pytest.fixture(
    scope="module",
    params=[
        ("fpn", "torch_export"),
        pytest.param(("fpn", "onnx"), marks=pytest.mark.slow),
        pytest.param(("deeplab", "torch_export"), marks=pytest.mark.slow),
        pytest.param(("deeplab", "onnx"), marks=pytest.mark.slow),
        pytest.param(("fpn_image_patches", "torch_export"), marks=pytest.mark.slow),
        pytest.param(("fpn_baseline", "torch_export"), marks=pytest.mark.slow),
        pytest.param(("deeplab_baseline", "onnx"), marks=pytest.mark.slow),
    ],
    ids=lambda p: "-".join(p),
)
def exported(request, saved_models, tmp_path_factory) -> tuple:
    """(eager model, ExportedPredictor, cfg) of one model exported in one format."""
    name, export_format = request.param
    cfg = load_cfg(*saved_models[name])
    output_dir = tmp_path_factory.mktemp(f"{name}_{export_format}")
    export_model(cfg, str(output_dir), export_format, example_size=EXAMPLE_SIZE)
    return Predictor(cfg).model, ExportedPredictor(str(output_dir)), cfg


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8, generator=generator)


def test_exported_program_matches_eager(exported):
    """
    A .pt2 program runs the eager model's ATen kernels on the same shapes: bit-identical logits.
    onnxruntime's kernels round otherwise: the same argmax, and logits within 1e-4 of the
    largest (README, "Equality", on why a near-tied selection could still differ elsewhere).
    """
    eager, predictor, _ = exported
    for height, width in CHECK_SIZES:
        image = random_image(height, width)
        logits = predictor.run(image)
        assert logits.shape == (1, 5, height, width) and logits.dtype == torch.float32
        if predictor.metadata.format == "torch_export":
            with torch.no_grad():
                expected = eager([{"image": image[0]}])[0]["sem_seg"]
            assert torch.equal(logits[0], expected), (height, width)
            continue
        check = compare_with_eager(eager, predictor.run, image)
        assert check["argmax_agreement"] == 1.0, (height, width, check)
        assert check["max_rel_diff"] < 1e-4, (height, width, check)


def test_exported_predictor_matches_eager_predictor_on_files(exported, tmp_path):
    """Image files of the original size in, labels at the original size out, as the eager
    Predictor (both resize to MIN_SIZE_TEST 96 and back)."""
    _, predictor, cfg = exported
    eager = Predictor(cfg)
    for index, (height, width) in enumerate([(120, 200), (75, 50)]):
        path = str(tmp_path / f"image_{index}.png")
        Image.fromarray(
            np.random.default_rng(index).integers(0, 256, (height, width, 3), np.uint8)
        ).save(path)
        output = predictor(path)
        assert output["sem_seg"].shape == (5, height, width)
        assert output["labels"].shape == (height, width)
        expected = eager(path)["sem_seg"]
        assert torch.equal(output["labels"], expected.argmax(0))
        if predictor.metadata.format == "torch_export":
            assert torch.equal(output["sem_seg"], expected)
        else:
            torch.testing.assert_close(
                output["sem_seg"], expected, rtol=0, atol=1e-4 * expected.abs().max().item()
            )


def test_exported_metadata(exported):
    _, predictor, cfg = exported
    metadata = predictor.metadata
    assert metadata.input_format == cfg.INPUT.FORMAT
    assert (metadata.min_size_test, metadata.max_size_test) == (96, 160)
    assert metadata.class_names == [f"class {i}" for i in range(5)]
    assert metadata.source["weights"] == cfg.MODEL.WEIGHTS


@pytest.fixture(scope="module")
def fpn_artifact(saved_models, tmp_path_factory) -> str:
    """A torch.export artifact folder of the FPN model (for the error tests, which alter it)."""
    output_dir = tmp_path_factory.mktemp("artifact")
    export_model(load_cfg(*saved_models["fpn"]), str(output_dir), "torch_export")
    return str(output_dir)


@pytest.fixture(scope="module")
def fpn_predictor(fpn_artifact) -> ExportedPredictor:
    return ExportedPredictor(fpn_artifact)


@pytest.mark.parametrize(
    "image,match",
    [
        (torch.zeros(1, 4, 64, 64, dtype=torch.uint8), r"shape \(1, 4, 64, 64\).*3 channels"),
        (torch.zeros(3, 64, 64, dtype=torch.uint8), r"shape \(3, 64, 64\)"),
        (torch.zeros(1, 3, 64, 64), "dtype torch.float32; expected .* uint8"),
        (torch.zeros(1, 3, 1, 64, dtype=torch.uint8), "height and width must be >= 2"),
    ],
)
def test_program_refuses_bad_image_tensors(fpn_predictor, image, match):
    with pytest.raises(ValueError, match=match):
        fpn_predictor.run(image)


def test_predictor_refuses_bad_image_arrays(fpn_predictor):
    predictor = fpn_predictor
    with pytest.raises(ValueError, match=r"image has shape \(64, 64, 4\)"):
        predictor(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="image has dtype float32"):
        predictor(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predictor("missing.png")


def test_missing_or_broken_artifact_folders(fpn_artifact, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/{METADATA_FILE} does not exist"):
        ExportedPredictor(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    with open(os.path.join(fpn_artifact, METADATA_FILE)) as f:
        metadata = json.load(f)
    (broken / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(FileNotFoundError, match=f"{broken}/model.pt2 does not exist"):
        ExportedPredictor(str(broken))
    del metadata["input_format"]
    (broken / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=f"{broken}/{METADATA_FILE} lacks .*'input_format'"):
        ExportedPredictor(str(broken))
    (broken / METADATA_FILE).write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        ExportedPredictor(str(broken))


def copy_of_artifact(fpn_artifact, folder, export_format: str = "torch_export"):
    """A copy of the FPN artifact folder whose metadata names ``export_format``; the program's
    path in it."""
    shutil.copytree(fpn_artifact, folder)
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata["format"] = export_format
    (folder / METADATA_FILE).write_text(json.dumps(metadata))
    return folder / ("model.pt2" if export_format == "torch_export" else "model.onnx")


def tiny_onnx_model() -> bytes:
    """A whole ONNX model (an identity), for its damaged copies."""
    tensor = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["logits"])],
        "identity",
        [tensor],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1])],
    )
    return onnx.helper.make_model(graph).SerializeToString()


def damaged(content: bytes) -> dict[str, bytes]:
    """Copies of ``content`` as an interrupted copy or a bad disk leaves them, by damage."""
    flipped = bytearray(content)
    flipped[len(content) // 2] ^= 0xFF
    return {
        "half": content[: len(content) // 2],
        "empty": b"",
        "text": b"not a program\n" * 10,
        "bit flip": bytes(flipped),
    }


@pytest.mark.parametrize("export_format", ["torch_export", "onnx"])
def test_a_damaged_program_is_named_with_its_cause_and_what_to_do(
    fpn_artifact, tmp_path, export_format
):
    program = copy_of_artifact(fpn_artifact, tmp_path / "artifact", export_format)
    content = tiny_onnx_model() if export_format == "onnx" else program.read_bytes()
    causes = {
        "torch_export": {
            "half": "it starts as a zip archive (torch.export's format), but its end is missing",
            "empty": "the file is empty",
            "text": "it is not a zip archive (torch.export's format)",
            "bit flip": "fails its CRC check",
        },
        "onnx": {
            "half": "onnxruntime cannot load it ([ONNXRuntimeError] : 7 : INVALID_PROTOBUF",
            "empty": "the file is empty",
            "text": "onnxruntime cannot load it ([ONNXRuntimeError] : 7 : INVALID_PROTOBUF",
        },
    }[export_format]
    for kind, damaged_content in damaged(content).items():
        if kind not in causes:  # ONNX has no checksum: a flipped weight bit loads
            continue
        program.write_bytes(damaged_content)
        with pytest.raises(UnreadableArtifactError) as error:
            ExportedPredictor(str(program.parent))
        message = str(error.value)
        assert message.startswith(f"Exported program {program} cannot be loaded: "), kind
        assert causes[kind] in message, (kind, message)
        assert message.endswith(
            "Export it again with tools/export_model.py, or copy it again if it was copied (an "
            "interrupted copy leaves such files; export_model.py writes whole files or none)"
        ), (kind, message)


@contextlib.contextmanager
def file_size_limit(num_bytes: int):
    """No file that this process writes grows past ``num_bytes``: such a write fails with EFBIG,
    as on a file system or quota that is full (CPython ignores the SIGXFSZ that would otherwise
    kill the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (num_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_an_export_that_cannot_be_written_is_named_and_keeps_the_previous_one(
    saved_models, fpn_artifact, tmp_path
):
    output_dir = tmp_path / "exported"
    shutil.copytree(fpn_artifact, output_dir)
    before = {path.name: path.read_bytes() for path in output_dir.iterdir()}
    program = output_dir / "model.pt2"
    cfg = load_cfg(*saved_models["fpn"])
    with file_size_limit(len(before["model.pt2"]) // 2), pytest.raises(FileWriteError) as error:
        export_model(cfg, str(output_dir), "torch_export")
    assert str(error.value) == (
        f"Could not write {program}: the file would exceed the file-size limit of this process "
        f"([Errno 27] File too large). Nothing was replaced: {program} keeps its previous "
        "content, if it had any. Raise the limit (ulimit -f unlimited, in the shell that starts "
        "the job), then run again"
    )
    # The previous export is whole and usable; no temporary file is left.
    assert {path.name: path.read_bytes() for path in output_dir.iterdir()} == before
    ExportedPredictor(str(output_dir))


def test_export_refuses_bad_configs_and_checkpoints(saved_models, tmp_path):
    config_file, weights = saved_models["fpn"]
    cfg = load_cfg(config_file, weights)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    with pytest.raises(CheckpointMismatchError, match=f"(?s){weights}.*predictor"):
        export_model(cfg, str(tmp_path), "torch_export")
    cfg = load_cfg(*saved_models["deeplab"])
    cfg.MODEL.WEIGHTS = weights  # an FPN checkpoint for a DeepLabV3 model
    with pytest.raises(CheckpointMismatchError, match=weights):
        export_model(cfg, str(tmp_path), "torch_export")
    cfg = load_cfg(config_file, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        export_model(cfg, str(tmp_path), "torch_export")
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        export_model(load_cfg(config_file, ""), str(tmp_path), "torch_export")
    cfg = load_cfg(config_file, weights)
    cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECTION = "bounded"
    with pytest.raises(ValueError, match="SUBDIVISION_SELECTION bounded cannot be exported"):
        export_model(cfg, str(tmp_path), "torch_export")
    with pytest.raises(ValueError, match="export format must be one of"):
        export_model(load_cfg(config_file, weights), str(tmp_path), "tflite")
    assert not list(tmp_path.iterdir())  # nothing written by a failed export


def run_export_tool(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "tools" / "export_model.py"), *args]
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def test_export_tool_writes_and_checks_the_artifact(saved_models, tmp_path):
    config_file, weights = saved_models["fpn"]
    output_dir = tmp_path / "exported"
    result = run_export_tool(
        "--config-file", config_file, "--format", "torch_export", "--output", str(output_dir),
        "--check-size", "40", "60", "MODEL.WEIGHTS", weights,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert {p.name for p in output_dir.iterdir()} == {METADATA_FILE, "model.pt2"}
    assert "40x60: max |logit difference|" in output
    assert "argmax agreement 1.000000" in output
    result = run_export_tool(
        "--config-file", config_file, "--format", "torch_export", "--output", str(output_dir),
        "MODEL.WEIGHTS", weights, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7",
    )  # fmt: skip
    assert result.returncode != 0
    assert "CheckpointMismatchError" in result.stderr and weights in result.stderr
