"""Augmentations that move keypoints and masks together with the image (no FastReID import).

A sample is a dict ``{"image": PIL.Image (RGB), "keypoints": float32 (K, 3) or None, "mask": uint8 HxW
or None}``. Geometric ops (resize, crop, pad, flip) transform all three consistently; photometric ops
(colour jitter, random erasing) touch the image only. Keypoints use pixel-index coordinates (pixel
centres at integers): a resize maps ``x -> (x + 0.5) * sx - 0.5`` and a flip ``x -> W - 1 - x`` and swaps
left/right keypoints. Keypoints that leave the image get score 0.

:func:`build_joint_transforms` mirrors ``fastreid.data.transforms.build_transforms`` key for key, so a
config behaves the same with or without annotations.
"""
from __future__ import annotations

import math
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..functional.keypoints import COCO17_FLIP_PAIRS, flip_permutation

BICUBIC = Image.BICUBIC
NEAREST = Image.NEAREST


def _size_hw(size) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = list(size)
    return (size[0], size[0]) if len(size) == 1 else (int(size[0]), int(size[1]))


def _invalidate_outside(kps: np.ndarray, w: int, h: int) -> np.ndarray:
    out = (kps[:, 0] < -0.5) | (kps[:, 0] > w - 0.5) | (kps[:, 1] < -0.5) | (kps[:, 1] > h - 0.5)
    kps[out, 2] = 0.0
    return kps


def crop_resize(sample: dict, box: Tuple[int, int, int, int], size_hw: Tuple[int, int]) -> dict:
    """Crop ``box = (top, left, height, width)`` (may reach outside: zero padded) and resize."""
    top, left, bh, bw = box
    oh, ow = size_hw
    img = sample["image"]
    img = img.crop((left, top, left + bw, top + bh)).resize((ow, oh), BICUBIC)
    out = dict(sample, image=img)
    if sample.get("mask") is not None:
        m = Image.fromarray(sample["mask"]).crop((left, top, left + bw, top + bh)).resize((ow, oh), NEAREST)
        out["mask"] = np.asarray(m, dtype=np.uint8).copy()
    if sample.get("keypoints") is not None:
        k = sample["keypoints"].astype(np.float32).copy()
        sx, sy = ow / bw, oh / bh
        k[:, 0] = (k[:, 0] - left + 0.5) * sx - 0.5
        k[:, 1] = (k[:, 1] - top + 0.5) * sy - 0.5
        out["keypoints"] = _invalidate_outside(k, ow, oh)
    return out


class JointResize:
    def __init__(self, size):
        self.size = _size_hw(size)

    def __call__(self, sample):
        w, h = sample["image"].size
        return crop_resize(sample, (0, 0, h, w), self.size)


class JointRandomResizedCrop:
    """torchvision's RandomResizedCrop box sampling applied to image, mask and keypoints."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size = _size_hw(size)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def get_params(self, w: int, h: int):
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            ar = math.exp(random.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * ar)))
            ch = int(round(math.sqrt(target / ar)))
            if 0 < cw <= w and 0 < ch <= h:
                return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
        return 0, 0, h, w

    def __call__(self, sample):
        w, h = sample["image"].size
        return crop_resize(sample, self.get_params(w, h), self.size)


class JointPadRandomCrop:
    """FastReID's ``Pad(p) + RandomCrop(size)`` (constant padding with zeros)."""

    def __init__(self, padding: int, size):
        self.padding = int(padding)
        self.size = _size_hw(size)

    def __call__(self, sample):
        w, h = sample["image"].size
        p = self.padding
        oh, ow = self.size
        top = random.randint(-p, h + p - oh)
        left = random.randint(-p, w + p - ow)
        return crop_resize(sample, (top, left, oh, ow), self.size)


class JointCenterCrop:
    def __init__(self, size):
        self.size = _size_hw(size)

    def __call__(self, sample):
        w, h = sample["image"].size
        oh, ow = self.size
        return crop_resize(sample, (int(round((h - oh) / 2)), int(round((w - ow) / 2)), oh, ow), self.size)


class JointRandomHorizontalFlip:
    def __init__(self, p: float = 0.5, flip_pairs: Sequence[Tuple[int, int]] = COCO17_FLIP_PAIRS):
        self.p = p
        self.flip_pairs = flip_pairs

    def __call__(self, sample):
        if random.random() >= self.p:
            return sample
        return hflip(sample, self.flip_pairs)


def hflip(sample: dict, flip_pairs: Sequence[Tuple[int, int]] = COCO17_FLIP_PAIRS) -> dict:
    """Mirror image and mask; mirror keypoints and swap left/right ones."""
    img = sample["image"]
    w = img.size[0]
    out = dict(sample, image=img.transpose(Image.FLIP_LEFT_RIGHT))
    if sample.get("mask") is not None:
        out["mask"] = np.ascontiguousarray(sample["mask"][:, ::-1])
    if sample.get("keypoints") is not None:
        k = sample["keypoints"].astype(np.float32).copy()
        k[:, 0] = w - 1 - k[:, 0]
        out["keypoints"] = k[flip_permutation(len(k), flip_pairs)]
    return out


# ------------------------------------------------------------------------------------------------------------
# letterbox resize and flip canonicalisation (Yoshida et al., "Evaluation of metric learning model for Person
# Re-identification", Sec. 3: crops resized keeping the aspect ratio to 128 x 384 and padded with RGB (128, 128,
# 128); Sec. 5(3): horizontal flips to restrict the orientation to 0..180 degrees)
# ------------------------------------------------------------------------------------------------------------
def letterbox_geometry(width: int, height: int, out_w: int, out_h: int) -> Tuple[int, int, int, int]:
    """``(new_w, new_h, left, top)``: an image of ``width x height`` scaled by ``min(out_w / width, out_h /
    height)`` (aspect ratio kept; the scaled size rounded, at least 1 pixel) and centred in ``out_w x out_h``."""
    if min(width, height, out_w, out_h) < 1:
        raise ValueError(f"letterbox needs positive sizes, got {width}x{height} -> {out_w}x{out_h}")
    scale = min(out_w / width, out_h / height)
    nw = min(out_w, max(1, int(round(width * scale))))
    nh = min(out_h, max(1, int(round(height * scale))))
    return nw, nh, (out_w - nw) // 2, (out_h - nh) // 2


class JointLetterbox:
    """Aspect-preserving resize into ``size`` (H, W), the rest filled with ``pad_value`` (RGB; the mask with 0).
    Keypoints follow (pixel centres at integers)."""

    def __init__(self, size, pad_value=(128, 128, 128)):
        self.size = _size_hw(size)
        pv = [int(v) for v in (pad_value if isinstance(pad_value, (list, tuple)) else [pad_value] * 3)]
        if len(pv) == 1:
            pv = pv * 3
        if len(pv) != 3 or not all(0 <= v <= 255 for v in pv):
            raise ValueError(f"INPUT.LETTERBOX.PAD_VALUE must be 1 or 3 values in 0..255, got {pad_value}")
        self.pad_value = tuple(pv)

    def __call__(self, sample):
        img = sample["image"]
        w, h = img.size
        oh, ow = self.size
        nw, nh, left, top = letterbox_geometry(w, h, ow, oh)
        canvas = Image.new("RGB", (ow, oh), self.pad_value)
        canvas.paste(img.convert("RGB").resize((nw, nh), BICUBIC), (left, top))
        out = dict(sample, image=canvas)
        if sample.get("mask") is not None:
            m = np.zeros((oh, ow), np.uint8)
            m[top:top + nh, left:left + nw] = np.asarray(Image.fromarray(sample["mask"]).resize((nw, nh), NEAREST))
            out["mask"] = m
        if sample.get("keypoints") is not None:
            k = sample["keypoints"].astype(np.float32).copy()
            k[:, 0] = (k[:, 0] + 0.5) * (nw / w) - 0.5 + left
            k[:, 1] = (k[:, 1] + 0.5) * (nh / h) - 0.5 + top
            out["keypoints"] = _invalidate_outside(k, ow, oh)
        return out

    def __repr__(self):
        return f"JointLetterbox(size={self.size}, pad_value={self.pad_value})"


_NOSE, _EARS, _SHOULDERS, _HIPS = 0, (3, 4), (5, 6), (11, 12)
#: horizontal nose-to-ear distance of a person in profile over the shoulder-to-hip length (both ~0.2 of a
#: body-height unit apart in SynthPed's body model; about 10 cm over 50 cm on people)
NOSE_OFFSET_PER_TORSO = 0.2


def facing_score(keypoints, min_score: float = 0.3) -> float:
    """Signed estimate of ``sin(orientation)`` from COCO-17 keypoints: > 0 facing image right, < 0 facing image
    left, ~0 facing the camera or away (or undetermined: no visible nose, no ears / shoulders to compare with).

    The nose's horizontal offset from the ears' midpoint (the shoulders' when no ear is visible), in units of
    :data:`NOSE_OFFSET_PER_TORSO` times the shoulder-to-hip length, clipped to [-1, 1]. Keypoints with a score
    below ``min_score`` are ignored."""
    k = np.asarray(keypoints, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] <= max(_HIPS) or k.shape[1] < 3:
        raise ValueError(f"facing_score needs COCO-17 keypoints (17, 3), got {k.shape}")
    vis = k[:, 2] >= min_score
    if not vis[_NOSE]:
        return 0.0
    ref = [i for i in _EARS if vis[i]] or [i for i in _SHOULDERS if vis[i]]
    if not ref:
        return 0.0
    sh = [i for i in _SHOULDERS if vis[i]]
    hp = [i for i in _HIPS if vis[i]]
    if sh and hp:
        torso = float(np.linalg.norm(k[sh, :2].mean(0) - k[hp, :2].mean(0)))
    else:  # a torso is about a third of the visible height
        torso = float(np.ptp(k[vis, 1])) / 3.0
    if torso <= 1e-6:
        return 0.0
    off = float(k[_NOSE, 0] - k[ref, 0].mean())
    return float(np.clip(off / (NOSE_OFFSET_PER_TORSO * torso), -1.0, 1.0))


FLIP_KEEP = ("right", "left")
FLIP_SOURCES = ("auto", "keypoints", "orientation")


def flip_decision(orientation_deg: Optional[float] = None, keypoints=None, keep: str = "right",
                  source: str = "auto", threshold: float = 0.35, min_score: float = 0.3) -> bool:
    """Whether to mirror a person so that the orientation falls in the kept half.

    Orientation: degrees the person is turned from facing the camera; 90 = facing image right (the camera sees
    the person's right side), 180 = back to the camera, 270 = facing image left. ``keep="right"`` keeps 0..180
    (the paper's proposal) and flips orientations strictly between 180 and 360; ``"left"`` the mirror. A known
    ``orientation_deg`` decides exactly (``source`` "auto" or "orientation"); else the keypoints'
    :func:`facing_score` does, people with ``|score| <= threshold`` (facing the camera or away) are not flipped."""
    if keep not in FLIP_KEEP:
        raise ValueError(f"INPUT.FLIP_CANON.KEEP must be one of {FLIP_KEEP}, got {keep!r}")
    if source not in FLIP_SOURCES:
        raise ValueError(f"INPUT.FLIP_CANON.SOURCE must be one of {FLIP_SOURCES}, got {source!r}")
    sign = 1.0 if keep == "right" else -1.0
    if orientation_deg is not None and source in ("auto", "orientation"):
        o = float(orientation_deg) % 360.0
        return (180.0 < o < 360.0) if sign > 0 else (0.0 < o < 180.0)
    if source == "orientation":
        raise ValueError("flip canonicalisation from the orientation: the sample has no orientation_deg")
    if keypoints is None:
        raise ValueError("flip canonicalisation needs keypoints (DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True) or a known "
                         "orientation")
    return sign * facing_score(keypoints, min_score) < -float(threshold)


class JointFlipCanonical:
    """Mirror (image, mask, keypoints) when :func:`flip_decision` says so; the sample's ``orientation_deg`` (when
    given) is mirrored too, and ``canonical_flip`` records the decision."""

    def __init__(self, keep: str = "right", source: str = "auto", threshold: float = 0.35, min_score: float = 0.3,
                 flip_pairs: Sequence[Tuple[int, int]] = COCO17_FLIP_PAIRS):
        if keep not in FLIP_KEEP or source not in FLIP_SOURCES:
            raise ValueError(f"flip canonicalisation: KEEP must be one of {FLIP_KEEP} (got {keep!r}), SOURCE one of "
                             f"{FLIP_SOURCES} (got {source!r})")
        self.keep, self.source, self.threshold, self.min_score = keep, source, float(threshold), float(min_score)
        self.flip_pairs = flip_pairs

    def __call__(self, sample):
        flip = flip_decision(sample.get("orientation_deg"), sample.get("keypoints"), self.keep, self.source,
                             self.threshold, self.min_score)
        out = hflip(sample, self.flip_pairs) if flip else dict(sample)
        if flip and sample.get("orientation_deg") is not None:
            out["orientation_deg"] = (360.0 - float(sample["orientation_deg"])) % 360.0
        out["canonical_flip"] = flip
        return out

    def __repr__(self):
        return f"JointFlipCanonical(keep={self.keep!r}, source={self.source!r}, threshold={self.threshold})"


class ImageOnly:
    """Wraps a PIL->PIL (or tensor->tensor) torchvision transform so it touches the image only."""

    def __init__(self, t):
        self.t = t

    def __call__(self, sample):
        return dict(sample, image=self.t(sample["image"]))

    def __repr__(self):
        return f"ImageOnly({self.t!r})"


class JointToTensor:
    """Image to float CHW in [0, 255] (FastReID's convention), mask to float 1xHxW in [0, 1],
    keypoints to float (K, 3)."""

    def __call__(self, sample):
        img = np.asarray(sample["image"].convert("RGB"), dtype=np.float32)
        out = dict(sample, image=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
        if sample.get("mask") is not None:
            out["mask"] = torch.from_numpy(sample["mask"].astype(np.float32) / 255.0)[None]
        if sample.get("keypoints") is not None:
            out["keypoints"] = torch.from_numpy(sample["keypoints"].astype(np.float32))
        return out


class JointCompose:
    def __init__(self, transforms: List):
        self.transforms = transforms

    def __call__(self, sample):
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self):
        return "JointCompose(\n  " + ",\n  ".join(repr(t) for t in self.transforms) + "\n)"


def resize_transform(cfg, size):
    """``INPUT.LETTERBOX``: the aspect-preserving :class:`JointLetterbox` (pad ``PAD_VALUE``), else FastReID's
    plain resize (:class:`JointResize`)."""
    lb = getattr(cfg.INPUT, "LETTERBOX", None)
    if lb is not None and lb.ENABLED:
        return JointLetterbox(size, lb.PAD_VALUE)
    return JointResize(size)


def input_canonicalisation(cfg, is_train: bool) -> List:
    """``[JointFlipCanonical]`` when ``INPUT.FLIP_CANON.ENABLED`` (train and test, before any other transform),
    else ``[]``. A loader has no known orientation: it needs keypoints (``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS``);
    random flips (``INPUT.FLIP.ENABLED``) would undo it in training."""
    fc = getattr(cfg.INPUT, "FLIP_CANON", None)
    if fc is None or not fc.ENABLED:
        return []
    if fc.SOURCE != "orientation" and not cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS:
        raise ValueError("INPUT.FLIP_CANON decides the facing direction from keypoints: set "
                         "DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True (SynthPed ships exact keypoints; "
                         "tools/extract_keypoints.py makes them for other datasets)")
    if is_train and cfg.INPUT.FLIP.ENABLED:
        raise ValueError("INPUT.FLIP_CANON.ENABLED (people mirrored to one facing direction) and INPUT.FLIP.ENABLED "
                         "(random mirroring) contradict each other: set INPUT.FLIP.ENABLED False")
    return [JointFlipCanonical(fc.KEEP, fc.SOURCE, fc.THRESHOLD, fc.MIN_SCORE)]


def build_joint_transforms(cfg, is_train: bool = True) -> JointCompose:
    """The joint counterpart of ``fastreid.data.transforms.build_transforms`` (same config keys)."""
    import torchvision.transforms as T

    res: List = input_canonicalisation(cfg, is_train)
    if is_train:
        if cfg.INPUT.AUTOAUG.ENABLED or cfg.INPUT.AUGMIX.ENABLED or cfg.INPUT.AFFINE.ENABLED:
            raise NotImplementedError(
                "INPUT.AUTOAUG / AUGMIX / AFFINE move pixels in ways that keypoints and masks cannot "
                "follow; disable them when DATASETS.ANNOTATIONS loads keypoints or masks.")
        size = cfg.INPUT.SIZE_TRAIN
        if size[0] > 0:
            res.append(resize_transform(cfg, size))
        if cfg.INPUT.CROP.ENABLED:
            res.append(JointRandomResizedCrop(cfg.INPUT.CROP.SIZE, cfg.INPUT.CROP.SCALE, cfg.INPUT.CROP.RATIO))
        if cfg.INPUT.PADDING.ENABLED:
            if cfg.INPUT.PADDING.MODE != "constant":
                raise NotImplementedError("joint transforms support INPUT.PADDING.MODE 'constant' only")
            res.append(JointPadRandomCrop(cfg.INPUT.PADDING.SIZE, size))
        if cfg.INPUT.FLIP.ENABLED:
            res.append(JointRandomHorizontalFlip(cfg.INPUT.FLIP.PROB))
        if cfg.INPUT.CJ.ENABLED:
            cj = cfg.INPUT.CJ
            res.append(ImageOnly(T.RandomApply(
                [T.ColorJitter(cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION, cj.HUE)], p=cj.PROB)))
        res.append(JointToTensor())
        if cfg.INPUT.REA.ENABLED:
            res.append(ImageOnly(T.RandomErasing(p=cfg.INPUT.REA.PROB, value=cfg.INPUT.REA.VALUE)))
        if cfg.INPUT.RPT.ENABLED:
            from fastreid.data.transforms.transforms import RandomPatch

            res.append(ImageOnly(RandomPatch(prob_happen=cfg.INPUT.RPT.PROB)))
    else:
        size = cfg.INPUT.SIZE_TEST
        if size[0] > 0:
            res.append(resize_transform(cfg, size))
        if cfg.INPUT.CROP.ENABLED:
            res.append(JointCenterCrop(cfg.INPUT.CROP.SIZE))
        res.append(JointToTensor())
    return JointCompose(res)
