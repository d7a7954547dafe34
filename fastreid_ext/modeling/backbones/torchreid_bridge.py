"""A FastReID backbone that wraps torchreid's OSNet and loads a torchreid checkpoint.

``MODEL.BACKBONE.NAME build_osnet_torchreid_backbone`` builds ``torchreid``'s ``osnet_*`` network
(``MODEL.BACKBONE.TORCHREID.ARCH``, e.g. ``osnet_x0_25``) and, when ``MODEL.BACKBONE.PRETRAIN`` is on,
loads ``MODEL.BACKBONE.PRETRAIN_PATH`` *strictly* (``torch.load(..., weights_only=True)``; plain state
dicts and torchreid's ``{"state_dict": ...}`` checkpoints, ``module.`` prefixes removed). The number of
classes of torchreid's classifier is read from the checkpoint so that the strict load succeeds; the
classifier itself is never used (FastReID's head classifies).

Output (``MODEL.BACKBONE.TORCHREID.OUTPUT``):

* ``embedding`` (default): torchreid's test-time feature, ``fc(GAP(featuremaps(x)))``, as a
  ``(B, D, 1, 1)`` map (``FEAT_DIM`` = D, 512 for OSNet). With FastReID's ``EmbeddingHead`` (GAP, a
  freshly initialised BN-neck, which is the identity up to ``1/sqrt(1 + eps)`` in eval) a ``Baseline``
  then returns torchreid's embedding: the torchreid model zoo weights work in FastReID's evaluator
  and in ``tools/reid_video.py`` without any training.
* ``featuremap``: the last feature map ``(B, C, h, w)`` (``FEAT_DIM`` = C, 128 for ``osnet_x0_25``,
  512 for ``osnet_x1_0``), for fine-tuning with FastReID's own pooling/neck.

torchreid's ``osnet.py`` / ``osnet_ain.py`` only need torch; they are loaded from the installed
torchreid package without running ``torchreid/__init__.py`` (which imports torchreid's whole data
and training stack, seconds on a busy CPU). If that fails, ``import torchreid`` is used.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Dict, Optional

import torch
from torch import nn

from fastreid.config import CfgNode as CN
from fastreid.modeling.backbones.build import BACKBONE_REGISTRY

from ...config import register_config

logger = logging.getLogger(__name__)

OUTPUTS = ("embedding", "featuremap")


@register_config
def add_torchreid_bridge_config(cfg):
    """``MODEL.BACKBONE.TORCHREID``: which torchreid network the bridge builds and what it returns."""
    cfg.MODEL.BACKBONE.TORCHREID = CN()
    cfg.MODEL.BACKBONE.TORCHREID.ARCH = "osnet_x0_25"
    cfg.MODEL.BACKBONE.TORCHREID.OUTPUT = "embedding"  # "embedding" | "featuremap"


def _load_torchreid_module(name: str):
    """``torchreid.reid.models.<name>`` without executing torchreid's package ``__init__``."""
    qual = f"fastreid_ext._torchreid_{name}"
    if qual in sys.modules:
        return sys.modules[qual]
    spec = importlib.util.find_spec("torchreid")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("torchreid is not installed: pip install -c constraints.txt torchreid==0.2.5 gdown "
                          "(or bash tools/install.sh)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "reid", "models", f"{name}.py")
    try:
        mspec = importlib.util.spec_from_file_location(qual, path)
        mod = importlib.util.module_from_spec(mspec)
        sys.modules[qual] = mod
        mspec.loader.exec_module(mod)
        return mod
    except Exception as e:  # layout changed: fall back to the regular import
        sys.modules.pop(qual, None)
        logger.debug("standalone load of %s failed (%s); importing torchreid", path, e)
        return importlib.import_module(f"torchreid.reid.models.{name}")


def torchreid_osnet_factory(arch: str):
    """The torchreid constructor ``arch`` (``osnet_x1_0`` ... ``osnet_x0_25``, ``osnet_ibn_x1_0``,
    ``osnet_ain_*``)."""
    if not arch.startswith("osnet"):
        raise ValueError(f"MODEL.BACKBONE.TORCHREID.ARCH must name a torchreid OSNet (osnet_x0_25, "
                         f"osnet_x1_0, osnet_ain_x1_0, ...), got {arch!r}")
    mod = _load_torchreid_module("osnet_ain" if arch.startswith("osnet_ain") else "osnet")
    fn = getattr(mod, arch, None)
    if fn is None:
        names = sorted(n for n in dir(mod) if n.startswith("osnet_"))
        raise ValueError(f"torchreid has no {arch!r}; available: {', '.join(names)}")
    return fn


def load_torchreid_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A torchreid checkpoint as a plain state dict (``weights_only=True``, ``module.`` stripped)."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"torchreid checkpoint not found: {path!r} (MODEL.BACKBONE.PRETRAIN_PATH)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a torchreid state dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


class TorchreidOSNetBackbone(nn.Module):
    """torchreid OSNet as a FastReID backbone (4-D output, see the module docstring)."""

    def __init__(self, net: nn.Module, output: str = "embedding"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"MODEL.BACKBONE.TORCHREID.OUTPUT must be one of {OUTPUTS}, got {output!r}")
        self.net = net
        self.output = output

    @property
    def out_channels(self) -> int:
        if self.output == "featuremap":
            return self.net.conv5.conv.out_channels
        return self.net.feature_dim

    def forward(self, x):
        f = self.net.featuremaps(x)
        if self.output == "featuremap":
            return f
        v = self.net.global_avgpool(f).flatten(1)
        if self.net.fc is not None:
            v = self.net.fc(v)
        return v[:, :, None, None]


def build_torchreid_osnet(arch: str = "osnet_x0_25", weights: Optional[str] = None,
                          output: str = "embedding") -> TorchreidOSNetBackbone:
    """Build the wrapped network; ``weights`` (a torchreid checkpoint) is loaded strictly."""
    sd = load_torchreid_state_dict(weights) if weights else None
    num_classes = int(sd["classifier.weight"].shape[0]) if sd and "classifier.weight" in sd else 1
    net = torchreid_osnet_factory(arch)(num_classes=num_classes, pretrained=False, loss="softmax")
    if sd is not None:
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{weights} does not load strictly into torchreid's {arch}(num_classes="
                               f"{num_classes}); is MODEL.BACKBONE.TORCHREID.ARCH right?\n{e}") from None
        logger.info("Loaded torchreid %s weights from %s (%d classes in the checkpoint, classifier unused)",
                    arch, weights, num_classes)
    return TorchreidOSNetBackbone(net, output)


@BACKBONE_REGISTRY.register()
def build_osnet_torchreid_backbone(cfg):
    """FastReID backbone builder: torchreid OSNet (``MODEL.BACKBONE.TORCHREID``), weights from
    ``MODEL.BACKBONE.PRETRAIN_PATH`` when ``MODEL.BACKBONE.PRETRAIN``."""
    b = cfg.MODEL.BACKBONE
    weights = b.PRETRAIN_PATH if b.PRETRAIN else None
    if b.PRETRAIN and not b.PRETRAIN_PATH:
        raise ValueError("build_osnet_torchreid_backbone: MODEL.BACKBONE.PRETRAIN is on but PRETRAIN_PATH is "
                         "empty; give a torchreid checkpoint (e.g. osnet_x0_25_market1501.pth) or set "
                         "MODEL.BACKBONE.PRETRAIN False")
    model = build_torchreid_osnet(b.TORCHREID.ARCH, weights, b.TORCHREID.OUTPUT)
    if b.FEAT_DIM != model.out_channels:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {b.FEAT_DIM} but torchreid {b.TORCHREID.ARCH} "
                         f"({b.TORCHREID.OUTPUT}) gives {model.out_channels} channels")
    return model
