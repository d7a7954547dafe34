"""FastReID backbones that wrap torchreid's model-zoo networks and load a torchreid checkpoint strictly.

Families (``MODEL.BACKBONE.TORCHREID.ARCH``, built by torchreid's own constructors, ``pretrained=False``), as
torchreid builds them (Zhou and Xiang, "Torchreid: a library for deep learning person re-identification in
PyTorch", 2019):

* OSNet (Zhou et al., "Omni-scale feature learning for person re-identification", ICCV 2019): ``osnet_x1_0``,
  ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25``, ``osnet_ibn_x1_0``; test feature ``fc(GAP(conv5))`` with
  ``fc`` = Linear-BN-ReLU to 512;
* OSNet-AIN (Zhou et al., "Learning generalisable omni-scale representations for person re-identification",
  TPAMI 2021): ``osnet_ain_x1_0``, ``osnet_ain_x0_75``, ``osnet_ain_x0_5``, ``osnet_ain_x0_25``;
* ResNet (He et al., CVPR 2016, as torchreid builds it: last stride 2, no fc): ``resnet50`` (and ``resnet18`` ...
  ``resnet152``, ``resnet50_fc512``); test feature ``GAP(layer4)``;
* MobileNetV2 (Sandler et al., CVPR 2018): ``mobilenetv2_x1_0``, ``mobilenetv2_x1_4``; test feature ``GAP(conv9)``.

``MODEL.BACKBONE.NAME build_torchreid_backbone`` (or the older name ``build_osnet_torchreid_backbone``, same
builder) builds the network and, when ``MODEL.BACKBONE.PRETRAIN`` is on, loads ``MODEL.BACKBONE.PRETRAIN_PATH``
*strictly* (``torch.load(..., weights_only=True)``; plain state dicts and torchreid's ``{"state_dict": ...}``
checkpoints, ``module.`` prefixes removed). The number of classes of torchreid's classifier is read from the
checkpoint so that the strict load succeeds; the classifier itself is never used (FastReID's head classifies).

Output (``MODEL.BACKBONE.TORCHREID.OUTPUT``):

* ``embedding`` (default): torchreid's test-time feature (torchreid's eval ``forward``), as a ``(B, D, 1, 1)`` map
  (``FEAT_DIM`` = D: 512 for OSNet, 2048 for ResNet-50, 1280 for MobileNetV2 x1.0). With FastReID's
  ``EmbeddingHead`` (GAP, a freshly initialised BN-neck, which is the identity up to ``1/sqrt(1 + eps)`` in eval) a
  ``Baseline`` then returns torchreid's embedding: model-zoo weights work in FastReID's evaluator and in
  ``tools/reid_video.py`` without any training.
* ``featuremap``: the last feature map ``(B, C, h, w)`` (torchreid's ``featuremaps(x)``; ``FEAT_DIM`` = C, e.g.
  128 for ``osnet_x0_25``, 512 for ``osnet_x1_0``, 2048 for ``resnet50``), for fine-tuning with FastReID's own
  pooling / neck and for the visualization tools.

Either way the last feature map passes through the identity module ``featuremap`` of the backbone, so that
``backbone.featuremap`` names it for a forward hook whatever the family (``tools/visualize_actmap.py --layers
backbone.featuremap``), also when the backbone returns the embedding.

Multi-scale use (RBNet): :func:`fastreid_ext.modeling.backbones.multiscale.as_multiscale` splits the network's
``featuremaps`` chain into five levels (OSNet x0.25: 16, 64, 96, 128, 128 channels at strides 2, 4, 8, 16, 16) with the
same modules and state-dict keys; the last level is the feature map, so RBNet needs ``OUTPUT featuremap`` and
``FEAT_DIM`` = its channels.

torchreid's model files (``osnet.py``, ``osnet_ain.py``, ``resnet.py``, ``mobilenetv2.py``) only need torch; they
are loaded from the installed torchreid package without running ``torchreid/__init__.py`` (which imports
torchreid's whole data and training stack, seconds on a busy CPU). If that fails, ``import torchreid`` is used.
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


#: arch-name prefix -> torchreid model file (``torchreid/reid/models/<file>.py``); longest prefix first
FAMILIES = (("osnet_ain", "osnet_ain"), ("osnet", "osnet"), ("resnet", "resnet"), ("mobilenetv2", "mobilenetv2"))
#: one network per family the bridge is tested with (tests/test_torchreid_bridge.py)
TESTED_ARCHS = ("osnet_x0_25", "osnet_x0_5", "osnet_x0_75", "osnet_x1_0", "osnet_ain_x1_0", "resnet50",
                "mobilenetv2_x1_0")


def torchreid_factory(arch: str):
    """The torchreid constructor ``arch`` of a supported family (module docstring)."""
    module = next((m for prefix, m in FAMILIES if arch.startswith(prefix)), None)
    if module is None:
        raise ValueError(f"MODEL.BACKBONE.TORCHREID.ARCH {arch!r} is not a supported torchreid family: OSNet "
                         f"(osnet_x0_25 ... osnet_x1_0, osnet_ibn_x1_0), OSNet-AIN (osnet_ain_x0_25 ... "
                         f"osnet_ain_x1_0), ResNet (resnet50, ...), MobileNetV2 (mobilenetv2_x1_0, mobilenetv2_x1_4)")
    mod = _load_torchreid_module(module)
    fn = getattr(mod, arch, None)
    if fn is None or not callable(fn) or isinstance(fn, type):
        names = sorted(n for n, v in vars(mod).items() if callable(v) and not isinstance(v, type)
                       and any(n.startswith(p) for p, _ in FAMILIES))
        raise ValueError(f"torchreid has no {arch!r}; available: {', '.join(names)}")
    return fn


def torchreid_osnet_factory(arch: str):
    """The torchreid constructor ``arch`` (``osnet_x1_0`` ... ``osnet_x0_25``, ``osnet_ibn_x1_0``,
    ``osnet_ain_*``); :func:`torchreid_factory` for every family."""
    if not arch.startswith("osnet"):
        raise ValueError(f"MODEL.BACKBONE.TORCHREID.ARCH must name a torchreid OSNet (osnet_x0_25, "
                         f"osnet_x1_0, osnet_ain_x1_0, ...), got {arch!r}")
    return torchreid_factory(arch)


def build_torchreid_network(arch: str, num_classes: int = 1) -> nn.Module:
    """torchreid's ``arch`` with random weights (``pretrained=False``: nothing is downloaded)."""
    return torchreid_factory(arch)(num_classes=num_classes, pretrained=False, loss="softmax")


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


class TorchreidBackbone(nn.Module):
    """A torchreid network as a FastReID backbone (4-D output, see the module docstring). ``featuremap`` is an
    identity module on the last feature map (a stable hook point)."""

    def __init__(self, net: nn.Module, output: str = "embedding"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"MODEL.BACKBONE.TORCHREID.OUTPUT must be one of {OUTPUTS}, got {output!r}")
        for attr in ("featuremaps", "global_avgpool"):
            if not hasattr(net, attr):
                raise TypeError(f"{type(net).__name__} has no {attr}(): not a torchreid model-zoo network")
        self.net = net
        self.output = output
        self.featuremap = nn.Identity()
        self._map_channels: Optional[int] = None

    def feature_map_channels(self) -> int:
        """Channels of the last feature map (one tiny eval pass the first time, for any family)."""
        if self._map_channels is None:
            conv5 = getattr(getattr(self.net, "conv5", None), "conv", None)  # OSNet's last 1x1 conv
            if isinstance(conv5, nn.Conv2d):
                self._map_channels = conv5.out_channels
            else:
                was = self.net.training
                self.net.eval()
                try:
                    with torch.no_grad():
                        self._map_channels = int(self.net.featuremaps(torch.zeros(1, 3, 64, 32)).shape[1])
                finally:
                    self.net.train(was)
        return self._map_channels

    @property
    def out_channels(self) -> int:
        if self.output == "featuremap":
            return self.feature_map_channels()
        return int(self.net.feature_dim)

    def forward(self, x):
        f = self.featuremap(self.net.featuremaps(x))
        if self.output == "featuremap":
            return f
        v = self.net.global_avgpool(f).flatten(1)
        if getattr(self.net, "fc", None) is not None:
            v = self.net.fc(v)
        return v[:, :, None, None]


#: the former name (OSNet only); the same class
TorchreidOSNetBackbone = TorchreidBackbone


def build_torchreid(arch: str = "osnet_x0_25", weights: Optional[str] = None,
                    output: str = "embedding") -> TorchreidBackbone:
    """Build the wrapped network; ``weights`` (a torchreid checkpoint) is loaded strictly."""
    sd = load_torchreid_state_dict(weights) if weights else None
    num_classes = int(sd["classifier.weight"].shape[0]) if sd and "classifier.weight" in sd else 1
    net = build_torchreid_network(arch, num_classes)
    if sd is not None:
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{weights} does not load strictly into torchreid's {arch}(num_classes="
                               f"{num_classes}); is MODEL.BACKBONE.TORCHREID.ARCH right?\n{e}") from None
        logger.info("Loaded torchreid %s weights from %s (%d classes in the checkpoint, classifier unused)",
                    arch, weights, num_classes)
    return TorchreidBackbone(net, output)


def build_torchreid_osnet(arch: str = "osnet_x0_25", weights: Optional[str] = None,
                          output: str = "embedding") -> TorchreidBackbone:
    """:func:`build_torchreid` (the former, OSNet-only name)."""
    return build_torchreid(arch, weights, output)


def _build_from_cfg(cfg) -> TorchreidBackbone:
    b = cfg.MODEL.BACKBONE
    weights = b.PRETRAIN_PATH if b.PRETRAIN else None
    if b.PRETRAIN and not b.PRETRAIN_PATH:
        raise ValueError("the torchreid backbone: MODEL.BACKBONE.PRETRAIN is on but PRETRAIN_PATH is empty; give a "
                         "torchreid checkpoint (e.g. osnet_x0_25_market1501.pth) or set MODEL.BACKBONE.PRETRAIN False")
    model = build_torchreid(b.TORCHREID.ARCH, weights, b.TORCHREID.OUTPUT)
    if b.FEAT_DIM != model.out_channels:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {b.FEAT_DIM} but torchreid {b.TORCHREID.ARCH} "
                         f"({b.TORCHREID.OUTPUT}) gives {model.out_channels} channels")
    return model


@BACKBONE_REGISTRY.register()
def build_torchreid_backbone(cfg):
    """FastReID backbone builder: a torchreid network of any supported family (``MODEL.BACKBONE.TORCHREID``),
    weights from ``MODEL.BACKBONE.PRETRAIN_PATH`` when ``MODEL.BACKBONE.PRETRAIN``."""
    return _build_from_cfg(cfg)


@BACKBONE_REGISTRY.register()
def build_osnet_torchreid_backbone(cfg):
    """The former name of :func:`build_torchreid_backbone` (same builder, every family)."""
    return _build_from_cfg(cfg)
