"""
pointrend_d2.engine.Trainer: DefaultTrainer's parts built through its build_* methods, with the CPU
DDP wrap and the checkpointer of its own, data loader workers from the machine's cores, and a
training-time error for non-finite losses that says where to look.
"""

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import hooks
from PIL import Image
from torch.nn.parallel import DistributedDataParallel

from pointrend_d2.checkpoint import SafeCheckpointer
from pointrend_d2.data import register_folder_dataset
from pointrend_d2.engine import Trainer, data_loader_workers
from tests.helpers import small_fpn_cfg


@pytest.fixture
def trainer(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{index}.png"
        )
        Image.fromarray(rng.integers(0, 5, (64, 64), dtype=np.uint8)).save(
            tmp_path / "labels" / f"{index}.png"
        )
    name = register_folder_dataset(
        "engine_test_data", tmp_path / "images", tmp_path / "labels", list("abcde")
    )
    cfg = small_fpn_cfg(
        **{
            "DATASETS.TRAIN": (name,),
            "DATASETS.TEST": (),
            "SOLVER.IMS_PER_BATCH": 2,
            "SOLVER.MAX_ITER": 2,
            "INPUT.CROP.ENABLED": False,
            "INPUT.MIN_SIZE_TRAIN": (64,),
            "DATALOADER.NUM_WORKERS": 0,
            "MODEL.ALLOW_UNSAFE_PICKLE": True,
            "MODEL.ALLOW_PARTIAL_WEIGHTS": True,
            "OUTPUT_DIR": str(tmp_path / "out"),
        }
    )
    yield Trainer(cfg)
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_trainer_saves_and_loads_through_the_safe_checkpointer(trainer):
    assert type(trainer.checkpointer) is SafeCheckpointer
    assert trainer.checkpointer.allow_unsafe_pickle and trainer.checkpointer.allow_partial_weights
    assert trainer.checkpointer.model is trainer.model
    # The optimizer and scheduler are saved within the trainer's state, as detectron2 does.
    assert set(trainer.checkpointer.checkpointables) == {"trainer"}
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert periodic and periodic[0].checkpointer is trainer.checkpointer


def test_non_finite_losses_name_what_to_check(trainer, monkeypatch):
    def diverged_step():
        raise FloatingPointError("Loss became infinite or NaN at iteration=0!")

    monkeypatch.setattr(trainer._trainer, "run_step", diverged_step)
    with pytest.raises(FloatingPointError, match=r"iteration=0!\n.*input images.*SOLVER.BASE_LR"):
        trainer.run_step()


def test_data_loader_workers_follow_the_cores_unless_pinned(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert data_loader_workers(small_fpn_cfg(**{"DATALOADER.NUM_WORKERS": -1})) == 15
    assert data_loader_workers(small_fpn_cfg(**{"DATALOADER.NUM_WORKERS": 3})) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert data_loader_workers(small_fpn_cfg(**{"DATALOADER.NUM_WORKERS": -1})) == 1
    with pytest.raises(ValueError, match=r"DATALOADER.NUM_WORKERS=-2: must be >= 0, or -1"):
        data_loader_workers(small_fpn_cfg(**{"DATALOADER.NUM_WORKERS": -2}))


def test_trainer_wraps_nothing_for_one_process_and_uses_the_safe_checkpointer(trainer):
    assert not isinstance(trainer.model, DistributedDataParallel)  # one process: no wrap
    assert isinstance(trainer.checkpointer, SafeCheckpointer)
    assert trainer.checkpointer.model is trainer.model
