"""Config keys of pointrend_d2, added to a detectron2 config by :func:`add_pointrend_config`."""

import os
import warnings
from collections.abc import Sequence

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_pointrend_config(cfg: CN) -> None:
    """
    Add pointrend_d2's keys (semantic and instance segmentation) to ``cfg`` in place. Defaults
    are the paper's (and detectron2's) semantic-segmentation settings; the instance configs set
    the paper's instance values.
    """
    # Random crops are retried until no single class covers more than this fraction of the crop
    # (1.0 disables the constraint).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # SSD's colour distortion (brightness, contrast, saturation, hue) after the crop, as in
    # detectron2's PointRend semantic training; its Cityscapes recipe, and so our Cityscapes
    # SemanticFPN configs, turn it on.
    cfg.INPUT.COLOR_AUG_SSD = False

    # Dataset spec files (YAML or JSON) of image + label-PNG folders or COCO json files, relative
    # to the working directory, registered by pointrend_d2.data.register_datasets_from_config
    # before training (see data/folder.py).
    cfg.DATASETS.FOLDER_SPECS = []

    # Also load checkpoints whose unpickling can run code: detectron2's .pkl / .pyth formats
    # (e.g. the ImageNet initialisations) and .pth files holding more than tensors. Only for files
    # from a trusted source; tools/train_net.py --allow-unsafe-pickle sets it.
    cfg.MODEL.ALLOW_UNSAFE_PICKLE = False

    # Train from a MODEL.WEIGHTS that leaves model tensors at their initialisation (or has tensors
    # the model lacks, or of another shape), logging them as a table: an ImageNet backbone
    # initialisation leaves the heads unloaded, fine-tuning on another class count the
    # predictors. False makes any of these an error naming the tensors, since detectron2 would only
    # warn and train or evaluate a partly random model. Evaluation (--eval-only), inference
    # (Predictor, demo) and resuming from last_checkpoint ignore it and always need every tensor.
    # tools/train_net.py --allow-partial-weights sets it.
    cfg.MODEL.ALLOW_PARTIAL_WEIGHTS = False

    # The backbone that MODEL.BACKBONE.NAME "build_backbone_with_image" builds and returns with one
    # more map, "image": the input image at stride 1, standardised per image and channel (for
    # MODEL.POINT_HEAD.IMAGE_PATCH_SIZE). Its parameters are then under "backbone.backbone.".
    cfg.MODEL.BACKBONE.WRAPPED_NAME = "build_resnet_fpn_backbone"

    cfg.TEST.BOUNDARY_IOU = CN()
    # Also evaluate per-class Boundary IoU and min(IoU, BIoU) beside the dataset's mIoU evaluator.
    cfg.TEST.BOUNDARY_IOU.ENABLED = True
    # Band width as a fraction of the image diagonal (the Boundary IoU paper's 0.02).
    cfg.TEST.BOUNDARY_IOU.DILATION_RATIO = 0.02

    cfg.TEST.TILE = CN()
    # Semantic inference (ExactSizeSemanticSegmentor) of model inputs taller or wider than this
    # many pixels runs tile by tile: each tile of this side runs the backbone and the head,
    # PointRend's subdivision included, so that memory is that of a tile plus the output logits,
    # whatever the image's size. 0 segments every image whole.
    cfg.TEST.TILE.SIZE = 0
    # Pixels shared by neighbouring tiles. Each overlap is split at its middle: a pixel takes the
    # logits of the tile in which it lies farther from the border, so that pixels near a tile's
    # border, which see less context than in the whole image, are not used. TEST.TILE.SIZE minus
    # this must be a multiple of the backbone's coarsest stride (64 for FPN backbones).
    cfg.TEST.TILE.OVERLAP = 256

    # Instance segmentation (PointRendInstanceMaskHead, ConvFCCoarseMaskHead); the class count is
    # MODEL.ROI_HEADS.NUM_CLASSES, class-agnostic masks MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK.

    # Maps pooled (bilinear samples on a POOLER_RESOLUTION-sided grid per box) for the coarse mask
    # head of PointRendInstanceMaskHead, concatenated; among MODEL.ROI_HEADS.IN_FEATURES.
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ["p2"]
    # Width of each fully connected layer of the coarse mask head.
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 1024
    # Number of fully connected layers of the coarse mask head (at least 1).
    cfg.MODEL.ROI_MASK_HEAD.NUM_FC = 2
    # Side S of the coarse mask head's S x S mask logits per box.
    cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7

    cfg.MODEL.POINT_HEAD = CN()
    # Name of the point head in pointrend_d2's POINT_HEAD_REGISTRY.
    cfg.MODEL.POINT_HEAD.NAME = "MLPPointHead"
    # Name of the coarse head in SEM_SEG_HEADS_REGISTRY, satisfying
    # pointrend_d2.modeling.coarse_head.CoarseSemSegHead: `layers(features)` gives its logits,
    # `common_stride` their stride, and its own `losses(logits, targets)` is the coarse loss (so a
    # head with, e.g., hard-pixel mining keeps it). The quickstart uses SemanticFPNCoarseHead.
    cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = "SemSegFPNHead"
    # Backbone feature maps sampled at each point as fine-grained features (concatenated).
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ["p2"]
    # Number of points N per image (per foreground box for instances: the paper's 14 * 14 = 196,
    # as in Base-PointRend-RCNN-FPN.yaml) at which the point loss is computed during training; for
    # semantic segmentation -1 derives the paper's value from the training crop: the cells of a
    # stride-16 map of an absolute INPUT.CROP.SIZE (2048 for 512x1024 crops).
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 2048
    # k in the paper: k * N random candidate points are drawn before importance selection.
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    # beta in the paper: beta * N points are the most uncertain candidates, the rest are uniform.
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Semantic PointRend: the fraction of the N training points drawn on the ground truth's
    # boundaries (labelled pixels next to another class: all of a structure up to 2 px wide, which
    # the coarse prediction's uncertainty may never reach); k and beta choose the rest. 0 is the
    # paper's sampling. Instance heads reject values above 0.
    cfg.MODEL.POINT_HEAD.TRAIN_BOUNDARY_POINT_RATIO = 0.0
    # Semantic PointRend: S > 0 (odd) gives the point head the S x S image pixels around each point
    # too, as 3 * S * S more input channels, from the backbone's stride-1 map "image" (set
    # MODEL.BACKBONE.NAME to "build_backbone_with_image"): a structure 1-4 px wide shows there even
    # where the stride-4 features blur it. 0 reads no pixels (the paper's head). Instance heads
    # reject values above 0.
    cfg.MODEL.POINT_HEAD.IMAGE_PATCH_SIZE = 0
    # Number of 2x upsample-and-refine steps at inference. Semantic: it must be log2 of the coarse
    # head's stride to reach full resolution (stride 4: 2, 8: 3, 16: 4), and -1 derives it so.
    # Instances: any >= 0; 5 takes the 7x7 coarse mask to 224x224, as in the paper.
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 2
    # Number of most uncertain cells re-predicted at each subdivision step (per image, or per
    # detected box for instances: the paper's 28 * 28 = 784).
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 8192
    # How each subdivision step finds its most uncertain cells; both select the same cells:
    # "bounded" computes the uncertainty only where a bound allows a cell to be selected (fastest
    # on the CPU, but it syncs with the host), "topk" takes a top-k over the dense uncertainty map
    # (fixed shapes: no host sync, exportable). "auto" chooses at each call, from the tensors:
    # "topk" when exported, "bounded" on the CPU, and on a GPU "bounded" from 1e8 logits at the
    # final resolution (classes x pixels x maps; e.g. 150 classes at 1024x2048), else "topk".
    cfg.MODEL.POINT_HEAD.SUBDIVISION_SELECTION = "auto"
    # Width of each hidden layer of the point MLP.
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    # Number of hidden layers of the point MLP; 0 is a single linear layer.
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    # Concatenate the coarse logits to the input of every MLP layer, not only the first.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
    # On a GPU, let the point MLP's matrix products round their inputs to TF32, as cuDNN does by
    # default for the reference's Conv1d point head (faster; about 1e-3 relative rounding, which
    # can change the cells selected at near-ties). False keeps the point MLP in full FP32 whatever
    # torch.backends.cuda.matmul.allow_tf32 says. No effect on the CPU.
    cfg.MODEL.POINT_HEAD.ALLOW_TF32 = False

    # Dilation of res4 in build_dilated_resnet_backbone, with detectron2's RES5_DILATION: (1, 2)
    # gives output stride 16, (2, 4) output stride 8, (1, 1) the plain stride 32.
    cfg.MODEL.RESNETS.RES4_DILATION = 1

    cfg.MODEL.DEEPLAB_V3 = CN()
    # Channels of each ASPP branch and of its projection in DeepLabV3CoarseHead.
    cfg.MODEL.DEEPLAB_V3.ASPP_CHANNELS = 256
    # Atrous rates of the three 3x3 ASPP convs: (6, 12, 18) at output stride 16, (12, 24, 36) at 8.
    cfg.MODEL.DEEPLAB_V3.ASPP_DILATIONS = [6, 12, 18]
    # Normalization of the ASPP convs ("BN", "SyncBN", "GN", ... see detectron2's get_norm).
    cfg.MODEL.DEEPLAB_V3.NORM = "BN"
    # Dropout rate on the ASPP output during training (0 disables it).
    cfg.MODEL.DEEPLAB_V3.DROPOUT = 0.1

    # Implicit PointRend (ImplicitPointRendInstanceMaskHead): detectron2's keys and defaults. Its
    # parameter head has the coarse mask head's layers (MODEL.ROI_MASK_HEAD.CONV_DIM, FC_DIM,
    # NUM_FC, POOLER_RESOLUTION); its per-instance point head NUM_FC hidden layers of width FC_DIM
    # (MODEL.POINT_HEAD); inference starts from a floor(sqrt(SUBDIVISION_NUM_POINTS))-sided grid.
    cfg.MODEL.IMPLICIT_POINTREND = CN()
    # Feed the fine-grained features of MODEL.POINT_HEAD.IN_FEATURES at each point to the
    # per-instance point head.
    cfg.MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED = True
    # Feed a positional encoding of each box-normalized point (sine and cosine of 128 random
    # Fourier features) to the per-instance point head. At least one of the two inputs is needed.
    cfg.MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED = True
    # Weight of the mean square of the predicted point-head parameters in the loss ("loss_l2").
    cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER = 0.00001

    # Training from labelled points instead of masks or dense labels (PointSup; see the point
    # supervision page of the docs).
    cfg.MODEL.POINT_SUPERVISION = CN()
    # Take the mask losses (coarse and point) of instance heads only at each object's labelled
    # points (COCO json annotations with point_coords and point_labels), and PointRend's semantic
    # point loss at the labelled pixels of sparse label maps (folder datasets with sparse_labels;
    # at most MODEL.POINT_HEAD.TRAIN_NUM_POINTS per image). Every DATASETS.TRAIN dataset must
    # carry points, and the mask or semantic head must support it (PointRendInstanceMaskHead,
    # PointSupervisedMaskRCNNHead, ImplicitPointRendInstanceMaskHead, PointRendSemanticHead with
    # SemanticFPNCoarseHead or DeepLabV3CoarseHead, or those coarse heads alone); both are
    # checked at startup.
    cfg.MODEL.POINT_SUPERVISION.ENABLED = False


#: The task folders of configs/ that the configs once directly in configs/ moved into.
CONFIG_FOLDERS = ("SemanticSegmentation", "InstanceSegmentation", "quickstart")


def resolve_config_path(config_file: str) -> str:
    """
    ``config_file``, or, where it names a config that moved from configs/ into one of its task
    folders (:data:`CONFIG_FOLDERS`), the new path, with a deprecation warning that names it.

    Raises:
        FileNotFoundError: naming the file, if it exists in neither place.
    """
    if os.path.exists(config_file):
        return config_file
    folder, name = os.path.split(config_file)
    moved = [
        os.path.join(folder, task_folder, name)
        for task_folder in CONFIG_FOLDERS
        if os.path.isfile(os.path.join(folder, task_folder, name))
    ]
    if len(moved) != 1:
        raise FileNotFoundError(f"Config file {config_file!r} does not exist")
    warnings.warn(
        f"{config_file} moved to {moved[0]}; the old path will stop working in a later release",
        FutureWarning,
        stacklevel=2,
    )
    return moved[0]


def setup_cfg(config_file: str, opts: Sequence[str] = ()) -> CN:
    """
    The config that every tool builds: detectron2's defaults, :func:`add_pointrend_config`, the
    config file (a moved config's old path works, see :func:`resolve_config_path`), then
    ``KEY VALUE`` overrides. Returned unfrozen, so that a tool can set its own command-line flags
    before freezing it.
    """
    cfg = get_cfg()
    add_pointrend_config(cfg)
    cfg.merge_from_file(resolve_config_path(config_file))
    cfg.merge_from_list(list(opts))
    return cfg
