"""The COCO-17 person keypoints: names, left/right pairs, skeleton (numpy only, no FastReID import).

The keypoint set of the COCO keypoint task (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV
2014), which HRNet (Sun et al., CVPR 2019) and mmpose predict and RBNet's reverse backbone learns (Yu & Piao,
"Reverse backbone net for unsupervised person re-identification", 2024, Sec. 1.1: one heatmap per keypoint).
Every module of fastreid_ext that needs the names, the count, the flip pairs or the skeleton imports them
from here.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["COCO17_NAMES", "NUM_KEYPOINTS", "COCO17_FLIP_PAIRS", "COCO17_SKELETON", "COCO17_LEFT", "COCO17_RIGHT",
           "flip_permutation", "OPENPOSE18_NAMES", "JOINT_ORDERS", "coco17_to_openpose18", "openpose18_to_coco17",
           "convert_joint_order"]

#: COCO keypoint order (0-based indices)
COCO17_NAMES: Tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO17_NAMES)
#: (left, right) index pairs swapped by a horizontal flip
COCO17_FLIP_PAIRS: Tuple[Tuple[int, int], ...] = tuple(
    (i, COCO17_NAMES.index("right_" + n[len("left_"):])) for i, n in enumerate(COCO17_NAMES) if n.startswith("left_"))
#: indices of the person's left / right side keypoints
COCO17_LEFT = frozenset(a for a, _ in COCO17_FLIP_PAIRS)
COCO17_RIGHT = frozenset(b for _, b in COCO17_FLIP_PAIRS)
#: limb connections for drawing (COCO's skeleton, converted to 0-based indices)
COCO17_SKELETON: Tuple[Tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def flip_permutation(num_keypoints: int = NUM_KEYPOINTS,
                     pairs: Sequence[Tuple[int, int]] = COCO17_FLIP_PAIRS) -> np.ndarray:
    """Index array ``perm`` such that ``keypoints[perm]`` are the keypoints of the horizontally flipped person
    (left and right swapped)."""
    perm = np.arange(num_keypoints)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


#: OpenPose's 18-joint COCO order (Cao et al., "Realtime multi-person 2D pose estimation using part affinity fields",
#: CVPR 2017): COCO-17 plus a neck, in OpenPose's own order. FD-GAN's pose maps (Ge et al., NeurIPS 2018) and the
#: pose-transfer paper's pose input (Sec. 3, "extracted with OpenPose") use it.
OPENPOSE18_NAMES: Tuple[str, ...] = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
    "right_ear", "left_ear",
)
#: joint-order name -> joint names
JOINT_ORDERS = {"coco17": COCO17_NAMES, "openpose18": OPENPOSE18_NAMES}
_OP_FROM_COCO = [COCO17_NAMES.index(n) if n != "neck" else -1 for n in OPENPOSE18_NAMES]
_COCO_FROM_OP = [OPENPOSE18_NAMES.index(n) for n in COCO17_NAMES]


def coco17_to_openpose18(kp):
    """``(..., 17, 3)`` COCO-17 keypoints (x, y, score; numpy or torch) -> ``(..., 18, 3)`` in OpenPose's order. The
    neck is the middle of the shoulders, scored with the lower of their two scores (0 when one is missing)."""
    if kp.shape[-2] != 17 or kp.shape[-1] != 3:
        raise ValueError(f"COCO-17 keypoints must be (..., 17, 3), got {tuple(kp.shape)}")
    ls, rs = COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")
    neck_xy = (kp[..., ls, :2] + kp[..., rs, :2]) / 2
    lo = kp[..., ls, 2:3]
    hi = kp[..., rs, 2:3]
    neck_s = np.minimum(lo, hi) if isinstance(kp, np.ndarray) else lo.minimum(hi)
    if isinstance(kp, np.ndarray):
        neck = np.concatenate([neck_xy, neck_s], -1)[..., None, :]
        parts = [kp[..., i:i + 1, :] if i >= 0 else neck for i in _OP_FROM_COCO]
        return np.concatenate(parts, -2)
    import torch

    neck = torch.cat([neck_xy, neck_s], -1).unsqueeze(-2)
    return torch.cat([kp[..., i:i + 1, :] if i >= 0 else neck for i in _OP_FROM_COCO], -2)


def openpose18_to_coco17(kp):
    """``(..., 18, 3)`` OpenPose keypoints -> ``(..., 17, 3)`` COCO-17 (the neck is dropped)."""
    if kp.shape[-2] != 18 or kp.shape[-1] != 3:
        raise ValueError(f"OpenPose-18 keypoints must be (..., 18, 3), got {tuple(kp.shape)}")
    return kp[..., _COCO_FROM_OP, :]


def convert_joint_order(kp, source: str, target: str, key: str = "joint order"):
    """Keypoints ``(..., K, 3)`` in the ``source`` order (``coco17`` | ``openpose18``) converted to ``target``. A
    ``ValueError`` naming ``key`` when an order is unknown or ``K`` is not the source order's joint count."""
    for o in (source, target):
        if o not in JOINT_ORDERS:
            raise ValueError(f"{key}: unknown joint order {o!r}, expected one of {sorted(JOINT_ORDERS)}")
    k = int(kp.shape[-2]) if len(kp.shape) >= 2 else -1
    if k != len(JOINT_ORDERS[source]) or kp.shape[-1] != 3:
        raise ValueError(f"{key} is {source!r} ({len(JOINT_ORDERS[source])} joints) but the keypoints have shape "
                         f"{tuple(kp.shape)} ({k} joints): the keypoints are in another joint order")
    if source == target:
        return kp
    return coco17_to_openpose18(kp) if source == "coco17" else openpose18_to_coco17(kp)
