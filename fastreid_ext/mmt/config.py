"""Config keys of MMT (Ge, Chen & Li, "Mutual Mean-Teaching", ICLR 2020)."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_mmt_config(cfg):
    """``MODEL.MMT`` (the networks and losses) and ``UDA`` (pseudo labels) keys."""
    _C = cfg
    _C.MODEL.MMT = CN()
    _C.MODEL.MMT.BASE_ARCH = "Baseline"  # any registered meta-architecture: Baseline, RBNet, HPLF, ...
    _C.MODEL.MMT.WEIGHTS_1 = ""  # source-trained checkpoints of BASE_ARCH for net 1 / net 2 (and their mean nets)
    _C.MODEL.MMT.WEIGHTS_2 = ""
    _C.MODEL.MMT.ALPHA = 0.999  # temporal-mean momentum a
    _C.MODEL.MMT.EMA_WARMUP = True  # MMT's code: a_t = min(1 - 1/(t+1), a)
    _C.MODEL.MMT.SOFT_CE_WEIGHT = 0.5  # w_ce
    _C.MODEL.MMT.SOFT_TRI_WEIGHT = 0.8  # w_tri
    _C.MODEL.MMT.CE_EPSILON = 0.1  # label smoothing of the hard CE
    _C.MODEL.MMT.HARD_TRIPLET = "softmax"  # "softmax" (MMT's code, margin 0) | "hinge" (MODEL.LOSSES.TRI)
    # both (MMT's code: both mean nets evaluated, the better reported) | mean1 | mean2 | mean_avg (both,
    # L2-normalized, averaged) | net1 | net2
    _C.MODEL.MMT.EVAL_NET = "both"
    # mean nets' BN statistics: "own" (MMT's code: parameters averaged, statistics from the mean nets' own
    # train-mode passes) | "copy" (the students' statistics copied after every step)
    _C.MODEL.MMT.MEAN_NET_BN = "own"

    _C.UDA = CN()
    # pseudo labels: "dbscan" (sparse Jaccard + DBSCAN; MMT-dbscan, RBNet) | "kmeans" (MMT-500 / MMT-700)
    _C.UDA.CLUSTERING = "dbscan"
    _C.UDA.NUM_CLUSTERS = 500  # k-means clusters (MMT: 500 Market-1501 / DukeMTMC, 700 ... -> MSMT17)
    _C.UDA.KMEANS_SEED = 0  # k-means initialisation seed of the first clustering (+1 at every re-clustering)
    _C.UDA.EPS = 0.0  # DBSCAN radius on the Jaccard distance; <= 0: MMT's rule at the first clustering, then kept
    _C.UDA.EPS_RHO = 1.6e-3  # MMT's rule: mean of the smallest rho fraction of the pairwise distances
    _C.UDA.MIN_SAMPLES = 4
    _C.UDA.K1 = 30  # k-reciprocal Jaccard distance
    _C.UDA.K2 = 6
    # kNN of the Jaccard distance (fastreid_ext/functional/jaccard.py knn_search): auto (exact torch search up to
    # 50,000 samples, approx above) | torch | approx (PCA + bf16 candidates, exact re-rank, recall-checked) |
    # flat_l2 | flat_ip | ivf (faiss)
    _C.UDA.KNN_INDEX = "auto"
    _C.UDA.OUTLIERS = "drop"  # drop (MMT) | keep (each outlier its own class)
    _C.UDA.CLUSTER_EVERY = 1  # re-cluster every N epochs
    _C.UDA.RESET_OPTIMIZER = True  # clear the optimizer state at every re-clustering (MMT builds a new Adam)
    _C.UDA.ADABN = False  # before the first clustering, re-estimate BN statistics on the target (AdaBN; not MMT's)
