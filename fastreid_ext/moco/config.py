"""Config keys of MoCo v2 (``MODEL.MOCO``).

He et al., "Momentum contrast for unsupervised visual representation learning", CVPR 2020; Chen et al., "Improved
baselines with momentum contrastive learning", 2020 (MoCo v2); Fu et al., "Unsupervised pre-training for person
re-identification", CVPR 2021 (LUPerson: MoCo v2 on 4M unlabelled person crops). ``projects/ConditionAnalysis/
README.md`` has the table "paper says / our default / option".
"""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_moco_config(cfg):
    """``MODEL.MOCO`` keys (defaults: MoCo v2's, except the temperature, see below)."""
    _C = cfg
    _C.MODEL.MOCO = CN()
    _C.MODEL.MOCO.DIM = 128  # projection output (MoCo: 128)
    _C.MODEL.MOCO.MLP = True  # MoCo v2's 2-layer MLP head (fc -> ReLU -> fc); False: MoCo v1's single fc
    _C.MODEL.MOCO.MLP_DIM = 0  # hidden width; 0: the backbone's FEAT_DIM (MoCo v2: 2048 for a ResNet-50)
    # Negatives kept (MoCo: 65536). Keep it below the number of training images, or the queue holds keys of the
    # very image being contrasted from earlier epochs (our SynthPed config: 1024 for ~1,800 crops).
    _C.MODEL.MOCO.QUEUE_SIZE = 65536
    _C.MODEL.MOCO.MOMENTUM = 0.999  # key-encoder momentum m (MoCo Eq. 2)
    # InfoNCE temperature tau. 0.07: what Yoshida et al. report for the LUPerson model (MoCo v1's value); MoCo v2
    # uses 0.2 and LUPerson's public lup_moco.py defaults to 0.1.
    _C.MODEL.MOCO.TEMPERATURE = 0.07
    # Shuffling BN (MoCo Sec. 3.3) within one process: the query batch is encoded in this many sub-batches in order,
    # the key batch in as many sub-batches of a random permutation, so the BN statistics of a query and its key come
    # from different images. 1: no shuffling (BN can leak the positive).
    _C.MODEL.MOCO.SHUFFLE_BN_CHUNKS = 2
    _C.MODEL.MOCO.LOSS_SCALE = 1.0
    # Leave queue columns that hold no key yet out of the InfoNCE logits (ours; MoCo fills the queue with random unit
    # vectors and uses them as negatives until real keys replace them, which collapsed short CPU runs: meta_arch.py).
    _C.MODEL.MOCO.MASK_EMPTY_QUEUE = True
    # MoCo v2 augmentation (Chen et al. 2020, after SimCLR), applied twice per image for the query and key views.
    _C.MODEL.MOCO.AUG = CN()
    _C.MODEL.MOCO.AUG.CROP_SCALE = [0.2, 1.0]  # RandomResizedCrop area range to INPUT.SIZE_TRAIN
    _C.MODEL.MOCO.AUG.CROP_RATIO = [0.75, 1.3333]  # its aspect-ratio range (torchvision's default; LUPerson's too)
    _C.MODEL.MOCO.AUG.CJ_PROB = 0.8  # colour jitter (brightness, contrast, saturation = CJ_STRENGTH, hue = CJ_HUE)
    _C.MODEL.MOCO.AUG.CJ_STRENGTH = 0.4
    _C.MODEL.MOCO.AUG.CJ_HUE = 0.1
    _C.MODEL.MOCO.AUG.GRAY_PROB = 0.2
    _C.MODEL.MOCO.AUG.BLUR_PROB = 0.5  # Gaussian blur, sigma uniform in BLUR_SIGMA (pixels)
    _C.MODEL.MOCO.AUG.BLUR_SIGMA = [0.1, 2.0]
    _C.MODEL.MOCO.AUG.FLIP_PROB = 0.5
    _C.MODEL.MOCO.AUG.REA_PROB = 0.0  # random erasing (LUPerson's variants add 0.5; MoCo v2 has none)
