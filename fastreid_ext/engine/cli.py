"""Train / evaluate any fastreid_ext or FastReID model with FastReID's engine (``tools/train_net.py``).

    python tools/train_net.py --config-file projects/<Method>/configs/...yml [--eval-only] [--resume]
        [--num-gpus N] [KEY VALUE ...]
    python -m fastreid_ext.engine.cli ...   (the same)

Same interface as FastReID's ``tools/train_net.py`` (``default_argument_parser``, ``launch``). The trainer is
:func:`fastreid_ext.engine.build_trainer` (a method's own trainer class, e.g. MMT's, else ``Trainer``); ``SEED``
and ``SOLVER.ITERS_PER_EPOCH`` are handled by the trainer. On a machine without CUDA set ``MODEL.DEVICE cpu`` (our
SynthPed configs do); ``--num-gpus N`` then starts N CPU processes (gloo). On CPU, glibc's malloc is told to keep
freed memory (``FASTREID_EXT_MALLOC=system`` opts out; fastreid_ext/utils/malloc.py).
"""
from __future__ import annotations

import fastreid_ext  # noqa: F401  (compat + registrations, before anything of fastreid)
from fastreid.engine import default_argument_parser, default_setup, launch
from fastreid.utils.checkpoint import Checkpointer

from ..utils.malloc import keep_freed_memory
from .trainer import Trainer, build_trainer, setup_ext_logger, trainer_class


def setup(args):
    """The frozen config of ``args`` (config file + ``KEY VALUE`` overrides), FastReID's ``default_setup``
    (output folder, logs, config dump) and our loggers."""
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_ext_logger(cfg)
    return cfg


def run(args):
    """One process's work: evaluation (``--eval-only``) or training (``--resume``); returns the results."""
    cfg = setup(args)
    if cfg.MODEL.DEVICE == "cpu":
        keep_freed_memory()  # reuse freed tensor memory: CPU steps stop page-faulting (fastreid_ext/utils/malloc.py)
    if args.eval_only:
        cfg.defrost()
        cfg.MODEL.BACKBONE.PRETRAIN = False
        model = Trainer.build_model(cfg)  # the registered meta-architecture (MMT's too) and its evaluator
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)  # load trained model
        return trainer_class(cfg).test(cfg, model)  # a method's trainer may bind the model to its evaluator
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) with FastReID's parser and :func:`run` it in ``--num-gpus``
    processes per machine (FastReID's ``launch``)."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    main()
