"""A FastReID ``CommDataset`` that also yields per-image keypoints and person masks."""
from __future__ import annotations

import logging
from typing import Optional

import torch
from fastreid.data.common import CommDataset
from fastreid.data.data_utils import read_image

from ..functional.keypoints import NUM_KEYPOINTS
from .annotations import AnnotationError, AnnotationIndex

logger = logging.getLogger(__name__)


def read_image_checked(path, format="RGB"):
    """FastReID's ``read_image`` with an error that names the file."""
    try:
        return read_image(path, format)
    except Exception as e:  # PIL raises many types (OSError, UnidentifiedImageError, ...)
        raise RuntimeError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


class AnnotatedDataset(CommDataset):
    """``CommDataset`` with joint transforms and optional ``keypoints`` / ``masks`` outputs.

    Args:
        img_items: FastReID items ``(path, pid, camid, ...)``.
        transform: a :class:`~fastreid_ext.data.transforms.JointCompose` (sample dict -> sample dict).
        annotations: where keypoints/masks are looked up; required if either is loaded.
        load_keypoints / load_masks: add ``"keypoints"`` (K x 3: x, y, score in input pixels) and
            ``"masks"`` (1 x H x W in [0, 1]) to every item.
        on_missing: ``"error"`` raises :class:`AnnotationError` naming the image; ``"empty"`` logs a
            warning once per image and uses zero-score keypoints / an all-ones mask (unmasked image).
        num_keypoints: K for empty keypoints.
    """

    def __init__(self, img_items, transform=None, relabel=True, annotations: Optional[AnnotationIndex] = None,
                 load_keypoints=False, load_masks=False, on_missing="error", num_keypoints=NUM_KEYPOINTS):
        super().__init__(img_items, transform, relabel)
        if on_missing not in ("error", "empty"):
            raise ValueError(f"DATASETS.ANNOTATIONS.ON_MISSING must be 'error' or 'empty', got {on_missing!r}")
        if (load_keypoints or load_masks) and annotations is None:
            annotations = AnnotationIndex()
        self.annotations = annotations
        self.load_keypoints = load_keypoints
        self.load_masks = load_masks
        self.on_missing = on_missing
        self.num_keypoints = num_keypoints
        self._warned = set()

    def _missing(self, what, path):
        if self.on_missing == "error":
            raise AnnotationError(
                f"no {what} for image {path}. Create them (tools/extract_keypoints.py, tools/extract_masks.py "
                f"or tools/make_synthetic.py), point DATASETS.ANNOTATIONS at them, or set "
                f"DATASETS.ANNOTATIONS.ON_MISSING empty to go on without (keypoint scores 0, image unmasked).")
        if (what, path) not in self._warned:
            self._warned.add((what, path))
            logger.warning("no %s for %s: %s (ON_MISSING=empty)", what, path,
                           "image used unmasked (full mask)" if what == "mask" else "keypoints with score 0")

    def __getitem__(self, index):
        item = self.img_items[index]
        path, pid, camid = item[0], item[1], item[2]
        img = read_image_checked(path)
        sample = {"image": img, "keypoints": None, "mask": None}
        if self.load_keypoints:
            kps = self.annotations.keypoints(path)
            if kps is None:
                self._missing("keypoints", path)
                kps = torch.zeros(self.num_keypoints, 3).numpy()
            elif kps.shape[0] != self.num_keypoints:
                raise AnnotationError(f"{path}: {kps.shape[0]} keypoints, expected {self.num_keypoints}")
            sample["keypoints"] = kps
        if self.load_masks:
            m = self.annotations.mask(path)
            if m is None:
                self._missing("mask", path)
                import numpy as np

                m = np.full((img.size[1], img.size[0]), 255, np.uint8)
            elif m.shape != (img.size[1], img.size[0]):
                raise AnnotationError(f"mask of {path} is {m.shape[1]}x{m.shape[0]}, image is "
                                      f"{img.size[0]}x{img.size[1]}")
            sample["mask"] = m
        if self.transform is not None:
            sample = self.transform(sample)
        if self.relabel:
            pid = self.pid_dict[pid]
            camid = self.cam_dict[camid]
        out = {"images": sample["image"], "targets": pid, "camids": camid, "img_paths": path}
        if self.load_keypoints:
            out["keypoints"] = sample["keypoints"]
        if self.load_masks:
            out["masks"] = sample["mask"]
        return out
