"""How good are RBNet's intermediate maps? Keypoint and mask quality against exact annotations.

RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024) trains a reverse
backbone to predict the 17 COCO keypoint heatmaps of a pose model (Sec. 1.1, ``L_MSE`` of Eq. 3) and builds
from it a mask ``M(x)`` that multiplies the image before backbone 2 (Sec. 1.1). The paper only shows these
maps (Sec. 2.2.2, Figs. 3-4; :mod:`fastreid_ext.rbnet.visualize` draws them); this module measures them on a
dataset with keypoints and person masks (SynthPed ships exact ones):

* ``kpt_err``: mean Euclidean distance, in input pixels, between the argmax of each predicted heatmap and the
  annotated keypoint, over the keypoints whose score is at least ``MODEL.RBNET.HEATMAP.SCORE_THRESH``
  (:func:`fastreid_ext.functional.heatmaps.keypoint_errors`);
* ``mask_person`` / ``mask_bg``: the mean of ``M(x)`` over the annotated person pixels and over the background
  pixels (:func:`fastreid_ext.rbnet.masking.mask_person_background_means`): a mask that finds the person has
  ``mask_person`` well above ``mask_bg``;
* ``images``: how many images were measured.

:func:`map_quality` builds the test loader of a config; :func:`map_quality_on_batches` takes any batches.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch

__all__ = ["map_quality", "map_quality_on_batches"]


@torch.no_grad()
def map_quality_on_batches(model, batches: Iterable[dict], score_thresh: float = 0.3,
                           max_images: int = 0) -> Dict[str, float]:
    """Keypoint error and mask means of ``model`` (an ``RBNet``: its ``inference_maps``) over ``batches``.

    Each batch is a dict with ``images`` (B, 3, H, W, 0..255), ``keypoints`` (B, 17, 3: x, y, score in input
    pixels) and ``masks`` (B, 1, H, W, person = 1), as our loaders give with
    ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS`` and ``LOAD_MASKS``. ``max_images > 0`` stops after the batch that
    reaches it. Returns ``{"kpt_err", "mask_person", "mask_bg", "images"}`` (``nan`` where nothing was
    measured)."""
    from ..functional.heatmaps import keypoint_errors
    from .masking import mask_person_background_means

    thr = float(score_thresh)
    err_sum, err_n, seen = 0.0, 0, 0
    sums = counts = torch.zeros(2, dtype=torch.float64)
    for batch in batches:
        for key in ("images", "keypoints", "masks"):
            if key not in batch:
                raise KeyError(f"map quality needs batched {key!r} (images, keypoints and person masks); got "
                               f"{sorted(batch)}")
        maps = model.inference_maps(batch["images"])
        err, valid = keypoint_errors(maps["heatmaps"], batch["keypoints"], batch["images"].shape[-2:], thr)
        err_sum += float(err[valid].sum())
        err_n += int(valid.sum())
        s, n = mask_person_background_means(maps["mask"], batch["masks"])
        sums, counts = sums + s, counts + n
        seen += int(batch["images"].shape[0])
        if max_images and seen >= max_images:
            break
    nan = float("nan")
    means = [float(s / c) if c > 0 else nan for s, c in zip(sums.tolist(), counts.tolist())]
    return {"kpt_err": err_sum / err_n if err_n else nan, "mask_person": means[0], "mask_bg": means[1],
            "images": seen}


def map_quality(model, cfg, max_images: int = 0, dataset: Optional[str] = None) -> Dict[str, float]:
    """:func:`map_quality_on_batches` over the test images (query + gallery) of ``dataset`` (default: the first
    of ``cfg.DATASETS.TESTS``), loaded with their keypoints and person masks; the keypoint score threshold is
    ``cfg.MODEL.RBNET.HEATMAP.SCORE_THRESH``."""
    from ..data.build import build_test_loader

    c = cfg.clone()
    c.defrost()
    c.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = True
    c.DATASETS.ANNOTATIONS.LOAD_MASKS = True
    loader, _ = build_test_loader(c, dataset or c.DATASETS.TESTS[0])
    return map_quality_on_batches(model, loader, cfg.MODEL.RBNET.HEATMAP.SCORE_THRESH, max_images)
