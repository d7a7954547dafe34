"""RBNet's reverse backbone and mask generator (plain torch modules, no FastReID import).

Yu & Piao, "Reverse backbone net for unsupervised person re-identification" (2024), Section 1.1, Table 1.

The reverse backbone mirrors a ResNet (Table 1): the backbone outputs ``conv1, layer1..layer4`` each pass a
``change_channel`` block (1x1 conv + ReLU, the only place where channels of different keypoints mix) into
``re_layer4 -> re_layer3 -> re_layer2 -> re_layer1 -> re_conv1``::

    re_layer4( cc(layer4) )                     -> upsampled to layer3's size if layer4 downsampled
    re_layer3( cc(layer3) + re_layer4 output )  -> upsampled x2 (layer3 downsampled)
    re_layer2( cc(layer2) + re_layer3 output )  -> upsampled x2 (layer2 downsampled)
    re_layer1( cc(layer1) + re_layer2 output )  (layer1 keeps the size)
    re_conv1 ( cc(conv1)  + re_layer1 output upsampled x2, mirroring the max-pool ) -> 17 heatmaps

so every re-layer outputs the size (and, scaled, the width) of the input of the backbone layer it mirrors,
and ``re_conv1`` predicts 17 keypoint heatmaps at the conv1 resolution (B x 17 x 128 x 64 for 256 x 128).
Upsampling is bilinear, at the output of each re-layer's last block (Section 1.1). Block counts are the
paper's (re_layer1 2, re_layer2 3, re_layer3 5, re_layer4 2).

All features of the reverse path are split into 17 contiguous channel groups, one per COCO keypoint: every
convolution after ``change_channel`` is depthwise or grouped with ``groups=17`` (depthwise-separable blocks
whose "full" pointwise mixing is replaced by the backbone's features coming in through ``change_channel``,
as the paper describes), and ``re_conv1``'s channel ``k`` is computed from group ``k`` only.

Widths scale with the backbone: level ``i`` (conv1, layer1..layer4 with ``C_i`` channels) gets
``17 * max(min_group_width, round(width_mult * C_i / 17))`` channels (``width_mult=1`` gives the paper's
Table 1 widths rounded to multiples of 17; the default 0.25 keeps the reverse path at a few percent of a
ResNet-50's cost).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .masking import combine_part_masks, upsample_mask

__all__ = ["NUM_KEYPOINTS", "LEVELS", "MASK_SOURCES", "group_width", "ChangeChannel", "ReverseBlock", "ReLayer",
           "ReConv1", "ReverseBackbone", "MaskGenerator"]

NUM_KEYPOINTS = 17
#: backbone levels, shallow to deep (as returned by MultiScaleResNet.forward_features)
LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4")
#: where the mask comes from (the paper's Table 2 / Section 2.3 variants); conv1's features are always fused
MASK_SOURCES = ("conv1", "re_layer1", "re_layer2")


def group_width(channels: int, width_mult: float, groups: int = NUM_KEYPOINTS, min_group_width: int = 4) -> int:
    """Channels of a reverse level: a multiple of ``groups`` close to ``width_mult * channels``."""
    return groups * max(int(min_group_width), int(round(channels * width_mult / groups)))


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ChangeChannel(nn.Sequential):
    """``change_channel``: 1x1 convolution + ReLU (Section 1.1), backbone width -> reverse width."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 1, bias=True), nn.ReLU(inplace=True))


class ReverseBlock(nn.Module):
    """Depthwise-separable residual block that keeps the 17 keypoint groups apart:
    depthwise 3x3 -> BN -> ReLU -> grouped 1x1 (``groups``) -> BN, plus a (grouped 1x1) shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, groups: int = NUM_KEYPOINTS):
        super().__init__()
        if cin % groups or cout % groups:
            raise ValueError(f"reverse widths must be divisible by {groups}: got {cin} -> {cout}")
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, groups=groups, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.pw(self.relu(self.bn1(self.dw(x)))))
        return self.relu(out + self.shortcut(x))


class ReLayer(nn.Sequential):
    """``n`` reverse blocks; the last one changes the width ``cin -> cout`` (Table 1). The caller upsamples
    the output to the size of the backbone layer's input (:meth:`ReverseBackbone.forward`)."""

    def __init__(self, cin: int, cout: int, num_blocks: int, groups: int = NUM_KEYPOINTS):
        if num_blocks < 1:
            raise ValueError(f"a re-layer needs at least one block, got {num_blocks}")
        blocks = [ReverseBlock(cin, cin, groups) for _ in range(num_blocks - 1)]
        blocks.append(ReverseBlock(cin, cout, groups))
        super().__init__(*blocks)


class ReConv1(nn.Module):
    """``re_conv1``: depthwise 3x3 -> BN -> ReLU -> grouped 1x1 with one output per keypoint group, i.e. the
    heatmap of keypoint ``k`` is computed from group ``k`` only (linear output, trained with Eq. 3)."""

    def __init__(self, cin: int, num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        if cin % num_keypoints:
            raise ValueError(f"re_conv1 input width {cin} is not divisible by {num_keypoints}")
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Conv2d(cin, num_keypoints, 1, groups=num_keypoints, bias=True)
        nn.init.normal_(self.out.weight, std=0.001)  # start near an all-zero heatmap (HRNet-style head init)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.relu(self.bn(self.dw(x))))


class ReverseBackbone(nn.Module):
    """The reverse backbone of Table 1 (see the module docstring).

    Args:
        in_channels: backbone channels of conv1, layer1, layer2, layer3, layer4 (a sequence or a mapping by
            level name), e.g. ``(64, 256, 512, 1024, 2048)`` for ResNet-50, ``(64, 64, 128, 256, 512)`` for
            ResNet-18.
        num_keypoints: output heatmaps and channel groups (17 COCO keypoints).
        width_mult / min_group_width: reverse widths, see :func:`group_width`.
        blocks: blocks of re_layer1, re_layer2, re_layer3, re_layer4 (paper: 2, 3, 5, 2).
        channels_last: compute in channels-last memory layout (same values, faster grouped convolutions).
    """

    def __init__(self, in_channels, num_keypoints: int = NUM_KEYPOINTS, width_mult: float = 0.25,
                 min_group_width: int = 4, blocks: Sequence[int] = (2, 3, 5, 2), channels_last: bool = True):
        super().__init__()
        #: run the reverse path in channels-last layout: its depthwise / grouped convolutions are about 2.3x
        #: faster that way on CPU (oneDNN, measured); same values up to float rounding (tests/test_rbnet.py)
        self.channels_last = bool(channels_last)
        if isinstance(in_channels, Mapping):
            in_channels = [in_channels[k] for k in LEVELS]
        in_channels = [int(c) for c in in_channels]
        if len(in_channels) != 5:
            raise ValueError(f"in_channels needs 5 entries (conv1, layer1..layer4), got {in_channels}")
        if len(blocks) != 4:
            raise ValueError(f"blocks needs 4 entries (re_layer1..re_layer4), got {list(blocks)}")
        self.num_keypoints = num_keypoints
        self.in_channels = dict(zip(LEVELS, in_channels))
        w = [group_width(c, width_mult, num_keypoints, min_group_width) for c in in_channels]
        #: reverse width per backbone level (all divisible by num_keypoints)
        self.widths = dict(zip(LEVELS, w))
        self.change_channel = nn.ModuleDict({lvl: ChangeChannel(c, wi) for lvl, c, wi in zip(LEVELS, in_channels, w)})
        # re_layer k reads level k (layer_k) and outputs the width of level k-1 (layer_k's input)
        self.re_layer4 = ReLayer(w[4], w[3], blocks[3], num_keypoints)
        self.re_layer3 = ReLayer(w[3], w[2], blocks[2], num_keypoints)
        self.re_layer2 = ReLayer(w[2], w[1], blocks[1], num_keypoints)
        self.re_layer1 = ReLayer(w[1], w[0], blocks[0], num_keypoints)
        self.re_conv1 = ReConv1(w[0], num_keypoints)

    #: outputs of :meth:`forward`, in the order they are computed
    OUTPUTS = ("cc_conv1", "re_layer4", "re_layer3", "re_layer2", "re_layer1", "re_conv1_in", "heatmaps")

    def output_channels(self) -> Dict[str, int]:
        w = self.widths
        return {"cc_conv1": w["conv1"], "re_layer4": w["layer3"], "re_layer3": w["layer2"],
                "re_layer2": w["layer1"], "re_layer1": w["conv1"], "re_conv1_in": w["conv1"],
                "heatmaps": self.num_keypoints}

    def forward(self, feats: Mapping[str, torch.Tensor], heatmap_size: Optional[Sequence[int]] = None,
                upto: str = "heatmaps") -> Dict[str, torch.Tensor]:
        """``feats``: the backbone's ``conv1, layer1..layer4``. Returns ``cc_conv1`` (conv1 after
        change_channel), ``re_layer4..re_layer1`` (each at the size of the backbone layer's input),
        ``re_conv1_in`` (the fused re_conv1 input) and ``heatmaps`` (B x 17 at conv1's size, or resized
        bilinearly to ``heatmap_size``); ``upto`` stops after that output (cheaper when only a mask is needed).
        """
        if upto not in self.OUTPUTS:
            raise ValueError(f"upto must be one of {self.OUTPUTS}, got {upto!r}")
        needed = ("conv1",) if upto == "cc_conv1" else LEVELS
        missing = [k for k in needed if k not in feats]
        if missing:
            raise KeyError(f"reverse backbone needs backbone features {needed}, missing {missing}")
        for lvl in needed:
            c = feats[lvl].shape[1]
            if c != self.in_channels[lvl]:
                raise ValueError(f"backbone {lvl} has {c} channels, the reverse backbone was built for "
                                 f"{self.in_channels[lvl]} (MODEL.BACKBONE.DEPTH / FEAT_DIM mismatch?)")
        if self.channels_last:
            feats = {k: feats[k].contiguous(memory_format=torch.channels_last) for k in needed}
        cc = self.change_channel
        out: Dict[str, torch.Tensor] = {"cc_conv1": cc["conv1"](feats["conv1"])}
        if upto == "cc_conv1":
            return out
        size = {lvl: feats[lvl].shape[-2:] for lvl in LEVELS}
        x = _upsample(self.re_layer4(cc["layer4"](feats["layer4"])), size["layer3"])
        out["re_layer4"] = x
        if upto == "re_layer4":
            return out
        x = _upsample(self.re_layer3(cc["layer3"](feats["layer3"]) + x), size["layer2"])
        out["re_layer3"] = x
        if upto == "re_layer3":
            return out
        x = _upsample(self.re_layer2(cc["layer2"](feats["layer2"]) + x), size["layer1"])
        out["re_layer2"] = x
        if upto == "re_layer2":
            return out
        x = self.re_layer1(cc["layer1"](feats["layer1"]) + x)  # layer1 keeps the size: no upsampling
        out["re_layer1"] = x
        if upto == "re_layer1":
            return out
        x = _upsample(x, size["conv1"]) + out["cc_conv1"]  # mirrors the max-pool
        out["re_conv1_in"] = x
        if upto == "re_conv1_in":
            return out
        heat = self.re_conv1(x)
        if heatmap_size is not None:
            heat = _upsample(heat, heatmap_size)
        heat = heat.contiguous()
        out["heatmaps"] = heat
        return out


class MaskGenerator(nn.Module):
    """``M(x)`` (Eq. 1/2): per fused level BN + a grouped 1x1 conv (one part logit per keypoint group), the levels
    upsampled to conv1's size and summed, sigmoid -> 17 part masks, their union (``max``) -> one mask,
    bilinearly upsampled to the input size (values stay in [0, 1]).

    Only shallow features are fused (Section 1.1: "conv1 and layer1 fused is better than all layers"):
    ``conv1`` uses the backbone's conv1 features (after change_channel) alone; ``re_layer1`` (the paper's
    best) adds the re_layer1 output (layer1 level, which carries the backbone's layer1 through
    change_channel); ``re_layer2`` adds the re_layer2 output instead.

    ``init_bias``: initial bias of the part logits (summed over the fused levels); a positive value starts the
    mask close to 1 (the masked image is then almost the image). ``init_weight``: 0 keeps PyTorch's random
    init; a value ``a > 0`` starts every weight at ``a / group width``, so that part ``k`` starts as an
    increasing function of the mean activation of keypoint group ``k`` (high where the keypoint features
    fire, low elsewhere with a negative ``init_bias``).
    """

    def __init__(self, source: str, channels: Mapping[str, int], num_parts: int = NUM_KEYPOINTS,
                 reduce: str = "max", init_bias: float = 0.0, init_weight: float = 0.0):
        super().__init__()
        if source not in MASK_SOURCES:
            raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
        self.source = source
        self.reduce = reduce
        self.levels: Tuple[str, ...] = ("cc_conv1",) if source == "conv1" else ("cc_conv1", source)
        self.part_logits = nn.ModuleDict()
        for lvl in self.levels:
            conv = nn.Conv2d(channels[lvl], num_parts, 1, groups=num_parts, bias=True)
            nn.init.constant_(conv.bias, init_bias / len(self.levels))
            if init_weight > 0:
                nn.init.constant_(conv.weight, init_weight / (channels[lvl] // num_parts))
            # BN first: the part logits see standardized activations, so the mask keeps its contrast while the
            # reverse features grow during training (without it the mask drifts to all ones)
            self.part_logits[lvl] = nn.Sequential(nn.BatchNorm2d(channels[lvl]), conv)

    @property
    def reverse_upto(self) -> str:
        """The last reverse-backbone output this mask needs."""
        return self.levels[-1]

    def forward(self, rev: Mapping[str, torch.Tensor], out_size: Sequence[int]):
        """Returns ``(mask (B, 1, H, W) at out_size, part masks (B, 17, h, w) at conv1's size)``."""
        ref = rev["cc_conv1"].shape[-2:]
        logits = None
        for lvl in self.levels:
            z = _upsample(self.part_logits[lvl](rev[lvl]), ref)
            logits = z if logits is None else logits + z
        parts = torch.sigmoid(logits)
        mask = upsample_mask(combine_part_masks(parts, self.reduce), out_size)
        return mask, parts
