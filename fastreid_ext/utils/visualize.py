"""Attention / heatmap overlays in the style of torchreid's ``visualize_actmap`` (numpy + OpenCV).

* activation map of a feature tensor: sum over channels of the squared activations, resized to the
  image, normalized to [0, 1] per image (torchreid: ``outputs = (outputs ** 2).sum(1)``, L2-normalized,
  min-max scaled);
* overlay: the map through the jet colormap, blended with the image (0.6 image + 0.4 map... torchreid uses
  0.3 / 0.7; ``alpha`` sets the map's share).

Generic panel helpers; :mod:`fastreid_ext.rbnet.visualize` builds RBNet's strips (the paper's Figs. 3-4) on them.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["activation_maps", "normalize_maps", "to_uint8_rgb", "overlay", "gray_panel", "label_panel",
           "hstack_panels", "vstack_panels"]


def activation_maps(features: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """``(B, C, h, w)`` features -> ``(B, H, W)`` float maps in [0, 1]: sum of squares over channels,
    bilinear to ``size = (H, W)``, min-max per image."""
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, h, w), got {tuple(features.shape)}")
    am = features.detach().float().pow(2).sum(1, keepdim=True)
    am = F.interpolate(am, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(am.cpu().numpy())


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max normalize each ``(H, W)`` map of a ``(B, H, W)`` array to [0, 1] (constant maps -> 0)."""
    maps = np.asarray(maps, dtype=np.float32)
    lo = maps.reshape(len(maps), -1).min(1)[:, None, None]
    hi = maps.reshape(len(maps), -1).max(1)[:, None, None]
    return np.where(hi - lo > 1e-12, (maps - lo) / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)


def to_uint8_rgb(image) -> np.ndarray:
    """A ``(3, H, W)`` tensor/array in 0..255 (FastReID's raw images) -> ``(H, W, 3)`` uint8 RGB."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.transpose(1, 2, 0)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def overlay(image_rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``amap`` (H, W in [0, 1]) through the jet colormap onto ``image_rgb`` (H, W, 3 uint8)."""
    heat = cv2.applyColorMap(np.uint8(np.clip(amap, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    out = (1 - alpha) * image_rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def gray_panel(values: np.ndarray) -> np.ndarray:
    """A [0, 1] map shown as a grey image (H, W, 3 uint8), e.g. a mask (white = kept)."""
    v = np.uint8(np.clip(values, 0, 1) * 255)
    return np.repeat(v[..., None], 3, axis=-1)


def label_panel(panel: np.ndarray, text: str, scale: int = 2, bar: int = 14) -> np.ndarray:
    """Upscale ``panel`` by ``scale`` (nearest) and put ``text`` in a white bar under it."""
    p = cv2.resize(panel, (panel.shape[1] * scale, panel.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    out = np.full((p.shape[0] + bar, p.shape[1], 3), 255, np.uint8)
    out[:p.shape[0]] = p
    font_scale = 0.32
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    x = max(1, (p.shape[1] - tw) // 2)
    cv2.putText(out, text, (x, p.shape[0] + bar - 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return out


def hstack_panels(panels: List[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels of the same height side by side, white gaps."""
    h = max(p.shape[0] for p in panels)
    cols = []
    for i, p in enumerate(panels):
        if p.shape[0] < h:
            p = np.vstack([p, np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)])
        cols.append(p)
        if i + 1 < len(panels):
            cols.append(np.full((h, gap, 3), 255, np.uint8))
    return np.hstack(cols)


def vstack_panels(rows: List[np.ndarray], gap: int = 6, title: Optional[str] = None) -> np.ndarray:
    """Rows (strips) one under the other, left aligned, white gaps, optional title line on top."""
    w = max(r.shape[1] for r in rows)
    out: List[np.ndarray] = []
    if title:
        bar = np.full((18, w, 3), 255, np.uint8)
        cv2.putText(bar, title, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(bar)
    for i, r in enumerate(rows):
        if r.shape[1] < w:
            r = np.hstack([r, np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)])
        out.append(r)
        if i + 1 < len(rows):
            out.append(np.full((gap, w, 3), 255, np.uint8))
    return np.vstack(out)
