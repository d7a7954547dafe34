"""Model variants for the condition matrices: a model (FastReID config + weights, or torchreid OSNet through the
bridge) plus the pre-processing it is run with (letterbox, background masking, flip canonicalisation) and the
feature it is read at (the model's test feature, or the global average pooling of its last feature map).

The pre-processing is FastReID's test transform of the variant's config with our input keys set
(``INPUT.LETTERBOX``, ``INPUT.FLIP_CANON``: :mod:`fastreid_ext.data.transforms`), so the tool sees crops exactly as
a model trained or tested with those keys does. Masks (exact SynthPed masks, mediapipe / torchvision / imported
masks through :mod:`fastreid_ext.segmentation.backends`) follow the transform, then replace the background with
the ``fill`` (``pad``: the letterbox pad colour, the paper's grey; or ``zero`` / ``mean`` / ``blur`` of
:mod:`fastreid_ext.functional.background`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["VariantSpec", "VariantEmbedder", "NoAveragePooledEmbedding", "parse_variant", "gap_features",
           "MASKS", "FLIPS", "FILLS", "FEATURES", "LETTERBOX"]

MASKS = ("none", "exact", "mediapipe", "torchvision", "import")
FLIPS = ("none", "known", "keypoints")
FILLS = ("pad", "zero", "mean", "blur")
FEATURES = ("model", "gap")
LETTERBOX = ("on", "off", "config")


class NoAveragePooledEmbedding(TypeError):
    """The model has no spatial feature map whose global average pooling could be the embedding."""


@dataclass
class VariantSpec:
    """One column of the figures: a model and how its inputs are prepared (see the module docstring)."""

    name: str
    config: Optional[str] = None
    weights: Optional[str] = None
    torchreid_weights: Optional[str] = None
    torchreid_arch: str = "osnet_x0_25"
    opts: Tuple[str, ...] = ()
    mask: str = "none"
    fill: str = "pad"
    flip: str = "none"
    keep: str = "right"
    letterbox: str = "on"
    pad_value: Tuple[int, int, int] = (128, 128, 128)
    feature: str = "model"
    size: Optional[Tuple[int, int]] = None

    def check(self) -> "VariantSpec":
        for key, allowed in (("mask", MASKS), ("fill", FILLS), ("flip", FLIPS), ("feature", FEATURES),
                             ("letterbox", LETTERBOX)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"model {self.name!r}: {key}={getattr(self, key)!r}; choose one of {allowed}")
        if not self.config and not self.torchreid_weights:
            raise ValueError(f"model {self.name!r} needs a FastReID config (+ weights) or torchreid weights")
        return self


_KEYS = {"mask", "fill", "flip", "keep", "letterbox", "feature"}


def parse_variant(tokens: Sequence[str], defaults: VariantSpec, torchreid: bool = False) -> VariantSpec:
    """``NAME CONFIG [WEIGHTS] [key=value ...]`` (``torchreid``: ``NAME WEIGHTS [key=value ...]``) with keys mask,
    fill, flip, keep, letterbox, feature; unset keys come from ``defaults``."""
    pos = [t for t in tokens if "=" not in t]
    kv = [t for t in tokens if "=" in t]
    want = "NAME WEIGHTS" if torchreid else "NAME CONFIG [WEIGHTS]"
    if len(pos) < 2 or len(pos) > (2 if torchreid else 3):
        raise ValueError(f"expected {want} [key=value ...], got {' '.join(tokens)!r}")
    over = {}
    for t in kv:
        k, v = t.split("=", 1)
        if k not in _KEYS:
            raise ValueError(f"unknown option {k!r} in {' '.join(tokens)!r}; known: {sorted(_KEYS)}")
        over[k] = v
    if torchreid:
        spec = replace(defaults, name=pos[0], config=None, weights=None, torchreid_weights=pos[1], **over)
    else:
        spec = replace(defaults, name=pos[0], config=pos[1], weights=pos[2] if len(pos) > 2 else None, **over)
    return spec.check()


def gap_features(model, inputs) -> torch.Tensor:
    """Global average pooling of the model's backbone feature map (:meth:`MultiBranchModel.feature_maps` of
    ``inputs``, a batch dict or an image tensor; FastReID ``Baseline``-like models get the interface through
    ``with_multi_branch``)."""
    from ..modeling.multi_branch import MultiBranchModel, with_multi_branch

    name = type(model).__name__
    if not isinstance(model, MultiBranchModel):
        try:
            model.__class__ = with_multi_branch(type(model))
        except TypeError as e:
            raise NoAveragePooledEmbedding(
                f"{name} has no average-pooled embedding: {e}. Use feature=model (the model's own test feature)"
            ) from None
    maps = model.feature_maps(inputs if isinstance(inputs, dict) else {"images": inputs})
    fmap = maps.get("backbone")
    if fmap is None:
        fmap = next((v for v in maps.values() if torch.is_tensor(v) and v.dim() == 4), None)
    if fmap is None or fmap.dim() != 4:
        raise NoAveragePooledEmbedding(f"{name} has no average-pooled embedding: feature_maps() gives no (B, C, h, w) "
                                       f"map ({sorted(maps)}). Use feature=model")
    if fmap.shape[-1] * fmap.shape[-2] == 1:
        raise NoAveragePooledEmbedding(
            f"{name} has no average-pooled embedding: its backbone already returns a vector ({tuple(fmap.shape)}; "
            f"e.g. the torchreid bridge's OUTPUT embedding = fc(GAP(map))). Use feature=model, or a backbone that "
            f"returns its feature map (MODEL.BACKBONE.TORCHREID.OUTPUT featuremap)")
    return fmap.mean(dim=(2, 3))


class VariantEmbedder:
    """Builds the variant's model and test transform; :meth:`embed` turns samples into L2-normalised features."""

    def __init__(self, spec: VariantSpec, device: str = "cpu", batch_size: int = 64):
        from ..data.transforms import build_joint_transforms
        from ..video.embed import ReidEmbedder, load_cfg, torchreid_osnet_cfg

        self.spec = spec.check()
        if spec.torchreid_weights:
            cfg = torchreid_osnet_cfg(spec.torchreid_weights, spec.torchreid_arch, device)
            cfg.merge_from_list(list(spec.opts))
        else:
            cfg = load_cfg(spec.config, spec.opts, spec.weights, device)
        cfg.defrost()
        if spec.size:
            cfg.INPUT.SIZE_TEST = [int(spec.size[0]), int(spec.size[1])]
        if spec.letterbox != "config":
            cfg.INPUT.LETTERBOX.ENABLED = spec.letterbox == "on"
            cfg.INPUT.LETTERBOX.PAD_VALUE = [int(v) for v in spec.pad_value]
        cfg.INPUT.FLIP_CANON.ENABLED = spec.flip != "none"
        cfg.INPUT.FLIP_CANON.KEEP = spec.keep
        cfg.INPUT.FLIP_CANON.SOURCE = "orientation" if spec.flip == "known" else "keypoints"
        cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = spec.flip == "keypoints"  # the tool hands the keypoints over
        self.transform = build_joint_transforms(cfg, is_train=False)
        self.cfg = cfg
        self.embedder = ReidEmbedder(cfg, batch_size=batch_size)
        self.model = self.embedder.model
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model_masks = self.embedder.model_masks
        if spec.feature == "gap":  # fail before any image is read
            h, w = int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1])
            with torch.no_grad():
                gap_features(self.model, torch.zeros(1, 3, h, w, device=self.device))

    @property
    def name(self) -> str:
        return self.spec.name

    def prepare(self, samples: Sequence[dict]):
        """Samples (``image`` PIL RGB, ``mask`` uint8 0/255 or None, ``keypoints``, ``orientation_deg``) ->
        ``(images (N, 3, H, W) 0..255, masks (N, 1, H, W) or None, flipped list)``."""
        xs, ms, flips = [], [], []
        for s in samples:
            t = self.transform(dict(s))
            xs.append(t["image"])
            ms.append(t.get("mask"))
            flips.append(bool(t.get("canonical_flip", False)))
        x = torch.stack(xs)
        m = None
        if self.spec.mask != "none":
            if any(v is None for v in ms):
                raise ValueError(f"model {self.name}: mask={self.spec.mask} but some samples have no mask")
            m = torch.stack(ms)
        return x, m, flips

    def _masked(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.spec.fill == "pad":
            pad = torch.tensor(self.spec.pad_value, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return x * m + pad * (1 - m)
        from ..functional.background import remove_background

        return remove_background(x, m, self.spec.fill, pixel_mean=list(self.cfg.MODEL.PIXEL_MEAN))

    @torch.no_grad()
    def embed(self, samples: Sequence[dict]) -> np.ndarray:
        """L2-normalised features ``(N, D)`` of the samples (``last_flips``: which were mirrored)."""
        x, m, self.last_flips = self.prepare(samples)
        outs: List[torch.Tensor] = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].to(self.device)
            mb = None if m is None else m[i:i + self.batch_size].to(self.device)
            inputs = {"images": xb}
            if mb is not None:
                if self.model_masks:
                    inputs["masks"] = mb
                else:
                    inputs["images"] = self._masked(xb, mb)
            if self.spec.feature == "gap":
                f = gap_features(self.model, inputs)
            else:
                f = self.model(inputs)
            outs.append(F.normalize(f.float(), dim=1).cpu())
        return torch.cat(outs).numpy()
