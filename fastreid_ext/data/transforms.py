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


def build_joint_transforms(cfg, is_train: bool = True) -> JointCompose:
    """The joint counterpart of ``fastreid.data.transforms.build_transforms`` (same config keys)."""
    import torchvision.transforms as T

    res: List = []
    if is_train:
        if cfg.INPUT.AUTOAUG.ENABLED or cfg.INPUT.AUGMIX.ENABLED or cfg.INPUT.AFFINE.ENABLED:
            raise NotImplementedError(
                "INPUT.AUTOAUG / AUGMIX / AFFINE move pixels in ways that keypoints and masks cannot "
                "follow; disable them when DATASETS.ANNOTATIONS loads keypoints or masks.")
        size = cfg.INPUT.SIZE_TRAIN
        if size[0] > 0:
            res.append(JointResize(size))
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
            res.append(JointResize(size))
        if cfg.INPUT.CROP.ENABLED:
            res.append(JointCenterCrop(cfg.INPUT.CROP.SIZE))
        res.append(JointToTensor())
    return JointCompose(res)
