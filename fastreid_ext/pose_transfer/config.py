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

    # ---------------------------------------------------------------------------------------------------------------
    # Pose-guided generator stage (MODEL.META_ARCHITECTURE PoseGAN; FD-GAN, Ge et al., NeurIPS 2018; paper Sec. 3):
    # E_P (pose heatmaps -> 128-d), G ([E_I 512 | pose 128 | noise 256] -> image), D_i (Siamese on images) and
    # D_p (PatchGAN on image + pose maps), trained by alternating discriminator and generator steps.
    _C.MODEL.POSE_TRANSFER.GAN = CN()
    _C.MODEL.POSE_TRANSFER.GAN.POSE = CN()
    # joint order of E_P's input channels: "openpose18" (the paper / FD-GAN: OpenPose's 18 joints) | "coco17"
    _C.MODEL.POSE_TRANSFER.GAN.POSE.JOINTS = "openpose18"
    # order of the keypoints the loader gives (our keypoint store and SynthPed: "coco17"), converted to JOINTS
    _C.MODEL.POSE_TRANSFER.GAN.POSE.INPUT_ORDER = "coco17"
    # Gaussian sigma of the pose maps in input pixels (FD-GAN: 5 at 256 x 128); maps are rendered at INPUT.SIZE_TRAIN
    _C.MODEL.POSE_TRANSFER.GAN.POSE.SIGMA = 5.0
    _C.MODEL.POSE_TRANSFER.GAN.POSE.SCORE_THRESH = 0.3  # joints scored lower give an empty channel
    _C.MODEL.POSE_TRANSFER.GAN.EP = CN()
    _C.MODEL.POSE_TRANSFER.GAN.EP.DIM = 128  # pose feature (paper Sec. 3: 128-d)
    _C.MODEL.POSE_TRANSFER.GAN.EP.NGF = 64  # channels of E_P's first layer (x2, x4, x8, x8 after; FD-GAN: 64)
    _C.MODEL.POSE_TRANSFER.GAN.G = CN()
    _C.MODEL.POSE_TRANSFER.GAN.G.NOISE_DIM = 256  # paper Sec. 3: 256-d noise
    _C.MODEL.POSE_TRANSFER.GAN.G.NGF = 64  # channels of G's last hidden layer (x2, x4, x8, x8 before; FD-GAN: 64)
    _C.MODEL.POSE_TRANSFER.GAN.G.DROPOUT = 0.2  # FD-GAN's --drop
    # skip connections E_P -> G (FD-GAN's --connect-layers, 0..5, default 0): the first N decoder layers (from the
    # bottleneck) also read E_P's intermediate map of their size; 5 = a full U-Net (our SynthPed CPU configs)
    _C.MODEL.POSE_TRANSFER.GAN.G.CONNECT_LAYERS = 0
    _C.MODEL.POSE_TRANSFER.GAN.NORM = "BN"  # norm of E_P, G and D_p: "BN" (FD-GAN) | "IN" | "none"
    _C.MODEL.POSE_TRANSFER.GAN.DI = CN()
    _C.MODEL.POSE_TRANSFER.GAN.DI.INIT_FROM_EI = True  # D_i's encoder and head start as E_I and C_v (FD-GAN)
    _C.MODEL.POSE_TRANSFER.GAN.DI.FIX_BN = True  # D_i's BatchNorm layers stay in eval mode (FD-GAN's set_bn_fix)
    _C.MODEL.POSE_TRANSFER.GAN.DP = CN()
    _C.MODEL.POSE_TRANSFER.GAN.DP.NDF = 64
    _C.MODEL.POSE_TRANSFER.GAN.DP.LAYERS = 3
    # generator-step loss weights (FD-GAN's training commands: --lambda-recon 100 --lambda-sp 10, --lambda-veri 0 with
    # E_I frozen, 10 in joint fine-tuning); VERIF multiplies the model's own losses (C_v's BCE, FastReID's losses)
    _C.MODEL.POSE_TRANSFER.GAN.LOSS = CN()
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.ADV_ID = 1.0
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.ADV_POSE = 1.0
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.RECON = 100.0
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.SAME_POSE = 10.0
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.VERIF = 0.0
    _C.MODEL.POSE_TRANSFER.GAN.LOSS.SMOOTH = True  # smoothed discriminator labels (FD-GAN --smooth-label)
    # optimizers: G side (E_P, G, and E_I / C_v / head when they train) Adam(SOLVER.BASE_LR, BETAS); E_I at
    # ENCODER_LR_FACTOR x (FD-GAN stage III: 0.1). D side SGD or Adam at D_BASE_LR, D_i at DI_LR_FACTOR x. Both follow
    # FastReID's SOLVER.SCHED / STEPS / WARMUP_* schedule, each with its own scheduler.
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER = CN()
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.BETAS = [0.5, 0.999]
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.ENCODER_LR_FACTOR = 0.1
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.D_OPT = "SGD"  # "SGD" (FD-GAN) | "Adam"
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.D_BASE_LR = 0.001
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.D_MOMENTUM = 0.9
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.D_WEIGHT_DECAY = 0.0001
    _C.MODEL.POSE_TRANSFER.GAN.SOLVER.DI_LR_FACTOR = 0.01  # FD-GAN stage II: D_i at 1/100 of D_p's rate
    # alternation: a discriminator step every D_PERIOD iterations, a generator step every G_PERIOD iterations (both
    # counted on the global iteration, so a resumed run stays in step); FD-GAN: both every iteration, D first
    _C.MODEL.POSE_TRANSFER.GAN.D_PERIOD = 1
    _C.MODEL.POSE_TRANSFER.GAN.G_PERIOD = 1

    _C.TRANSFER = CN()
    # source checkpoint loaded into E_I before training (and into E_A / C_v when it has them); "" = none
    _C.TRANSFER.SOURCE_WEIGHTS = ""
    _C.TRANSFER.SOURCE_PREFIX = "auto"  # where E_I's tensors are in it: "auto" | "backbone." | "" | ...
    _C.TRANSFER.LOAD_EA = True  # also load E_A, C_v and the head (not its classifier) when the checkpoint has them
    # train on a seeded random share of the target training set (DATASETS.NAMES): (0, 1], by "ids" or "images"
    _C.TRANSFER.FRACTION = 1.0
    _C.TRANSFER.FRACTION_BY = "ids"
    _C.TRANSFER.FRACTION_SEED = 0
