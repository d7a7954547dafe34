"""Multi-scale backbones: five feature levels of an existing backbone, for RBNet's reverse backbone and mask.

RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024, Section 1.1, Table 1)
mirrors the backbone level by level, so it needs the output of every stage, not only the last map. A
*multi-scale backbone* reports five levels, finest to coarsest, under the names of Table 1's ResNet rows:

=========  ===========================================  ==================================================
level      FastReID ResNet / ResNet-IBN (18x ... 101x)   meaning for any backbone
=========  ===========================================  ==================================================
``conv1``  stem ``relu(bn1(conv1(x)))``, stride 2         level 0: the finest map (RBNet's heatmaps / mask
                                                          are computed at its resolution)
``layer1`` max-pool + layer1, stride 4                    level 1
``layer2`` layer2, stride 8                               level 2
``layer3`` layer3, stride 16                              level 3
``layer4`` layer4, stride 32 (16 with ``LAST_STRIDE 1``)  level 4: the backbone's output (what the head reads)
=========  ===========================================  ==================================================

Interface (what RBNet relies on; :class:`MultiScaleBackbone` implements it):

* ``forward_features(x, upto=None, fuse=None) -> {level: (B, C_l, H_l, W_l)}``: every level up to ``upto``;
  ``fuse(level, feature)`` (optional) replaces a level's output before the next level reads it (RBNet's
  fusion into backbone 2);
* ``out_channels`` / ``strides``: ``{level: int}``, measured once with a dry run (strides are the input height
  over the level's height, e.g. 2, 4, 8, 16, 32);
* ``forward(x)``: the ``layer4`` map, so the wrapper is a drop-in FastReID backbone.

:func:`as_multiscale` wraps a built backbone **without copying code or weights**: it adopts the backbone's
children under their own names (the ``state_dict`` is key for key the wrapped backbone's, so checkpoints move
freely between ``Baseline`` and RBNet) and calls them stage by stage. Supported:

* FastReID ``ResNet`` (any depth, IBN / SE / non-local): :class:`MultiScaleResNet` (table above);
* FastReID ``MobileNetV2`` (``build_mobilenetv2_backbone`` and the ImageNet one of
  :mod:`fastreid_ext.modeling.backbones.imagenet`): ``features`` + ``conv`` split at every change of stride
  (:class:`MultiScaleChain`); 1.0x: 16, 24, 32, 96, 1280 channels at strides 2, 4, 8, 16, 32;
* torchreid networks through :mod:`fastreid_ext.modeling.backbones.torchreid_bridge` (OSNet, OSNet-AIN,
  ResNet, MobileNetV2), the chain of their ``featuremaps`` split the same way; OSNet has four strides (2, 4, 8,
  16), so its stride-16 group is split before its last module ``conv5`` (x0.25: 16, 64, 96, 128, 128 channels at
  strides 2, 4, 8, 16, 16, like a ResNet with ``LAST_STRIDE 1``);
* any module that already has ``forward_features`` / ``out_channels`` / ``strides`` as above (returned as is).

Splitting a chain (:func:`split_levels`): the chain's modules (plain ``nn.Sequential`` containers opened up,
recursively) are grouped by the stride of their output; a level ends where the stride next grows. With more than
five strides the finest groups merge into level 0; with fewer, the deepest group with more than one top-level
module splits before its last top-level module, until there are five.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.backbones.resnet import build_resnet_backbone

from ...functional.conv_grad import conv2d_fast_input_grad

__all__ = ["LEVELS", "STAGES", "MultiScaleBackbone", "MultiScaleResNet", "MultiScaleChain", "split_levels",
           "as_multiscale", "is_multiscale", "level_table", "build_multiscale_resnet_backbone"]

#: names of the five levels, finest to coarsest (Table 1's ResNet rows; the same names for every backbone)
LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4")
#: the former name of :data:`LEVELS`
STAGES = LEVELS
_REQUIRED = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

FuseFn = Callable[[str, torch.Tensor], torch.Tensor]


def _check_upto(upto: Optional[str]) -> None:
    if upto is not None and upto not in LEVELS:
        raise ValueError(f"upto must be one of {LEVELS}, got {upto!r}")


class MultiScaleBackbone(nn.Module):
    """Base of the wrappers: subclasses implement :meth:`_run_level` (level ``i`` from level ``i - 1``'s output, or
    from the image for ``i = 0``) and call :meth:`_measure` at the end of ``__init__``."""

    out_channels: Dict[str, int]
    strides: Dict[str, int]

    def _run_level(self, i: int, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def _measure(self, size: Tuple[int, int] = (128, 64)) -> None:
        """``out_channels`` and ``strides`` from one eval-mode pass of a zero image."""
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            feats = self.forward_features(torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype))
        finally:
            self.train(was_training)
        self.out_channels = {k: int(v.shape[1]) for k, v in feats.items()}
        self.strides = {k: int(round(size[0] / int(v.shape[2]))) for k, v in feats.items()}

    def forward_features(self, x: torch.Tensor, upto: Optional[str] = None,
                         fuse: Optional[FuseFn] = None) -> Dict[str, torch.Tensor]:
        """Every level's output (module docstring); ``upto`` stops after that level; ``fuse(level, feature)``
        replaces a level's output before the next level reads it."""
        _check_upto(upto)
        out = {}
        for i, name in enumerate(LEVELS):
            x = self._run_level(i, x)
            if fuse is not None:
                x = fuse(name, x)
            out[name] = x
            if upto == name:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["layer4"]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {self.strides[k]}/{self.out_channels[k]}" for k in LEVELS) \
            if hasattr(self, "strides") else ""


class MultiScaleResNet(MultiScaleBackbone):
    """Wraps a built FastReID ResNet (any depth, IBN / SE / non-local) and returns every stage.

    It adopts the children (``conv1, bn1, relu, maxpool, layer1..layer4`` and the optional non-local blocks
    ``NL_1..NL_4``) under the same names and calls them stage by stage:

    * ``conv1``: the stem output ``relu(bn1(conv1(x)))`` **before** the max-pool (64 channels, stride 2; the
      "conv1 output" row of the RBNet paper's Table 1, e.g. 64 x 128 x 64 for a 256 x 128 input);
    * ``layer1`` (after the max-pool and layer1, stride 4) ... ``layer4`` (stride 16 with ``LAST_STRIDE 1``,
      32 with 2), each including the non-local blocks FastReID inserts after it (``WITH_NL``).
    """

    def __init__(self, resnet: nn.Module):
        super().__init__()
        missing = [n for n in _REQUIRED if not hasattr(resnet, n)]
        if missing:
            raise TypeError(
                f"{type(resnet).__name__} is not a FastReID ResNet-style backbone (missing {missing}); "
                f"multi-scale backbones: {SUPPORTED}")
        for name, child in resnet.named_children():
            self.add_module(name, child)
        self.training = resnet.training  # the dry run below restores this mode on the shared modules
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
        self._measure((64, 32))

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = getattr(self, f"layer{i}")
        idx = self._nl_idx[i]
        for j, block in enumerate(layer):
            x = block(x)
            if j in idx:
                x = getattr(self, f"NL_{i}")[idx.index(j)](x)
        return x

    def _run_level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 0:
            # an input that needs a gradient (RBNet's backbone 2 on the masked image) takes the polyphase input
            # gradient: oneDNN's backward-data for the 3-channel stem is ~2.6x slower (functional/conv_grad.py)
            return self.relu(self.bn1(conv2d_fast_input_grad(x, self.conv1)))
        if i == 1:
            x = self.maxpool(x)
        return self._stage(i, x)


def _chain_units(root: nn.Module, chain: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Module paths run one after the other: ``chain``'s entries with plain ``nn.Sequential`` containers opened
    up (recursively; a subclass of ``nn.Sequential`` may have its own ``forward`` and is kept whole), and for each
    the ``chain`` entry it comes from."""
    mods = dict(root.named_modules())
    units: List[str] = []
    owners: List[str] = []

    def add(path: str, owner: str):
        if path not in mods:
            raise ValueError(f"{type(root).__name__} has no module {path!r}")
        m = mods[path]
        if type(m) is nn.Sequential and len(m) > 0:
            for name, _ in m.named_children():
                add(f"{path}.{name}", owner)
        else:
            units.append(path)
            owners.append(owner)

    for p in chain:
        add(p, p)
    return units, owners


def split_levels(units: Sequence[str], unit_strides: Sequence[int], n: int = len(LEVELS),
                 owners: Optional[Sequence[str]] = None) -> List[int]:
    """End index (exclusive) of each of ``n`` levels over ``units`` whose outputs have ``unit_strides``
    (module docstring: grouped by stride; extra fine groups merge into level 0; missing levels come from splitting
    the deepest group with several top-level modules, ``owners`` (default: the first component of each unit's
    path), before its last one)."""
    if len(units) != len(unit_strides) or not units:
        raise ValueError("one stride per unit needed")
    if any(b < a for a, b in zip(unit_strides, unit_strides[1:])):
        raise ValueError(f"the chain's strides decrease ({list(unit_strides)}): not a plain down-sampling backbone")
    ends = [i + 1 for i in range(len(units) - 1) if unit_strides[i + 1] != unit_strides[i]] + [len(units)]
    while len(ends) > n:  # merge the finest groups
        ends.pop(0)
    top = list(owners) if owners is not None else [u.split(".")[0] for u in units]
    while len(ends) < n:
        split = None
        for g in range(len(ends) - 1, -1, -1):
            start = ends[g - 1] if g else 0
            names = top[start:ends[g]]
            if len(set(names)) > 1:
                last = names[-1]
                cut = start + max(i for i, t in enumerate(names) if t != last) + 1
                split = (g, cut)
                break
        if split is None:
            raise ValueError(f"cannot split {list(units)} (strides {list(unit_strides)}) into {n} levels")
        ends.insert(split[0], split[1])
    return ends


class MultiScaleChain(MultiScaleBackbone):
    """A backbone whose forward is a chain of modules (``chain``: paths of ``root``'s modules in forward order),
    split into five levels by :func:`split_levels` (or at ``level_ends``). Adopts ``root``'s children under their
    names (same ``state_dict``); ``tail``: a module path applied to the last level's output (e.g. the torchreid
    bridge's ``featuremap`` hook point). A first unit that is a stride-2 ``Conv2d`` on the image takes the fast
    input gradient, like :class:`MultiScaleResNet`'s stem."""

    def __init__(self, root: nn.Module, chain: Sequence[str], level_ends: Optional[Sequence[int]] = None,
                 tail: Optional[str] = None, family: str = ""):
        super().__init__()
        for name, child in root.named_children():
            self.add_module(name, child)
        self.training = root.training  # the dry runs below restore this mode on the shared modules
        self.family = family or type(root).__name__
        self.units, owners = _chain_units(root, chain)
        mods = dict(self.named_modules())
        self._mods = [mods[u] for u in self.units]  # plain list: the modules are registered through the children
        self._tail = mods[tail] if tail else None
        if level_ends is None:
            level_ends = split_levels(self.units, self._unit_strides(), owners=owners)
        ends = [int(e) for e in level_ends]
        if len(ends) != len(LEVELS) or ends[-1] != len(self.units) or any(b <= a for a, b in zip([0] + ends, ends)):
            raise ValueError(f"level_ends must be {len(LEVELS)} increasing indices ending at {len(self.units)}, "
                             f"got {ends}")
        self.level_ends = ends
        self.level_units = {lvl: self.units[a:b] for lvl, a, b in zip(LEVELS, [0] + ends[:-1], ends)}
        self._measure()

    @torch.no_grad()
    def _unit_strides(self, size: Tuple[int, int] = (128, 64)) -> List[int]:
        was_training = self.training
        self.eval()
        try:
            p = next(self.parameters())
            x = torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype)
            strides = []
            for m in self._mods:
                x = m(x)
                strides.append(int(round(size[0] / int(x.shape[2]))))
        finally:
            self.train(was_training)
        return strides

    def _run_level(self, i: int, x: torch.Tensor) -> torch.Tensor:
        start = self.level_ends[i - 1] if i else 0
        for k in range(start, self.level_ends[i]):
            m = self._mods[k]
            x = conv2d_fast_input_grad(x, m) if k == 0 and isinstance(m, nn.Conv2d) else m(x)
        if i == len(LEVELS) - 1 and self._tail is not None:
            x = self._tail(x)
        return x


#: torchreid families (``torchreid/reid/models/<file>.py``): the modules of ``featuremaps``, in order
TORCHREID_CHAINS = {
    "OSNet": ("conv1", "maxpool", "conv2", "conv3", "conv4", "conv5"),
    "ResNet": ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"),
    "MobileNetV2": tuple(f"conv{i}" for i in range(1, 10)),
}
#: OSNet-AIN's featuremaps pools between its stages
_OSNET_AIN_CHAIN = ("conv1", "maxpool", "conv2", "pool2", "conv3", "pool3", "conv4", "conv5")

SUPPORTED = ("FastReID ResNet / ResNet-IBN (build_resnet_backbone), FastReID MobileNetV2 "
             "(build_mobilenetv2_backbone, build_mobilenetv2_imagenet_backbone), torchreid OSNet / OSNet-AIN / "
             "ResNet / MobileNetV2 through build_torchreid_backbone, or any module with forward_features(x, upto) "
             "and out_channels / strides per level (fastreid_ext.modeling.backbones.multiscale)")


def is_multiscale(backbone: nn.Module) -> bool:
    """Whether ``backbone`` already reports its levels (``forward_features``, ``out_channels``, ``strides``)."""
    oc = getattr(backbone, "out_channels", None)
    return (callable(getattr(backbone, "forward_features", None)) and isinstance(oc, dict)
            and isinstance(getattr(backbone, "strides", None), dict) and all(k in oc for k in LEVELS))


def as_multiscale(backbone: nn.Module) -> nn.Module:
    """``backbone`` as a multi-scale backbone (module docstring), sharing its modules and weights."""
    if is_multiscale(backbone):
        return backbone
    if all(hasattr(backbone, n) for n in _REQUIRED) and not hasattr(backbone, "net"):
        return MultiScaleResNet(backbone)
    from fastreid.modeling.backbones.mobilenet import MobileNetV2

    if isinstance(backbone, MobileNetV2):
        return MultiScaleChain(backbone, ("features", "conv"), family="MobileNetV2 (FastReID)")
    from .torchreid_bridge import TorchreidBackbone

    if isinstance(backbone, TorchreidBackbone):
        net = backbone.net
        name = type(net).__name__
        if name == "OSNet" and hasattr(net, "pool2"):
            chain = _OSNET_AIN_CHAIN
        elif name in TORCHREID_CHAINS:
            chain = TORCHREID_CHAINS[name]
        else:
            raise TypeError(f"no multi-scale split for torchreid's {name}; multi-scale backbones: {SUPPORTED}")
        return MultiScaleChain(backbone, tuple(f"net.{c}" for c in chain), tail="featuremap",
                               family=f"torchreid {name}")
    raise TypeError(f"{type(backbone).__name__} is not a multi-scale backbone; supported: {SUPPORTED}")


def level_table(backbone: nn.Module) -> List[Tuple[str, int, int]]:
    """``[(level, stride, channels)]`` of a multi-scale backbone, finest first."""
    ms = as_multiscale(backbone)
    return [(lvl, ms.strides[lvl], ms.out_channels[lvl]) for lvl in LEVELS]


@BACKBONE_REGISTRY.register()
def build_multiscale_resnet_backbone(cfg):
    """FastReID's ``build_resnet_backbone(cfg)`` (same keys, pretrained weights) wrapped in
    :class:`MultiScaleResNet`; usable wherever a backbone returning layer4 is expected."""
    return MultiScaleResNet(build_resnet_backbone(cfg))
