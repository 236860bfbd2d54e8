"""Training augmentations for semantic segmentation."""

from detectron2.config import CfgNode
from detectron2.data import transforms as T


def build_semantic_train_augmentation(cfg: CfgNode) -> list[T.Augmentation]:
    """
    The usual semantic-segmentation training augmentations, in order: resize the shortest edge
    (INPUT.MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING); if INPUT.CROP.ENABLED, a
    random crop (CROP.TYPE, CROP.SIZE) retried until no class covers more than
    CROP.SINGLE_CATEGORY_MAX_AREA of it, ignore pixels not counted; a random flip
    (INPUT.RANDOM_FLIP).
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augs
