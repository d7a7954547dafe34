"""``Trainer``: FastReID's ``DefaultTrainer`` with our loaders, CPU support, per-method hooks and the trainer-level
keys ``SEED`` and ``SOLVER.ITERS_PER_EPOCH``; :func:`build_trainer` picks a method's own trainer class."""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional

from fastreid.engine import DefaultTrainer
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from .. import compat
from ..data import build as data_build
from . import reliability

logger = logging.getLogger(__name__)

#: META_ARCHITECTURE name -> functions ``fn(trainer) -> list[HookBase]`` appended to the default hooks
_HOOK_BUILDERS: Dict[str, List[Callable]] = {}


def register_trainer_hooks(meta_arch: str):
    """Decorator: ``fn(trainer)`` returns extra hooks for models of ``meta_arch`` (e.g. MMT's clustering)."""

    def deco(fn):
        _HOOK_BUILDERS.setdefault(meta_arch, []).append(fn)
        return fn

    return deco


#: META_ARCHITECTURE name -> ``fn(trainer_cls, cfg, dataset_name, output_dir) -> (loader, evaluator) | None``
_EVALUATOR_BUILDERS: Dict[str, Callable] = {}


def register_evaluator(meta_arch: str):
    """Decorator: ``fn`` builds the test loader + evaluator for models of ``meta_arch``; returning ``None``
    falls back to FastReID's ``ReidEvaluator`` (e.g. when the method's test option is off)."""

    def deco(fn):
        _EVALUATOR_BUILDERS[meta_arch] = fn
        return fn

    return deco


#: META_ARCHITECTURE name -> ``Trainer`` subclass that :func:`build_trainer` builds for it (e.g. MMT's)
_TRAINERS: Dict[str, type] = {}


def register_trainer(meta_arch: str):
    """Class decorator: :func:`build_trainer` builds this ``Trainer`` subclass for models of ``meta_arch``."""

    def deco(cls):
        _TRAINERS[meta_arch] = cls
        return cls

    return deco


def setup_ext_logger(cfg) -> None:
    """Log ``fastreid_ext.*`` messages like FastReID's own (console + ``OUTPUT_DIR/log.txt``), once per process;
    FastReID's ``default_setup`` only sets up the ``fastreid`` logger."""
    if not logging.getLogger("fastreid_ext").handlers:
        from fastreid.utils.logger import setup_logger

        setup_logger(cfg.OUTPUT_DIR or None, distributed_rank=comm.get_rank(), name="fastreid_ext")


def trainer_class(cfg) -> type:
    """The trainer class for ``cfg.MODEL.META_ARCHITECTURE``: the one registered with :func:`register_trainer`,
    else :class:`Trainer`."""
    compat.run_registrations()  # the methods' trainers register on import (normally already done)
    return _TRAINERS.get(cfg.MODEL.META_ARCHITECTURE, Trainer)


def build_trainer(cfg) -> "Trainer":
    """Build the trainer for ``cfg`` (:func:`trainer_class`), e.g. MMT's for ``MODEL.META_ARCHITECTURE MMT``."""
    return trainer_class(cfg)(cfg)


def seed_from_config(cfg) -> Optional[int]:
    """Seed torch, numpy and ``random`` of this process with ``cfg.SEED + rank`` when ``SEED >= 0`` and return
    ``SEED``; else do nothing and return ``None`` (FastReID's ``default_setup`` seeded from the clock).

    With a seed, a CPU run is reproducible: the model's initialisation, the augmentations, the training
    samplers (:func:`fastreid_ext.data.build.build_train_sampler` seeds them with ``SEED``, the same in every
    process) and the data-loader workers (torch seeds ``torch``, ``random`` and numpy in each worker from the
    main process's torch generator) all follow from it."""
    if cfg.SEED < 0:
        return None
    seed_all_rng(int(cfg.SEED) + comm.get_rank())
    return int(cfg.SEED)


def epoch_length(cfg, from_dataset: int) -> int:
    """Iterations per epoch: ``SOLVER.ITERS_PER_EPOCH`` when > 0, else FastReID's ``len(train set) // batch``
    (``from_dataset``), at least 1."""
    n = int(cfg.SOLVER.ITERS_PER_EPOCH)
    return n if n > 0 else max(1, int(from_dataset))


class Trainer(DefaultTrainer):
    """FastReID's ``DefaultTrainer``; loaders carry keypoints/masks when the config asks for them,
    and methods plug hooks in with :func:`register_trainer_hooks`.

    Trainer-level keys: ``SEED`` (:func:`seed_from_config`, applied before anything is built) and
    ``SOLVER.ITERS_PER_EPOCH`` (:func:`epoch_length`, for the LR scheduler, ``max_iter`` and the training loop).
    A method with its own trainer class (:func:`register_trainer`) is built with :func:`build_trainer`."""

    def __init__(self, cfg):
        own = _TRAINERS.get(cfg.MODEL.META_ARCHITECTURE)
        if own is not None and not isinstance(self, own):
            raise TypeError(f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} trains with "
                            f"{own.__module__}.{own.__qualname__}: build the trainer with "
                            f"fastreid_ext.engine.build_trainer(cfg)")
        self.seed_once(cfg)
        super().__init__(cfg)  # builds the training loader: its images and annotations are checked there
        # the test sets too, before training: an empty query/gallery or a broken image fails now, not after it
        data_build.check_test_sets(cfg, keypoints=data_build.keypoints_used_at_test(cfg))
        # random states in every checkpoint: a resumed run continues like the uninterrupted one (resume_or_load)
        self.checkpointer.checkpointables.setdefault("rng", reliability.RNGStates())

    def seed_once(self, cfg) -> None:
        """:func:`seed_from_config`, once per trainer (a subclass that builds something before
        ``Trainer.__init__`` calls it first)."""
        if not getattr(self, "_seeded", False):
            self._seeded = True
            seed_from_config(cfg)

    def build_hooks(self):
        from fastreid.engine import hooks

        # DefaultTrainer.__init__ set iters_per_epoch = len(train set) // batch and max_iter from it, and calls
        # build_hooks last: apply SOLVER.ITERS_PER_EPOCH before the writers take max_iter (the LR scheduler got
        # it in build_lr_scheduler)
        self.iters_per_epoch = epoch_length(self.cfg, self.iters_per_epoch)
        self.max_iter = self.max_epoch * self.iters_per_epoch
        ret = super().build_hooks()
        for h in ret:  # FastReID hard-codes a 200-iteration writer period; CPU runs want more often
            if isinstance(h, hooks.PeriodicWriter):
                h._period = self.cfg.SOLVER.LOG_PERIOD
        extra = []
        for fn in _HOOK_BUILDERS.get(self.cfg.MODEL.META_ARCHITECTURE, []):
            extra.extend(fn(self))
        # method hooks run before FastReID's evaluation / checkpoint / writer hooks
        ret = ret[:2] + extra + ret[2:] if extra else ret
        # right before the evaluation: refuse NaN/inf weights, write model_final before the last evaluation
        at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)), len(ret))
        ret.insert(at, reliability.SafeCheckpointHook(self.checkpointer, self.cfg.TEST.EVAL_PERIOD))
        return ret

    def resume_or_load(self, resume=True):
        """FastReID's resume / ``MODEL.WEIGHTS`` with checks (fastreid_ext/engine/reliability.py): a resumed
        checkpoint must be this model's (an unreadable last one falls back to the newest readable one), a changed
        learning rate is reported, ``MODEL.WEIGHTS`` loads what fits and reports what was skipped."""
        ckpt = self.checkpointer
        resuming = resume and ckpt.has_checkpoint()
        path = (reliability.readable_checkpoint(ckpt.save_dir, ckpt.get_checkpoint_file()) if resuming
                else self.cfg.MODEL.WEIGHTS)
        original = ckpt._load_model

        def checked_load_model(checkpoint):
            fit = reliability.state_fit(ckpt.model, checkpoint.get("model", {}))
            if resuming:
                reliability.check_resume_fit(fit, path, self.cfg)
                bad = reliability.first_non_finite_tensor(checkpoint.get("model", {}))
                if bad is not None:
                    raise reliability.ConfigError(
                        f"--resume: {path} holds NaN/inf weights ({bad}); write the name of an earlier checkpoint "
                        f"into {ckpt.save_dir}/last_checkpoint and lower SOLVER.BASE_LR")
            else:
                reliability.report_fit(fit, path)
            return original(checkpoint)

        if not resume and ckpt.has_checkpoint() and comm.is_main_process():
            logger.warning("OUTPUT_DIR %s holds checkpoints of an earlier run (last: %s): this training starts anew "
                           "and overwrites them (tools/train_net.py refuses this without --resume or --overwrite)",
                           ckpt.save_dir, reliability.last_checkpoint_name(ckpt.save_dir))
        lrs_before = reliability.scheduler_base_lrs(self.scheduler)
        ckpt._load_model = checked_load_model
        try:
            if resuming:
                checkpoint = ckpt.load(path)
                self.start_epoch = checkpoint.get("epoch", -1) + 1
            else:
                ckpt.load(path, checkpointables=[])
        finally:
            del ckpt._load_model  # back to the class's method
        rng = ckpt.checkpointables.get("rng")
        if resuming and self.start_epoch < self.max_epoch and self.cfg.SEED >= 0:
            # the seeded sampler restarts where the uninterrupted run is, then the random states are restored
            reliability.fast_forward_loader(self._trainer, self.start_epoch * self.iters_per_epoch)
            if isinstance(rng, reliability.RNGStates):
                rng.apply()
        elif isinstance(rng, reliability.RNGStates):
            rng.pending = None
        if resuming:
            lrs_after = reliability.scheduler_base_lrs(self.scheduler)
            if lrs_after != lrs_before:
                logger.warning(
                    "--resume: training continues with the learning rates of %s (base LRs %s), not those of this "
                    "config (SOLVER.BASE_LR %g: base LRs %s), although OUTPUT_DIR/config.yaml now records the new "
                    "value. To train with the new rate, start a new run (another OUTPUT_DIR, no --resume) with "
                    "MODEL.WEIGHTS %s.", path, _lr_text(lrs_after), self.cfg.SOLVER.BASE_LR, _lr_text(lrs_before),
                    path)

    def after_train(self):
        """FastReID's ``after_train`` hooks; when training stopped before its last iteration (an error, Ctrl-C),
        the evaluation hook is skipped: the unfinished model is not evaluated as if it were trained."""
        if self.iter >= self.max_iter:
            return super().after_train()
        from fastreid.engine import hooks

        logger.warning("Training stopped at iteration %d of %d (epoch %d): the unfinished model is not evaluated. "
                       "The last checkpoint is %s in %s; --resume continues from it.", self.iter, self.max_iter,
                       getattr(self, "epoch", self.start_epoch), reliability.last_checkpoint_name(self.cfg.OUTPUT_DIR),
                       self.cfg.OUTPUT_DIR)
        self.storage.iter = self.iter
        for h in self._hooks:
            if not isinstance(h, hooks.EvalHook):
                h.after_train()

    def _guard_losses(self) -> None:
        """Check every step's loss terms before the optimizer step (:func:`reliability.check_losses_finite`):
        wraps the inner trainer's ``_write_metrics``, which FastReID calls between backward and step."""
        inner = getattr(self, "_trainer", None)
        write = getattr(inner, "_write_metrics", None)
        if write is None or getattr(write, "_finite_guard", False):
            return

        diverged = reliability.DivergenceGuard()

        def guarded(loss_dict, *args, **kwargs):
            reliability.check_losses_finite(loss_dict, self.iter, self.cfg)
            diverged(loss_dict, self.iter, self.cfg)  # finite but exploding (Adam with a huge SOLVER.BASE_LR)
            return write(loss_dict, *args, **kwargs)

        guarded._finite_guard = True
        inner._write_metrics = guarded

    def train(self):
        if self.start_epoch >= self.max_epoch:  # --resume of a finished run: nothing to train, evaluate it
            logger.info("Training already finished (resumed at epoch %d of %d from %s): evaluating that model",
                        self.start_epoch, self.max_epoch, reliability.last_checkpoint_name(self.cfg.OUTPUT_DIR))
            return self.test(self.cfg, self.model)
        self._guard_losses()
        init_results = None
        if self.cfg.TEST.EVAL_INIT and self.start_epoch == 0:
            logger.info("Evaluating the model before training (TEST.EVAL_INIT)")
            init_results = self.test(self.cfg, self.model)
            self.init_results = init_results  # the untrained model's numbers (tests compare against them)
        results = super().train()
        if init_results and results and comm.is_main_process():
            print_before_after(init_results, results)
        return results

    @classmethod
    def build_model(cls, cfg):
        """FastReID's ``build_model`` with a clear error for unknown registry names and backbone depths (was: a
        bare ``KeyError``)."""
        try:
            return super().build_model(cfg)
        except KeyError as e:
            raise reliability.ConfigError(reliability.explain_build_key_error(cfg, e)) from e

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        n = epoch_length(cfg, iters_per_epoch)
        if cfg.SOLVER.SCHED == "CosineAnnealingLR":
            import math

            # FastReID's T_max: the epochs after warm-up / delay; 0 divides by zero at the end of the first epoch
            t_max = cfg.SOLVER.MAX_EPOCH - max(math.ceil(cfg.SOLVER.WARMUP_ITERS / max(n, 1)),
                                               cfg.SOLVER.DELAY_EPOCHS)
            if t_max <= 0:
                raise reliability.ConfigError(
                    f"SOLVER.SCHED CosineAnnealingLR needs at least one epoch after the warm-up / delay epochs: "
                    f"SOLVER.MAX_EPOCH {cfg.SOLVER.MAX_EPOCH}, SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS} "
                    f"({n} iterations per epoch), SOLVER.DELAY_EPOCHS {cfg.SOLVER.DELAY_EPOCHS} leave {t_max}; raise "
                    f"SOLVER.MAX_EPOCH or lower the other two")
        return super().build_lr_scheduler(cfg, optimizer, n)

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return data_build.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        # keypoints only where the evaluation uses them (not for a model that trains on them, e.g. RBNet)
        return data_build.build_test_loader(cfg, dataset_name, keypoints=data_build.keypoints_used_at_test(cfg))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        fn = _EVALUATOR_BUILDERS.get(cfg.MODEL.META_ARCHITECTURE)
        built = fn(cls, cfg, dataset_name, output_dir) if fn is not None else None
        loader, evaluator = built if built is not None else super().build_evaluator(cfg, dataset_name, output_dir)
        from ..evaluation.extra_ranks import with_extra_ranks  # Rank-20 next to FastReID's Rank-1/5/10

        return loader, with_extra_ranks(evaluator)



def _lr_text(lrs) -> str:
    return ", ".join(f"{k}: " + ", ".join(f"{x:g}" for x in sorted(set(v))) for k, v in lrs.items())


def _flat(results):
    if results and all(isinstance(v, dict) for v in results.values()):
        return {f"{ds}/{k}": v for ds, r in results.items() for k, v in r.items()}
    return dict(results or {})


def print_before_after(before, after, keys=("Rank-1", "Rank-5", "mAP", "mINP")) -> str:
    """Log a small table: metric | before training | after training."""
    b, a = _flat(before), _flat(after)
    rows = [(k, b[k], a[k]) for k in a if k.split("/")[-1] in keys and k in b]
    lines = ["| metric | untrained | trained |", "| --- | --- | --- |"]
    lines += [f"| {k} | {x:.2f} | {y:.2f} |" for k, x, y in rows]
    text = "\n".join(lines)
    logger.info("Before / after training:\n%s", text)
    print(text, flush=True)
    return text
