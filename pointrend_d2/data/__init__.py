"""
Datasets for pointrend_d2: the embedded, procedurally generated "textured shapes" dataset
(semantic, and instances in COCO format), custom image + label-PNG folders, and checked COCO
instance json files; point annotations and sparse point labels for point supervision; the
dataset mappers of both tasks and the one image reader they share.
"""

from .coco_json import load_checked_coco_json, register_coco_instances, validate_coco_json
from .folder import (
    load_folder_dataset,
    register_datasets_from_config,
    register_folder_dataset,
    register_folder_datasets_from_spec,
)
from .image_io import ImageReader, read_image_file
from .inference_mapper import InferenceMapper
from .instance_mapper import InstanceDatasetMapper
from .semantic_mapper import SemanticDatasetMapper
from .textured_shapes import (
    CLASSES,
    COLORS,
    DATASET_VERSION,
    IGNORE_LABEL,
    default_dataset_root,
    generate_textured_shapes_image,
    generate_textured_shapes_instances,
    generate_textured_shapes_split,
    load_textured_shapes,
    register_textured_shapes,
    textured_shapes_split_dir,
)
from .textured_shapes_instances import (
    generate_textured_shapes_instances_split,
    register_textured_shapes_instances,
)
from .textured_shapes_points import register_textured_shapes_points

__all__ = [
    "CLASSES",
    "COLORS",
    "DATASET_VERSION",
    "IGNORE_LABEL",
    "ImageReader",
    "InferenceMapper",
    "InstanceDatasetMapper",
    "SemanticDatasetMapper",
    "default_dataset_root",
    "generate_textured_shapes_image",
    "generate_textured_shapes_instances",
    "generate_textured_shapes_instances_split",
    "generate_textured_shapes_split",
    "load_checked_coco_json",
    "load_folder_dataset",
    "load_textured_shapes",
    "read_image_file",
    "register_coco_instances",
    "register_datasets_from_config",
    "register_folder_dataset",
    "register_folder_datasets_from_spec",
    "register_textured_shapes",
    "register_textured_shapes_instances",
    "register_textured_shapes_points",
    "textured_shapes_split_dir",
    "validate_coco_json",
]
