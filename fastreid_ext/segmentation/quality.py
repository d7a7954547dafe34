"""Agreement of segmenter masks with reference masks (e.g. SynthPed's exact person masks): intersection over union
of the person regions, and how many images the segmenter found no person in."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Optional

import numpy as np

from ..data.annotations import read_mask

__all__ = ["mask_iou", "mask_agreement"]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the person pixels (``> 0``) of two masks of the same size; 1.0 when both are empty."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"masks of different sizes: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mask_agreement(images: Iterable[str], mask_path: Callable[[str], Optional[Path]],
                   reference_path: Callable[[str], Optional[Path]]) -> Dict[str, float]:
    """Over ``images``: ``iou`` (mean IoU of the mask ``mask_path(image)`` with ``reference_path(image)``, over the
    images that have both; NaN if none), ``no_mask`` (fraction of the images with a reference but no mask: the
    segmenter found no person), ``images`` (images with a reference)."""
    ious, n, missing = [], 0, 0
    for img in images:
        ref = reference_path(img)
        if ref is None or not Path(ref).is_file():
            continue
        n += 1
        m = mask_path(img)
        if m is None or not Path(m).is_file():
            missing += 1
            continue
        ious.append(mask_iou(read_mask(m), read_mask(ref)))
    return {"iou": float(np.mean(ious)) if ious else float("nan"), "no_mask": missing / n if n else float("nan"),
            "images": float(n)}
