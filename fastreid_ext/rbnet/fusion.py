"""Fusion of same-level backbone / reverse-backbone features into backbone 2 (plain torch, no FastReID import).

Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024, Section 1.1 step 3: "the
same-level features of the backbone and the reverse backbone block are fused into backbone 2, and controlling
the channels of the reverse block adjusts the original model's features" (将骨干网和反向骨干块的同层特征融合到
骨干网 2 中, 通过对反向骨干块控制通道实现调节原模型特征的效果).

How it is read here (the paper gives no more than that sentence):

* **Same-level feature.** At backbone level ``L`` (``conv1``, ``layer1`` .. ``layer4``) the reverse backbone's
  feature of the same width and size (Table 1's mirrored rows) is the input of the re-layer that mirrors ``L``:
  ``change_channel(backbone 1's L) + the deeper reverse output`` (``re_layer1_in`` for layer1, ``re_conv1_in``
  for conv1, ...; :data:`fastreid_ext.rbnet.reverse_backbone.SAME_LEVEL`). That sum already *is* the fusion of
  the backbone's and the reverse block's same-level features.
* **Into backbone 2.** Backbone 2's own level-``L`` output ``b2_L`` (on the masked image) becomes
  ``b2_L + BN(W_L r_L)`` and continues through backbone 2's next stage: a 1x1 convolution ``W_L`` brings the
  reverse width to the backbone's ("controlling the channels"), BN with a zero-initialised scale, so that
  training starts exactly at the plain masked pass. Adding after a 1x1 is concatenation + 1x1 whose backbone
  part is fixed to the identity (``[I, W_L] [b2_L; r_L]``): a free backbone part would re-map the pretrained
  backbone's features at every fused level for no stated reason.
* **Levels.** ``MODEL.RBNET.FUSION.LEVELS``; ``[conv1, layer1]`` in the fusion configs, the levels the paper
  keeps for its fusion ("only the bottom conv1 and layer1 are fused, to limit the keypoint loss's effect on
  the ID loss", Section 1.1 step 2). Empty (default): no fusion, the plain masked pass.
"""
from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["FUSION_LEVELS", "Backbone2Fusion", "staged_backbone_features", "FusedBackbone"]

#: backbone levels that can receive a fused reverse feature
FUSION_LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4")


class Backbone2Fusion(nn.Module):
    """``b2_L + BN(W_L r_L)`` at each configured level (module docstring).

    Args:
        levels: backbone levels to fuse at (subset of :data:`FUSION_LEVELS`).
        reverse_channels: channels of the reverse feature at each level.
        backbone_channels: channels of backbone 2's output at each level.
    """

    def __init__(self, levels: Sequence[str], reverse_channels: Mapping[str, int],
                 backbone_channels: Mapping[str, int]):
        super().__init__()
        bad = [lvl for lvl in levels if lvl not in FUSION_LEVELS]
        if bad or len(set(levels)) != len(levels) or not levels:
            raise ValueError(f"fusion levels must be distinct entries of {FUSION_LEVELS}, got {list(levels)}")
        self.levels = tuple(lvl for lvl in FUSION_LEVELS if lvl in levels)  # shallow to deep
        self.proj = nn.ModuleDict()
        for lvl in self.levels:
            bn = nn.BatchNorm2d(backbone_channels[lvl])
            nn.init.zeros_(bn.weight)  # starts as the plain masked pass
            self.proj[lvl] = nn.Sequential(nn.Conv2d(reverse_channels[lvl], backbone_channels[lvl], 1, bias=False), bn)

    def forward(self, level: str, x: torch.Tensor, reverse: torch.Tensor) -> torch.Tensor:
        """Backbone 2's level output ``x`` plus the projected reverse feature (resized to ``x`` if needed)."""
        r = self.proj[level](reverse)
        if r.shape[-2:] != x.shape[-2:]:
            r = F.interpolate(r, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x + r


def staged_backbone_features(backbone: nn.Module, x: torch.Tensor,
                             fuse: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
                             upto: str = "layer4") -> Dict[str, torch.Tensor]:
    """The multi-scale backbone's ``forward_features`` with ``fuse(level, feature)`` applied to each level's output
    before the next level reads it (:mod:`fastreid_ext.modeling.backbones.multiscale`)."""
    return backbone.forward_features(x, upto=upto, fuse=fuse)


class FusedBackbone(nn.Module):
    """Backbone 2 with the fusion, as one module (so that ``torch.func.functional_call`` can run it on detached
    copies of a shared backbone's weights): ``forward(x, reverse_feats, upto)``."""

    def __init__(self, backbone: nn.Module, fusion: Backbone2Fusion, same_level: Mapping[str, str]):
        super().__init__()
        self.backbone = backbone
        self.fusion = fusion
        self.same_level = dict(same_level)

    def forward(self, x: torch.Tensor, reverse_feats: Mapping[str, torch.Tensor], upto: str = "layer4"):
        levels = self.fusion.levels

        def fuse(level, feat):
            if level not in levels:
                return feat
            return self.fusion(level, feat, reverse_feats[self.same_level[level]])

        return staged_backbone_features(self.backbone, x, fuse, upto)
