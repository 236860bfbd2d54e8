"""
tools/train_net.py with the training points of each image drawn from its own generator, for
tests/test_multiprocess_training.py: N processes with IMS_PER_BATCH B then draw exactly the points
that 1 process draws with the same B, and their loss curves can be compared. The losses of every
iteration are written to OUTPUT_DIR/losses.json.

    python tests/deterministic_train_net.py DATASET_ROOT [train_net.py arguments]

DATASET_ROOT holds images/ and labels/ (classes c0, c1, c2), registered as ``parity_data``.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
from detectron2.engine import HookBase, launch
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from pointrend_d2.data import register_folder_dataset
from pointrend_d2.engine import Trainer
from pointrend_d2.modeling.point_features import sample_uncertain_points

_spec = importlib.util.spec_from_file_location(
    "train_net", Path(__file__).resolve().parents[1] / "tools" / "train_net.py"
)
train_net = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_net)

LOSS_KEYS = ("total_loss", "loss_sem_seg", "loss_sem_seg_point")


def sample_points_per_image(
    coarse_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """
    :func:`sample_uncertain_points`, each image with a generator seeded by the iteration and the
    image's index in the global batch. detectron2's TrainingSampler deals one shuffled stream of
    indices to the ranks in turn, so image ``j`` of rank ``r`` is image ``j * world_size + r`` of
    the global batch.
    """
    iteration = get_event_storage().iter
    world_size, rank = comm.get_world_size(), comm.get_rank()
    points = []
    for index in range(coarse_logits.shape[0]):
        generator = torch.Generator().manual_seed(1000 * iteration + index * world_size + rank)
        points.append(
            sample_uncertain_points(
                coarse_logits[index : index + 1],
                num_points,
                oversample_ratio,
                importance_sample_ratio,
                generator=generator,
            )
        )
    return torch.cat(points)


class WriteLosses(HookBase):
    """Writes the losses of every iteration (averaged over the processes) to losses.json."""

    def after_train(self):
        if comm.is_main_process():
            losses = {
                key: {i: v for v, i in self.trainer.storage.history(key).values()}
                for key in LOSS_KEYS
            }
            with open(os.path.join(self.trainer.cfg.OUTPUT_DIR, "losses.json"), "w") as f:
                json.dump(losses, f)


class DeterministicTrainer(Trainer):
    """The Trainer with the per-image point sampler and the losses.json hook."""

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        model.sem_seg_head.point_sampler = sample_points_per_image
        return model

    def build_hooks(self):
        return [*super().build_hooks(), WriteLosses()]


def main(dataset_root: str, args):
    register_folder_dataset(
        "parity_data",
        os.path.join(dataset_root, "images"),
        os.path.join(dataset_root, "labels"),
        ["c0", "c1", "c2"],
    )
    train_net.Trainer = DeterministicTrainer
    return train_net.main(args)


if __name__ == "__main__":
    args = train_net.argument_parser().parse_args(sys.argv[2:])
    launch(main, args.num_gpus, dist_url="auto", args=(sys.argv[1], args))
