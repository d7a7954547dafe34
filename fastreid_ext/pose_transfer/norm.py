"""Batch normalization that behaves with small batches. Plain torch: no FastReID import.

FD-GAN's users report that its results depend strongly on the batch size (yxgeee/FD-GAN issues #6 and #41: batch
256 in the paper, much worse at 16 or 160; its author points at the batch-norm layers). On a CPU the batches are
small. :class:`GuardedBatchNorm` is ``nn.BatchNorm1d`` / ``2d`` except that a training batch with fewer than
``min_batch`` samples is normalized with the running statistics (which it then leaves untouched) instead of its own
noisy (or, for one sample, undefined) statistics; a larger batch behaves exactly like PyTorch's batch norm.
``min_batch <= 1`` gives plain batch norm (a one-sample batch still falls back rather than failing).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GuardedBatchNorm", "make_norm2d"]


class GuardedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over dimension 1 of a (N, C) or (N, C, ...) input; see the module docstring."""

    def __init__(self, num_features: int, min_batch: int = 8, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.min_batch = int(min_batch)

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected a (N, C, ...) input, got {tuple(x.shape)}")

    def extra_repr(self):
        return super().extra_repr() + f", min_batch={self.min_batch}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        n = x.shape[0]
        values_per_channel = x.numel() // max(1, x.shape[1])
        small = n < max(2, self.min_batch) or values_per_channel < 2
        if self.training and not small:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def make_norm2d(kind: str, channels: int, min_batch: int = 8) -> nn.Module:
    """The normalization of a conv layer of the Additional Encoder: ``BN`` (:class:`GuardedBatchNorm`), ``GN``
    (GroupNorm, 32 groups or fewer; batch independent) or ``none``."""
    if kind == "BN":
        return GuardedBatchNorm(channels, min_batch)
    if kind == "GN":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"MODEL.POSE_TRANSFER.EA.NORM must be 'BN', 'GN' or 'none', got {kind!r}")
