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
        super().__init__(cfg)

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
        return ret[:2] + extra + ret[2:] if extra else ret

    def train(self):
        init_results = None
        if self.cfg.TEST.EVAL_INIT and self.start_epoch == 0:
            logger.info("Evaluating the model before training (TEST.EVAL_INIT)")
            init_results = self.test(self.cfg, self.model)
        results = super().train()
        if init_results and results and comm.is_main_process():
            print_before_after(init_results, results)
        return results

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        return super().build_lr_scheduler(cfg, optimizer, epoch_length(cfg, iters_per_epoch))

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return data_build.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return data_build.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        fn = _EVALUATOR_BUILDERS.get(cfg.MODEL.META_ARCHITECTURE)
        built = fn(cls, cfg, dataset_name, output_dir) if fn is not None else None
        loader, evaluator = built if built is not None else super().build_evaluator(cfg, dataset_name, output_dir)
        from ..evaluation.extra_ranks import with_extra_ranks  # Rank-20 next to FastReID's Rank-1/5/10

        return loader, with_extra_ranks(evaluator)



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
