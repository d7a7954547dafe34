"""Train / evaluate any fastreid_ext or FastReID model with FastReID's engine (``tools/train_net.py``).

    python tools/train_net.py --config-file projects/<Method>/configs/...yml [--eval-only] [--resume]
        [--overwrite] [--num-gpus N] [KEY VALUE ...]
    python -m fastreid_ext.engine.cli ...   (the same)

Same interface as FastReID's ``tools/train_net.py`` (``default_argument_parser``, ``launch``). The trainer is
:func:`fastreid_ext.engine.build_trainer` (a method's own trainer class, e.g. MMT's, else ``Trainer``); ``SEED``
and ``SOLVER.ITERS_PER_EPOCH`` are handled by the trainer. On a machine without CUDA set ``MODEL.DEVICE cpu`` (our
SynthPed configs do); ``--num-gpus N`` then starts N CPU processes (gloo). On CPU, glibc's malloc is told to keep
freed memory (``FASTREID_EXT_MALLOC=system`` opts out; fastreid_ext/utils/malloc.py).

``--eval-only MODEL.DEPLOY.ONNX model.onnx`` evaluates a file exported by ``tools/export_onnx.py`` through onnxruntime
with the same test sets and evaluator (:func:`evaluate_onnx`).

Refused with a message and exit code 1 (fastreid_ext/engine/reliability.py): training without ``--resume`` into an
``OUTPUT_DIR`` that holds a run (``--overwrite`` to start again there), ``--eval-only`` without ``MODEL.WEIGHTS`` or
with weights that do not fit the model, ``--resume`` of another model's checkpoint. Ctrl-C exits with 130 without
evaluating the unfinished model.
"""
from __future__ import annotations

import logging
import sys

import fastreid_ext  # noqa: F401  (compat + registrations, before anything of fastreid)
from fastreid.engine import default_argument_parser, default_setup, launch

from ..data.annotations import AnnotationError
from ..data.checks import DataCheckError
from ..utils.malloc import keep_freed_memory
from . import reliability
from .trainer import Trainer, build_trainer, setup_ext_logger, trainer_class

logger = logging.getLogger(__name__)


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
        if cfg.MODEL.DEPLOY.ONNX:
            return evaluate_onnx(cfg, model)
        reliability.load_for_evaluation(model, cfg)  # MODEL.WEIGHTS, refused when missing or not this model's
        return trainer_class(cfg).test(cfg, model)  # a method's trainer may bind the model to its evaluator
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def evaluate_onnx(cfg, model):
    """``--eval-only MODEL.DEPLOY.ONNX file.onnx``: FastReID's evaluation (the config's test sets and the method's
    evaluator) of the exported file through onnxruntime. ``model`` (the config's PyTorch model, with ``MODEL.WEIGHTS``
    loaded when given; the ONNX file holds the weights, so they are optional) serves to refuse a file exported from
    another model: meta-architecture, input size, feature dimension, test feature (MMT's ``MODEL.MMT.EVAL_NET``) and,
    with ``MODEL.WEIGHTS``, weights digest. The evaluation is the method's trainer's (``trainer_class(cfg).test``);
    a part of it that is not image -> feature (PoseTransfer's C_v re-ranking) runs in PyTorch on the onnxruntime
    features and needs ``MODEL.WEIGHTS``, else it is refused with a message (never the PyTorch model's features)."""
    from ..deploy.ort_embedder import build_deploy_model

    if cfg.MODEL.WEIGHTS:
        reliability.load_for_evaluation(model, cfg)
    try:
        deployed = build_deploy_model(cfg, reference=model, check_weights=bool(cfg.MODEL.WEIGHTS))
    except (FileNotFoundError, ValueError) as e:  # missing file, not a re-id model, exported from another model
        raise reliability.ConfigError(f"MODEL.DEPLOY.ONNX: {e}") from e
    logger.info("--eval-only: evaluating %s with onnxruntime (MODEL.DEPLOY.ONNX)", cfg.MODEL.DEPLOY.ONNX)
    # the method's trainer, as for the PyTorch model (PoseTransfer's binds the model to its re-ranking evaluator, which
    # raises ConfigError for what it cannot do with an ONNX file)
    return trainer_class(cfg).test(cfg, deployed)


def main(argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) with FastReID's parser and :func:`run` it in ``--num-gpus``
    processes per machine (FastReID's ``launch``)."""
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="train again in an OUTPUT_DIR that holds a run (without it: refused, use --resume)")
    args = parser.parse_args(argv)
    print("Command Line Args:", args)
    cfg = fastreid_ext.get_cfg()  # refuse before any process writes into OUTPUT_DIR
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    refusal = reliability.check_output_dir(cfg, args.resume, args.eval_only, args.overwrite)
    if refusal:
        raise SystemExit(f"error: {refusal}")
    try:
        launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (reliability.ConfigError, fastreid_ext.compat.UntrustedCheckpointError, DataCheckError,
            AnnotationError) as e:  # a clear message, no traceback
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        print("interrupted: the unfinished model was not evaluated; --resume continues from the last checkpoint in "
              f"{cfg.OUTPUT_DIR}", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
