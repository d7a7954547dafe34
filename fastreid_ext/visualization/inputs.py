"""Images for the visualization tools, streamed: a split of a registered dataset or a folder, read batch by batch
through each model's own test transform (``INPUT.SIZE_TEST`` and friends), with the masks a model or the tool
needs. Only paths and labels are listed up front; images are read when their batch is drawn."""
from __future__ import annotations

import os
import re
from typing import Iterator, List, Sequence, Tuple

import torch

__all__ = ["IMAGE_EXTS", "Item", "dataset_items", "folder_items", "model_dataset", "batches", "read_rgb"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
_MARKET = re.compile(r"^(-?\d+)_c(\d+)")

#: ``(path, person id, camera id)`` as in FastReID's datasets
Item = Tuple[str, int, int]


def dataset_items(name: str, cfg, split: str = "query") -> List[Item]:
    """The ``query`` / ``gallery`` (or ``test``: both) items of a registered dataset (``$FASTREID_DATASETS``)."""
    from ..data.build import build_dataset

    data = build_dataset(name, cfg)
    if split == "query":
        return list(data.query)
    if split == "gallery":
        return list(data.gallery)
    if split == "test":
        return list(data.query) + list(data.gallery)
    raise ValueError(f"split must be query, gallery or test, got {split!r}")


def folder_items(folder: str) -> List[Item]:
    """Every image under ``folder`` (recursively, sorted); identity and camera from Market-1501-style names
    (``0001_c1s1_...``), else -1 and 0."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    items: List[Item] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTS):
                m = _MARKET.match(f)
                items.append((os.path.join(root, f), int(m.group(1)) if m else -1, int(m.group(2)) - 1 if m else 0))
    if not items:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {folder}")
    return items


def model_dataset(cfg, items: Sequence[Item], masks: bool = False):
    """A dataset of ``items`` through the model's test transform (``fastreid_ext.data.transforms``), with
    ``masks`` when the model's config loads them (``DATASETS.ANNOTATIONS.LOAD_MASKS``) or ``masks`` is asked for;
    keypoints are not loaded (no model needs them at test time)."""
    from ..data.build import annotation_index
    from ..data.common import AnnotatedDataset
    from ..data.transforms import build_joint_transforms

    a = cfg.DATASETS.ANNOTATIONS
    load_masks = bool(a.LOAD_MASKS or masks)
    return AnnotatedDataset(list(items), build_joint_transforms(cfg, is_train=False), relabel=False,
                            annotations=annotation_index(cfg) if load_masks else None, load_keypoints=False,
                            load_masks=load_masks, on_missing=a.ON_MISSING)


def batches(datasets: Sequence, batch_size: int = 32, num_workers: int = 0) -> Iterator[List[dict]]:
    """The same images through several datasets (one per model), in lockstep: yields one batch per dataset."""
    from fastreid.data.build import fast_batch_collator

    loaders = [torch.utils.data.DataLoader(d, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                           collate_fn=fast_batch_collator) for d in datasets]
    yield from (list(bs) for bs in zip(*loaders))


def read_rgb(path: str):
    """An image file as (H, W, 3) uint8 RGB."""
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img[..., ::-1].copy()
