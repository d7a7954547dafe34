"""Losses and the temporal mean of Mutual Mean-Teaching (no FastReID import).

Ge, Chen & Li, "Mutual Mean-Teaching: pseudo label refinery for unsupervised domain adaptation on person
re-identification", ICLR 2020 (MMT), Section 3, and Yu & Piao 2024 (RBNet) Eqs. (5)-(11), which restate
MMT's temporal mean and soft losses with the RBNet mask:

* temporal mean (RBNet Eqs. 5-6, MMT Sec. 3.2): ``E^T[theta] = a E^{T-1}[theta] + (1 - a) theta``;
* label-smoothed cross-entropy on the hard pseudo labels (MMT Sec. 3.3, Szegedy et al. 2016):
  ``q = (1 - eps) onehot(y) + eps / K``, ``L_id = -1/N sum_i sum_k q_ik log p_ik``;
* soft cross-entropy between a network and the other network's mean net (RBNet Eqs. 7-8, MMT's L_sid):
  ``L_sid(theta_1 | theta_2) = -1/N sum_i softmax(C_2'(f_2))_i . log softmax(C_1(f_1))_i``;
* softmax triplet: ``T_i = softmax(d(f_i, f_i^+), d(f_i, f_i^-))`` over the hardest positive / negative of
  the batch, hard version ``-log T_i[neg]`` (MMT's code: margin 0), soft version the binary cross-entropy
  between ``T_i(theta_1)`` and the mean net's ``T_i(E[theta_2])`` at the same pairs (RBNet Eqs. 9-11, whose
  Eq. 11 prints a "-" in the denominator where the softmax has a "+").

Minimum, not zero: a soft cross-entropy equals the target's entropy when the two nets agree, which is
its minimum (the KL part is 0, and so is its gradient), not 0. The same holds for the soft triplet
(binary entropy of the target).
"""
from __future__ import annotations

from typing import Iterable, Tuple

import torch
import torch.nn.functional as F

__all__ = ["euclidean_dist", "cross_entropy_ls", "soft_cross_entropy", "hardest_pairs", "softmax_triplet",
           "soft_triplet", "ema_alpha", "ema_update_"]


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances ``||x_i - y_j||`` (clamped at 1e-12 before the square root)."""
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1, keepdim=True).t() - 2.0 * x @ y.t()
    return d.clamp(min=1e-12).sqrt()


def cross_entropy_ls(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Label-smoothed CE (MMT's L_id): targets ``(1 - eps) onehot + eps / K``, mean over the batch."""
    log_p = F.log_softmax(logits, dim=1)
    k = logits.shape[1]
    q = torch.full_like(log_p, epsilon / k)
    q.scatter_add_(1, targets.long().view(-1, 1), torch.full_like(log_p[:, :1], 1.0 - epsilon))
    return -(q * log_p).sum(1).mean()


def soft_cross_entropy(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """MMT's soft ID loss (RBNet Eqs. 7-8): ``-1/N sum_i softmax(teacher)_i . log softmax(student)_i``; the
    teacher is detached. Equals the teacher's mean entropy (its minimum) when the two agree."""
    target = F.softmax(teacher_logits.detach(), dim=1)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()


def hardest_pairs(dist: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices of the hardest positive (farthest same label, the sample itself included) and the hardest
    negative (closest other label) of every row of a square distance matrix."""
    same = targets.view(-1, 1) == targets.view(1, -1)
    big = torch.finfo(dist.dtype).max / 4
    ap_idx = (dist.detach() - big * (~same)).argmax(dim=1)
    an_idx = (dist.detach() + big * same).argmin(dim=1)
    return ap_idx, an_idx


def _triplet_logits(feats: torch.Tensor, targets: torch.Tensor, ap_idx=None, an_idx=None):
    dist = euclidean_dist(feats, feats)
    if ap_idx is None:
        ap_idx, an_idx = hardest_pairs(dist, targets)
    rows = torch.arange(dist.shape[0], device=dist.device)
    return torch.stack((dist[rows, ap_idx], dist[rows, an_idx]), dim=1), ap_idx, an_idx


def softmax_triplet(feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Hard softmax-triplet (MMT's L_tri, margin 0): ``-1/N sum_i log T_i[neg]`` with
    ``T_i = softmax(d_ap, d_an)`` = ``mean softplus(d_ap - d_an)``."""
    d, _, _ = _triplet_logits(feats, targets)
    return -F.log_softmax(d, dim=1)[:, 1].mean()


def soft_triplet(feats: torch.Tensor, teacher_feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MMT's soft triplet (RBNet Eqs. 9-11): binary CE between the student's ``T_i = softmax(d_ap, d_an)`` and
    the (detached) teacher's softmax of its own distances at the student's hardest pairs; equals the
    teacher's binary entropy (its minimum) when the distances agree."""
    d, ap_idx, an_idx = _triplet_logits(feats, targets)
    with torch.no_grad():
        d_ref, _, _ = _triplet_logits(teacher_feats.detach(), targets, ap_idx, an_idx)
        target = F.softmax(d_ref, dim=1)
    return -(target * F.log_softmax(d, dim=1)).sum(1).mean()


def ema_alpha(step: int, alpha: float = 0.999, warmup: bool = True) -> float:
    """Momentum of the temporal mean at optimizer step ``step`` (0-based). MMT's code ramps it up as
    ``min(1 - 1 / (step + 1), alpha)`` (the mean follows the network closely at the start); ``warmup=False``
    uses ``alpha`` throughout."""
    return min(1.0 - 1.0 / (step + 1), alpha) if warmup else alpha


@torch.no_grad()
def ema_update_(mean_params: Iterable[torch.Tensor], params: Iterable[torch.Tensor], alpha: float) -> None:
    """In place ``E <- alpha E + (1 - alpha) theta`` (RBNet Eqs. 5-6) for every pair of tensors."""
    for e, p in zip(mean_params, params):
        e.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
