"""RBNet's reverse backbone and mask generator (plain torch modules, no FastReID import).

Yu & Piao, "Reverse backbone net for unsupervised person re-identification", Journal of Jilin University
(Engineering and Technology Edition), 2024, Section 1.1, Table 1, Eq. 3.

The reverse backbone mirrors a ResNet (Table 1): the backbone outputs ``conv1, layer1..layer4`` each pass a
``change_channel`` block (1x1 conv + ReLU) into ``re_layer4 -> re_layer3 -> re_layer2 -> re_layer1 -> re_conv1``::

    re_layer4( cc(layer4) )                     -> upsampled to layer3's size if layer4 downsampled
    re_layer3( cc(layer3) + re_layer4 output )  -> upsampled x2 (layer3 downsampled)
    re_layer2( cc(layer2) + re_layer3 output )  -> upsampled x2 (layer2 downsampled)
    re_layer1( cc(layer1) + re_layer2 output )  (layer1 keeps the size)
    re_conv1 ( cc(conv1)  + re_layer1 output upsampled x2, mirroring the max-pool ) -> 17 heatmaps

so every re-layer outputs the size and width of the input of the backbone layer it mirrors, and ``re_conv1``
predicts 17 keypoint heatmaps at the conv1 resolution (B x 17 x 128 x 64 for 256 x 128, Eq. 3; Table 1 gives
re-conv1's output at the input size, 256 x 128: ``heatmap_size`` resizes the prediction to it). Upsampling is
bilinear, at the output of each re-layer's last block (Section 1.1). Block counts are the paper's (re_layer1
2, re_layer2 3, re_layer3 5, re_layer4 2). The input of every re-layer, ``cc(level) + deeper reverse output``,
is the fusion of the backbone's and the reverse block's same-level features (``re_<layer>_in``, at that
backbone level's width and size); RBNet can fuse it into backbone 2 (:mod:`fastreid_ext.rbnet.fusion`).

Blocks are depthwise-separable residual blocks (depthwise 3x3 - BN - ReLU - pointwise 1x1 - BN, plus a 1x1
shortcut when the width changes). Where the 17 keypoint groups live is the ``grouping`` option:

* ``"heads"`` (default, Table 1's widths): every level keeps the backbone's width (``width_mult * C``: 64, 256,
  512, 1024, 2048 for a ResNet-50 at ``width_mult=1``), and the 17-way split happens where keypoint-wise outputs
  are produced: ``re_conv1`` and every part-mask input first pass a 1x1 convolution to ``17 * head_group_width``
  channels ("grouped 1x1 convolutions align the channels", Section 1.1 step 2), then depthwise / grouped
  (17 groups) convolutions give heatmap / part ``k`` from group ``k`` only. Table 1's widths are not multiples
  of 17, which is why the split cannot run through the levels. The blocks' pointwise convolutions
  (``pointwise``) are ``"channel"`` (default: grouped with ``gcd(cin, cout)`` groups, no channel mixing inside the
  blocks, a width change reads adjacent channels; Section 1.1: "a depthwise-separable convolution needs a
  full-feature step; this model uses the backbone's same-size feature maps for it", i.e. change_channel's 1x1 on
  the backbone features is the only full mixing; the reverse path is about 0.26 of a ResNet-50's forward FLOPs
  at 256 x 128) or ``"full"`` (textbook depthwise-separable blocks; about 0.84 of the backbone's FLOPs).
* ``"all"`` (reduced, 17-grouped): after ``change_channel`` every convolution is depthwise or grouped with 17
  groups (the depthwise-separable blocks' "full" mixing replaced by the backbone's features coming in through
  ``change_channel``, one reading of Section 1.1), so group ``k`` of every level belongs to keypoint ``k``;
  widths are multiples of 17: ``17 * max(min_group_width, round(width_mult * C / 17))`` (``width_mult=0.25``:
  68, 68, 136, 255, 510 for a ResNet-50, a few percent of its cost).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..functional.keypoints import NUM_KEYPOINTS
from .masking import REDUCTIONS, combine_part_masks, upsample_mask

__all__ = ["NUM_KEYPOINTS", "LEVELS", "MASK_SOURCES", "GROUPINGS", "POINTWISE", "SAME_LEVEL", "group_width",
           "reverse_widths", "ChangeChannel", "ReverseBlock", "ReLayer", "ReConv1", "ReverseBackbone", "MaskGenerator"]

#: backbone levels, shallow to deep: the five levels a multi-scale backbone reports (Table 1's ResNet row names,
#: used for every backbone; fastreid_ext.modeling.backbones.multiscale)
LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4")
#: where the mask comes from (the paper's Table 2 / Section 2.3 variants); conv1's features are always fused
MASK_SOURCES = ("conv1", "re_layer1", "re_layer2")
#: where the 17 keypoint groups live: "heads" (Table 1's widths, grouping at heatmaps / part masks) or "all"
GROUPINGS = ("heads", "all")
#: pointwise convolutions of the reverse blocks with grouping "heads": "full" or "channel" (no mixing)
POINTWISE = ("full", "channel")
#: reverse-backbone feature at the width and size of each backbone level's output (the re-layer's input:
#: change_channel(level) + the deeper reverse output, i.e. the fused same-level feature)
SAME_LEVEL = {"conv1": "re_conv1_in", "layer1": "re_layer1_in", "layer2": "re_layer2_in",
              "layer3": "re_layer3_in", "layer4": "re_layer4_in"}


def group_width(channels: int, width_mult: float, groups: int = NUM_KEYPOINTS, min_group_width: int = 4) -> int:
    """Channels of a reverse level: a multiple of ``groups`` close to ``width_mult * channels``."""
    return groups * max(int(min_group_width), int(round(channels * width_mult / groups)))


def reverse_widths(in_channels: Sequence[int], grouping: str = "heads", width_mult: float = 1.0,
                   groups: int = NUM_KEYPOINTS, min_group_width: int = 4):
    """Reverse width of every backbone level: ``round(width_mult * C)`` (``grouping="heads"``; Table 1's widths at
    ``width_mult=1``) or :func:`group_width` (``"all"``: multiples of ``groups``)."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {GROUPINGS}, got {grouping!r}")
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    if grouping == "all":
        return [group_width(c, width_mult, groups, min_group_width) for c in in_channels]
    return [max(1, int(round(c * width_mult))) for c in in_channels]


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
    """Depthwise-separable residual block: depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 (``groups`` groups: 1 is a
    full pointwise convolution, 17 keeps the keypoint groups apart, 0 means ``gcd(cin, cout)``: no channel mixing
    beyond the width change, output channel ``j`` reads ``cin / cout`` adjacent input channels; when that is one
    channel per group the 1x1 is a per-channel scale, which the BN after it already has, and is left out) -> BN,
    plus a (1x1, same groups) shortcut when the width changes, ReLU."""

    def __init__(self, cin: int, cout: int, groups: int = NUM_KEYPOINTS):
        super().__init__()
        groups = groups or math.gcd(cin, cout)
        if cin % groups or cout % groups:
            raise ValueError(f"reverse widths must be divisible by {groups}: got {cin} -> {cout}")
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        per_channel = groups == cin == cout
        self.pw = nn.Identity() if per_channel else nn.Conv2d(cin, cout, 1, groups=groups, bias=False)
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
    """``re_conv1``: [1x1 -> BN -> ReLU to ``align`` = 17 * group width channels] -> depthwise 3x3 -> BN -> ReLU ->
    grouped 1x1 with one output per keypoint group, i.e. the heatmap of keypoint ``k`` is computed from group
    ``k`` only (linear output, trained with Eq. 3). ``align=None``: the input is already grouped (its width
    divisible by the number of keypoints)."""

    def __init__(self, cin: int, num_keypoints: int = NUM_KEYPOINTS, align: Optional[int] = None):
        super().__init__()
        if align:
            if align % num_keypoints:
                raise ValueError(f"re_conv1 alignment width {align} is not divisible by {num_keypoints}")
            self.align = nn.Sequential(nn.Conv2d(cin, align, 1, bias=False), nn.BatchNorm2d(align),
                                       nn.ReLU(inplace=True))
            cin = align
        else:
            self.align = nn.Identity()
        if cin % num_keypoints:
            raise ValueError(f"re_conv1 input width {cin} is not divisible by {num_keypoints}")
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Conv2d(cin, num_keypoints, 1, groups=num_keypoints, bias=True)
        nn.init.normal_(self.out.weight, std=0.001)  # start near an all-zero heatmap (HRNet-style head init)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return self.out(self.relu(self.bn(self.dw(self.align(x)))))


class ReverseBackbone(nn.Module):
    """The reverse backbone of Table 1 (see the module docstring).

    Args:
        in_channels: backbone channels of its five levels conv1, layer1, layer2, layer3, layer4 (a sequence or a
            mapping by level name, e.g. a multi-scale backbone's ``out_channels``), e.g. ``(64, 256, 512, 1024,
            2048)`` for ResNet-50, ``(64, 64, 128, 256, 512)`` for ResNet-18, ``(16, 24, 32, 96, 1280)`` for
            MobileNetV2 1.0x, ``(16, 64, 96, 128, 128)`` for OSNet x0.25.
        num_keypoints: output heatmaps and channel groups (17 COCO keypoints).
        width_mult / min_group_width: reverse widths, see :func:`reverse_widths`.
        blocks: blocks of re_layer1, re_layer2, re_layer3, re_layer4 (paper: 2, 3, 5, 2).
        channels_last: compute in channels-last memory layout (same values, faster grouped convolutions).
        grouping: ``"heads"`` (Table 1's widths, 17 groups from ``re_conv1``'s 1x1 alignment to
            ``num_keypoints * head_group_width`` channels on) or ``"all"`` (every level 17-grouped).
        head_group_width: channels per keypoint after the alignment (``grouping="heads"`` only).
        pointwise: the blocks' pointwise convolutions with ``grouping="heads"``: ``"channel"`` (no channel mixing
            in the blocks: ``groups = gcd(cin, cout)``; the full-feature step is change_channel's 1x1 on the
            backbone's same-size features) or ``"full"`` (textbook depthwise-separable).
        strides: the backbone's stride per level (optional, checked to be non-decreasing and kept in
            ``self.strides``); the reverse path resizes to the sizes of the features it is given, so any strides work
            (e.g. 2, 4, 8, 16, 16 for a ResNet with last stride 1 or OSNet: no upsampling between equal sizes).
    """

    def __init__(self, in_channels, num_keypoints: int = NUM_KEYPOINTS, width_mult: float = 1.0,
                 min_group_width: int = 4, blocks: Sequence[int] = (2, 3, 5, 2), channels_last: bool = True,
                 grouping: str = "heads", head_group_width: int = 4, pointwise: str = "channel",
                 strides=None):
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
        if pointwise not in POINTWISE:
            raise ValueError(f"pointwise must be one of {POINTWISE}, got {pointwise!r}")
        if head_group_width < 1:
            raise ValueError(f"head_group_width must be >= 1, got {head_group_width}")
        self.num_keypoints = num_keypoints
        self.grouping = grouping
        self.pointwise = pointwise if grouping == "heads" else "grouped"
        self.in_channels = dict(zip(LEVELS, in_channels))
        #: the backbone's stride per level (as reported; informative: the re-layers upsample to the sizes they see)
        self.strides = None
        if strides is not None:
            st = [int(strides[k]) for k in LEVELS] if isinstance(strides, Mapping) else [int(s) for s in strides]
            if len(st) != 5 or any(b < a for a, b in zip(st, st[1:])):
                raise ValueError(f"strides must be 5 non-decreasing values (conv1, layer1..layer4), got {st}")
            self.strides = dict(zip(LEVELS, st))
        w = reverse_widths(in_channels, grouping, width_mult, num_keypoints, min_group_width)
        #: reverse width per backbone level
        self.widths = dict(zip(LEVELS, w))
        #: channels where keypoint-wise outputs are formed (heatmaps; the mask generator's alignment)
        self.head_width = num_keypoints * int(head_group_width) if grouping == "heads" else None
        g = num_keypoints if grouping == "all" else (1 if pointwise == "full" else 0)
        self.change_channel = nn.ModuleDict({lvl: ChangeChannel(c, wi) for lvl, c, wi in zip(LEVELS, in_channels, w)})
        # re_layer k reads level k (layer_k) and outputs the width of level k-1 (layer_k's input)
        self.re_layer4 = ReLayer(w[4], w[3], blocks[3], g)
        self.re_layer3 = ReLayer(w[3], w[2], blocks[2], g)
        self.re_layer2 = ReLayer(w[2], w[1], blocks[1], g)
        self.re_layer1 = ReLayer(w[1], w[0], blocks[0], g)
        self.re_conv1 = ReConv1(w[0], num_keypoints, align=self.head_width)

    #: outputs of :meth:`forward`, in the order they are computed (``upto`` stops after one of them)
    OUTPUTS = ("cc_conv1", "re_layer4_in", "re_layer4", "re_layer3_in", "re_layer3", "re_layer2_in", "re_layer2",
               "re_layer1_in", "re_layer1", "re_conv1_in", "heatmaps")

    def output_channels(self) -> Dict[str, int]:
        w = self.widths
        return {"cc_conv1": w["conv1"], "re_layer4_in": w["layer4"], "re_layer4": w["layer3"],
                "re_layer3_in": w["layer3"], "re_layer3": w["layer2"], "re_layer2_in": w["layer2"],
                "re_layer2": w["layer1"], "re_layer1_in": w["layer1"], "re_layer1": w["conv1"],
                "re_conv1_in": w["conv1"], "heatmaps": self.num_keypoints}

    @classmethod
    def last_needed(cls, *outputs: str) -> str:
        """The ``upto`` that computes all of ``outputs``."""
        bad = [o for o in outputs if o not in cls.OUTPUTS]
        if bad:
            raise ValueError(f"unknown reverse-backbone outputs {bad}; known: {cls.OUTPUTS}")
        return max(outputs, key=cls.OUTPUTS.index)

    def forward(self, feats: Mapping[str, torch.Tensor], heatmap_size: Optional[Sequence[int]] = None,
                upto: str = "heatmaps") -> Dict[str, torch.Tensor]:
        """``feats``: the backbone's ``conv1, layer1..layer4``. Returns ``cc_conv1`` (conv1 after
        change_channel), ``re_layer4..re_layer1`` (each at the size of the backbone layer's input), the re-layer
        inputs ``re_layer4_in..re_layer1_in`` and ``re_conv1_in`` (the fused same-level features, each at its
        backbone level's size), and ``heatmaps`` (B x 17 at conv1's size, or resized bilinearly to
        ``heatmap_size``); ``upto`` stops after that output (cheaper when only a mask is needed).
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
        x = None
        # re_layer k's input = cc(layer k) + the deeper re-layer's output; upsampled to layer (k-1)'s size
        for k, below in ((4, "layer3"), (3, "layer2"), (2, "layer1"), (1, None)):
            y = cc[f"layer{k}"](feats[f"layer{k}"])
            x = y if x is None else y + x
            out[f"re_layer{k}_in"] = x
            if upto == f"re_layer{k}_in":
                return out
            x = self.re_layer1(x) if k == 1 else _upsample(getattr(self, f"re_layer{k}")(x), size[below])
            out[f"re_layer{k}"] = x  # re_layer1: layer1 keeps the size, no upsampling
            if upto == f"re_layer{k}":
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
    """``M(x)`` (Eqs. 1-2): per fused level a 17-way grouped 1x1 conv (one part logit per keypoint group), the levels
    upsampled to conv1's size and summed, sigmoid -> 17 part masks, reduced to one mask (``reduce``), bilinearly
    upsampled to the input size (values stay in [0, 1]).

    Only shallow features are fused (Section 1.1: "conv1 and layer1 fused is better than all layers"):
    ``conv1`` uses the backbone's conv1 features (after change_channel) alone; ``re_layer1`` (the paper's
    best) adds the re_layer1 output (layer1 level, which carries the backbone's layer1 through
    change_channel); ``re_layer2`` adds the re_layer2 output instead.

    Per level: ``align=None`` (17-grouped features): BN -> grouped 1x1; ``align=A`` (``A = 17 * group width``, for
    features that are not grouped, e.g. Table 1's widths): 1x1 to ``A`` channels -> BN -> grouped 1x1 (Section 1.1
    step 2: "grouped 1x1 convolutions align the channels"; step 3: the features "are split into 17 groups by a
    grouped convolution, as spatial-attention weights"). BN before the grouped conv: the part logits see
    standardized activations, so the mask keeps its contrast while the features grow during training.

    ``reduce`` (:func:`fastreid_ext.rbnet.masking.combine_part_masks`): ``max`` (union), ``sum`` (the paper's
    "sum of all parts", clipped to 1) or ``mean``. ``init_bias``: initial bias of the part logits (summed over the
    fused levels); a positive value starts the mask close to 1 (the masked image is then almost the image).
    With ``sum`` the biases start ``ln(17)`` lower, so that 17 parts at zero logits sum to 17/18 instead of a
    saturated 8.5. ``init_weight``: 0 keeps PyTorch's random init; a value ``a > 0`` starts every weight of the
    grouped conv at ``a / group width``, so that part ``k`` starts as an increasing function of the mean
    activation of group ``k`` (high where the keypoint features fire, low elsewhere with a negative
    ``init_bias``).
    """

    def __init__(self, source: str, channels: Mapping[str, int], num_parts: int = NUM_KEYPOINTS,
                 reduce: str = "max", init_bias: float = 0.0, init_weight: float = 0.0, align: Optional[int] = None):
        super().__init__()
        if source not in MASK_SOURCES:
            raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"mask reduction must be one of {REDUCTIONS}, got {reduce!r}")
        if align is not None and align % num_parts:
            raise ValueError(f"mask alignment width {align} is not divisible by {num_parts}")
        self.source = source
        self.reduce = reduce
        self.levels: Tuple[str, ...] = ("cc_conv1",) if source == "conv1" else ("cc_conv1", source)
        bias = init_bias - (math.log(num_parts) if reduce == "sum" else 0.0)
        self.part_logits = nn.ModuleDict()
        for lvl in self.levels:
            c = channels[lvl]
            width = align or c
            if width % num_parts:
                raise ValueError(f"mask input {lvl} has {c} channels, not divisible by {num_parts}: give an "
                                 f"alignment width (grouping 'heads')")
            conv = nn.Conv2d(width, num_parts, 1, groups=num_parts, bias=True)
            nn.init.constant_(conv.bias, bias / len(self.levels))
            if init_weight > 0:
                nn.init.constant_(conv.weight, init_weight / (width // num_parts))
            pre = [nn.Conv2d(c, align, 1, bias=False)] if align else []
            self.part_logits[lvl] = nn.Sequential(*pre, nn.BatchNorm2d(width), conv)

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
