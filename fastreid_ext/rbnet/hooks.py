"""RBNet's end-of-training picture and map quality (``MODEL.RBNET.PICTURE``), a trainer hook.

After training, :class:`RBNetPictureHook` writes the strip of Yu & Piao, "Reverse backbone net for unsupervised
person re-identification" (2024), Section 2.2.2, Figs. 3-4 (image | keypoint heatmaps | mask | backbone 1 / 2
activations, :func:`fastreid_ext.rbnet.visualize.write_strips`) for a few query images of the first test set and
logs the path; before and after training it measures the keypoint error and the mask mean on person vs background
(:func:`fastreid_ext.rbnet.evaluation.map_quality`) and prints both side by side.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, Optional

from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..engine.trainer import register_trainer_hooks

logger = logging.getLogger(__name__)

__all__ = ["RBNetPictureHook", "picture_path", "quality_table"]


def picture_path(cfg) -> str:
    """Where the picture goes: ``MODEL.RBNET.PICTURE.OUTPUT`` or ``OUTPUT_DIR/rbnet_picture.png``."""
    return cfg.MODEL.RBNET.PICTURE.OUTPUT or os.path.join(cfg.OUTPUT_DIR or ".", "rbnet_picture.png")


def quality_table(before: Optional[Dict[str, float]], after: Dict[str, float]) -> str:
    """Markdown table of :func:`map_quality` results (``before`` may be ``None``)."""
    rows = (("mask mean on the person", "mask_person", "{:.3f}"), ("mask mean on the background", "mask_bg", "{:.3f}"),
            ("keypoint error (input px)", "kpt_err", "{:.1f}"))
    lines = ["| RBNet maps | untrained | trained |", "| --- | --- | --- |"]
    for label, key, fmt in rows:
        b = fmt.format(before[key]) if before and not math.isnan(before[key]) else "-"
        lines.append(f"| {label} | {b} | {fmt.format(after[key])} |")
    return "\n".join(lines)


class RBNetPictureHook(HookBase):
    """``MODEL.RBNET.PICTURE`` (module docstring); main process only."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.before: Optional[Dict[str, float]] = None

    def _model(self):
        m = self.trainer.model
        return m.module if isinstance(m, DistributedDataParallel) else m

    def _quality(self):
        from .evaluation import map_quality

        n = int(self.cfg.MODEL.RBNET.PICTURE.QUALITY_IMAGES)
        if n < 0:
            return None
        model = self._model()
        was = model.training
        try:
            return map_quality(model, self.cfg, max_images=n)
        finally:
            model.train(was)

    def before_train(self):
        if comm.is_main_process() and self.trainer.start_epoch == 0:
            self.before = self._quality()

    def after_train(self):
        if not comm.is_main_process() or self.trainer.iter < self.trainer.max_iter:
            return
        from .visualize import write_strips

        path = picture_path(self.cfg)
        model = self._model()
        was = model.training
        try:
            n = write_strips(model, self.cfg, path, int(self.cfg.MODEL.RBNET.PICTURE.NUM_IMAGES))
        finally:
            model.train(was)
        logger.info("RBNet picture (%d query images: image | heatmaps | mask | activations) written to %s", n, path)
        print(f"RBNet picture: {os.path.abspath(path)}", flush=True)
        after = self._quality()
        if after is not None:
            text = quality_table(self.before, after)
            logger.info("RBNet keypoint / mask quality on %d %s test images:\n%s", after["images"],
                        self.cfg.DATASETS.TESTS[0], text)
            print(text, flush=True)


@register_trainer_hooks("RBNet")
def _rbnet_hooks(trainer):
    return [RBNetPictureHook(trainer.cfg)] if trainer.cfg.MODEL.RBNET.PICTURE.ENABLED else []
