"""Keypoint heatmaps: Gaussian rendering, argmax decoding, keypoint error and the heatmap MSE loss.

Plain numpy/torch (no FastReID import). Conventions:

* keypoints are ``(..., K, 3)``: ``x, y, score`` in *pixel-index* coordinates of the input image (pixel
  centres at integers, as everywhere in fastreid_ext), ``K = 17`` COCO keypoints;
* heatmaps are ``(B, K, H_hm, W_hm)``; sizes are given as ``(H, W)``;
* input -> heatmap coordinates: ``x_hm = (x + 0.5) * W_hm / W_in - 0.5`` (same for ``y``), the mapping
  that a resize applies to pixel-index coordinates (:mod:`fastreid_ext.data.transforms`); the inverse is
  used for decoding.

The renderer is the "unbiased" Gaussian of mmpose's ``MSRAHeatmap(unbiased=True)`` codec (DarkPose: a
continuous, non-rounded centre, peak value 1, no truncation), re-implemented in torch so that a whole batch
is rendered on the training device in one shot. mmpose maps ``x_hm = x * W_hm / W_in``; feeding it
``x + 0.5 - 0.5 * W_in / W_hm`` gives exactly our heatmaps (``tests/test_rbnet.py`` checks it when mmpose is
installed).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

SizeHW = Tuple[int, int]

__all__ = [
    "to_heatmap_coords", "to_input_coords", "render_heatmaps", "render_heatmaps_np", "visibility_weights",
    "decode_heatmaps", "keypoint_errors", "mean_keypoint_error", "check_heatmap_shapes", "heatmap_mse_loss",
    "mse_weight_for_triplet",
]


def _hw(size) -> SizeHW:
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"a size must be (H, W) with positive entries, got {size}")
    return size  # type: ignore[return-value]


def to_heatmap_coords(xy: torch.Tensor, input_size: Sequence[int], heatmap_size: Sequence[int]) -> torch.Tensor:
    """Input pixel-index ``(..., 2)`` x, y -> heatmap pixel-index coordinates: ``(x + .5) * W_hm / W_in - .5``."""
    (hi, wi), (hh, wh) = _hw(input_size), _hw(heatmap_size)
    scale = xy.new_tensor([wh / wi, hh / hi])
    return (xy + 0.5) * scale - 0.5


def to_input_coords(xy: torch.Tensor, input_size: Sequence[int], heatmap_size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_heatmap_coords`."""
    (hi, wi), (hh, wh) = _hw(input_size), _hw(heatmap_size)
    scale = xy.new_tensor([wi / wh, hi / hh])
    return (xy + 0.5) * scale - 0.5


def visibility_weights(keypoints: torch.Tensor, score_thresh: float = 0.3) -> torch.Tensor:
    """``(..., K)`` float weights: 1 where ``score >= score_thresh``, else 0."""
    return (keypoints[..., 2] >= score_thresh).to(keypoints.dtype)


def render_heatmaps(keypoints: torch.Tensor, input_size: Sequence[int], heatmap_size: Sequence[int],
                    sigma: float = 2.0, score_thresh: float = 0.3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gaussian keypoint heatmaps ``exp(-((u - u_k)^2 + (v - v_k)^2) / (2 sigma^2))`` (the targets of the
    paper's Eq. 3), batched.

    Args:
        keypoints: ``(B, K, 3)`` or ``(K, 3)`` (x, y, score in input pixels).
        input_size / heatmap_size: ``(H, W)``.
        sigma: in heatmap pixels.
        score_thresh: keypoints with a lower score (not visible / not detected) give an empty channel.

    Returns:
        ``heatmaps (B, K, H_hm, W_hm)`` with peak 1 at each visible keypoint, and ``weights (B, K)``: 1 for a
        rendered channel, 0 for an empty one (low score, or the Gaussian's 3-sigma disc entirely outside the
        heatmap, mmpose's rule).
    """
    single = keypoints.dim() == 2
    if single:
        keypoints = keypoints[None]
    if keypoints.dim() != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must be (B, K, 3) or (K, 3) (x, y, score), got {tuple(keypoints.shape)}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    hh, wh = _hw(heatmap_size)
    kp = keypoints.float()
    mu = to_heatmap_coords(kp[..., :2], input_size, heatmap_size)  # (B, K, 2)
    radius = 3.0 * sigma
    inside = ((mu[..., 0] - radius < wh) & (mu[..., 1] - radius < hh)
              & (mu[..., 0] + radius + 1 >= 0) & (mu[..., 1] + radius + 1 >= 0))
    weights = visibility_weights(kp, score_thresh) * inside.float()
    xs = torch.arange(wh, device=kp.device, dtype=torch.float32)
    ys = torch.arange(hh, device=kp.device, dtype=torch.float32)
    gx = torch.exp(-((xs.view(1, 1, -1) - mu[..., 0:1]) ** 2) / (2 * sigma ** 2))  # (B, K, W)
    gy = torch.exp(-((ys.view(1, 1, -1) - mu[..., 1:2]) ** 2) / (2 * sigma ** 2))  # (B, K, H)
    heat = gy.unsqueeze(-1) * gx.unsqueeze(-2) * weights[..., None, None]  # separable Gaussian
    if single:
        return heat[0], weights[0]
    return heat, weights


def render_heatmaps_np(keypoints: np.ndarray, input_size: Sequence[int], heatmap_size: Sequence[int],
                       sigma: float = 2.0, score_thresh: float = 0.3) -> Tuple[np.ndarray, np.ndarray]:
    """numpy front end of :func:`render_heatmaps` (same shapes, float32)."""
    heat, w = render_heatmaps(torch.as_tensor(np.asarray(keypoints, dtype=np.float32)), input_size,
                              heatmap_size, sigma, score_thresh)
    return heat.numpy(), w.numpy()


def decode_heatmaps(heatmaps: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    """Argmax decoding: ``(B, K, H, W)`` -> ``(B, K, 3)`` x, y in input pixels and the peak value as score."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (B, K, H, W), got {tuple(heatmaps.shape)}")
    b, k, h, w = heatmaps.shape
    val, idx = heatmaps.detach().float().reshape(b, k, h * w).max(dim=-1)
    xy = torch.stack([(idx % w).float(), (idx // w).float()], dim=-1)
    xy = to_input_coords(xy, input_size, (h, w))
    return torch.cat([xy, val[..., None]], dim=-1)


def keypoint_errors(heatmaps: torch.Tensor, keypoints: torch.Tensor, input_size: Sequence[int],
                    score_thresh: float = 0.3) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-keypoint Euclidean error (input pixels) of the argmax of ``heatmaps`` against ``keypoints``.

    Returns ``(errors (B, K), valid (B, K) bool)``; only keypoints with ``score >= score_thresh`` are valid."""
    if keypoints.dim() != 3 or keypoints.shape[:2] != heatmaps.shape[:2]:
        raise ValueError(f"keypoints {tuple(keypoints.shape)} do not match heatmaps {tuple(heatmaps.shape)} "
                         f"(expected (B, K, 3) with the same B, K)")
    pred = decode_heatmaps(heatmaps, input_size)
    kp = keypoints.to(pred.device).float()
    err = torch.linalg.norm(pred[..., :2] - kp[..., :2], dim=-1)
    return err, kp[..., 2] >= score_thresh


def mean_keypoint_error(heatmaps: torch.Tensor, keypoints: torch.Tensor, input_size: Sequence[int],
                        score_thresh: float = 0.3) -> float:
    """Mean over visible keypoints of the argmax error in input pixels (``nan`` if none is visible)."""
    err, valid = keypoint_errors(heatmaps, keypoints, input_size, score_thresh)
    return float(err[valid].mean()) if bool(valid.any()) else float("nan")


def check_heatmap_shapes(pred: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None) -> None:
    """Raise a ``ValueError`` naming both shapes unless ``pred`` and ``target`` are both ``(B, K, H, W)``
    of the same size (never broadcast) and ``weights`` is ``(B, K)``."""
    if pred.dim() != 4 or tuple(pred.shape) != tuple(target.shape):
        raise ValueError(
            f"heatmap shapes differ: predicted {tuple(pred.shape)} vs target {tuple(target.shape)}; both must be "
            f"(B, K, H, W) of the same size (render the targets at the predicted heatmap size, "
            f"MODEL.RBNET.HEATMAP.SIZE)")
    if weights is not None and tuple(weights.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"heatmap weights have shape {tuple(weights.shape)}, expected (B, K) = "
                         f"{tuple(pred.shape[:2])}")


def heatmap_mse_loss(pred: torch.Tensor, target: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Paper Eq. 3, ``L_MSE = 1/N sum_i (y_hat_i - y_i)^2`` over every heatmap pixel, with each channel
    multiplied by its visibility weight (mmpose's ``KeypointMSELoss(use_target_weight=True)``): a keypoint
    that is not visible contributes nothing, and N counts all pixels of all channels."""
    check_heatmap_shapes(pred, target, weights)
    diff = (pred.float() - target.float()) ** 2
    if weights is not None:
        diff = diff * weights.float()[..., None, None]
    return diff.mean()


def mse_weight_for_triplet(tri_weight: float, margin: float, heatmap_size: Sequence[int], sigma: float,
                           visible_fraction: float = 1.0) -> float:
    """The lambda_3 that makes ``lambda_3 L_MSE`` about ``lambda_2 L_tri`` at the start of training (paper,
    below Eq. 4): with an all-zero prediction ``L_MSE ~ v * pi sigma^2 / (H W)`` (the energy of a unit
    Gaussian over the heatmap, ``v`` the visible fraction) and the batch-hard triplet loss ``~ margin``."""
    hh, wh = _hw(heatmap_size)
    mse0 = visible_fraction * math.pi * sigma ** 2 / (hh * wh)
    return float(tri_weight) * max(float(margin), 0.1) / mse0
