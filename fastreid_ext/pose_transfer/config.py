"""Config keys of pose-invariant feature transfer (``MODEL.POSE_TRANSFER``: the model; ``TRANSFER``: the transfer
protocol). Paper, our defaults and options side by side: projects/PoseTransfer/README.md."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_pose_transfer_config(cfg):
    """``MODEL.POSE_TRANSFER`` and ``TRANSFER`` keys."""
    _C = cfg
    _C.MODEL.POSE_TRANSFER = CN()
    # "A": E_A after E_I's last block (4 conv layers), "B": E_A branching before it (5 layers),
    # "none": no E_A, the re-id feature is E_I's (the fine-tuning baseline of Table 2, or E_I's pre-training)
    _C.MODEL.POSE_TRANSFER.VARIANT = "B"
    # module path of E_I's last block ("" = auto: layer4 / s4 / stage4 / conv4 / last downsampling child)
    _C.MODEL.POSE_TRANSFER.BRANCH_POINT = ""
    # what trains: "none" (everything: pre-training, full fine-tuning), "encoder" (E_I frozen with its BN
    # statistics: transfer of Model A / B), "trunk" (E_I frozen up to its last block: the fine-tuning baseline)
    _C.MODEL.POSE_TRANSFER.FREEZE = "none"
    # check every CHECK_PERIOD iterations (and at the end) that the frozen tensors did not change (0: only at the end)
    _C.MODEL.POSE_TRANSFER.CHECK_PERIOD = 50
    # training batches smaller than this use running BN statistics in E_A and C_v (GuardedBatchNorm)
    _C.MODEL.POSE_TRANSFER.BN_MIN_BATCH = 8

    _C.MODEL.POSE_TRANSFER.EA = CN()
    _C.MODEL.POSE_TRANSFER.EA.DEPTH = 0  # conv layers; 0 = the paper's: 4 for A, 5 for B
    _C.MODEL.POSE_TRANSFER.EA.WIDTH = 0  # channels; 0 = E_I's output channels (512 for ResNet-18)
    _C.MODEL.POSE_TRANSFER.EA.KERNEL = 3
    _C.MODEL.POSE_TRANSFER.EA.FIRST_KERNEL = 0  # kernel of the first layer; 0 = KERNEL (1: cheap on wide inputs)
    _C.MODEL.POSE_TRANSFER.EA.NORM = "BN"  # "BN" (guarded) | "GN" | "none"
    _C.MODEL.POSE_TRANSFER.EA.SKIP = "residual"  # "residual" | "none"
    _C.MODEL.POSE_TRANSFER.EA.FIRST_STRIDE = 1
    _C.MODEL.POSE_TRANSFER.EA.ZERO_INIT = True  # residual branches start at zero (E_A starts as its skip path)

    # verification classifier C_v: (f1 - f2)^2 -> BatchNorm1d -> Linear (FD-GAN), BCE (Eq. 1)
    _C.MODEL.POSE_TRANSFER.VERIF = CN()
    _C.MODEL.POSE_TRANSFER.VERIF.SCALE = 1.0  # weight of the BCE loss (0: no C_v loss)
    _C.MODEL.POSE_TRANSFER.VERIF.OUTPUTS = 1  # 1: sigmoid logit; 2: FD-GAN's two-way softmax
    _C.MODEL.POSE_TRANSFER.VERIF.BATCH_NORM = True
    _C.MODEL.POSE_TRANSFER.PAIRS = CN()
    _C.MODEL.POSE_TRANSFER.PAIRS.MODE = "balanced"  # "all" pairs of the P x K batch | "balanced"
    _C.MODEL.POSE_TRANSFER.PAIRS.NEG_POS_RATIO = 1.0  # negatives per positive in "balanced" (FD-GAN: 3)

    # test: re-score each query's top-k gallery with C_v (FD-GAN: k = 100); results under "RR/..."
    _C.MODEL.POSE_TRANSFER.RERANK = CN()
    _C.MODEL.POSE_TRANSFER.RERANK.ENABLED = False
    _C.MODEL.POSE_TRANSFER.RERANK.TOPK = 100
    _C.MODEL.POSE_TRANSFER.RERANK.BATCH_PAIRS = 65536

    _C.TRANSFER = CN()
    # source checkpoint loaded into E_I before training (and into E_A / C_v when it has them); "" = none
    _C.TRANSFER.SOURCE_WEIGHTS = ""
    _C.TRANSFER.SOURCE_PREFIX = "auto"  # where E_I's tensors are in it: "auto" | "backbone." | "" | ...
    _C.TRANSFER.LOAD_EA = True  # also load E_A, C_v and the head (not its classifier) when the checkpoint has them
    # train on a seeded random share of the target training set (DATASETS.NAMES): (0, 1], by "ids" or "images"
    _C.TRANSFER.FRACTION = 1.0
    _C.TRANSFER.FRACTION_BY = "ids"
    _C.TRANSFER.FRACTION_SEED = 0
