"""``Trainer``: FastReID's ``DefaultTrainer`` with our loaders, CPU support and per-method hooks."""
from __future__ import annotations

import logging
from typing import Callable, Dict, List

from fastreid.engine import DefaultTrainer
from fastreid.utils import comm

from .. import compat
from ..data import build as data_build
from ..data.datasets import set_synthped_options

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


#: META_ARCHITECTURE name -> ``Trainer`` subclass that ``Trainer(cfg)`` builds for it (e.g. MMT's)
_TRAINERS: Dict[str, type] = {}


def register_trainer(meta_arch: str):
    """Class decorator: ``Trainer(cfg)`` builds this ``Trainer`` subclass for models of ``meta_arch``."""

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


def prepare_cfg(cfg) -> None:
    """Process-wide settings a config implies (device for the compat layer, SynthPed options)."""
    compat.set_device(cfg.MODEL.DEVICE)
    set_synthped_options(cfg)


class Trainer(DefaultTrainer):
    """FastReID's ``DefaultTrainer``; loaders carry keypoints/masks when the config asks for them,
    and methods plug hooks in with :func:`register_trainer_hooks`."""

    def __new__(cls, cfg, *args, **kwargs):
        if cls is Trainer:  # a method's own trainer class (register_trainer), else this one
            cls = _TRAINERS.get(cfg.MODEL.META_ARCHITECTURE, cls)
        return super().__new__(cls)

    def __init__(self, cfg):
        prepare_cfg(cfg)
        super().__init__(cfg)

    def build_hooks(self):
        from fastreid.engine import hooks

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
    def build_train_loader(cls, cfg):
        prepare_cfg(cfg)
        logger.info("Prepare training set")
        return data_build.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        prepare_cfg(cfg)
        return data_build.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        fn = _EVALUATOR_BUILDERS.get(cfg.MODEL.META_ARCHITECTURE)
        built = fn(cls, cfg, dataset_name, output_dir) if fn is not None else None
        return built if built is not None else super().build_evaluator(cfg, dataset_name, output_dir)

    @classmethod
    def test(cls, cfg, model):
        prepare_cfg(cfg)
        return super().test(cfg, model)


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
