"""Config keys of RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", Journal of
Jilin University (Engineering and Technology Edition), 2024). Paper vs default vs option: projects/RBNet/README.md."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_rbnet_config(cfg):
    """Keys of RBNet under ``MODEL.RBNET`` (see the module docstring)."""
    _C = cfg
    _C.MODEL.RBNET = CN()
    # where the mask comes from: "re_layer1" (paper's best), "conv1", "re_layer2" (Table 2 variants)
    _C.MODEL.RBNET.MASK_SOURCE = "re_layer1"
    # how the 17 part masks become one: "max" (union; default), "sum" (the paper's, Section 1.1 step 3; clipped
    # to 1), "mean"
    _C.MODEL.RBNET.MASK_REDUCE = "max"
    # initial bias of the part-mask logits (> 0: the mask starts close to 1, backbone 2 sees the image)
    _C.MODEL.RBNET.MASK_INIT_BIAS = 0.0
    # initial weights of the part-mask convs: 0: random; a > 0: a / group width (part k ~ mean of group k)
    _C.MODEL.RBNET.MASK_INIT_WEIGHT = 0.0
    # True: the mask (and the fusion, if on) reads the reverse backbone's / backbone's features detached, so
    # L_id2 / L_tri2 train the mask generator (and backbone 2) only and the reverse backbone learns from L_MSE alone
    _C.MODEL.RBNET.MASK_DETACH = False
    # where the 17 keypoint groups live. "heads" (Table 1): reverse widths round(WIDTH_MULT * C) per backbone
    # level (C channels; 64/256/512/1024/2048 for ResNet-50 at WIDTH_MULT 1), pointwise convs per POINTWISE, 17 groups
    # only where heatmaps / part masks are formed (after a 1x1 to 17 * HEAD_GROUP_WIDTH channels).
    # "all" (reduced): every conv after change_channel 17-grouped, widths 17 * max(MIN_GROUP_WIDTH,
    # round(WIDTH_MULT * C / 17)) (WIDTH_MULT 0.25: 68/68/136/255/510 for ResNet-50)
    _C.MODEL.RBNET.GROUPING = "heads"
    _C.MODEL.RBNET.WIDTH_MULT = 1.0
    _C.MODEL.RBNET.MIN_GROUP_WIDTH = 4
    _C.MODEL.RBNET.HEAD_GROUP_WIDTH = 4
    # GROUPING "heads": the reverse blocks' pointwise 1x1s are "channel" (default: grouped gcd(cin, cout), no mixing
    # inside the blocks; change_channel's 1x1 on the backbone's same-size features is the depthwise-separable
    # convolution's full-feature step, as Section 1.1 says) or "full" (textbook depthwise-separable blocks)
    _C.MODEL.RBNET.POINTWISE = "channel"
    # blocks of re_layer1, re_layer2, re_layer3, re_layer4 (paper's Table 1)
    _C.MODEL.RBNET.BLOCKS = [2, 3, 5, 2]
    # l1..l5 of Eq. 4; MSE < 0: auto (l3 L_MSE ~ l2 L_tri at the start)
    _C.MODEL.RBNET.LOSS = CN()
    _C.MODEL.RBNET.LOSS.ID = 1.0
    _C.MODEL.RBNET.LOSS.TRI = 1.0
    _C.MODEL.RBNET.LOSS.MSE = -1.0
    _C.MODEL.RBNET.LOSS.ID2 = 1.0
    _C.MODEL.RBNET.LOSS.TRI2 = 1.0
    # keypoint heatmap targets: SIZE (H, W), empty: re_conv1's size (half the input, Eq. 3: 128 x 64 for 256 x 128);
    # [h, w]: the prediction is resized to it (Table 1 gives re-conv1's output at the input size: [256, 128]);
    # SIGMA in heatmap pixels; keypoints with a score below SCORE_THRESH give an empty, unweighted channel
    _C.MODEL.RBNET.HEATMAP = CN()
    _C.MODEL.RBNET.HEATMAP.SIZE = []
    _C.MODEL.RBNET.HEATMAP.SIGMA = 2.0
    _C.MODEL.RBNET.HEATMAP.SCORE_THRESH = 0.3
    # backbone 2 = backbone 1 (shared weights, paper) or a separate copy; FREEZE: L_*2 train the mask only
    _C.MODEL.RBNET.SHARE_BACKBONE = True
    _C.MODEL.RBNET.FREEZE_BACKBONE2 = False
    # retrieval feature: "backbone1" | "backbone2" | "concat"
    _C.MODEL.RBNET.TEST_FEATURE = "backbone2"
    # Section 1.1 step 3: fuse the same-level backbone / reverse features into backbone 2 at these backbone levels
    # (subset of conv1, layer1..layer4; b2_L + BN(1x1(reverse feature)), zero-initialised). []: off (plain masked
    # pass, default); the fusion configs use [conv1, layer1]
    _C.MODEL.RBNET.FUSION = CN()
    _C.MODEL.RBNET.FUSION.LEVELS = []
    # after training (tools/train_net.py, our Trainer): write RBNet's picture (image | heatmaps | mask | activations,
    # Figs. 3-4) of NUM_IMAGES query images of the first test set to OUTPUT (empty: OUTPUT_DIR/rbnet_picture.png) and
    # log the mask mean on person vs background and the keypoint error (rbnet/evaluation.py) before and after
    # training on up to QUALITY_IMAGES test images (0: all, < 0: not measured); rbnet/hooks.py
    _C.MODEL.RBNET.PICTURE = CN()
    _C.MODEL.RBNET.PICTURE.ENABLED = False
    _C.MODEL.RBNET.PICTURE.NUM_IMAGES = 6
    _C.MODEL.RBNET.PICTURE.OUTPUT = ""
    _C.MODEL.RBNET.PICTURE.QUALITY_IMAGES = 256
