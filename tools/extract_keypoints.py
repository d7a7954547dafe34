#!/usr/bin/env python
"""Keypoint targets (COCO-17) for a dataset folder: extract (mmpose HRNet / mediapipe BlazePose), import
(COCO json / OpenPose) or check coverage. Resumable: rerun the same command after an interruption.

    python tools/extract_keypoints.py DATASET_ROOT --backend mmpose --checkpoint HRNET.pth
    python tools/extract_keypoints.py DATASET_ROOT --backend mediapipe
    python tools/extract_keypoints.py DATASET_ROOT --backend import --source openpose_json/
    python tools/extract_keypoints.py DATASET_ROOT --check

``--help`` lists every option; docs/keypoints.md explains them.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastreid_ext  # noqa: E402,F401  (compat layer first: the mmpose patches hook onto it)
from fastreid_ext.pose.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
