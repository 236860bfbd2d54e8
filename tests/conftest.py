"""Shared fixtures; helper functions live in tests/helpers.py."""

import uuid
from collections.abc import Callable

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def temporary_datasets():
    """
    Removes at teardown every name that the test added to detectron2's DatasetCatalog or
    MetadataCatalog, however it was added (``register_dataset``, ``register_folder_dataset``, a
    spec file, ``MetadataCatalog.get`` of a new name): the catalogs are process-wide, so a
    leftover dataset would be visible to every later test.
    """
    datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - metadata:
        MetadataCatalog.remove(name)


@pytest.fixture
def register_dataset(temporary_datasets) -> Callable[..., str]:
    """
    ``register_dataset(records, prefix="test", **metadata)`` registers ``records`` (a list of
    dataset dicts, or a function returning them) under a new unique name with ``metadata`` and
    returns the name; the dataset is removed at the end of the test.
    """

    def register(records, prefix: str = "test", **metadata) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        DatasetCatalog.register(name, records if callable(records) else lambda: records)
        MetadataCatalog.get(name).set(**metadata)
        return name

    return register
