"""MoCo's pure parts (plain torch, no FastReID import): InfoNCE over a queue of negatives, the momentum update of
the key encoder, the queue update and the batch shuffle that keeps BN statistics of a query and its key apart.

He et al., "Momentum contrast for unsupervised visual representation learning", CVPR 2020 (MoCo): a query ``q``
and its positive key ``k+`` (another augmentation of the same image, from the momentum encoder) against the
``K`` keys of a queue; Eq. (1), InfoNCE::

    L_q = -log  exp(q . k+ / tau) / (exp(q . k+ / tau) + sum_{k-} exp(q . k- / tau))

(Eq. (2) of Yoshida et al., "Evaluation of metric learning model for Person Re-identification"); Eq. (2) of MoCo,
the momentum update ``theta_k <- m theta_k + (1 - m) theta_q``; Sec. 3.3, shuffling BN. Chen et al., "Improved
baselines with momentum contrastive learning", 2020 (MoCo v2), add an MLP projection head and stronger augmentation.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["info_nce_logits", "info_nce_loss", "momentum_update_", "enqueue_", "shuffle_permutation"]


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(N, 1 + K)`` logits ``[q . k+, q . queue] / tau``; the positive is column 0. ``q``, ``k``: ``(N, D)``
    (L2-normalised), ``queue``: ``(D, K)`` (L2-normalised columns)."""
    if q.shape != k.shape or q.dim() != 2 or queue.dim() != 2 or queue.shape[0] != q.shape[1]:
        raise ValueError(f"info_nce_logits: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}")
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue
    return torch.cat([pos, neg], dim=1) / float(temperature)


def info_nce_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE loss (MoCo Eq. 1): cross entropy of :func:`info_nce_logits` with the positive as the class."""
    logits = info_nce_logits(q, k, queue, temperature)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


@torch.no_grad()
def momentum_update_(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], momentum: float) -> None:
    """``t <- m t + (1 - m) s`` for every pair (MoCo Eq. 2), in place."""
    m = float(momentum)
    for t, s in zip(target, source):
        t.mul_(m).add_(s.detach(), alpha=1.0 - m)


@torch.no_grad()
def enqueue_(queue: torch.Tensor, ptr: int, keys: torch.Tensor) -> int:
    """Write ``keys`` (``(B, D)``) into the columns ``ptr, ptr + 1, ...`` of ``queue`` (``(D, K)``), wrapping around
    (the oldest keys are replaced first); returns the new pointer ``(ptr + B) % K``. ``B > K`` keeps the last K."""
    K = queue.shape[1]
    keys = keys.detach()
    if keys.shape[0] > K:
        ptr = (ptr + keys.shape[0] - K) % K
        keys = keys[-K:]
    B = keys.shape[0]
    idx = (torch.arange(B, device=queue.device) + int(ptr)) % K
    queue[:, idx] = keys.T.to(queue.dtype)
    return int((int(ptr) + B) % K)


def shuffle_permutation(n: int, generator: Optional[torch.Generator] = None,
                        device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A random permutation of ``n`` and its inverse (``x[perm][inv] == x``)."""
    perm = torch.randperm(n, generator=generator)
    if device is not None:
        perm = perm.to(device)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n, device=perm.device)
    return perm, inv
