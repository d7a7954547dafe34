"""Background removal with a person mask (Zhang & Wu, "Person re-identification based on multiple deep learning
methods", Sec. 3.1: instance segmentation removes the background before re-id). Plain torch, no FastReID import.

The paper multiplies the crop by the person mask of an instance segmenter (YOLACT++) so that the re-id
net sees the person only. With a soft or binary mask ``m`` in [0, 1] and a fill image ``F``::

    out = m * x + (1 - m) * F

``F`` is 0 (``fill="zero"``: the paper's black background, ``out = m * x`` exactly), the dataset pixel
mean (``fill="mean"``: the background becomes 0 after FastReID's normalization, so it carries no
signal into the first convolution), or a Gaussian-blurred copy of ``x`` (``fill="blur"``: keeps the
coarse colour context, removes background texture). The paper names only the zero fill; the other two
are our choices for ablations.

Images are float ``(B, C, H, W)`` in FastReID's 0..255 range, *before* normalization.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

FILL_MODES = ("zero", "mean", "blur")


def gaussian_kernel1d(kernel_size: int, sigma: float = 0.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian of odd length ``kernel_size``; ``sigma <= 0`` uses OpenCV's default
    ``0.3 * ((k - 1) / 2 - 1) + 0.8``."""
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"blur kernel size must be a positive odd integer, got {kernel_size}")
    if sigma <= 0:
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    x = torch.arange(k, dtype=torch.float64, device=device) - (k - 1) / 2
    w = torch.exp(-(x ** 2) / (2 * sigma * sigma))
    return (w / w.sum()).to(dtype)


def gaussian_blur(images: torch.Tensor, kernel_size: int = 21, sigma: float = 0.0) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with replicated borders (any image size)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    k = int(kernel_size)
    if k == 1:
        return images.clone()
    c = images.shape[1]
    w = gaussian_kernel1d(k, sigma, dtype=images.dtype, device=images.device)
    p = k // 2
    x = F.pad(images, (p, p, 0, 0), mode="replicate")
    x = F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    x = F.pad(x, (0, 0, p, p), mode="replicate")
    return F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _as_mask(masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    if masks.dim() == 3:
        masks = masks[:, None]
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[0] != images.shape[0]:
        raise ValueError(f"masks must be (B, 1, H, W) or (B, H, W) matching images {tuple(images.shape)}, "
                         f"got {tuple(masks.shape)}")
    masks = masks.to(device=images.device, dtype=images.dtype)
    if masks.shape[-2:] != images.shape[-2:]:
        masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return masks.clamp(0.0, 1.0)


def background_fill(images: torch.Tensor, fill: str = "zero",
                    pixel_mean: Optional[Union[Sequence[float], torch.Tensor]] = None,
                    blur_kernel: int = 21, blur_sigma: float = 0.0) -> torch.Tensor:
    """The fill image ``F`` for :func:`remove_background` (broadcastable to ``images``)."""
    if fill == "zero":
        return images.new_zeros(())
    if fill == "mean":
        if pixel_mean is None:
            raise ValueError("fill='mean' needs pixel_mean (the dataset pixel mean, e.g. MODEL.PIXEL_MEAN)")
        mean = torch.as_tensor(pixel_mean, dtype=images.dtype, device=images.device).reshape(-1)
        if mean.numel() not in (1, images.shape[1]):
            raise ValueError(f"pixel_mean has {mean.numel()} values for {images.shape[1]} channels")
        return mean.view(1, -1, 1, 1)
    if fill == "blur":
        return gaussian_blur(images, blur_kernel, blur_sigma)
    raise ValueError(f"unknown background fill {fill!r}; expected one of {FILL_MODES}")


def remove_background(images: torch.Tensor, masks: torch.Tensor, fill: str = "zero",
                      pixel_mean: Optional[Union[Sequence[float], torch.Tensor]] = None,
                      blur_kernel: int = 21, blur_sigma: float = 0.0) -> torch.Tensor:
    """``m * x + (1 - m) * F`` (out of place).

    Args:
        images: float ``(B, C, H, W)``, un-normalized (0..255).
        masks: ``(B, 1, H, W)`` or ``(B, H, W)`` person masks in [0, 1] (1 = person). A mask of another
            size is resized bilinearly to the image size.
        fill: ``"zero"`` | ``"mean"`` | ``"blur"`` (see the module docstring).
        pixel_mean: per-channel fill value for ``"mean"`` (same 0..255 scale as ``images``).
        blur_kernel / blur_sigma: Gaussian for ``"blur"`` (odd kernel; sigma <= 0: OpenCV's default).
    """
    m = _as_mask(masks, images)
    if fill == "zero":
        return images * m
    bg = background_fill(images, fill, pixel_mean, blur_kernel, blur_sigma)
    return images * m + bg * (1.0 - m)


def mask_fraction(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of person pixels per mask (``(B,)``), a cheap sanity statistic for logging."""
    if masks.dim() == 4:
        masks = masks[:, 0]
    return masks.flatten(1).float().mean(1)

