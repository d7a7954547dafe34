#!/usr/bin/env python
"""Train / evaluate any fastreid_ext or FastReID model with FastReID's engine.

    python tools/train_net.py --config-file projects/<Method>/configs/...yml [--eval-only] [--resume]
        [--num-gpus N] [KEY VALUE ...]

Same interface as FastReID's ``tools/train_net.py``; importing ``fastreid_ext`` applies the compatibility
layer and registers every fastreid_ext component. On a machine without CUDA set ``MODEL.DEVICE cpu``
(our SynthPed configs do); ``--num-gpus N`` then starts N CPU processes (gloo). On CPU, glibc's malloc is told
to keep freed memory (``FASTREID_EXT_MALLOC=system`` opts out; fastreid_ext/utils/malloc.py).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastreid_ext  # noqa: E402  (compat + registrations, before anything of fastreid)
from fastreid.engine import default_argument_parser, default_setup, launch  # noqa: E402
from fastreid.utils.checkpoint import Checkpointer  # noqa: E402

from fastreid_ext.engine import Trainer  # noqa: E402
from fastreid_ext.engine.trainer import prepare_cfg, setup_ext_logger  # noqa: E402
from fastreid_ext.utils.malloc import keep_freed_memory  # noqa: E402


def setup(args):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_ext_logger(cfg)
    prepare_cfg(cfg)
    return cfg


def main(args):
    cfg = setup(args)
    if cfg.MODEL.DEVICE == "cpu":
        keep_freed_memory()  # reuse freed tensor memory: CPU steps stop page-faulting (fastreid_ext/utils/malloc.py)
    if args.eval_only:
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        model = Trainer.build_model(cfg)
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)  # load trained model
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
