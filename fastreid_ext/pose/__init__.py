"""Keypoint targets for pose-guided methods (RBNet): extraction, import and coverage check.

* :mod:`.backends`: ``mmpose`` (HRNet top-down) and ``mediapipe`` (BlazePose -> COCO-17) backends.
* :mod:`.extract`: resumable extraction over a dataset folder, :func:`check_coverage`,
  :func:`compare_keypoints`.
* :mod:`.convert`: import of COCO json / OpenPose-18 (and BODY_25) keypoint files.

The command line is ``tools/extract_keypoints.py``; usage in ``docs/keypoints.md``. Importing this package
imports neither mmpose nor mediapipe (the backends import them when built).
"""
from .backends import (BACKENDS, BLAZEPOSE_TO_COCO17, DEFAULT_MMPOSE_CONFIG, KeypointBackend,  # noqa: F401
                       MediaPipeBackend, MMPoseBackend, build_backend, finalize_keypoints, mmpose_config_path)
from .convert import (BODY25_TO_COCO17, OPENPOSE18_NAMES, OPENPOSE18_TO_COCO17, ImportResult,  # noqa: F401
                      import_keypoints, load_coco_keypoints, load_openpose_keypoints, match_to_dataset,
                      openpose_to_coco17)
from .extract import (CoverageReport, ExtractResult, check_coverage, compare_keypoints,  # noqa: F401
                      extract_keypoints, list_images, partial_path)
