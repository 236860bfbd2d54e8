"""
Registration of a dataset in detectron2's catalogs that is safe to repeat: every dataset kind of
pointrend_d2 (image + label folders, COCO json files, the generated splits) registers through
:func:`register_dataset`.
"""

from collections.abc import Callable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_dataset"]


def register_dataset(
    name: str, load: Callable[[], list[dict]], metadata: dict, *, identity: Sequence[str]
) -> str:
    """
    Registers ``name`` in DatasetCatalog (``load()`` lists its records when it is used) and
    ``metadata`` in MetadataCatalog, unless ``name`` is registered already with the same values
    of the ``identity`` metadata keys (the files it stands for): then nothing is done, so that
    scripts and notebooks may register their datasets again.

    Returns:
        ``name``.

    Raises:
        ValueError: ``name`` is registered with other values of the ``identity`` keys.
    """
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(**metadata)
        return name
    registered = MetadataCatalog.get(name)
    differing = [key for key in identity if registered.get(key) != metadata.get(key)]
    if differing:
        registered_values = ", ".join(f"{key} {registered.get(key)!r}" for key in differing)
        values = ", ".join(f"{key} {metadata.get(key)!r}" for key in differing)
        raise ValueError(
            f"Dataset {name!r} is already registered with {registered_values}, not {values}: "
            "a name stands for one dataset in a process; register this one under another name"
        )
    return name
