"""Verification pairs from a P x K batch and the binary cross-entropy of the verification classifier.
Plain torch: no FastReID import.

The pose-transfer paper trains its Additional Encoder with a verification classifier C_v that tells whether two
images show the same person, with the binary cross-entropy of its Eq. (1)::

    L = -C log d(x1, x2) - (1 - C) log(1 - d(x1, x2))

(C = 1 for a same-person pair, d = C_v's same-person confidence). The equation as printed reads
``-(1 - C)(1 - log d)``, which is unbounded below (d -> 0 makes it -> -inf) and is not the binary cross-entropy the
text names; we implement the binary cross-entropy. The paper does not say how pairs are formed. FD-GAN (Ge et
al., "FD-GAN: Pose-guided feature distilling GAN for robust person re-identification", NeurIPS 2018; its public
code) draws random pairs with 3 negatives per positive; here the pairs come from the identities of the
FastReID P x K batch:

* ``all``: every unordered pair ``i < j`` of the batch (P K (K - 1) / 2 positives; for 16 x 4, 96 positives and
  1,920 negatives);
* ``balanced``: every positive pair plus ``round(neg_pos_ratio * #positives)`` negatives drawn uniformly without
  replacement (torch's global generator, seeded by the trainer's ``SEED``, unless ``generator`` is given).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["PAIR_MODES", "pair_index", "sample_pairs", "verification_loss"]

PAIR_MODES = ("all", "balanced")


def pair_index(targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every unordered pair ``i < j`` of the batch: ``(i, j, same)`` with ``same[p] = targets[i] == targets[j]``."""
    n = targets.numel()
    i, j = torch.triu_indices(n, n, offset=1, device=targets.device)
    return i, j, targets[i] == targets[j]


def sample_pairs(targets: torch.Tensor, mode: str = "balanced", neg_pos_ratio: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs of the batch for the verification loss: ``(i, j, label)``, label 1.0 for the same identity.

    ``mode`` ``all`` or ``balanced`` (module docstring). A balanced draw from a batch without any positive pair
    (every identity once) has nothing to balance against and keeps every pair."""
    if mode not in PAIR_MODES:
        raise ValueError(f"MODEL.POSE_TRANSFER.PAIRS.MODE must be one of {PAIR_MODES}, got {mode!r}")
    if neg_pos_ratio <= 0:
        raise ValueError(f"MODEL.POSE_TRANSFER.PAIRS.NEG_POS_RATIO must be > 0, got {neg_pos_ratio}")
    targets = targets.reshape(-1)
    i, j, same = pair_index(targets)
    if mode == "balanced":
        pos = torch.nonzero(same, as_tuple=False).flatten()
        neg = torch.nonzero(~same, as_tuple=False).flatten()
        if pos.numel() and neg.numel():
            n_neg = min(neg.numel(), max(1, int(round(neg_pos_ratio * pos.numel()))))
            pick = torch.randperm(neg.numel(), generator=generator, device="cpu")[:n_neg].to(neg.device)
            keep = torch.cat([pos, neg[pick]])
            i, j, same = i[keep], j[keep], same[keep]
    return i, j, same.to(torch.float32)


def verification_loss(features: torch.Tensor, targets: torch.Tensor,
                      verifier: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], mode: str = "balanced",
                      neg_pos_ratio: float = 1.0, generator: Optional[torch.Generator] = None
                      ) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Binary cross-entropy (Eq. 1, see the module docstring) of ``verifier(f_i, f_j)`` (same-person logits) on the
    pairs of :func:`sample_pairs`; returns ``(loss, stats)`` with ``stats``: ``pairs``, ``positives``, ``acc``
    (pairs classified correctly at probability 0.5)."""
    i, j, label = sample_pairs(targets, mode, neg_pos_ratio, generator)
    if label.numel() == 0:  # a batch of one image
        return features.sum() * 0.0, {"pairs": 0.0, "positives": 0.0, "acc": float("nan")}
    logits = verifier(features[i], features[j])
    loss = F.binary_cross_entropy_with_logits(logits, label.to(logits.dtype))
    with torch.no_grad():
        acc = float(((logits > 0).to(label.dtype) == label).float().mean())
    return loss, {"pairs": float(label.numel()), "positives": float(label.sum()), "acc": acc}
