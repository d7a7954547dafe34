"""Angular-margin softmax logits (plain torch, no FastReID import).

Yoshida et al., "Evaluation of metric learning model for Person Re-identification" (in Japanese), Eq. (1), write
the margin losses of face recognition as one: with ``theta`` the angle between a feature and its class centre,

    L = -log  e^{s (cos(m1 theta + m2) - m3)} / (e^{s (cos(m1 theta + m2) - m3)} + sum_{j != y} e^{s cos theta_j})

where ``m1`` is SphereFace's multiplicative angular margin (Liu et al., "SphereFace: Deep hypersphere embedding for
face recognition", CVPR 2017), ``m2`` ArcFace's additive angular margin (Deng et al., "ArcFace: Additive angular
margin loss for deep face recognition", CVPR 2019) and ``m3`` CosFace's additive cosine margin (Wang et al.,
"CosFace: Large margin cosine loss for deep face recognition", CVPR 2018). FastReID 1.4.0 has the last two
(``ArcSoftmax``, ``CosSoftmax``) but no multiplicative margin; this module adds it.

``cos(m1 theta + m2)`` stops decreasing once ``m1 theta + m2`` passes pi; SphereFace replaces it by the monotonic
``psi = (-1)^k cos(m1 theta + m2) - 2k`` with ``k = floor((m1 theta + m2) / pi)`` (Sec. 3.3 there, written for
``m2 = 0``), which equals the cosine on ``[0, pi]`` and keeps decreasing after it. Features and class weights are
L2-normalised and the logits scaled by ``s`` (NormFace-style, as ArcFace / CosFace), where SphereFace keeps the
feature norm. SphereFace also trains with ``f = (lambda cos theta + psi) / (1 + lambda)`` for the target class,
``lambda`` annealed from 1000 towards 5 (``lambda = max(lambda_min, base (1 + gamma t)^-power)``, the values of its
public training prototxt), because the multiplicative margin alone hardly converges from scratch.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["monotonic_margin_cos", "combined_margin_logits", "sphere_lambda", "SphereSoftmax",
           "CombinedMarginSoftmax", "ANGULAR_CLS_LAYERS"]


def monotonic_margin_cos(cos: torch.Tensor, m1: float = 1.0, m2: float = 0.0) -> torch.Tensor:
    """``psi(theta) = (-1)^k cos(m1 theta + m2) - 2k``, ``k = floor((m1 theta + m2) / pi)``, for ``cos =
    cos(theta)`` (clamped to [-1, 1]); the plain cosine of ``m1 theta + m2`` while that is at most pi."""
    theta = torch.acos(cos.clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    a = m1 * theta + m2
    k = torch.floor(a / math.pi)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * torch.cos(a) - 2.0 * k


def combined_margin_logits(cos: torch.Tensor, targets: torch.Tensor, m1: float = 1.0, m2: float = 0.0,
                           m3: float = 0.0, scale: float = 64.0, lam: float = 0.0) -> torch.Tensor:
    """Eq. (1)'s logits: ``s * cos theta_j`` for the other classes, ``s * (f - m3)`` for the target, with ``f =
    (lam cos theta + psi) / (1 + lam)`` (``lam = 0``: ``psi`` itself). ``cos``: (B, classes) cosines; targets -1:
    no target (all logits plain). Out of place."""
    out = cos.clone()
    idx = torch.where(targets != -1)[0]
    if len(idx):
        t = targets[idx]
        c = cos[idx, t]
        f = monotonic_margin_cos(c, m1, m2)
        if lam:
            f = (lam * c + f) / (1.0 + lam)
        out[idx, t] = f - m3
    return out * scale


def sphere_lambda(step: int, base: float = 1000.0, gamma: float = 0.12, power: float = 1.0,
                  lambda_min: float = 5.0) -> float:
    """SphereFace's annealed ``lambda`` at training step ``step``."""
    return max(float(lambda_min), float(base) * (1.0 + float(gamma) * int(step)) ** (-float(power)))


class _MarginLayer(nn.Module):
    """FastReID's ``any_softmax`` interface: ``layer(num_classes, scale, margin)``, ``forward(cos_logits,
    targets)``, attribute ``s``."""

    def __init__(self, num_classes: int, scale: float, margin: float):
        super().__init__()
        self.num_classes, self.s, self.m = int(num_classes), float(scale), float(margin)

    def extra_repr(self):
        return f"num_classes={self.num_classes}, scale={self.s}, margin={self.m}"


class SphereSoftmax(_MarginLayer):
    """SphereFace's multiplicative angular margin ``m`` (``MODEL.HEADS.MARGIN``; SphereFace: 4) with its
    annealed ``lambda`` (counted in training forward passes, a buffer so that a resumed run continues it)."""

    def __init__(self, num_classes: int, scale: float, margin: float, lambda_base: float = 1000.0,
                 lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 5.0):
        super().__init__(num_classes, scale, margin)
        self.lambda_args = (float(lambda_base), float(lambda_gamma), float(lambda_power), float(lambda_min))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        return sphere_lambda(int(self.step), *self.lambda_args)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lam = self.current_lambda()
        if self.training:
            self.step += 1
        return combined_margin_logits(logits, targets, m1=self.m, scale=self.s, lam=lam)


class CombinedMarginSoftmax(_MarginLayer):
    """Eq. (1) with all three margins ``(m1, m2, m3)`` (``MODEL.HEADS.ANGULAR.MARGINS``); ``(1, m, 0)`` is
    ArcFace, ``(1, 0, m)`` CosFace, ``(m, 0, 0)`` SphereFace without its lambda."""

    def __init__(self, num_classes: int, scale: float, margin: float, margins: Sequence[float] = (1.0, 0.5, 0.0)):
        super().__init__(num_classes, scale, margin)
        if len(margins) != 3:
            raise ValueError(f"MODEL.HEADS.ANGULAR.MARGINS needs (m1, m2, m3), got {margins}")
        self.margins = tuple(float(m) for m in margins)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        m1, m2, m3 = self.margins
        return combined_margin_logits(logits, targets, m1, m2, m3, self.s)

    def extra_repr(self):
        return f"num_classes={self.num_classes}, scale={self.s}, margins={self.margins}"


ANGULAR_CLS_LAYERS = {"SphereSoftmax": SphereSoftmax, "CombinedMarginSoftmax": CombinedMarginSoftmax}
