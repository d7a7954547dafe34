"""A dataset that yields two independently augmented views of every image (MMT's "mutual" input).

Every item is the :class:`~fastreid_ext.data.common.AnnotatedDataset` item of the first view (``images``,
``targets``, ``camids``, ``img_paths`` and, when loaded, ``keypoints`` / ``masks``) plus the second view's
``images_2`` (and ``keypoints_2`` / ``masks_2``): the same image, keypoints and mask through the same
random joint transforms (:mod:`fastreid_ext.data.transforms`) drawn twice.
"""
from __future__ import annotations

from ..data.common import AnnotatedDataset

__all__ = ["TwoViewDataset", "SECOND_VIEW_KEYS", "view"]

#: keys of a batch that belong to one view (the second view carries them with a ``_2`` suffix)
SECOND_VIEW_KEYS = ("images", "keypoints", "masks", "heatmaps")


class TwoViewDataset(AnnotatedDataset):
    """:class:`AnnotatedDataset` whose items carry a second augmented view (``images_2``, ...)."""

    def __getitem__(self, index):
        first = super().__getitem__(index)
        second = super().__getitem__(index)  # new random draws of the same joint transforms
        for k in SECOND_VIEW_KEYS:
            if k in second:
                first[f"{k}_2"] = second[k]
        return first


def view(batch: dict, i: int) -> dict:
    """The batch of view ``i`` (1 or 2): view 2's ``images_2`` etc. renamed to ``images`` etc.; a batch
    without a second view gives the first view for both."""
    if i == 1 or "images_2" not in batch:
        return {k: v for k, v in batch.items() if not k.endswith("_2")}
    out = {k: v for k, v in batch.items() if not k.endswith("_2") and k not in SECOND_VIEW_KEYS}
    for k in SECOND_VIEW_KEYS:
        if f"{k}_2" in batch:
            out[k] = batch[f"{k}_2"]
    return out
