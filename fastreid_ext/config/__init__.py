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
    # Explicit mask root folder(s); empty: look for a ``masks/`` folder next to the image folders. Given, they
    # replace those folders (an image they lack has no mask: ON_MISSING); IMG_DIR/REL maps to ROOT/REL.png for
    # the image's folder or a parent as IMG_DIR (see fastreid_ext.data.annotations.AnnotationIndex).
    _C.DATASETS.ANNOTATIONS.MASK_ROOTS = []
    # What an image without keypoints/mask gets: "error" (raise, naming the image) or "empty"
    # (logged once per image: zero-score keypoints, an all-ones mask, i.e. the unmasked image).
    _C.DATASETS.ANNOTATIONS.ON_MISSING = "error"

    # Iterations between two log lines / metrics.json rows (FastReID hard-codes 200).
    _C.SOLVER.LOG_PERIOD = 200
    # Iterations per epoch: 0 = FastReID's len(train set) // SOLVER.IMS_PER_BATCH; > 0 = this fixed length
    # (LR steps, warm-up and periods count these epochs; the samplers are infinite).
    _C.SOLVER.ITERS_PER_EPOCH = 0
    # Random seed of torch / numpy / random in every process (+ rank) and of the training samplers: the same
    # config and seed give the same weights on CPU. < 0: FastReID's behaviour (seeded from the clock).
    _C.SEED = -1
    # Evaluate the model before the first iteration too and print before/after side by side.
    _C.TEST.EVAL_INIT = False

    # Input canonicalisation of our loaders, train and test (fastreid_ext/data/transforms.py; Yoshida et al.,
    # "Evaluation of metric learning model for Person Re-identification", Sec. 3 and 5(3)).
    # Letterbox: aspect-preserving resize to SIZE_TRAIN / SIZE_TEST, the rest filled with PAD_VALUE (RGB; the
    # paper: 128 x 384 padded with (128, 128, 128)); off: FastReID's plain resize.
    _C.INPUT.LETTERBOX = CN()
    _C.INPUT.LETTERBOX.ENABLED = False
    _C.INPUT.LETTERBOX.PAD_VALUE = [128, 128, 128]
    # Flip canonicalisation: mirror people so that the orientation falls in one half (KEEP "right": 0..180
    # degrees, 90 = facing image right; "left": the mirror). SOURCE "auto"/"keypoints": the facing direction
    # from keypoints (needs DATASETS.ANNOTATIONS.LOAD_KEYPOINTS), "orientation": a known orientation (the
    # analysis tool's SynthPed sets); |facing score| <= THRESHOLD (facing the camera or away) is never flipped;
    # keypoints scored below MIN_SCORE are ignored. Incompatible with random flips (INPUT.FLIP) in training.
    _C.INPUT.FLIP_CANON = CN()
    _C.INPUT.FLIP_CANON.ENABLED = False
    _C.INPUT.FLIP_CANON.KEEP = "right"
    _C.INPUT.FLIP_CANON.SOURCE = "auto"
    _C.INPUT.FLIP_CANON.THRESHOLD = 0.35
    _C.INPUT.FLIP_CANON.MIN_SCORE = 0.3

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
