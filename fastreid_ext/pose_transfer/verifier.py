"""The verification classifier C_v. Plain torch: no FastReID import.

Pose-transfer paper, Sec. 3 and Fig. 2: C_v decides whether the re-id features of two images come from the same
person and is trained with binary cross-entropy (Eq. 1, :func:`fastreid_ext.pose_transfer.pairs.
verification_loss`). The figure's layers are not legible in the text; we follow FD-GAN's public code
(``EltwiseSubEmbed``; Ge et al., NeurIPS 2018), on which the paper builds::

    (f1 - f2)^2 -> BatchNorm1d -> Linear -> 1 logit ("same person")   (or 2 logits, FD-GAN's softmax)

The square makes C_v symmetric in the pair. With ``outputs=2`` the layer has FD-GAN's two rows (different, same)
and the logit is their difference (softmax over two classes = sigmoid of the difference). The linear layer starts
at N(0, 0.001) weights and zero bias, as in FD-GAN. The batch norm is a
:class:`~fastreid_ext.pose_transfer.norm.GuardedBatchNorm` (small batches of pairs use the running statistics).
"""
from __future__ import annotations

import torch
from torch import nn

from .norm import GuardedBatchNorm

__all__ = ["VerificationClassifier"]


class VerificationClassifier(nn.Module):
    """C_v: ``forward(f1, f2)`` -> same-person logits (N,); :meth:`different_prob` -> P(different) in [0, 1]."""

    def __init__(self, dim: int, outputs: int = 1, batch_norm: bool = True, bn_min_batch: int = 8,
                 init_std: float = 0.001):
        super().__init__()
        if outputs not in (1, 2):
            raise ValueError(f"MODEL.POSE_TRANSFER.VERIF.OUTPUTS must be 1 (sigmoid) or 2 (softmax), got {outputs}")
        self.dim = int(dim)
        self.outputs = int(outputs)
        self.bn = GuardedBatchNorm(dim, bn_min_batch) if batch_norm else nn.Identity()
        self.classifier = nn.Linear(dim, outputs)
        nn.init.normal_(self.classifier.weight, 0.0, init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        if f1.shape != f2.shape or f1.dim() != 2 or f1.shape[1] != self.dim:
            raise ValueError(f"C_v expects two (N, {self.dim}) feature batches, got {tuple(f1.shape)} and "
                             f"{tuple(f2.shape)}")
        z = self.classifier(self.bn((f1 - f2).pow(2)))
        return z[:, 0] if self.outputs == 1 else z[:, 1] - z[:, 0]

    def same_prob(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(f1, f2))

    def different_prob(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """FD-GAN's re-ranking distance: P(different person) = sigmoid(-logit)."""
        return torch.sigmoid(-self(f1, f2))
