"""Config keys of HPLF (horizontal pooling for local features; AlignedReID-style local branch)."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_hplf_config(cfg):
    """``MODEL.HPLF`` keys (defaults follow AlignedReID / the HPLF paper)."""
    _C = cfg
    _C.MODEL.HPLF = CN()
    # Stripes: 0 = one per row of the backbone map (the paper's 1 x W window), else K (H must divide by K).
    _C.MODEL.HPLF.NUM_STRIPES = 0
    _C.MODEL.HPLF.POOL = "avg"  # stripe pooling over its rows x W: "avg" | "max"
    # 1x1 conv + BN + ReLU reduction of each stripe to LOCAL_DIM channels; 0 keeps the backbone's channels.
    _C.MODEL.HPLF.LOCAL_DIM = 128
    _C.MODEL.HPLF.NORM_FEAT = False  # L2-normalise every stripe feature before the distances
    _C.MODEL.HPLF.DISTANCE = "shortest_path"  # "shortest_path" (AlignedReID DP) | "aligned" (same-index mean)
    _C.MODEL.HPLF.NORMALIZE_DIST = True  # element-wise (e^d - 1) / (e^d + 1) on the stripe distances
    _C.MODEL.HPLF.MINING = "global"  # hardest pairs picked with the "global" distance (AlignedReID) | "local"
    _C.MODEL.HPLF.MARGIN = 0.3  # local TriHard margin (<= 0: soft margin)
    _C.MODEL.HPLF.SCALE = 1.0  # weight of the local TriHard loss
    _C.MODEL.HPLF.ON_EMPTY = "warn"  # batch without positive/negative pairs: "warn" (zero loss) | "raise"
    # Test: also rank with global + TEST_LOCAL_WEIGHT * local distance (global-only numbers stay reported).
    _C.MODEL.HPLF.TEST_LOCAL = False
    _C.MODEL.HPLF.TEST_LOCAL_WEIGHT = 1.0
    _C.MODEL.HPLF.TEST_BLOCK_ELEMS = 1 << 23  # stripe distances held at once by the blocked test distance
