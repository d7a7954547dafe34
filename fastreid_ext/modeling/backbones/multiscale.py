"""Multi-scale features from FastReID's ResNet / ResNet-IBN backbones.

FastReID's ``ResNet.forward`` returns layer4 only. :class:`MultiScaleResNet` takes the module that
``build_resnet_backbone`` built and adopts its children (``conv1, bn1, relu, maxpool, layer1..layer4`` and
the optional non-local blocks ``NL_1..NL_4``) under the *same names*, so its ``state_dict`` is key for key
the one of the wrapped ResNet (checkpoints move freely between ``Baseline`` and models that use the
wrapper), and calls them stage by stage:

* ``conv1``: the stem output ``relu(bn1(conv1(x)))`` **before** the max-pool (64 channels, stride 2; the
  "conv1 output" row of the RBNet paper's Table 1, e.g. 64 x 128 x 64 for a 256 x 128 input);
* ``layer1`` (after the max-pool and layer1, stride 4) ... ``layer4`` (stride 16 with ``LAST_STRIDE 1``,
  32 with 2), each including the non-local blocks FastReID inserts after it (``WITH_NL``).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.backbones.resnet import build_resnet_backbone

from ...functional.conv_grad import conv2d_fast_input_grad

__all__ = ["STAGES", "MultiScaleResNet", "build_multiscale_resnet_backbone"]

#: names of the returned features, shallow to deep
STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")
_REQUIRED = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


class MultiScaleResNet(nn.Module):
    """Wraps a built FastReID ResNet (any depth, IBN / SE / non-local) and returns every stage.

    ``forward(x)`` returns layer4 like the wrapped backbone (drop-in); :meth:`forward_features` returns
    ``{"conv1", "layer1", ..., "layer4"}``. ``out_channels`` / ``strides`` give each stage's channels and
    stride (measured once with a dry run).
    """

    def __init__(self, resnet: nn.Module):
        super().__init__()
        missing = [n for n in _REQUIRED if not hasattr(resnet, n)]
        if missing:
            raise TypeError(
                f"{type(resnet).__name__} is not a FastReID ResNet-style backbone (missing {missing}); "
                f"RBNet needs MODEL.BACKBONE.NAME build_resnet_backbone (optionally WITH_IBN True)")
        for name, child in resnet.named_children():
            self.add_module(name, child)
        # where FastReID applies its non-local blocks (indices of blocks inside each layer)
        self._nl_idx: Dict[int, List[int]] = {}
        for i in range(1, 5):
            if isinstance(resnet, MultiScaleResNet):  # re-wrapping shares the same modules
                idx = resnet._nl_idx[i]
            else:
                idx = [j for j in getattr(resnet, f"NL_{i}_idx", []) if j >= 0]
            if idx and not hasattr(self, f"NL_{i}"):
                raise TypeError(f"backbone lists non-local blocks for layer{i} but has no NL_{i} module")
            self._nl_idx[i] = list(idx)
        self.out_channels, self.strides = self._probe()

    @torch.no_grad()
    def _probe(self):
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            x = torch.zeros(1, 3, 64, 32, device=p.device, dtype=p.dtype)
            feats = self.forward_features(x)
        finally:
            self.train(was_training)
        channels = {k: int(v.shape[1]) for k, v in feats.items()}
        strides = {k: 64 // int(v.shape[2]) for k, v in feats.items()}
        return channels, strides

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, f"layer{i}")
        idx = self._nl_idx[i]
        for j, block in enumerate(layer):
            x = block(x)
            if j in idx:
                x = getattr(self, f"NL_{i}")[idx.index(j)](x)
        return x

    def forward_features(self, x: torch.Tensor, upto: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """Every stage's output (see the module docstring); ``upto`` stops after that stage."""
        if upto is not None and upto not in STAGES:
            raise ValueError(f"upto must be one of {STAGES}, got {upto!r}")
        out = {}
        # an input that needs a gradient (RBNet's backbone 2 on the masked image) takes the polyphase input
        # gradient: oneDNN's backward-data for the 3-channel stem is ~2.6x slower (functional/conv_grad.py)
        x = self.relu(self.bn1(conv2d_fast_input_grad(x, self.conv1)))
        out["conv1"] = x
        if upto == "conv1":
            return out
        x = self.maxpool(x)
        for i in range(1, 5):
            x = self._stage(i, x)
            out[f"layer{i}"] = x
            if upto == f"layer{i}":
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["layer4"]


@BACKBONE_REGISTRY.register()
def build_multiscale_resnet_backbone(cfg):
    """FastReID's ``build_resnet_backbone(cfg)`` (same keys, pretrained weights) wrapped in
    :class:`MultiScaleResNet`; usable wherever a backbone returning layer4 is expected."""
    return MultiScaleResNet(build_resnet_backbone(cfg))
