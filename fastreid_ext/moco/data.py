"""MoCo v2's training input: two independent augmentations of every (unlabelled) crop.

The augmentation of Chen et al., "Improved baselines with momentum contrastive learning", 2020 (after SimCLR):
random resized crop (area 0.2..1), colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8, grey scale 0.2,
Gaussian blur (sigma 0.1..2) 0.5, horizontal flip 0.5; ``MODEL.MOCO.AUG`` holds each value, plus random erasing,
which LUPerson's variants add (Fu et al., "Unsupervised pre-training for person re-identification", CVPR 2021).
Our input keys apply first when set: ``INPUT.FLIP_CANON`` (then ``MODEL.MOCO.AUG.FLIP_PROB`` must be 0) and
``INPUT.LETTERBOX`` (the crop is taken from the letterboxed image).

Labels are ignored: every item's ``targets`` is 0, the index of the positive key in the InfoNCE logits.
"""
from __future__ import annotations

import random

from PIL import ImageFilter

from ..data import build as data_build
from ..data.common import AnnotatedDataset
from ..data.transforms import (ImageOnly, JointCompose, JointRandomHorizontalFlip, JointRandomResizedCrop,
                               JointToTensor, input_canonicalisation, resize_transform)

__all__ = ["GaussianBlur", "build_moco_transform", "TwoViewMoCoDataset", "build_moco_train_set"]


class GaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from ``sigma`` (SimCLR / MoCo v2)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self):
        return f"GaussianBlur(sigma={self.sigma})"


def build_moco_transform(cfg) -> JointCompose:
    """One view's augmentation (module docstring), ending in FastReID's 0..255 float tensor."""
    import torchvision.transforms as T

    a = cfg.MODEL.MOCO.AUG
    res = input_canonicalisation(cfg, is_train=False)  # validates keypoints; random flips are MoCo's own
    if res and a.FLIP_PROB > 0:
        raise ValueError("INPUT.FLIP_CANON.ENABLED with MoCo's random flips (MODEL.MOCO.AUG.FLIP_PROB > 0) "
                         "contradict each other: set MODEL.MOCO.AUG.FLIP_PROB 0")
    size = cfg.INPUT.SIZE_TRAIN
    if getattr(cfg.INPUT, "LETTERBOX", None) is not None and cfg.INPUT.LETTERBOX.ENABLED:
        res.append(resize_transform(cfg, size))
    res.append(JointRandomResizedCrop(size, tuple(a.CROP_SCALE), tuple(a.CROP_RATIO)))
    if a.CJ_PROB > 0:
        s = a.CJ_STRENGTH
        res.append(ImageOnly(T.RandomApply([T.ColorJitter(s, s, s, a.CJ_HUE)], p=a.CJ_PROB)))
    if a.GRAY_PROB > 0:
        res.append(ImageOnly(T.RandomGrayscale(p=a.GRAY_PROB)))
    if a.BLUR_PROB > 0:
        res.append(ImageOnly(T.RandomApply([GaussianBlur(a.BLUR_SIGMA)], p=a.BLUR_PROB)))
    if a.FLIP_PROB > 0:
        res.append(JointRandomHorizontalFlip(a.FLIP_PROB))
    res.append(JointToTensor())
    if a.REA_PROB > 0:
        res.append(ImageOnly(T.RandomErasing(p=a.REA_PROB, value=cfg.INPUT.REA.VALUE)))
    return JointCompose(res)


class TwoViewMoCoDataset(AnnotatedDataset):
    """Items ``{"images": view 1, "images_2": view 2, "targets": 0, "camids", "img_paths"}``: the image (and its
    keypoints / mask when loaded, for flip canonicalisation) read once, ``view_transform`` drawn twice."""

    def __init__(self, img_items, view_transform, **kwargs):
        super().__init__(img_items, None, relabel=True, **kwargs)
        self.view_transform = view_transform

    def __getitem__(self, index):
        item = super().__getitem__(index)  # no transform: the PIL image, keypoints / mask as loaded
        sample = {"image": item["images"], "keypoints": item.get("keypoints"), "mask": item.get("masks")}
        v1 = self.view_transform(dict(sample))
        v2 = self.view_transform(dict(sample))
        return {"images": v1["image"], "images_2": v2["image"], "targets": 0, "camids": item["camids"],
                "img_paths": item["img_paths"]}


def build_moco_train_set(cfg) -> TwoViewMoCoDataset:
    """The training images of ``cfg.DATASETS.NAMES`` (labels ignored) as a :class:`TwoViewMoCoDataset`."""
    from fastreid.utils import comm

    items = []
    for d in cfg.DATASETS.NAMES:
        data = data_build.build_dataset(d, cfg, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    a = cfg.DATASETS.ANNOTATIONS
    return TwoViewMoCoDataset(items, build_moco_transform(cfg),
                              annotations=data_build.annotation_index(cfg) if a.LOAD_KEYPOINTS else None,
                              load_keypoints=a.LOAD_KEYPOINTS, load_masks=False, on_missing=a.ON_MISSING)
