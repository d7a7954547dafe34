"""Soft masks for RBNet (plain torch, no FastReID import).

``M(x)`` in the paper (Eq. 1/2) is a soft mask in [0, 1] multiplied with the image, ``x * M(x)``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["REDUCTIONS", "combine_part_masks", "upsample_mask", "apply_mask", "mask_person_background_means"]

#: how part masks become one mask (:func:`combine_part_masks`)
REDUCTIONS = ("max", "sum", "mean")


def combine_part_masks(parts: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """``(B, P, H, W)`` part masks in [0, 1] -> one ``(B, 1, H, W)`` mask in [0, 1].

    ``sum``: the paper's reduction (Yu & Piao, "Reverse backbone net for unsupervised person re-identification",
    2024, Section 1.1 step 3: "each part represents one keypoint, and the sum of all parts should cover all the
    features that tell whether it is the same person"), clipped to 1 so that ``x * M(x)`` stays an image
    (pixels where the parts sum past 1 pass no gradient); ``max``: a pixel is kept as much as the keypoint part
    that claims it most (the union: one part covering a pixel is enough, overlaps do not add up, and only
    that part gets the pixel's gradient); ``mean``: the average part (the sum divided by ``P``)."""
    if parts.dim() != 4:
        raise ValueError(f"part masks must be (B, P, H, W), got {tuple(parts.shape)}")
    if reduce == "max":
        return parts.amax(dim=1, keepdim=True)
    if reduce == "sum":
        return parts.sum(dim=1, keepdim=True).clamp(max=1.0)
    if reduce == "mean":
        return parts.mean(dim=1, keepdim=True)
    raise ValueError(f"unknown mask reduction {reduce!r} (expected one of {REDUCTIONS})")


def upsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size = (H, W)``; values of a [0, 1] mask stay in [0, 1] (convex weights)."""
    size = (int(size[0]), int(size[1]))
    if tuple(mask.shape[-2:]) == size:
        return mask
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x * M(x)``: ``images (B, C, H, W)`` times ``mask (B, 1, H, W)`` broadcast over channels only."""
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != images.shape[0] \
            or tuple(mask.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(images.shape)}: expected "
                         f"(B, 1, H, W) with the images' B, H, W")
    return images * mask.to(images.dtype)


def mask_person_background_means(mask: torch.Tensor, person: torch.Tensor,
                                 threshold: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sums and pixel counts of ``mask`` on the person (``person >= threshold``) and on the background.

    Returns ``(sums (2,), counts (2,))`` as float64 tensors so that they can be accumulated over batches;
    the means are ``sums / counts`` (person first)."""
    if mask.shape != person.shape:
        person = upsample_mask(person.float(), mask.shape[-2:])
        if mask.shape != person.shape:
            raise ValueError(f"mask {tuple(mask.shape)} and person mask {tuple(person.shape)} differ")
    fg = person.to(mask.device) >= threshold
    m = mask.detach().double()
    sums = torch.stack([m[fg].sum(), m[~fg].sum()])
    counts = torch.stack([fg.sum(), (~fg).sum()]).double()
    return sums.cpu(), counts.cpu()
