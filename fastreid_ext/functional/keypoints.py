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
           "flip_permutation"]

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
