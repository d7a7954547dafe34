"""SynthPed: procedural pedestrians with exact keypoints and masks, in several camera domains.

See :mod:`.render` (body model, cameras, domains) and :mod:`.generate` (dataset writer).
"""
from .generate import PRESETS, generate_dataset  # noqa: F401
from .preview import make_preview  # noqa: F401
from .render import (COCO_KEYPOINT_NAMES, DOMAINS, FLIP_PAIRS, CameraSpec, DomainSpec, Identity,  # noqa: F401
                     draw_keypoints, render_person, sample_identity)
