"""
The model-zoo configs against detectron2's published recipes, value by value.

detectron2's values are written out below, copied from its published files (detectron2 main:
config/defaults.py, configs/Base-RCNN-FPN.yaml, configs/Base-RCNN-DilatedC5.yaml,
configs/COCO-InstanceSegmentation/mask_rcnn_*_FPN_*.yaml,
configs/Cityscapes/mask_rcnn_R_50_FPN.yaml, projects/PointRend/configs/SemanticSegmentation/*.yaml,
projects/PointRend/configs/InstanceSegmentation/*.yaml, projects/PointRend/point_rend/config.py,
projects/DeepLab/configs/Cityscapes-SemanticSegmentation/*.yaml, projects/DeepLab/deeplab/
config.py), never read from the installed package: a test that read them would follow any change
there. Each of our configs must give every value of its recipe, under our key where the name
differs, except the differences that the docs' model-zoo page (docs/model-zoo.md) names, with
why: its "Semantic segmentation" section for the semantic configs, its "Instance segmentation"
section (which also names the renamed keys) for the instance ones.
"""

import re

import pytest

from pointrend_d2.config import setup_cfg
from pointrend_d2.modeling.dilated_resnet import OUTPUT_STRIDE_OF_DILATIONS
from tests.helpers import REPO, config_path

MISSING = "<no such key>"

# detectron2/config/defaults.py: the defaults that the recipes below rely on.
D2_DEFAULTS = {
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.RESNETS.NUM_GROUPS": 1,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 64,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.FPN.OUT_CHANNELS": 256,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 4,
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0,
    "INPUT.FORMAT": "BGR",
    "INPUT.RANDOM_FLIP": "horizontal",
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.NESTEROV": False,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.WEIGHT_DECAY_BIAS": None,
    "SOLVER.BIAS_LR_FACTOR": 1.0,
    "SOLVER.GAMMA": 0.1,
    "SOLVER.WARMUP_FACTOR": 1.0 / 1000,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.CHECKPOINT_PERIOD": 5000,
    "SOLVER.CLIP_GRADIENTS.ENABLED": False,
    "SOLVER.AMP.ENABLED": False,
    "SOLVER.REFERENCE_WORLD_SIZE": 0,
    "TEST.EVAL_PERIOD": 0,
    "TEST.AUG.ENABLED": False,
    "DATALOADER.SAMPLER_TRAIN": "TrainingSampler",
}

# configs/Base-RCNN-FPN.yaml (the part a semantic model uses).
D2_BASE_RCNN_FPN = {
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.STEPS": [60000, 80000],
    "SOLVER.MAX_ITER": 90000,
    "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800],
}

# projects/PointRend/point_rend/config.py, add_pointrend_config: the defaults of the keys that
# the semantic model reads (but CLS_AGNOSTIC_MASK False, which our point head has no key for: it
# always predicts per class).
D2_POINTREND_DEFAULTS = {
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.COLOR_AUG_SSD": False,
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.OVERSAMPLE_RATIO": 3,
    "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO": 0.75,
}

# projects/PointRend/configs/SemanticSegmentation/Base-PointRend-Semantic-FPN.yaml.
D2_POINTREND_SEMANTIC_BASE = {
    "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.SEM_SEG_HEAD.NAME": "PointRendSemSegHead",
    "MODEL.POINT_HEAD.NUM_CLASSES": 54,
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 1024,
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 2,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 8192,
    "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemSegFPNHead",
    "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": False,
    "DATASETS.TRAIN": ["coco_2017_train_panoptic_stuffonly"],
    "DATASETS.TEST": ["coco_2017_val_panoptic_stuffonly"],
}

# projects/PointRend/configs/SemanticSegmentation/pointrend_semantic_R_101_FPN_1x_cityscapes.yaml
# (detectron2's only Cityscapes PointRend config; its model-zoo model).
D2_POINTREND_CITYSCAPES_R101 = {
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    "MODEL.RESNETS.DEPTH": 101,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
    "MODEL.POINT_HEAD.NUM_CLASSES": 19,
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 2048,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 8192,
    "DATASETS.TRAIN": ["cityscapes_fine_sem_seg_train"],
    "DATASETS.TEST": ["cityscapes_fine_sem_seg_val"],
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.STEPS": [40000, 55000],
    "SOLVER.MAX_ITER": 65000,
    "SOLVER.IMS_PER_BATCH": 32,
    "INPUT.MIN_SIZE_TRAIN": [512, 768, 1024, 1280, 1536, 1792, 2048],
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MIN_SIZE_TEST": 1024,
    "INPUT.MAX_SIZE_TRAIN": 4096,
    "INPUT.MAX_SIZE_TEST": 2048,
    "INPUT.CROP.ENABLED": True,
    "INPUT.CROP.TYPE": "absolute",
    "INPUT.CROP.SIZE": [512, 1024],
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75,
    "INPUT.COLOR_AUG_SSD": True,
    "DATALOADER.NUM_WORKERS": 10,
}

# configs/Base-RCNN-DilatedC5.yaml (the part a semantic model uses).
D2_BASE_RCNN_DILATED_C5 = {
    "MODEL.RESNETS.OUT_FEATURES": ["res5"],
    "MODEL.RESNETS.RES5_DILATION": 2,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.BASE_LR": 0.02,
    "SOLVER.STEPS": [60000, 80000],
    "SOLVER.MAX_ITER": 90000,
    "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800],
}

# projects/DeepLab/deeplab/config.py, add_deeplab_config: the keys DeepLabV3 reads (but
# USE_DEPTHWISE_SEPARABLE_CONV False, which our ASPP has no key for: its convs are plain).
D2_DEEPLAB_DEFAULTS = {
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
    "MODEL.RESNETS.RES4_DILATION": 1,
    "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
    "MODEL.RESNETS.STEM_TYPE": "deeplab",
}

# projects/DeepLab/configs/Cityscapes-SemanticSegmentation/Base-DeepLabV3-OS16-Semantic.yaml
# and deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml.
D2_DEEPLAB_CITYSCAPES_OS16 = {
    "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.SEM_SEG_HEAD.NAME": "DeepLabV3Head",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res5"],
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 256,
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 16,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 19,
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
    "DATASETS.TRAIN": ["cityscapes_fine_sem_seg_train"],
    "DATASETS.TEST": ["cityscapes_fine_sem_seg_val"],
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.MAX_ITER": 90000,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
    "SOLVER.IMS_PER_BATCH": 16,
    "INPUT.MIN_SIZE_TRAIN": [512, 768, 1024, 1280, 1536, 1792, 2048],
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MIN_SIZE_TEST": 1024,
    "INPUT.MAX_SIZE_TRAIN": 4096,
    "INPUT.MAX_SIZE_TEST": 2048,
    "INPUT.CROP.ENABLED": True,
    "INPUT.CROP.TYPE": "absolute",
    "INPUT.CROP.SIZE": [512, 1024],
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "DATALOADER.NUM_WORKERS": 10,
    # deeplab_v3_R_103_os16_mg124_poly_90k_bs16.yaml
    "MODEL.WEIGHTS": "detectron2://DeepLab/R-103.pkl",
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530],
    "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.BACKBONE.NAME": "build_resnet_deeplab_backbone",
    "MODEL.RESNETS.DEPTH": 101,
    "MODEL.RESNETS.NORM": "SyncBN",
    "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
    "MODEL.RESNETS.STEM_TYPE": "deeplab",
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 128,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.SEM_SEG_HEAD.NORM": "SyncBN",
}

# detectron2/config/defaults.py: the defaults that a ResNet-FPN Mask R-CNN reads besides those
# above (proposals, anchors, RPN, ROI heads, box and mask heads, input, data loading).
D2_RCNN_DEFAULTS = {
    "MODEL.LOAD_PROPOSALS": False,
    "MODEL.KEYPOINT_ON": False,
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "MODEL.RESNETS.DEFORM_MODULATED": False,
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": 1,
    "MODEL.PROPOSAL_GENERATOR.NAME": "RPN",
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": 0,
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.ANGLES": [[-90, 0, 90]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.HEAD_NAME": "StandardRPNHead",
    "MODEL.RPN.BOUNDARY_THRESH": -1,
    "MODEL.RPN.IOU_THRESHOLDS": [0.3, 0.7],
    "MODEL.RPN.IOU_LABELS": [0, -1, 1],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 256,
    "MODEL.RPN.POSITIVE_FRACTION": 0.5,
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": 1.0,
    "MODEL.RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.RPN.SMOOTH_L1_BETA": 0.0,
    "MODEL.RPN.LOSS_WEIGHT": 1.0,
    "MODEL.RPN.NMS_THRESH": 0.7,
    "MODEL.RPN.CONV_DIMS": [-1],
    "MODEL.ROI_HEADS.NUM_CLASSES": 80,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.5],
    "MODEL.ROI_HEADS.IOU_LABELS": [0, 1],
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 512,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.25,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": 0.5,
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": True,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": 1.0,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": 0.0,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.ROI_BOX_HEAD.FC_DIM": 1024,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.CONV_DIM": 256,
    "MODEL.ROI_BOX_HEAD.NORM": "",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": False,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 0,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 0,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": 256,
    "MODEL.ROI_MASK_HEAD.NORM": "",
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlignV2",
    "MODEL.MASK_ON": False,
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.CROP.ENABLED": False,
    "INPUT.MASK_FORMAT": "polygon",
    "DATALOADER.NUM_WORKERS": 4,
    "DATALOADER.ASPECT_RATIO_GROUPING": True,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": True,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "TEST.PRECISE_BN.ENABLED": False,
}

# configs/Base-RCNN-FPN.yaml: the rest of it, which the detection models use.
D2_BASE_RCNN_FPN_DETECTION = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128], [256], [512]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 2000,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": 1000,
    "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 4,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "DATASETS.TRAIN": ["coco_2017_train"],
    "DATASETS.TEST": ["coco_2017_val"],
}

# projects/PointRend/point_rend/config.py, add_pointrend_config: the defaults of the keys that
# the instance model reads.
D2_POINTREND_INSTANCE_DEFAULTS = {
    "MODEL.ROI_MASK_HEAD.IN_FEATURES": ["p2"],
    "MODEL.ROI_MASK_HEAD.FC_DIM": 1024,
    "MODEL.ROI_MASK_HEAD.NUM_FC": 2,
    "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON": False,
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.NUM_CLASSES": 80,
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 14 * 14,
    "MODEL.POINT_HEAD.OVERSAMPLE_RATIO": 3,
    "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 5,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 28 * 28,
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": True,
}

# projects/PointRend/configs/InstanceSegmentation/Base-PointRend-RCNN-FPN.yaml.
D2_POINTREND_INSTANCE_BASE = {
    "MODEL.MASK_ON": True,
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": True,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "",
    "MODEL.ROI_MASK_HEAD.NAME": "PointRendMaskHead",
    "MODEL.ROI_MASK_HEAD.FC_DIM": 1024,
    "MODEL.ROI_MASK_HEAD.NUM_FC": 2,
    "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.IN_FEATURES": ["p2"],
    "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON": True,
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "INPUT.MASK_FORMAT": "bitmask",
}

# projects/PointRend/point_rend/config.py, add_pointrend_config: the Implicit PointRend keys.
D2_IMPLICIT_POINTREND_DEFAULTS = {
    "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED": True,
    "MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED": True,
    "MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER": 0.00001,
}

# projects/PointRend/configs/InstanceSegmentation/Base-Implicit-PointRend.yaml (on
# configs/Base-RCNN-FPN.yaml: StandardROIHeads, the mask head trained on the proposals).
D2_IMPLICIT_POINTREND_BASE = {
    "MODEL.MASK_ON": True,
    "MODEL.ROI_MASK_HEAD.NAME": "ImplicitPointRendMaskHead",
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "",
    "MODEL.ROI_MASK_HEAD.FC_DIM": 1024,
    "MODEL.ROI_MASK_HEAD.NUM_FC": 2,
    "MODEL.POINT_HEAD.NAME": "ImplicitPointHead",
    "MODEL.POINT_HEAD.FC_DIM": 256,
    "MODEL.POINT_HEAD.NUM_FC": 3,
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "MODEL.POINT_HEAD.NUM_CLASSES": 80,
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": False,
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 196,
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 3,
    "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 784,
    "MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED": True,
    "MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED": True,
    "MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER": 0.00001,
    "INPUT.MASK_FORMAT": "bitmask",
}

# The backbones and schedules of the COCO leaves, the same in detectron2's PointRend
# (projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_*_coco.yaml) and Mask R-CNN
# (configs/COCO-InstanceSegmentation/mask_rcnn_*_FPN_*.yaml) configs; both set MODEL.MASK_ON too.
D2_R50 = {
    "MODEL.MASK_ON": True,
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    "MODEL.RESNETS.DEPTH": 50,
}
D2_R101 = {
    "MODEL.MASK_ON": True,
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    "MODEL.RESNETS.DEPTH": 101,
}
D2_X101_32X8D = {
    "MODEL.MASK_ON": True,
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl",
    "MODEL.PIXEL_STD": [57.375, 57.120, 58.395],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.RESNETS.NUM_GROUPS": 32,
    "MODEL.RESNETS.WIDTH_PER_GROUP": 8,
    "MODEL.RESNETS.DEPTH": 101,
}
D2_COCO_3X = {
    "SOLVER.STEPS": [210000, 250000],
    "SOLVER.MAX_ITER": 270000,
}

# projects/PointRend/configs/InstanceSegmentation/pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml.
D2_POINTREND_CITYSCAPES_INSTANCE = {
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    "MODEL.MASK_ON": True,
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.ROI_HEADS.NUM_CLASSES": 8,
    "MODEL.POINT_HEAD.NUM_CLASSES": 8,
    "DATASETS.TEST": ["cityscapes_fine_instance_seg_val"],
    "DATASETS.TRAIN": ["cityscapes_fine_instance_seg_train"],
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.IMS_PER_BATCH": 8,
    "SOLVER.MAX_ITER": 24000,
    "SOLVER.STEPS": [18000],
    "INPUT.MAX_SIZE_TEST": 2048,
    "INPUT.MAX_SIZE_TRAIN": 2048,
    "INPUT.MIN_SIZE_TEST": 1024,
    "INPUT.MIN_SIZE_TRAIN": [800, 832, 864, 896, 928, 960, 992, 1024],
}

# configs/Cityscapes/mask_rcnn_R_50_FPN.yaml.
D2_MASK_RCNN_CITYSCAPES = {
    "MODEL.WEIGHTS": (
        "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
        "model_final_f10217.pkl"
    ),
    "MODEL.MASK_ON": True,
    "MODEL.ROI_HEADS.NUM_CLASSES": 8,
    "INPUT.MIN_SIZE_TRAIN": [800, 832, 864, 896, 928, 960, 992, 1024],
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice",
    "INPUT.MIN_SIZE_TEST": 1024,
    "INPUT.MAX_SIZE_TRAIN": 2048,
    "INPUT.MAX_SIZE_TEST": 2048,
    "DATASETS.TRAIN": ["cityscapes_fine_instance_seg_train"],
    "DATASETS.TEST": ["cityscapes_fine_instance_seg_val"],
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.STEPS": [18000],
    "SOLVER.MAX_ITER": 24000,
    "SOLVER.IMS_PER_BATCH": 8,
    "TEST.EVAL_PERIOD": 8000,
}


def recipe(*layers: dict) -> dict:
    """Config layers merged in order, as detectron2 merges a config over its _BASE_."""
    merged = {}
    for layer in layers:
        merged.update(layer)
    return merged


D2_CITYSCAPES_FPN = recipe(
    D2_DEFAULTS,
    D2_BASE_RCNN_FPN,
    D2_POINTREND_DEFAULTS,
    D2_POINTREND_SEMANTIC_BASE,
    D2_POINTREND_CITYSCAPES_R101,
)
D2_CITYSCAPES_DEEPLAB = recipe(
    D2_DEFAULTS, D2_BASE_RCNN_DILATED_C5, D2_DEEPLAB_DEFAULTS, D2_DEEPLAB_CITYSCAPES_OS16
)

D2_MASK_RCNN = recipe(D2_DEFAULTS, D2_RCNN_DEFAULTS, D2_BASE_RCNN_FPN, D2_BASE_RCNN_FPN_DETECTION)
D2_POINTREND_RCNN = recipe(D2_MASK_RCNN, D2_POINTREND_INSTANCE_DEFAULTS, D2_POINTREND_INSTANCE_BASE)
D2_IMPLICIT_POINTREND = recipe(
    D2_MASK_RCNN,
    D2_POINTREND_INSTANCE_DEFAULTS,
    D2_IMPLICIT_POINTREND_DEFAULTS,
    D2_IMPLICIT_POINTREND_BASE,
)


def output_stride(cfg) -> int:
    resnets = cfg.MODEL.RESNETS
    return OUTPUT_STRIDE_OF_DILATIONS[(resnets.RES4_DILATION, resnets.RES5_DILATION)]


# detectron2 key -> how our config gives the same thing under another name (same values).
FPN_RENAMED = {
    # Our configs' one class count serves both heads.
    "MODEL.POINT_HEAD.NUM_CLASSES": lambda cfg: cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
}
DEEPLAB_RENAMED = {
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": lambda cfg: cfg.MODEL.DEEPLAB_V3.ASPP_CHANNELS,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": lambda cfg: cfg.MODEL.DEEPLAB_V3.ASPP_DILATIONS,
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": lambda cfg: cfg.MODEL.DEEPLAB_V3.DROPOUT,
    "MODEL.SEM_SEG_HEAD.NORM": lambda cfg: cfg.MODEL.DEEPLAB_V3.NORM,
    # The ASPP projection is ASPP_CHANNELS wide, which the classifier reads.
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": lambda cfg: cfg.MODEL.DEEPLAB_V3.ASPP_CHANNELS,
    # The head's stride is the backbone's output stride.
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": output_stride,
}

# detectron2 key -> our value, where our config differs from detectron2's recipe. The "Semantic
# segmentation" section of docs/model-zoo.md names every key here, with why.
FPN_DIFFERENCES = {
    # Same training and outputs, without the final same-size resize.
    "MODEL.META_ARCHITECTURE": "ExactSizeSemanticSegmentor",
    # Our registered names (same parameters, same outputs).
    "MODEL.SEM_SEG_HEAD.NAME": "PointRendSemanticHead",
    "MODEL.POINT_HEAD.NAME": "MLPPointHead",
    # SemSegFPNHead's parameters and outputs, with a loss of 0 rather than NaN on crops whose
    # labels are all ignored.
    "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemanticFPNCoarseHead",
}
FPN_R50_DIFFERENCES = {
    **FPN_DIFFERENCES,
    # detectron2 publishes the Cityscapes recipe for R-101 only.
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
}
DEEPLAB_DIFFERENCES = {
    "MODEL.META_ARCHITECTURE": "ExactSizeSemanticSegmentor",
    # PointRend (or the plain head of the baseline config, below) on DeepLabV3's ASPP head.
    "MODEL.SEM_SEG_HEAD.NAME": "PointRendSemanticHead",
    # The backbone: ImageNet's MSRA R-101 with its stem, stride and pixel statistics, as for the
    # SemanticFPN models, rather than detectron2's DeepLab R-103 (deep stem, multi-grid).
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    "MODEL.BACKBONE.NAME": "build_dilated_resnet_backbone",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.RESNETS.STEM_TYPE": MISSING,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
    "MODEL.RESNETS.RES5_MULTI_GRID": MISSING,
    # res2 too: the point head's fine-grained features.
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res5"],
    # Cross-entropy on every pixel, as PointRend's coarse heads.
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": MISSING,
    # PointRend's Cityscapes schedule and crops (D2_POINTREND_CITYSCAPES_R101).
    "SOLVER.LR_SCHEDULER_NAME": "WarmupMultiStepLR",
    "SOLVER.POLY_LR_POWER": MISSING,
    "SOLVER.POLY_LR_CONSTANT_ENDING": MISSING,
    "SOLVER.MAX_ITER": 65000,
    "SOLVER.IMS_PER_BATCH": 32,
    "SOLVER.STEPS": [40000, 55000],
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75,
}

CONFIGS = {
    "pointrend_semantic_R_101_FPN_1x_cityscapes.yaml": (
        D2_CITYSCAPES_FPN,
        FPN_RENAMED,
        FPN_DIFFERENCES,
    ),
    "pointrend_semantic_R_50_FPN_1x_cityscapes.yaml": (
        D2_CITYSCAPES_FPN,
        FPN_RENAMED,
        FPN_R50_DIFFERENCES,
    ),
    "deeplabv3_pointrend_R_101_os16_cityscapes.yaml": (
        D2_CITYSCAPES_DEEPLAB,
        DEEPLAB_RENAMED,
        DEEPLAB_DIFFERENCES,
    ),
    # The baseline: the plain ASPP head.
    "deeplabv3_R_101_os16_cityscapes.yaml": (
        D2_CITYSCAPES_DEEPLAB,
        DEEPLAB_RENAMED,
        {**DEEPLAB_DIFFERENCES, "MODEL.SEM_SEG_HEAD.NAME": "DeepLabV3CoarseHead"},
    ),
}

# The instance configs: detectron2 key -> how ours gives the same thing under another name.
POINTREND_RCNN_RENAMED = {
    # Our configs' one class count serves the box, mask and point heads.
    "MODEL.POINT_HEAD.NUM_CLASSES": lambda cfg: cfg.MODEL.ROI_HEADS.NUM_CLASSES,
    # PointRendInstanceMaskHead always has its point head (ConvFCCoarseMaskHead is the coarse
    # head alone).
    "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON": lambda cfg: (
        cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendInstanceMaskHead"
    ),
    # The point head predicts a mask per class unless the mask head's masks are class-agnostic.
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": lambda cfg: cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
}
POINTREND_RCNN_DIFFERENCES = {
    # Our registered names (same parameters, same outputs).
    "MODEL.ROI_MASK_HEAD.NAME": "PointRendInstanceMaskHead",
    "MODEL.POINT_HEAD.NAME": "MLPPointHead",
    # detectron2's 4 comes from Base-RCNN-FPN.yaml's standard mask head; neither PointRend mask
    # head reads it.
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 0,
}
MASK_RCNN_CITYSCAPES_DIFFERENCES = {
    # From ImageNet, as PointRend's Cityscapes model, rather than from detectron2's COCO model.
    "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
}

INSTANCE_CONFIGS = {
    "pointrend_rcnn_R_50_FPN_1x_coco.yaml": (
        recipe(D2_POINTREND_RCNN, D2_R50),
        POINTREND_RCNN_RENAMED,
        POINTREND_RCNN_DIFFERENCES,
    ),
    "pointrend_rcnn_R_50_FPN_3x_coco.yaml": (
        recipe(D2_POINTREND_RCNN, D2_R50, D2_COCO_3X),
        POINTREND_RCNN_RENAMED,
        POINTREND_RCNN_DIFFERENCES,
    ),
    "pointrend_rcnn_R_101_FPN_3x_coco.yaml": (
        recipe(D2_POINTREND_RCNN, D2_R101, D2_COCO_3X),
        POINTREND_RCNN_RENAMED,
        POINTREND_RCNN_DIFFERENCES,
    ),
    "pointrend_rcnn_X_101_32x8d_FPN_3x_coco.yaml": (
        recipe(D2_POINTREND_RCNN, D2_X101_32X8D, D2_COCO_3X),
        POINTREND_RCNN_RENAMED,
        POINTREND_RCNN_DIFFERENCES,
    ),
    "pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml": (
        recipe(D2_POINTREND_RCNN, D2_POINTREND_CITYSCAPES_INSTANCE),
        POINTREND_RCNN_RENAMED,
        POINTREND_RCNN_DIFFERENCES,
    ),
    "mask_rcnn_R_50_FPN_1x_coco.yaml": (recipe(D2_MASK_RCNN, D2_R50), {}, {}),
    "mask_rcnn_R_50_FPN_3x_coco.yaml": (recipe(D2_MASK_RCNN, D2_R50, D2_COCO_3X), {}, {}),
    "mask_rcnn_R_101_FPN_3x_coco.yaml": (recipe(D2_MASK_RCNN, D2_R101, D2_COCO_3X), {}, {}),
    "mask_rcnn_X_101_32x8d_FPN_3x_coco.yaml": (
        recipe(D2_MASK_RCNN, D2_X101_32X8D, D2_COCO_3X),
        {},
        {},
    ),
    "mask_rcnn_R_50_FPN_1x_cityscapes.yaml": (
        recipe(D2_MASK_RCNN, D2_MASK_RCNN_CITYSCAPES),
        {},
        MASK_RCNN_CITYSCAPES_DIFFERENCES,
    ),
}
# Implicit PointRend: detectron2 key -> how ours gives the same thing under another name, and
# the differences. Not yet in README's instance table (nor in its test above): the lead places
# its docs.
IMPLICIT_POINTREND_RENAMED = {
    "MODEL.POINT_HEAD.NUM_CLASSES": lambda cfg: cfg.MODEL.ROI_HEADS.NUM_CLASSES,
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": lambda cfg: cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK,
}
IMPLICIT_POINTREND_DIFFERENCES = {
    # Our registered name (same parameters, same outputs).
    "MODEL.ROI_MASK_HEAD.NAME": "ImplicitPointRendInstanceMaskHead",
    # Not read: the implicit head's point head is always its per-instance implicit function.
    "MODEL.POINT_HEAD.NAME": "MLPPointHead",
    # Neither reads these (detectron2's 4 is Base-RCNN-FPN.yaml's standard mask head's; its
    # POINT_HEAD_ON False is add_pointrend_config's default, which ImplicitPointRendMaskHead
    # ignores: it always has its point head).
    "MODEL.ROI_MASK_HEAD.NUM_CONV": 0,
    "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON": MISSING,
}
IMPLICIT_CONFIGS = {
    "implicit_pointrend_R_50_FPN_1x_coco.yaml": (
        recipe(D2_IMPLICIT_POINTREND, D2_R50),
        IMPLICIT_POINTREND_RENAMED,
        IMPLICIT_POINTREND_DIFFERENCES,
    ),
}
ALL_CONFIGS = {**CONFIGS, **INSTANCE_CONFIGS, **IMPLICIT_CONFIGS}

# Each PointRend instance config and its Mask R-CNN baseline: the same but for the mask head.
INSTANCE_BASELINES = {
    config: config.replace("pointrend_rcnn_", "mask_rcnn_")
    for config in INSTANCE_CONFIGS
    if config.startswith("pointrend_rcnn_")
}


def value(cfg, key: str):
    """``cfg``'s value at a dotted ``key`` (tuples as lists), or MISSING."""
    node = cfg
    for part in key.split("."):
        if part not in node:
            return MISSING
        node = node[part]
    return list(node) if isinstance(node, tuple) else node


def model_zoo_page_section(title: str) -> str:
    """The text of the ``## <title>`` section of docs/model-zoo.md, up to the next ``## ``."""
    page = (REPO / "docs" / "model-zoo.md").read_text()
    pattern = rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)"
    match = re.search(pattern, page, re.MULTILINE | re.DOTALL)
    assert match, f"docs/model-zoo.md has no '## {title}' section"
    return match.group(1)


@pytest.mark.parametrize("config", sorted(ALL_CONFIGS))
def test_config_gives_every_value_of_detectron2s_recipe(config):
    reference, renamed, differences = ALL_CONFIGS[config]
    cfg = setup_cfg(str(config_path(config)))
    assert set(renamed) <= set(reference) and set(differences) <= set(reference)
    for key, expected in reference.items():
        if key in differences:
            # Still a difference: the docs must not describe one that was fixed.
            assert expected != differences[key], key
            assert value(cfg, key) == differences[key], key
        elif key in renamed:
            assert renamed[key](cfg) == expected, key
        else:
            assert value(cfg, key) == expected, key


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_docs_name_every_difference(config):
    section = model_zoo_page_section("Semantic segmentation")
    for key in CONFIGS[config][2]:
        assert f"`{key}`" in section, key


@pytest.mark.parametrize("config", sorted(INSTANCE_CONFIGS))
def test_docs_name_every_instance_difference_and_renamed_key(config):
    """In the instance section itself, each with the config's name: a key that the semantic
    tables name does not document an instance difference."""
    section = model_zoo_page_section("Instance segmentation")
    assert f"`{config}`" in section, config
    _, renamed, differences = INSTANCE_CONFIGS[config]
    for key in [*differences, *renamed]:
        assert f"`{key}`" in section, key


@pytest.mark.parametrize("config", sorted(INSTANCE_BASELINES))
def test_instance_config_and_its_baseline_differ_only_in_the_mask_head(config):
    """Same backbone, weights, data, schedule and input: PointRend's mask head (point-sampled
    features, trained on the box head's boxes, bit masks) against detectron2's standard one."""
    baseline = INSTANCE_BASELINES[config]
    ours = flatten(setup_cfg(str(config_path(config))))
    theirs = flatten(setup_cfg(str(config_path(baseline))))
    mask_head = {
        "MODEL.ROI_MASK_HEAD.NAME",
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE",
        "MODEL.ROI_MASK_HEAD.NUM_CONV",
        "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES",
        "INPUT.MASK_FORMAT",
    }
    if "cityscapes" in config:
        # detectron2's Cityscapes Mask R-CNN also evaluates every 8000 iterations.
        mask_head.add("TEST.EVAL_PERIOD")
    assert set(ours) == set(theirs)
    assert {key for key in ours if ours[key] != theirs[key]} == mask_head
    assert ours["MODEL.ROI_MASK_HEAD.NAME"] == "PointRendInstanceMaskHead"
    assert theirs["MODEL.ROI_MASK_HEAD.NAME"] == "MaskRCNNConvUpsampleHead"


def flatten(node, prefix: str = "") -> dict:
    """{dotted key: value} of every leaf of a config."""
    leaves = {}
    for key, child in node.items():
        if isinstance(child, dict):
            leaves.update(flatten(child, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = child
    return leaves


def test_output_stride_8_config_is_the_output_stride_16_one_at_stride_8():
    """detectron2 has no output-stride-8 Cityscapes DeepLab config: ours doubles the rates."""
    os16 = setup_cfg(str(config_path("deeplabv3_pointrend_R_101_os16_cityscapes.yaml")))
    os8 = setup_cfg(str(config_path("deeplabv3_pointrend_R_101_os8_cityscapes.yaml")))
    assert output_stride(os8) == 8
    assert os8.MODEL.DEEPLAB_V3.ASPP_DILATIONS == [12, 24, 36]
    os8.MODEL.RESNETS.RES4_DILATION, os8.MODEL.RESNETS.RES5_DILATION = 1, 2
    os8.MODEL.DEEPLAB_V3.ASPP_DILATIONS = [6, 12, 18]
    assert os8 == os16


@pytest.mark.parametrize("config", sorted(ALL_CONFIGS))
def test_imagenet_initialised_configs_allow_partial_weights(config):
    """Their ImageNet .pkl holds the bare ResNet: the heads cannot come from it."""
    cfg = setup_cfg(str(config_path(config)))
    assert cfg.MODEL.WEIGHTS.startswith("detectron2://ImageNetPretrained/")
    assert cfg.MODEL.ALLOW_PARTIAL_WEIGHTS


@pytest.mark.parametrize(
    "config",
    ["pointrend_semseg.yaml", "semantic_fpn_semseg.yaml", "deeplabv3_pointrend_semseg.yaml"],
)
def test_configs_trained_from_scratch_load_strictly(config):
    cfg = setup_cfg(str(config_path(config)))
    assert cfg.MODEL.WEIGHTS == "" and not cfg.MODEL.ALLOW_PARTIAL_WEIGHTS
