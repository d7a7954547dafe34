"""Config keys of HPLF (horizontal pooling for local features; AlignedReID-style local branch).

Paper: "Horizontal Pooling for Local Feature" (HPLF), a person re-identification article in Chinese; the
sections cited below are its own. Where the paper is silent the default is AlignedReID's (Zhang et al.,
"AlignedReID: Surpassing human-level performance in person re-identification", 2017) or our measured choice;
``projects/HPLF/README.md`` has the table "paper says / our default / option".
"""
from fastreid.config import CfgNode as CN

from ..config import register_config

#: values of ``MODEL.HPLF.TEST_FEAT``: the BN-neck feature (FastReID's test feature) or the GAP of the last conv map
TEST_FEATS = ("after", "before")
#: values of ``MODEL.HPLF.TEST_LOCAL_NORM`` (how global and local distances are put on one scale at test time)
TEST_LOCAL_NORMS = ("mean", "none")


@register_config
def add_hplf_config(cfg):
    """``MODEL.HPLF`` keys (defaults: the HPLF paper where it says, else AlignedReID or our measured choice)."""
    _C = cfg
    _C.MODEL.HPLF = CN()
    # The local branch. False: no local branch at all (FastReID's Baseline with HPLF's test protocol), the
    # "without HPLF" row of the paper's Table 4 at the same recipe.
    _C.MODEL.HPLF.ENABLED = True
    # Stripes: 0 = one per row of the backbone map (the paper's 1 x W window, Sec. 2.2), else K (H must divide by K).
    _C.MODEL.HPLF.NUM_STRIPES = 0
    _C.MODEL.HPLF.POOL = "avg"  # stripe pooling over its rows x W: "avg" | "max" (the paper does not say)
    # 1x1 conv + BN + ReLU reduction of each stripe to LOCAL_DIM channels (AlignedReID); 0 keeps the backbone's.
    _C.MODEL.HPLF.LOCAL_DIM = 128
    # L2-normalise every stripe feature before the distances. True: stripe distances in [0, 2], so the
    # (e^d - 1)/(e^d + 1) normalisation stays in its sloped part; without it the BN + ReLU stripes are ~9 apart,
    # every normalised stripe distance is ~1 and the local TriHard loss does not train (README, "why the local
    # loss stayed at the margin").
    _C.MODEL.HPLF.NORM_FEAT = True
    _C.MODEL.HPLF.DISTANCE = "shortest_path"  # "shortest_path" (AlignedReID DP) | "aligned" (same-index mean)
    _C.MODEL.HPLF.NORMALIZE_DIST = True  # element-wise (e^d - 1) / (e^d + 1) on the stripe distances (AlignedReID)
    # Hardest positive / negative of the local TriHard picked with the "local" distance itself (the paper, Sec. 2.1:
    # each branch builds its own hard triplets) | "global" (AlignedReID: mined with the global distance).
    _C.MODEL.HPLF.MINING = "local"
    _C.MODEL.HPLF.MARGIN = 0.3  # local TriHard margin (Sec. 3.2: margin 0.3; <= 0: soft margin)
    _C.MODEL.HPLF.SCALE = 1.0  # weight of the local TriHard loss (Sec. 2.3: the three losses are summed)
    _C.MODEL.HPLF.ON_EMPTY = "warn"  # batch without positive/negative pairs: "warn" (zero loss) | "raise"
    # Test feature of the global ranking: "after" = FastReID's BN-neck feature (FastReID 1.4.0's EmbeddingHead
    # returns it in eval whatever MODEL.HEADS.NECK_FEAT says) | "before" = the global average pooling of the last
    # conv map (the paper's "features of the last conv layer", Sec. 3.2; ranked with TEST.METRIC euclidean there).
    _C.MODEL.HPLF.TEST_FEAT = "after"
    # Test: also rank with global + TEST_LOCAL_WEIGHT * local distance (the global-only numbers stay the plain keys).
    _C.MODEL.HPLF.TEST_LOCAL = False
    _C.MODEL.HPLF.TEST_LOCAL_WEIGHT = 1.0
    # "mean": each distance matrix divided by its mean over query x gallery before the weighted sum (the local
    # distance ranges over 0 .. 2K-1, the cosine one over 0 .. 2, the Euclidean one is unbounded); "none": the raw
    # sum d_global + w * d_local (AlignedReID's test code).
    _C.MODEL.HPLF.TEST_LOCAL_NORM = "mean"
    _C.MODEL.HPLF.TEST_BLOCK_ELEMS = 1 << 23  # stripe distances held at once by the blocked test distance
