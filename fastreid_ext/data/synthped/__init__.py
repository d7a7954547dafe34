"""SynthPed: procedural pedestrians with exact COCO-17 keypoints and person masks, in three camera
domains (numpy + OpenCV only: it uses neither torch nor FastReID, and importing it does not import
FastReID).

* :mod:`.render`   - body model, cameras/domains (:data:`DOMAINS`), :func:`render_person`
* :mod:`.generate` - :func:`generate_dataset` (Market-1501 layout + ``keypoints.json`` + ``masks/`` +
  ``meta.json``) and :func:`make_preview`
* :mod:`.controlled` - :func:`generate_controlled`: the same people under controlled conditions, one factor at a
  time (``<factor>/<condition>/<id>_<shot>.png``, for ``tools/similarity_matrix.py``)

:mod:`.cli` (``tools/make_synthetic.py``) is the command line around it.
"""
from .controlled import FACTORS, STANDARD, generate_controlled, make_controlled_preview  # noqa: F401
from .generate import (FORMAT_VERSION, IMAGE_NAME_RE, PRESETS, DatasetParameterMismatch,  # noqa: F401
                       generate_dataset, make_preview)
from .render import (COCO_KEYPOINT_NAMES, COCO_SKELETON, DOMAINS, FLIP_PAIRS, VIEWS, CameraSpec,  # noqa: F401
                     DomainSpec, Identity, draw_keypoints, render_person, render_sample, sample_identity)

__all__ = [
    "generate_dataset", "make_preview", "DOMAINS", "DomainSpec", "CameraSpec", "Identity", "COCO_KEYPOINT_NAMES",
    "FLIP_PAIRS", "COCO_SKELETON", "VIEWS", "render_person", "render_sample", "sample_identity", "draw_keypoints",
    "PRESETS", "FORMAT_VERSION", "IMAGE_NAME_RE", "DatasetParameterMismatch",
    "generate_controlled", "make_controlled_preview", "FACTORS", "STANDARD",
]
