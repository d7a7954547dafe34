"""PoseTransfer's trainer and hooks: source weights into E_I, a fraction of the target data, the frozen-E_I check.

* :class:`PoseTransferTrainer` (``register_trainer("PoseTransfer")``, built by ``fastreid_ext.engine.build_trainer``):
  the train loader uses a seeded ``TRANSFER.FRACTION`` of ``DATASETS.NAMES``' training set
  (:func:`fastreid_ext.pose_transfer.fraction.fraction_subset`); the model gets ``TRANSFER.SOURCE_WEIGHTS``
  right after it is built; ``test`` binds the model for the verification re-ranking evaluator.
* :class:`FrozenEncoderGuard` (``register_trainer_hooks("PoseTransfer")``): with ``MODEL.POSE_TRANSFER.FREEZE``
  ``encoder`` / ``trunk`` it checks before training that no frozen parameter is in the optimizer, and every
  ``MODEL.POSE_TRANSFER.CHECK_PERIOD`` iterations and after training that every frozen tensor of E_I (parameters
  and BN running statistics) is bit-identical to its value at the start; anything else raises.
"""
from __future__ import annotations

import logging

from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data import build as data_build
from ..data.common import AnnotatedDataset
from ..data.transforms import build_joint_transforms
from ..engine.trainer import Trainer, register_trainer, register_trainer_hooks
from .fraction import check_fraction, count_ids, fraction_subset

logger = logging.getLogger(__name__)

__all__ = ["PoseTransferTrainer", "FrozenEncoderGuard", "build_fraction_train_set", "min_identities"]


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def min_identities(cfg) -> int:
    """Identities a training batch needs: P = per-process batch / K for FastReID's identity samplers, else 2 (a
    verification pair of two people)."""
    if cfg.DATALOADER.SAMPLER_TRAIN in ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler"):
        mini = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        return max(2, mini // cfg.DATALOADER.NUM_INSTANCE)
    return 2


def build_fraction_train_set(cfg) -> AnnotatedDataset:
    """The training set of ``DATASETS.NAMES`` (like ``fastreid_ext.data.build.build_train_set``) reduced to its
    seeded ``TRANSFER.FRACTION`` (by ``TRANSFER.FRACTION_BY``, seed ``TRANSFER.FRACTION_SEED``)."""
    t = cfg.TRANSFER
    f = check_fraction(t.FRACTION, "TRANSFER.FRACTION")
    items = []
    for d in cfg.DATASETS.NAMES:
        data = data_build.build_dataset(d, cfg, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    names = "+".join(cfg.DATASETS.NAMES)
    sub = fraction_subset(items, f, t.FRACTION_BY, int(t.FRACTION_SEED), min_identities(cfg),
                          what=f"{names}'s training set")
    if f < 1.0:
        logger.info("TRANSFER.FRACTION %.2f by %s (seed %d): %d of %d images, %d of %d identities of %s", f,
                    t.FRACTION_BY, t.FRACTION_SEED, len(sub), len(items), count_ids(sub), count_ids(items), names)
    a = cfg.DATASETS.ANNOTATIONS
    index = data_build.annotation_index(cfg) if (a.LOAD_KEYPOINTS or a.LOAD_MASKS) else None
    return AnnotatedDataset(sub, build_joint_transforms(cfg, is_train=True), relabel=True, annotations=index,
                            load_keypoints=a.LOAD_KEYPOINTS, load_masks=a.LOAD_MASKS, on_missing=a.ON_MISSING)


@register_trainer("PoseTransfer")
class PoseTransferTrainer(Trainer):
    """``Trainer`` for ``MODEL.META_ARCHITECTURE PoseTransfer`` (module docstring)."""

    _bound_model = None

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        return data_build.build_train_loader(cfg, train_set=build_fraction_train_set(cfg))

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        m = _unwrap(model)
        if cfg.TRANSFER.SOURCE_WEIGHTS:
            m.load_source(cfg.TRANSFER.SOURCE_WEIGHTS, cfg.TRANSFER.SOURCE_PREFIX, cfg.TRANSFER.LOAD_EA)
        groups = m.parameter_groups()
        logger.info("PoseTransfer (VARIANT %s, FREEZE %s) parameters, trainable / total: %s", m.variant, m.freeze,
                    ", ".join(f"{k} {v['trainable']:,} / {v['total']:,}" for k, v in groups.items()))
        return model

    @classmethod
    def test(cls, cfg, model):
        prev = cls._bound_model
        cls._bound_model = model
        try:
            return super().test(cfg, model)
        finally:
            cls._bound_model = prev


class FrozenEncoderGuard(HookBase):
    """Verifies that the frozen part of E_I never changes (module docstring)."""

    def __init__(self, period: int = 50):
        self.period = max(0, int(period))
        self.snapshot = {}

    def before_train(self):
        m = _unwrap(self.trainer.model)
        self.snapshot = m.frozen_state()
        frozen = {id(p) for n, p in m.named_parameters() if n in self.snapshot}
        in_opt = [p for g in self.trainer.optimizer.param_groups for p in g["params"] if id(p) in frozen]
        if in_opt:
            raise RuntimeError(f"{len(in_opt)} frozen E_I parameter(s) are in the optimizer "
                               f"(MODEL.POSE_TRANSFER.FREEZE {m.freeze})")
        trainable_frozen = [n for n, p in m.named_parameters() if n in self.snapshot and p.requires_grad]
        if trainable_frozen:
            raise RuntimeError(f"frozen E_I parameters require gradients: {trainable_frozen[:5]}")
        logger.info("FREEZE %s: %d E_I tensors (parameters and BN statistics) are frozen and checked every %s "
                    "iterations and after training", m.freeze, len(self.snapshot), self.period or "-")

    def _check(self, when: str):
        changed = _unwrap(self.trainer.model).changed_frozen_tensors(self.snapshot)
        if changed:
            raise RuntimeError(f"frozen E_I tensors changed {when}: {changed[:8]}"
                               f"{' ...' if len(changed) > 8 else ''} ({len(changed)} of {len(self.snapshot)})")

    def after_step(self):
        if self.period and (self.trainer.iter + 1) % self.period == 0:
            self._check(f"by iteration {self.trainer.iter + 1}")

    def after_train(self):
        if self.snapshot:
            self._check("during training")
            logger.info("FREEZE check passed: the %d frozen E_I tensors are unchanged after training",
                        len(self.snapshot))


@register_trainer_hooks("PoseTransfer")
def _pose_transfer_hooks(trainer):
    cfg = trainer.cfg
    if cfg.MODEL.POSE_TRANSFER.FREEZE == "none":
        return []
    if cfg.TEST.PRECISE_BN.ENABLED:
        raise ValueError("TEST.PRECISE_BN.ENABLED would re-estimate the BN statistics of the frozen E_I "
                         f"(MODEL.POSE_TRANSFER.FREEZE {cfg.MODEL.POSE_TRANSFER.FREEZE}): disable it")
    return [FrozenEncoderGuard(cfg.MODEL.POSE_TRANSFER.CHECK_PERIOD)]
