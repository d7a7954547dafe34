"""MoCo's trainer: FastReID's loop (our ``Trainer``) with the two-view MoCo v2 training loader; registered for
``MODEL.META_ARCHITECTURE MoCoV2`` so that :func:`fastreid_ext.engine.build_trainer` builds it. Evaluation is
FastReID's ``ReidEvaluator`` on the model's GAP feature."""
from __future__ import annotations

import logging

from ..data import build as data_build
from ..engine import Trainer, register_trainer
from .data import build_moco_train_set

__all__ = ["MoCoTrainer"]

logger = logging.getLogger(__name__)


@register_trainer("MoCoV2")
class MoCoTrainer(Trainer):
    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare MoCo v2 training set (two augmentations per image, labels ignored)")
        return data_build.build_train_loader(cfg, train_set=build_moco_train_set(cfg))
