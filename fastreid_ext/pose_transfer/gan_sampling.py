"""Target poses, same-pose pairs and pose maps for the generator stage. Plain torch: no FastReID import.

FD-GAN (Ge et al., NeurIPS 2018) renders each input image in the pose of *another image of the same person*, so the
real image in that pose is the reconstruction target, and gives two images of one person the same target pose and
the same noise (the same-pose loss compares their two generated images). :func:`sample_pose_targets` does this
inside a FastReID P x K batch: each identity's images are shuffled and cut into pairs (a triple when the count is
odd); each pair gets one target drawn from the identity's *other* images (from the pair itself when the identity has
no other image in the batch: one of the two then reconstructs its own pose), one noise vector, and one same-pose pair.

:func:`pose_maps` renders keypoints ``(B, K, 3)`` (x, y, score in input pixels, as our loaders give them) as
full-size Gaussian heatmaps (FD-GAN: sigma 5 at 256 x 128, peak 1), in the joint order E_P was built for (COCO-17 or
OpenPose-18), converting from the order the keypoints come in.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from ..functional.heatmaps import render_heatmaps
from ..functional.keypoints import JOINT_ORDERS, convert_joint_order

__all__ = ["PoseTargets", "sample_pose_targets", "pose_maps", "JOINT_ORDERS"]


class PoseTargets(NamedTuple):
    """``target[i]``: the batch index whose pose (and real image) image ``i`` is rendered in; ``group[i]``: its noise
    group (one noise vector per group); ``pair_i`` / ``pair_j``: same-pose pairs (same person, target, noise)."""

    target: torch.Tensor
    group: torch.Tensor
    pair_i: torch.Tensor
    pair_j: torch.Tensor

    @property
    def num_groups(self) -> int:
        return int(self.group.max()) + 1 if len(self.group) else 0


def sample_pose_targets(pids: torch.Tensor, generator: Optional[torch.Generator] = None) -> PoseTargets:
    """Target poses and same-pose pairs of a batch with person ids ``pids`` (module docstring). An identity seen once
    in the batch reconstructs its own pose and has no pair."""
    pids = pids.detach().cpu().long().view(-1)
    n = len(pids)
    target = torch.arange(n)
    group = torch.zeros(n, dtype=torch.long)
    pi, pj = [], []
    g = 0
    for pid in torch.unique(pids).tolist():
        idx = torch.nonzero(pids == pid).view(-1)
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chunks = [idx[k:k + 2] for k in range(0, len(idx), 2)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            chunks[-2] = torch.cat([chunks[-2], chunks[-1]])
            chunks.pop()
        for c in chunks:
            others = idx[~torch.isin(idx, c)]
            pool = others if len(others) else c
            t = pool[int(torch.randint(len(pool), (1,), generator=generator))]
            target[c] = t
            group[c] = g
            g += 1
            for a in range(len(c)):
                for b in range(a + 1, len(c)):
                    pi.append(int(c[a]))
                    pj.append(int(c[b]))
    return PoseTargets(target, group, torch.tensor(pi, dtype=torch.long), torch.tensor(pj, dtype=torch.long))


def pose_maps(keypoints: Optional[torch.Tensor], size: Sequence[int], joints: str = "coco17",
              input_order: str = "coco17", sigma: float = 5.0, score_thresh: float = 0.3) -> torch.Tensor:
    """``(B, J, H, W)`` Gaussian pose maps (peak 1, empty channel for a joint scored below ``score_thresh``) of
    ``keypoints`` ``(B, K, 3)`` given in ``input_order``, converted to ``joints`` (module docstring). Errors name the
    config keys: no keypoints (``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS``), ``K`` not matching ``input_order``
    (``MODEL.POSE_TRANSFER.GAN.POSE.INPUT_ORDER``), an unknown ``joints`` (``...GAN.POSE.JOINTS``)."""
    if keypoints is None:
        raise ValueError("the generator stage needs keypoints with every image: set DATASETS.ANNOTATIONS."
                         "LOAD_KEYPOINTS True (SynthPed ships exact keypoints; real sets: tools/extract_keypoints.py)")
    if joints not in JOINT_ORDERS:
        raise ValueError(f"MODEL.POSE_TRANSFER.GAN.POSE.JOINTS must be one of {sorted(JOINT_ORDERS)}, got {joints!r}")
    kp = torch.as_tensor(keypoints).float()
    if kp.dim() == 2:
        kp = kp[None]
    kp = convert_joint_order(kp, input_order, joints, key="MODEL.POSE_TRANSFER.GAN.POSE.INPUT_ORDER")
    heat, _ = render_heatmaps(kp, size, size, sigma=sigma, score_thresh=score_thresh)
    return heat
