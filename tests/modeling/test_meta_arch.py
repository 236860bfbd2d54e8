"""ExactSizeSemanticSegmentor's tiled inference (TEST.TILE) against whole-image inference."""

import pytest
import torch
from detectron2.modeling import build_model

from pointrend_d2.modeling.tiling import tile_spans
from pointrend_d2.visualization import trace_subdivision
from tests.helpers import small_fpn_cfg

# Input pixels that the local model's logits at a pixel x depend on lie within this many pixels
# of x (see local_model_cfg): a stride-4 cell k depends on pixels 4k - 5 .. 4k + 5 through the
# stem (conv 7x7/2, max pool 3x3/2), 16 more on each side through res2's four 3x3 convs, 4 more
# through the coarse head's 3x3 conv; the point head's bilinear samples at x read cells k with
# x - 5.5 <= 4k <= x + 2.5, hence pixels x - 30.5 .. x + 27.5.
RECEPTIVE_RADIUS = 31
# Both runs compute a pixel that satisfies the radius from the same float64 values in the same
# layers; only the order of additions may differ (convolution algorithms depend on the input's
# size), each changing a sum by a few units of 2**-53 of its terms' magnitude, a few 1e-15 with
# this model's activations of order 1 to 100. Seams differ by far more (asserted).
FLOAT64_TOLERANCE = 1e-9


def local_model_cfg(**overrides):
    """
    :func:`small_fpn_cfg` cut down to a model without global statistics whose logits at a pixel
    depend only on input pixels within RECEPTIVE_RADIUS: the ResNet's stem and res2 alone, no FPN
    (FrozenBN is per channel), the coarse head on res2 without GroupNorm, and subdivision that
    re-predicts every cell, so that a final logit is the point head at that pixel.
    """
    return small_fpn_cfg(
        **{
            "MODEL.BACKBONE.NAME": "build_resnet_backbone",
            "MODEL.RESNETS.OUT_FEATURES": ["res2"],
            "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2"],
            "MODEL.SEM_SEG_HEAD.NORM": "",
            "MODEL.POINT_HEAD.IN_FEATURES": ["res2"],
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 256 * 256,
            **overrides,
        }
    )


def random_image(height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8)


def inner_border_distance(length: int, tile_size: int, overlap: int) -> torch.Tensor:
    """(length,) distance of each pixel to the nearest border of its tile that is not the
    image's (length when there is none)."""
    distance = torch.full((length,), length)
    for span in tile_spans(length, tile_size, overlap):
        kept = torch.arange(span.keep_start, span.keep_stop)
        if span.start > 0:
            distance[kept] = torch.minimum(distance[kept], kept - span.start)
        if span.stop < length:
            distance[kept] = torch.minimum(distance[kept], span.stop - 1 - kept)
    return distance


def run(model, image: torch.Tensor, tile_size: int, overlap: int, **output_size) -> torch.Tensor:
    model.tile_size, model.tile_overlap = tile_size, overlap
    with torch.no_grad():
        return model([{"image": image, **output_size}])[0]["sem_seg"]


@pytest.fixture(scope="module")
def local_model():
    torch.manual_seed(0)
    return build_model(local_model_cfg()).eval().double()


def test_tiled_equals_whole_image_inference_wherever_the_receptive_field_fits(local_model):
    """
    256x256 image, tiles of 128 (side and image powers of 2, so that the point coordinates,
    fractions of the input's side, are exact in float32 in both runs). With a 96-pixel overlap
    every kept pixel is 48 > RECEPTIVE_RADIUS pixels inside its tile: equal everywhere. With a
    32-pixel overlap (16 inside), equal exactly where RECEPTIVE_RADIUS fits, and not near the
    seams.
    """
    image = random_image(256, 256)
    whole = run(local_model, image, 0, 0)
    assert whole.dtype == torch.float64 and whole.shape == (5, 256, 256)

    tiled = run(local_model, image, 128, 96)
    assert (tiled - whole).abs().max() <= FLOAT64_TOLERANCE

    tiled = run(local_model, image, 128, 32)
    distance = inner_border_distance(256, 128, 32)
    inside = torch.minimum(distance[:, None], distance[None, :]) > RECEPTIVE_RADIUS
    difference = (tiled - whole).abs().amax(dim=0)
    assert inside.float().mean() > 0.5
    assert difference[inside].max() <= FLOAT64_TOLERANCE
    assert difference[~inside].max() > 1e-3


def test_one_tile_is_whole_image_inference():
    """An image that fits in a tile gets its whole-image logits exactly, also when resized."""
    torch.manual_seed(0)
    model = build_model(small_fpn_cfg()).eval()
    image = random_image(96, 160)
    output_size = {"height": 120, "width": 200}
    whole = run(model, image, 0, 0, **output_size)
    assert whole.shape == (5, 120, 200)
    assert torch.equal(run(model, image, 192, 64, **output_size), whole)


def test_tiled_inference_runs_the_model_on_one_tile_at_a_time():
    """The shipped semantic model's layers (small_fpn_cfg) never see more than a tile: the
    backbone's inputs and the head's logits are tile-sized; the output alone is image-sized."""
    torch.manual_seed(0)
    model = build_model(small_fpn_cfg(**{"TEST.TILE.SIZE": 64, "TEST.TILE.OVERLAP": 0})).eval()
    assert (model.tile_size, model.tile_overlap) == (64, 0)
    shapes = {"backbone inputs": [], "head logits": []}
    model.backbone.register_forward_pre_hook(
        lambda _, args: shapes["backbone inputs"].append(tuple(args[0].shape))
    )
    model.sem_seg_head.register_forward_hook(
        lambda _, args, output: shapes["head logits"].append(tuple(output[0].shape))
    )
    with torch.no_grad():
        (output,) = model([{"image": random_image(128, 160)}])
    # Rows [0, 64), [64, 128); columns [0, 64), [64, 128), [128, 160).
    sizes = [(64, 64), (64, 64), (64, 32)] * 2
    assert shapes["backbone inputs"] == [(1, 3, *size) for size in sizes]
    assert shapes["head logits"] == [(1, 5, *size) for size in sizes]
    assert output["sem_seg"].shape == (5, 128, 160)


def test_tile_settings_are_checked_when_the_model_is_built():
    with pytest.raises(
        ValueError,
        match=r"TEST.TILE.SIZE 100 - TEST.TILE.OVERLAP 0 = 100 is not a multiple of 64, the "
        r"model's coarsest stride.*Use e.g. TEST.TILE.OVERLAP 36",
    ):
        build_model(small_fpn_cfg(**{"TEST.TILE.SIZE": 100, "TEST.TILE.OVERLAP": 0}))
    with pytest.raises(ValueError, match=r"TEST.TILE.OVERLAP is 256 with TEST.TILE.SIZE 128"):
        build_model(small_fpn_cfg(**{"TEST.TILE.SIZE": 128}))


def test_subdivision_trace_refuses_an_input_segmented_in_tiles():
    torch.manual_seed(0)
    model = build_model(small_fpn_cfg(**{"TEST.TILE.SIZE": 128, "TEST.TILE.OVERLAP": 64})).eval()
    assert len(trace_subdivision(model, {"image": random_image(96, 128)})) == 2
    with pytest.raises(ValueError, match=r"96x160 input in tiles \(TEST.TILE.SIZE 128\)"):
        trace_subdivision(model, {"image": random_image(96, 160)})
