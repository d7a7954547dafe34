"""JointIBN's measurement for the experiment runner (:mod:`fastreid_ext.experiments.measure`):

* ``segmenter_masks``: the person masks a run with segmenter masks used (``DATASETS.ANNOTATIONS.MASK_ROOTS``, found
  as the loader finds them) against the SynthPed datasets' exact masks (their ``masks/``), for the background
  removal of Zhang & Wu, "Person re-identification based on multiple deep learning methods" (Sec. 3.1): mean IoU
  over the images with a mask and the fraction of images without one (no person found), per test set
  (``masks/<test set>/IoU``, ``masks/<test set>/no_person``: its query + gallery images) and over the training
  images of the train sets (``masks/train/...``). Needs no weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from ..experiments.measure import register_measurement


@register_measurement("segmenter_masks")
def segmenter_masks(cfg, weights: str) -> Dict[str, float]:
    from ..data.annotations import MASKS_DIRNAME
    from ..data.build import annotation_index, build_dataset
    from ..experiments.runner import synthped_dirs
    from ..segmentation import mask_path_for
    from ..segmentation.quality import mask_agreement

    index = annotation_index(cfg)
    out: Dict[str, float] = {}
    train_paths, train_refs = [], {}
    for name, _, is_train in synthped_dirs(cfg):
        data = build_dataset(name, cfg)
        root = Path(data.data_dir)
        items = data.train if is_train else list(data.query) + list(data.gallery)
        paths = sorted({it[0] for it in items})
        refs = {p: mask_path_for(p, root, root / MASKS_DIRNAME) for p in paths}
        if is_train:
            train_paths += paths
            train_refs.update(refs)
            continue
        q = mask_agreement(paths, index.mask_path, refs.get)
        out[f"masks/{name}/IoU"], out[f"masks/{name}/no_person"] = q["iou"], q["no_mask"]
    if train_paths:
        q = mask_agreement(train_paths, index.mask_path, train_refs.get)
        out["masks/train/IoU"], out["masks/train/no_person"] = q["iou"], q["no_mask"]
    return out
