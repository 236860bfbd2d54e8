"""
Datasets for pointrend_d2: the embedded, procedurally generated "textured shapes" dataset, and
custom image + label-PNG folders.
"""

from .folder import (
    load_folder_dataset,
    register_datasets_from_config,
    register_folder_dataset,
    register_folder_datasets_from_spec,
)
from .mapper import SemanticDatasetMapper
from .textured_shapes import (
    CLASSES,
    COLORS,
    DATASET_VERSION,
    IGNORE_LABEL,
    default_dataset_root,
    generate_textured_shapes_image,
    generate_textured_shapes_split,
    load_textured_shapes,
    register_textured_shapes,
    textured_shapes_split_dir,
)

__all__ = [
    "CLASSES",
    "COLORS",
    "DATASET_VERSION",
    "IGNORE_LABEL",
    "SemanticDatasetMapper",
    "default_dataset_root",
    "generate_textured_shapes_image",
    "generate_textured_shapes_split",
    "load_folder_dataset",
    "load_textured_shapes",
    "register_datasets_from_config",
    "register_folder_dataset",
    "register_folder_datasets_from_spec",
    "register_textured_shapes",
    "textured_shapes_split_dir",
]
