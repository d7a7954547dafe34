"""Config keys of fastreid_ext, added to FastReID's defaults with ``add_<name>_config(cfg)`` functions.

Each method module registers its adder with :func:`register_config`; :func:`get_cfg` returns FastReID's
defaults plus every registered key, which is what ``tools/train_net.py`` uses.
"""
from typing import Callable, List

from fastreid.config import CfgNode as CN
from fastreid.config import get_cfg as _fastreid_get_cfg

_ADDERS: List[Callable] = []


def register_config(fn: Callable) -> Callable:
    """Decorator: ``fn(cfg)`` adds a method's keys; it runs in :func:`get_cfg`."""
    if fn not in _ADDERS:
        _ADDERS.append(fn)
    return fn


@register_config
def add_fastreid_ext_config(cfg):
    """Keys shared by every fastreid_ext component (annotations, SynthPed)."""
    _C = cfg
    # Per-image keypoints and person masks, carried through the loader and augmentations.
    _C.DATASETS.ANNOTATIONS = CN()
    _C.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = False
    _C.DATASETS.ANNOTATIONS.LOAD_MASKS = False
    # Explicit keypoint file(s) (json, see fastreid_ext.data.annotations); empty: look for
    # ``keypoints.json`` in the image's folder and its parents (the dataset root).
    _C.DATASETS.ANNOTATIONS.KEYPOINTS_FILES = []
    # Explicit mask root folder(s); empty: look for a ``masks/`` folder next to the image folders.
    _C.DATASETS.ANNOTATIONS.MASK_ROOTS = []
    # What an image without keypoints/mask gets: "error" (raise, naming the image) or "empty"
    # (logged once per image: zero-score keypoints, an all-ones mask, i.e. the unmasked image).
    _C.DATASETS.ANNOTATIONS.ON_MISSING = "error"

    # Iterations between two log lines / metrics.json rows (FastReID hard-codes 200).
    _C.SOLVER.LOG_PERIOD = 200
    # Evaluate the model before the first iteration too and print before/after side by side.
    _C.TEST.EVAL_INIT = False

    # SynthPed: created on first use under $FASTREID_DATASETS.
    _C.DATASETS.SYNTHPED = CN()
    _C.DATASETS.SYNTHPED.AUTO_CREATE = True
    _C.DATASETS.SYNTHPED.PRESET = "default"  # "default" | "tiny"
    _C.DATASETS.SYNTHPED.NUM_TRAIN_IDS = 0  # 0: the preset's
    _C.DATASETS.SYNTHPED.NUM_TEST_IDS = 0
    _C.DATASETS.SYNTHPED.SEED = -1  # -1: the domain's fixed default seed
    _C.DATASETS.SYNTHPED.VERTICAL_MISALIGN = 0.0


def get_cfg():
    """FastReID's default config plus all fastreid_ext keys."""
    cfg = _fastreid_get_cfg()
    for fn in _ADDERS:
        fn(cfg)
    return cfg
