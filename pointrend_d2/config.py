"""Config keys of pointrend_d2, added to a detectron2 config by :func:`add_pointrend_config`."""

from detectron2.config import CfgNode as CN


def add_pointrend_config(cfg: CN) -> None:
    """
    Add the PointRend semantic-segmentation keys to ``cfg`` in place. Defaults are the paper's
    (and detectron2's) semantic-segmentation settings.
    """
    # Random crops are retried until no single class covers more than this fraction of the crop
    # (1.0 disables the constraint).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0

    cfg.MODEL.POINT_HEAD = CN()
    # Name of the point head in pointrend_d2's POINT_HEAD_REGISTRY.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Name of the coarse head in SEM_SEG_HEADS_REGISTRY. It must provide `layers(features)` and
    # `losses(logits, targets)`, like detectron2's SemSegFPNHead.
    cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = "SemSegFPNHead"
    # Backbone feature maps sampled at each point as fine-grained features (concatenated).
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    # Number of points N per image at which the point loss is computed during training.
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 2048
    # k in the paper: k * N random candidate points are drawn before importance selection.
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    # beta in the paper: beta * N points are the most uncertain candidates, the rest are uniform.
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Number of 2x upsample-and-refine steps at inference (2 takes stride 4 to full resolution).
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 2
    # Number of most uncertain cells re-predicted at each subdivision step.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 8192
    # Width of each hidden layer of the point MLP.
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    # Number of hidden layers of the point MLP; 0 is a single linear layer.
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Concatenate the coarse logits to the input of every MLP layer, not only the first.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
