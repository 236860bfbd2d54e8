#!/usr/bin/env python
"""
Train and evaluate PointRend semantic and instance segmentation models with detectron2.

    python tools/train_net.py --config-file configs/pointrend_semseg.yaml
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python tools/train_net.py --config-file CONFIG --resume
    python tools/train_net.py --config-file CONFIG --num-gpus 8 SOLVER.IMS_PER_BATCH 32

--num-gpus N starts N processes (on the CPU, with MODEL.DEVICE cpu, through the Gloo backend).
Checkpoints are written atomically and loaded weights-only; --allow-unsafe-pickle also loads
pickle files (.pkl, e.g. detectron2's ImageNet initialisations) from a source you trust.
MODEL.WEIGHTS must fill the model unless --allow-partial-weights (MODEL.ALLOW_PARTIAL_WEIGHTS)
allows training from a partial initialisation; --eval-only, and --resume from last_checkpoint,
always need every tensor.
"""

import argparse

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results

from pointrend_d2.checkpoint import load_weights_for_inference
from pointrend_d2.config import setup_cfg
from pointrend_d2.data import register_datasets_from_config
from pointrend_d2.engine import Trainer


def argument_parser() -> argparse.ArgumentParser:
    """detectron2's default arguments, --allow-unsafe-pickle and --allow-partial-weights."""
    parser = default_argument_parser()
    parser.add_argument(
        "--allow-unsafe-pickle",
        action="store_true",
        help="also load checkpoints whose unpickling can run code (.pkl files, .pth files of "
        "more than tensors): only from a source you trust (sets MODEL.ALLOW_UNSAFE_PICKLE)",
    )
    parser.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="train from a MODEL.WEIGHTS that leaves model tensors at their initialisation or "
        "has tensors of another shape (ImageNet backbone, another class count), logging them; "
        "ignored by --eval-only and by --resume from last_checkpoint (sets "
        "MODEL.ALLOW_PARTIAL_WEIGHTS)",
    )
    return parser


def setup(args):
    """Create the config from defaults, the config file and the command line, then set up."""
    cfg = setup_cfg(args.config_file, args.opts)
    if args.allow_unsafe_pickle:
        cfg.MODEL.ALLOW_UNSAFE_PICKLE = True
    if args.allow_partial_weights:
        cfg.MODEL.ALLOW_PARTIAL_WEIGHTS = True
    cfg.freeze()
    default_setup(cfg, args)
    # Folder datasets named in DATASETS.FOLDER_SPECS, registered in every process.
    register_datasets_from_config(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_weights_for_inference(model, cfg, save_dir=cfg.OUTPUT_DIR, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
