"""RBNet's measurement for the experiment runner (:mod:`fastreid_ext.experiments.measure`): ``rbnet_maps``, the
keypoint error and mask means of :func:`fastreid_ext.rbnet.evaluation.map_quality` (Yu & Piao, "Reverse backbone net
for unsupervised person re-identification", 2024, Sec. 1.1: heatmaps of the reverse backbone, mask M(x)) for a model
of the same config and seed before training (``init/``) and for the trained weights."""
from __future__ import annotations

from typing import Dict

from ..experiments.measure import register_measurement


@register_measurement("rbnet_maps")
def rbnet_maps(cfg, weights: str) -> Dict[str, float]:
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    from ..engine import Trainer, seed_from_config
    from .evaluation import map_quality

    c = cfg.clone()
    c.defrost()
    c.MODEL.HEADS.NUM_CLASSES = max(1, int(c.MODEL.HEADS.NUM_CLASSES))
    seed_from_config(c)
    model = Trainer.build_model(c)  # the config's initialisation (ImageNet backbone, random reverse path)
    model.eval()
    out = {f"init/{k}": v for k, v in map_quality(model, c).items()}
    c.MODEL.BACKBONE.PRETRAIN = False
    Checkpointer(model).load(weights)  # the classifier may not fit (NUM_CLASSES): it plays no part in the maps
    model.eval()
    with torch.no_grad():
        out.update(map_quality(model, c))
    return out
