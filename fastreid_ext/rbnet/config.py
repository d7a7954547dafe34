"""Config keys of RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024)."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_rbnet_config(cfg):
    """Keys of RBNet under ``MODEL.RBNET`` (see the module docstring)."""
    _C = cfg
    _C.MODEL.RBNET = CN()
    # where the mask comes from: "re_layer1" (paper's best), "conv1", "re_layer2" (Table 2 variants)
    _C.MODEL.RBNET.MASK_SOURCE = "re_layer1"
    # how the 17 part masks become one: "max" (union) or "mean"
    _C.MODEL.RBNET.MASK_REDUCE = "max"
    # initial bias of the part-mask logits (> 0: the mask starts close to 1, backbone 2 sees the image)
    _C.MODEL.RBNET.MASK_INIT_BIAS = 0.0
    # initial weights of the part-mask convs: 0: random; a > 0: a / group width (part k ~ mean of group k)
    _C.MODEL.RBNET.MASK_INIT_WEIGHT = 0.0
    # True: the mask reads the reverse backbone's / backbone's features detached, so L_id2 / L_tri2 train the
    # mask generator (and backbone 2) only and the reverse backbone learns from L_MSE alone
    _C.MODEL.RBNET.MASK_DETACH = False
    # reverse widths: 17 * max(MIN_GROUP_WIDTH, round(WIDTH_MULT * C / 17)) per backbone level (C channels)
    _C.MODEL.RBNET.WIDTH_MULT = 0.25
    _C.MODEL.RBNET.MIN_GROUP_WIDTH = 4
    # blocks of re_layer1, re_layer2, re_layer3, re_layer4 (paper's Table 1)
    _C.MODEL.RBNET.BLOCKS = [2, 3, 5, 2]
    # l1..l5 of Eq. 4; MSE < 0: auto (l3 L_MSE ~ l2 L_tri at the start)
    _C.MODEL.RBNET.LOSS = CN()
    _C.MODEL.RBNET.LOSS.ID = 1.0
    _C.MODEL.RBNET.LOSS.TRI = 1.0
    _C.MODEL.RBNET.LOSS.MSE = -1.0
    _C.MODEL.RBNET.LOSS.ID2 = 1.0
    _C.MODEL.RBNET.LOSS.TRI2 = 1.0
    # keypoint heatmap targets: SIZE (H, W), empty: re_conv1's size (half the input); SIGMA in heatmap
    # pixels; keypoints with a score below SCORE_THRESH give an empty, unweighted channel
    _C.MODEL.RBNET.HEATMAP = CN()
    _C.MODEL.RBNET.HEATMAP.SIZE = []
    _C.MODEL.RBNET.HEATMAP.SIGMA = 2.0
    _C.MODEL.RBNET.HEATMAP.SCORE_THRESH = 0.3
    # backbone 2 = backbone 1 (shared weights, paper) or a separate copy; FREEZE: L_*2 train the mask only
    _C.MODEL.RBNET.SHARE_BACKBONE = True
    _C.MODEL.RBNET.FREEZE_BACKBONE2 = False
    # retrieval feature: "backbone1" | "backbone2" | "concat"
    _C.MODEL.RBNET.TEST_FEATURE = "backbone2"
