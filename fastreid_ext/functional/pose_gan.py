"""Losses of pose-guided generator training (plain torch, no FastReID import).

FD-GAN (Ge et al., "FD-GAN: Pose-guided feature distilling GAN for robust person re-identification", NeurIPS 2018,
Sec. 3.2-3.3) trains a generator G that re-renders the person of an image in a target pose, with

* an **adversarial** loss from two discriminators (identity D_i and pose D_p); the discriminators are trained on
  *smoothed* labels (FD-GAN's public code: real ~ U(0.7, 1.0), fake ~ U(0.0, 0.3), one draw per loss), the
  generator on hard "real" labels;
* an **L1 reconstruction** loss between the generated image and the real image of the same person in the target
  pose (weight 100 in FD-GAN's training commands);
* a **same-pose** loss: two images of one person rendered in the same pose with the same noise must give the same
  image, an L1 distance between the two generated images (weight 10), which pushes the identity features of the
  two images together.

The pose-transfer paper ("Person re-identification based on transfer learning of pose-invariant domain-dependent
features", Sec. 3) keeps this training to make its image encoder E_I pose-invariant.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["SMOOTH_REAL", "SMOOTH_FAKE", "gan_label", "adversarial_loss", "discriminator_loss", "reconstruction_l1",
           "same_pose_l1"]

#: label ranges of FD-GAN's smoothed discriminator targets
SMOOTH_REAL: Tuple[float, float] = (0.7, 1.0)
SMOOTH_FAKE: Tuple[float, float] = (0.0, 0.3)


def gan_label(real: bool, smooth: bool = False, generator: Optional[torch.Generator] = None) -> float:
    """The target label: 1 / 0, or with ``smooth`` one uniform draw from :data:`SMOOTH_REAL` / :data:`SMOOTH_FAKE`
    (from ``generator`` when given, so a seeded run draws the same labels)."""
    if not smooth:
        return 1.0 if real else 0.0
    lo, hi = SMOOTH_REAL if real else SMOOTH_FAKE
    u = float(torch.rand((), generator=generator))
    return lo + (hi - lo) * u


def adversarial_loss(logits: torch.Tensor, real: bool, smooth: bool = False,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Binary cross-entropy of discriminator ``logits`` (any shape: one per image, or a PatchGAN map) against the
    real / fake label (:func:`gan_label`); FD-GAN's ``GANLoss`` (sigmoid + BCE), computed stably from logits."""
    target = torch.full_like(logits, gan_label(real, smooth, generator))
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, smooth: bool = True,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``(L(real, real label) + L(fake, fake label)) / 2`` with smoothed labels (FD-GAN's ``backward_Di`` /
    ``backward_Dp``)."""
    return 0.5 * (adversarial_loss(real_logits, True, smooth, generator)
                  + adversarial_loss(fake_logits, False, smooth, generator))


def reconstruction_l1(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the generated and the real target images (same shape, e.g. both in [-1, 1])."""
    if fake.shape != target.shape:
        raise ValueError(f"generated images {tuple(fake.shape)} and targets {tuple(target.shape)} differ in shape")
    return (fake.float() - target.float()).abs().mean()


def same_pose_l1(fake: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between the generated images ``fake[i]`` and ``fake[j]`` (pairs of one person rendered in the
    same pose with the same noise); 0 (keeping the graph) when there is no pair."""
    if len(i) != len(j):
        raise ValueError(f"same-pose pair index lists differ in length: {len(i)} vs {len(j)}")
    if len(i) == 0:
        return fake.sum() * 0.0
    return (fake[i].float() - fake[j].float()).abs().mean()
