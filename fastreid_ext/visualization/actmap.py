"""Activation maps with torchreid's recipe, and the strips that show them (no FastReID).

The recipe is the one of torchreid's ``tools/visualize_actmap.py`` (Zhou, Yang, Cavallaro and Xiang, "Omni-scale
feature learning for person re-identification", ICCV 2019, Fig. 7; Zhou and Xiang, "Torchreid: a library for deep
learning person re-identification in PyTorch", 2019), after the attention maps of Zagoruyko and Komodakis, "Paying
more attention to attention", ICLR 2017:

1. sum over channels of the squared activations of a (C, h, w) map;
2. L2 normalisation over the h x w positions (a positive scale per image, which step 4 removes again);
3. bilinear resize to the image (H, W);
4. min-max scaling to [0, 1] (``(m - min) / (max - min + 1e-12)``), then ``floor(255 m)`` through OpenCV's jet
   colour map;
5. overlay ``0.3 image + 0.7 colour map`` (clipped at 255);
6. strip ``image | map | overlay`` with 10-pixel white gaps.

Steps 1, 3 and 4 are :func:`fastreid_ext.utils.visualize.activation_maps`, step 5 is
:func:`fastreid_ext.utils.visualize.overlay` with ``alpha = 0.7`` (torchreid adds its BGR colour map to an RGB image,
which swaps red and blue in its overlays; the overlays here are RGB throughout). A one-channel map (a mask, a single
heatmap) is shown as it is, not squared: unchanged when its values lie in [0, 1], min-max scaled otherwise
(:func:`display_maps`). Several models side by side: :func:`actmap_strip` puts a ``map | overlay`` pair per model and
layer after the image, with labels above.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..utils.visualize import activation_maps, normalize_maps, overlay, to_uint8_rgb

__all__ = ["GRID_SPACING", "OVERLAY_ALPHA", "actmap", "display_maps", "actmap_panels", "actmap_strip",
           "header_bar"]

#: torchreid's white gap between the panels of a strip (pixels)
GRID_SPACING = 10
#: torchreid's overlay: 0.3 image + 0.7 colour map
OVERLAY_ALPHA = 0.7


def actmap(features: torch.Tensor, size_hw: Sequence[int]) -> np.ndarray:
    """torchreid's activation maps of ``features`` (B, C, h, w): (B, H, W) float32 in [0, 1] at ``size_hw``
    (steps 1-4 of the module docstring, before the colour map)."""
    return activation_maps(features, size_hw)


def display_maps(maps: torch.Tensor, size_hw: Sequence[int]) -> np.ndarray:
    """What is drawn for a (B, C, h, w) map: :func:`actmap` when C > 1; a one-channel map resized (bilinear) and
    kept as it is when its values lie in [0, 1], else min-max scaled per image."""
    if maps.dim() != 4:
        raise ValueError(f"a map to draw must be (B, C, h, w), got {tuple(maps.shape)}")
    if maps.shape[1] > 1:
        return actmap(maps, size_hw)
    m = maps.detach().float()
    m = torch.nn.functional.interpolate(m, size=(int(size_hw[0]), int(size_hw[1])), mode="bilinear",
                                        align_corners=False)[:, 0].cpu().numpy()
    if m.min() >= 0.0 and m.max() <= 1.0:
        return m.astype(np.float32)
    return normalize_maps(m)


#: OpenCV's jet colour map as an RGB lookup table (what ``overlay`` blends in, without blending)
_JET_RGB = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, ::-1].copy()


def actmap_panels(image_rgb: np.ndarray, amap: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(colour map, overlay)`` panels (H, W, 3 uint8 RGB) of a [0, 1] map over ``image_rgb`` (steps 4-5)."""
    heat = _JET_RGB[np.uint8(np.clip(amap, 0, 1) * 255)]  # jet of floor(255 m), as in overlay()
    return heat, overlay(image_rgb, amap, alpha=OVERLAY_ALPHA)


def header_bar(width: int, labels: Sequence[Tuple[int, int, str]], height: int = 16) -> np.ndarray:
    """A white bar (height, width, 3) with each ``(x0, x1, text)`` centred over the columns x0..x1."""
    bar = np.full((height, width, 3), 255, np.uint8)
    for x0, x1, text in labels:
        scale = 0.35
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        while tw > (x1 - x0) and scale > 0.22:
            scale -= 0.03
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = x0 + max(0, ((x1 - x0) - tw) // 2)
        cv2.putText(bar, text, (x, height - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def actmap_strip(image, columns: Sequence[Tuple[str, np.ndarray]], scale: int = 1, spacing: int = GRID_SPACING,
                 labels: bool = True, extra_panels: Optional[Sequence[Tuple[str, np.ndarray]]] = None) -> np.ndarray:
    """One image's strip: ``image | (map | overlay) per column`` (torchreid's ``image | map | overlay`` for one
    column), white gaps of ``spacing`` pixels, optional labels above each pair.

    ``image``: (3, H, W) 0..255 tensor/array or (H, W, 3) uint8 RGB; ``columns``: ``(label, (H, W) map in [0, 1])``;
    ``extra_panels``: ``(label, (H, W, 3) uint8 RGB)`` shown as they are after the image (e.g. what a model sees);
    ``scale``: nearest-neighbour upscaling of every panel. Returns (H', W', 3) uint8 RGB."""
    img = to_uint8_rgb(image)
    h, w = img.shape[:2]
    panels: List[np.ndarray] = [img]
    names: List[Tuple[int, str]] = [(1, "image")]
    for label, panel in extra_panels or ():
        panels.append(np.asarray(panel, np.uint8))
        names.append((1, label))
    for label, amap in columns:
        if amap.shape != (h, w):
            raise ValueError(f"map of {label!r} is {amap.shape}, the image is {(h, w)}")
        heat, over = actmap_panels(img, amap)
        panels += [heat, over]
        names.append((2, label))
    if scale != 1:
        panels = [cv2.resize(p, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) for p in panels]
    ph, pw = panels[0].shape[:2]
    width = len(panels) * pw + (len(panels) - 1) * spacing
    grid = np.full((ph, width, 3), 255, np.uint8)
    for k, p in enumerate(panels):
        x = k * (pw + spacing)
        grid[:, x:x + pw] = p
    if not labels:
        return grid
    spans, k = [], 0
    for n, text in names:
        x0 = k * (pw + spacing)
        x1 = (k + n) * (pw + spacing) - spacing
        spans.append((x0, x1, text))
        k += n
    return np.vstack([header_bar(width, spans), grid])
