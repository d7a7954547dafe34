"""PoseTransfer: transfer of pose-invariant features with an Additional Encoder and a verification classifier.

Paper (Japanese; authors and year not in our copy): "Person re-identification based on transfer learning of
pose-invariant domain-dependent features" (姿勢不変なドメイン依存特徴の転移学習に基づく人物再同定).
It keeps FD-GAN's image encoder E_I (Ge et al.,
"FD-GAN: Pose-guided feature distilling GAN for robust person re-identification", NeurIPS 2018; ResNet-18, 512-d,
instead of ResNet-50) trained on a large source set, and adapts to a new domain by training only an Additional
Encoder E_A fed by E_I's intermediate maps, with a verification classifier C_v and binary cross-entropy (Sec. 3,
Eq. 1). Model A: E_A after E_I's last block (4 conv layers); Model B: E_A branching before the last block (5 conv
layers) (Sec. 4). The generator that makes E_I pose-invariant is not part of this class: any source-trained
encoder can be E_I (``TRANSFER.SOURCE_WEIGHTS``).

::

    image -> E_I trunk --mid--> E_I last block --out-->                      (E_I: any FastReID backbone)
                         |                        |
                 B: E_A (5 convs)          A: E_A (4 convs)      none: out itself (fine-tuning baseline)
                         \\________________________/
                                     map -> EmbeddingHead (GAP [-> BNNeck]) -> re-id feature (test)
                                     map -> GAP -> f;  C_v((f_i - f_j)^2) on pairs of the P x K batch -> BCE

``MODEL.POSE_TRANSFER.FREEZE``: ``none`` (all trains: pre-training on the source, full fine-tuning), ``encoder``
(transfer: E_I's parameters take no gradient and its BatchNorm layers stay in eval mode, so its running statistics
do not move; E_I runs without autograd), ``trunk`` (the Table 2 baseline: only E_I's last block, the head and C_v
train). :meth:`PoseTransfer.frozen_state` / :meth:`PoseTransfer.changed_frozen_tensors` let the trainer verify
that nothing frozen changed (``fastreid_ext.pose_transfer.trainer``).

Losses: ``loss_verif`` = ``MODEL.POSE_TRANSFER.VERIF.SCALE`` x BCE (Eq. 1) on pairs of the batch
(``MODEL.POSE_TRANSFER.PAIRS``), plus, when ``MODEL.LOSSES.NAME`` lists them, FastReID's ID / triplet / circle /
cosface losses on the re-id feature (the multi-branch interface's loss terms, branch ``reid``).
"""
from __future__ import annotations

import itertools
import logging
from typing import Dict, List, Optional

import torch
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.heads import build_heads
from fastreid.modeling.meta_arch.baseline import Baseline
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..modeling.multi_branch import BranchOutputs, MultiBranchModel
from .additional_encoder import AdditionalEncoder
from .checkpoint import load_matching, match_prefix, read_state_dict
from .encoder import EncoderSplit, probe_split, run_encoder
from .pairs import PAIR_MODES, verification_loss
from .verifier import VerificationClassifier

logger = logging.getLogger(__name__)

__all__ = ["PoseTransfer", "VARIANTS", "FREEZE_MODES", "PAPER_DEPTH"]

VARIANTS = ("A", "B", "none")
FREEZE_MODES = ("none", "encoder", "trunk")
#: conv layers of E_A in the paper (Sec. 4)
PAPER_DEPTH = {"A": 4, "B": 5}


def _storage():
    from fastreid.utils.events import get_event_storage

    try:
        return get_event_storage()
    except AssertionError:  # outside a trainer
        return None


@META_ARCH_REGISTRY.register()
class PoseTransfer(MultiBranchModel, Baseline):
    """E_I (``backbone``) + E_A (``ea``, Model A / B) + ``EmbeddingHead`` (``heads``) + C_v (``verifier``); see the
    module docstring."""

    branch_names = ("reid",)
    mutual_id_pair = ("reid", "reid")
    mutual_metric_pair = ("reid", "reid")

    @configurable
    def __init__(self, *, backbone, heads, pixel_mean, pixel_std, loss_kwargs=None, split: EncoderSplit,
                 ea: Optional[nn.Module], verifier: VerificationClassifier, variant="B", freeze="none",
                 pair_mode="balanced", neg_pos_ratio=1.0, verif_scale=1.0, test_with_verif_feature=False):
        super().__init__(backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs=loss_kwargs)
        if variant not in VARIANTS:
            raise ValueError(f"MODEL.POSE_TRANSFER.VARIANT must be one of {VARIANTS}, got {variant!r}")
        if freeze not in FREEZE_MODES:
            raise ValueError(f"MODEL.POSE_TRANSFER.FREEZE must be one of {FREEZE_MODES}, got {freeze!r}")
        if float(neg_pos_ratio) <= 0:
            raise ValueError(f"MODEL.POSE_TRANSFER.PAIRS.NEG_POS_RATIO must be > 0, got {neg_pos_ratio}")
        if pair_mode not in PAIR_MODES:
            raise ValueError(f"MODEL.POSE_TRANSFER.PAIRS.MODE must be one of {PAIR_MODES}, got {pair_mode!r}")
        if (variant == "none") != (ea is None):
            raise ValueError("an E_A module goes with MODEL.POSE_TRANSFER.VARIANT A or B only")
        self.split = split
        self.ea = ea
        self.verifier = verifier
        self.variant = variant
        self.freeze = freeze
        self.pair_mode = pair_mode
        self.neg_pos_ratio = float(neg_pos_ratio)
        self.verif_scale = float(verif_scale)
        self.test_with_verif_feature = bool(test_with_verif_feature)
        self._apply_freeze()

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        p = cfg.MODEL.POSE_TRANSFER
        variant = p.VARIANT
        if variant not in VARIANTS:
            raise ValueError(f"MODEL.POSE_TRANSFER.VARIANT must be one of {VARIANTS}, got {variant!r}")
        backbone = ret["backbone"]
        split = probe_split(backbone, p.BRANCH_POINT, tuple(cfg.INPUT.SIZE_TRAIN))
        if variant == "none":
            ea, dim = None, split.out_channels
        else:
            width = int(p.EA.WIDTH) or split.out_channels
            depth = int(p.EA.DEPTH) or PAPER_DEPTH[variant]
            cin = split.out_channels if variant == "A" else split.mid_channels
            ea = AdditionalEncoder(cin, width, depth, p.EA.KERNEL, p.EA.NORM, p.EA.SKIP, p.EA.FIRST_STRIDE,
                                   p.EA.ZERO_INIT, p.BN_MIN_BATCH, p.EA.FIRST_KERNEL)
            dim = width
        heads = ret["heads"]
        if dim != cfg.MODEL.BACKBONE.FEAT_DIM:  # the head sits on E_A's map (or E_I's actual output)
            c = cfg.clone()
            c.defrost()
            c.MODEL.BACKBONE.FEAT_DIM = dim
            heads = build_heads(c)
        verifier = VerificationClassifier(dim, p.VERIF.OUTPUTS, p.VERIF.BATCH_NORM, p.BN_MIN_BATCH)
        ret.update(heads=heads, split=split, ea=ea, verifier=verifier, variant=variant, freeze=p.FREEZE,
                   pair_mode=p.PAIRS.MODE, neg_pos_ratio=p.PAIRS.NEG_POS_RATIO, verif_scale=p.VERIF.SCALE,
                   test_with_verif_feature=p.RERANK.ENABLED)
        return ret

    # ------------------------------------------------------------------------------------------------ freezing
    def _is_frozen_name(self, backbone_name: str) -> bool:
        if self.freeze == "encoder":
            return True
        if self.freeze == "trunk":
            owner = backbone_name.rsplit(".", 1)[0] if "." in backbone_name else ""
            return not self.split.is_last_block(owner)
        return False

    def _apply_freeze(self) -> None:
        for n, prm in self.backbone.named_parameters():
            if self._is_frozen_name(n):
                prm.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and getattr(self, "freeze", "none") != "none":
            if self.freeze == "encoder":
                self.backbone.eval()  # BN layers keep their running statistics
            else:
                for r in self.split.trunk_roots:
                    self.backbone.get_submodule(r).eval()
        return self

    def frozen_state(self) -> Dict[str, torch.Tensor]:
        """Copies of every tensor of E_I that the freeze mode keeps fixed (parameters and buffers, e.g. BN running
        statistics), by state-dict name; empty with ``FREEZE none``."""
        out = {}
        for n, t in itertools.chain(self.backbone.named_parameters(), self.backbone.named_buffers()):
            if self._is_frozen_name(n):
                out["backbone." + n] = t.detach().clone()
        return out

    def changed_frozen_tensors(self, snapshot: Dict[str, torch.Tensor]) -> List[str]:
        """Names of the tensors of ``snapshot`` (:meth:`frozen_state`) whose values differ now."""
        now = dict(itertools.chain(self.named_parameters(), self.named_buffers()))
        return [n for n, t in snapshot.items() if n not in now or not torch.equal(now[n].detach().cpu(), t.cpu())]

    def parameter_groups(self) -> Dict[str, Dict[str, int]]:
        """``{component: {"total": n, "trainable": n}}`` for E_I, E_A, the head and C_v."""
        parts = {"E_I": self.backbone, "E_A": self.ea, "head": self.heads, "C_v": self.verifier}
        out = {}
        for name, m in parts.items():
            ps = list(m.parameters()) if m is not None else []
            out[name] = {"total": sum(p.numel() for p in ps),
                         "trainable": sum(p.numel() for p in ps if p.requires_grad)}
        return out

    # ------------------------------------------------------------------------------------------------ source
    def load_source(self, path: str, prefix: str = "auto", load_ea: bool = True) -> Dict[str, object]:
        """Load a source-trained E_I from ``path`` (``TRANSFER.SOURCE_WEIGHTS``; every tensor of E_I must be there
        with its shape, else a ValueError naming the key), and with ``load_ea`` E_A, C_v and the head (except its
        identity classifier, ``heads.weight``) where the checkpoint has them with the same shapes."""
        sd = read_state_dict(path)
        own = self.backbone.state_dict()
        pre = match_prefix(sd, own, prefix, path=path,
                           describe=f"E_I ({type(self.backbone).__name__}, {len(own)} tensors)")
        self.backbone.load_state_dict({k: sd[pre + k] for k in own if pre + k in sd}, strict=False)
        info: Dict[str, object] = {"E_I": f"{len(own)} tensors from prefix {pre!r}"}
        if load_ea and pre.endswith("backbone."):
            root = pre[: -len("backbone.")]
            for name, skip in (("ea", ()), ("verifier", ()), ("heads", ("weight",))):
                m = getattr(self, name)
                if m is None:
                    continue
                loaded, left = load_matching(m, sd, f"{root}{name}.", skip)
                info[name] = f"{len(loaded)} tensors loaded, {len(left)} left as initialised"
        logger.info("PoseTransfer source weights %s: %s", path, info)
        return info

    # ------------------------------------------------------------------------------------------------ passes
    def encode(self, batched_inputs, need_out: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """E_I on the batch: ``{"mid": input of E_I's last block, "out": E_I's output}`` (``out`` left out for Model
        B unless ``need_out``; a Model B training pass stops E_I at the branch point). With ``FREEZE encoder`` E_I
        runs without autograd."""
        x = self.preprocess_image(batched_inputs)
        if need_out is None:
            need_out = self.variant != "B"
        grad = torch.is_grad_enabled() and self.freeze != "encoder"
        with torch.set_grad_enabled(grad):
            return run_encoder(self.backbone, self.split, x, need_out=need_out, stop_early=self.training)

    def reid_map(self, maps: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The map the re-id feature is pooled from: E_A's output (A: on E_I's output, B: on the mid map), or E_I's
        output (``VARIANT none``)."""
        if self.variant == "none":
            return maps["out"]
        return self.ea(maps["out"] if self.variant == "A" else maps["mid"])

    def verification_feature(self, fmap: torch.Tensor) -> torch.Tensor:
        """C_v's input: the globally pooled map (FD-GAN's feature; before any BNNeck)."""
        return self.heads.pool_layer(fmap).flatten(1)

    # multi-branch interface (fastreid_ext.modeling.multi_branch): one branch, "reid"
    def classifiers(self):
        return {"reid": self.heads}

    @property
    def retrieval_branches(self):
        return ("reid",)

    def loss_terms(self):
        return [t._replace(branch="reid") for t in super().loss_terms()]

    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        """E_I, E_A, head; ``context``: ``verif_feature`` (C_v's input), ``ei`` (E_I's maps), ``map``."""
        maps = self.encode(batched_inputs)
        fmap = self.reid_map(maps)
        return BranchOutputs({"reid": self.heads(fmap, targets)},
                             {"verif_feature": self.verification_feature(fmap), "ei": maps, "map": fmap})

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """``loss_verif``: ``VERIF.SCALE`` x the BCE of C_v on pairs of the batch (Eq. 1)."""
        if not self.verif_scale:
            return {}
        f = outputs.context["verif_feature"]
        if outputs.context.get("precise_bn"):  # FastReID's PreciseBN pass: no labels
            return {"loss_verif": f.sum() * 0.0}
        loss, stats = verification_loss(f, targets, self.verifier, self.pair_mode, self.neg_pos_ratio)
        if (torch.distributed.is_available() and torch.distributed.is_initialized()
                and not any(t.kind == "id" and t.weight for t in self.loss_terms())):
            # FastReID's DDP wrapper expects a gradient for every trainable parameter: the head's identity
            # classifier, unused without an ID loss, gets a zero one
            loss = loss + 0.0 * outputs.heads["reid"]["cls_outputs"].sum()
        st = _storage()
        if st is not None:
            st.put_scalar("verif_acc", stats["acc"])
            st.put_scalar("verif_pairs", stats["pairs"])
        return {"loss_verif": loss * self.verif_scale}

    def branch_features(self, batched_inputs) -> Dict[str, torch.Tensor]:
        return {"reid": self.heads(self.reid_map(self.encode(batched_inputs)))}

    def inference(self, batched_inputs) -> torch.Tensor:
        """The re-id feature; with ``MODEL.POSE_TRANSFER.RERANK.ENABLED`` followed by C_v's input feature
        (``[re-id | verification]``, split again by the evaluator)."""
        fmap = self.reid_map(self.encode(batched_inputs))
        feat = self.retrieval_feature({"reid": self.heads(fmap)})
        if self.test_with_verif_feature:
            return torch.cat([feat, self.verification_feature(fmap)], 1)
        return feat

    def feature_maps(self, batched_inputs) -> Dict[str, torch.Tensor]:
        maps = self.encode(batched_inputs, need_out=True)
        out = {"ei_mid": maps["mid"], "ei_out": maps["out"]}
        if self.ea is not None:
            out["ea"] = self.reid_map(maps)
        return out

    def verification_dim(self) -> int:
        return self.verifier.dim


# ==================================================================================================================
# The pose-guided generator stage (part 2)
# ==================================================================================================================
from ..functional.pose_gan import (adversarial_loss, discriminator_loss, reconstruction_l1,  # noqa: E402
                                   same_pose_l1)
from .gan_modules import IdentityDiscriminator, PoseDiscriminator, PoseEncoder, PoseGenerator  # noqa: E402
from .gan_sampling import JOINT_ORDERS, PoseTargets, pose_maps, sample_pose_targets  # noqa: E402

#: state-dict prefixes of the generator stage's modules
GAN_PARTS = ("pose_encoder", "generator", "disc_id", "disc_pose")


@META_ARCH_REGISTRY.register()
class PoseGAN(PoseTransfer):
    """PoseTransfer's E_I + head + C_v (``VARIANT none``: C_v on E_I's pooled 512-d feature, FD-GAN's verification
    branch) with the generator stage of FD-GAN (Ge et al., NeurIPS 2018) that makes E_I pose-invariant (pose-transfer
    paper, Sec. 3, Fig. 1): E_P (``pose_encoder``), G (``generator``), D_i (``disc_id``), D_p (``disc_pose``).

    One training iteration (``fastreid_ext.pose_transfer.gan_trainer``): :meth:`gan_forward` (E_I on the batch, target
    poses from other images of the same person in the batch, G renders every image in its target pose), then a
    discriminator step on :meth:`discriminator_losses` and a generator step on :meth:`generator_losses`. Evaluation and
    the checkpoint layout are PoseTransfer's (``backbone.*``, ``verifier.*``, ``heads.*``), so a PoseGAN checkpoint is
    a ``TRANSFER.SOURCE_WEIGHTS`` for part 1 as it is."""

    @configurable
    def __init__(self, *, pose_encoder: PoseEncoder, generator: PoseGenerator, disc_id: IdentityDiscriminator,
                 disc_pose: PoseDiscriminator, joints="openpose18", input_order="coco17", sigma=5.0,
                 score_thresh=0.3, loss_weights=None, smooth=True, di_init_from_ei=True, **kwargs):
        super().__init__(**kwargs)
        if self.variant != "none":
            raise ValueError(f"PoseGAN trains E_I + C_v with the generator (FD-GAN): MODEL.POSE_TRANSFER.VARIANT must "
                             f"be 'none', got {self.variant!r} (add E_A afterwards with PoseTransfer and "
                             f"TRANSFER.SOURCE_WEIGHTS)")
        if joints not in JOINT_ORDERS:
            raise ValueError(f"MODEL.POSE_TRANSFER.GAN.POSE.JOINTS must be one of {sorted(JOINT_ORDERS)}, got "
                             f"{joints!r}")
        self.pose_encoder, self.generator = pose_encoder, generator
        self.disc_id, self.disc_pose = disc_id, disc_pose
        self.joints, self.input_order = joints, input_order
        self.sigma, self.score_thresh = float(sigma), float(score_thresh)
        w = {"adv_id": 1.0, "adv_pose": 1.0, "recon": 100.0, "same_pose": 10.0, "verif": 0.0}
        w.update(loss_weights or {})
        self.loss_weights = w
        self.smooth = bool(smooth)
        if di_init_from_ei:
            self.init_disc_id_from_encoder()

    @classmethod
    def from_config(cls, cfg):
        from fastreid.modeling.backbones import build_backbone

        if cfg.MODEL.POSE_TRANSFER.VARIANT != "none":  # before building anything
            raise ValueError(f"PoseGAN trains E_I + C_v with the generator (FD-GAN): MODEL.POSE_TRANSFER.VARIANT must "
                             f"be 'none', got {cfg.MODEL.POSE_TRANSFER.VARIANT!r}")
        ret = super().from_config(cfg)
        g = cfg.MODEL.POSE_TRANSFER.GAN
        size = tuple(cfg.INPUT.SIZE_TRAIN)
        if g.POSE.JOINTS not in JOINT_ORDERS:
            raise ValueError(f"MODEL.POSE_TRANSFER.GAN.POSE.JOINTS must be one of {sorted(JOINT_ORDERS)}, got "
                             f"{g.POSE.JOINTS!r}")
        nj = len(JOINT_ORDERS[g.POSE.JOINTS])
        id_dim = ret["split"].out_channels
        pose_encoder = PoseEncoder(nj, size, g.EP.DIM, g.EP.NGF, g.NORM)
        ret.update(
            pose_encoder=pose_encoder,
            generator=PoseGenerator(id_dim, g.EP.DIM, g.G.NOISE_DIM, size, g.G.NGF, g.G.DROPOUT, g.NORM,
                                    connect_layers=g.G.CONNECT_LAYERS, skip_channels=pose_encoder.channels),
            disc_id=IdentityDiscriminator(build_backbone(cfg), id_dim, g.DI.FIX_BN,
                                          cfg.MODEL.POSE_TRANSFER.BN_MIN_BATCH),
            disc_pose=PoseDiscriminator(3 + nj, g.DP.NDF, g.DP.LAYERS, g.NORM),
            joints=g.POSE.JOINTS, input_order=g.POSE.INPUT_ORDER, sigma=g.POSE.SIGMA, score_thresh=g.POSE.SCORE_THRESH,
            loss_weights={"adv_id": g.LOSS.ADV_ID, "adv_pose": g.LOSS.ADV_POSE, "recon": g.LOSS.RECON,
                          "same_pose": g.LOSS.SAME_POSE, "verif": g.LOSS.VERIF},
            smooth=g.LOSS.SMOOTH, di_init_from_ei=g.DI.INIT_FROM_EI)
        return ret

    # ------------------------------------------------------------------------------------------------ parts
    def init_disc_id_from_encoder(self) -> None:
        """D_i's encoder := E_I, D_i's head := C_v (FD-GAN initialises D_i from the stage-I verification model)."""
        self.disc_id.encoder.load_state_dict(self.backbone.state_dict())
        load_matching(self.disc_id.head, self.verifier.state_dict(), "")

    def discriminator_parameters(self) -> List[nn.Parameter]:
        return [p for m in (self.disc_id, self.disc_pose) for p in m.parameters() if p.requires_grad]

    def generator_side_parameters(self) -> List[nn.Parameter]:
        """Everything trainable that is not a discriminator: E_P, G, and E_I / head / C_v unless frozen."""
        d = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in d]

    def parameter_groups(self) -> Dict[str, Dict[str, int]]:
        out = super().parameter_groups()
        for name, m in (("E_P", self.pose_encoder), ("G", self.generator), ("D_i", self.disc_id),
                        ("D_p", self.disc_pose)):
            ps = list(m.parameters())
            out[name] = {"total": sum(p.numel() for p in ps),
                         "trainable": sum(p.numel() for p in ps if p.requires_grad)}
        return out

    def load_source(self, path: str, prefix: str = "auto", load_ea: bool = True) -> Dict[str, object]:
        """PoseTransfer's source loading (E_I, C_v, head), plus E_P / G / D_i / D_p where the checkpoint has them (a
        PoseGAN checkpoint of the previous stage); without D_i in it, D_i starts as the loaded E_I + C_v."""
        info = super().load_source(path, prefix, load_ea)
        sd = read_state_dict(path)
        for name in GAN_PARTS:
            loaded, left = load_matching(getattr(self, name), sd, name + ".")
            if loaded:
                info[name] = f"{len(loaded)} tensors loaded, {len(left)} left as initialised"
        if "disc_id" not in info:
            self.init_disc_id_from_encoder()
            info["disc_id"] = "initialised from the loaded E_I and C_v"
        logger.info("PoseGAN parts from %s: %s", path, {k: v for k, v in info.items() if k in GAN_PARTS})
        return info

    def load_generator(self, path: str, key: str = "--weights") -> Dict[str, int]:
        """Load a PoseGAN checkpoint for generation: E_I, E_P and G must all be there with this model's shapes, else a
        ValueError naming ``key``, the file and the missing / mismatching tensors (E_P's input channels give away a
        checkpoint trained with another joint order)."""
        sd = read_state_dict(path, key)
        out = {}
        for name in ("backbone", "verifier", "pose_encoder", "generator"):
            own = getattr(self, name).state_dict()
            have = [k for k in own if name + "." + k in sd]
            if not have:
                raise ValueError(f"{key} {path} has no {name}.* tensors: it is not a PoseGAN checkpoint (no generator "
                                 f"weights; train one with MODEL.META_ARCHITECTURE PoseGAN, e.g. projects/"
                                 f"PoseTransfer/configs/SynthPed-GAN/stage2_gan.yml)" if name != "backbone" and
                                 name != "verifier" else f"{key} {path} has no {name}.* tensors")
            bad = [f"{name}.{k} {tuple(sd[name + '.' + k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                   if name + "." + k in sd and tuple(sd[name + "." + k].shape) != tuple(v.shape)]
            if bad:
                hint = ""
                if name == "pose_encoder" and any(b.startswith("pose_encoder.net.0.weight") for b in bad):
                    c = sd["pose_encoder.net.0.weight"].shape[1]
                    orders = [o for o, n in JOINT_ORDERS.items() if len(n) == c]
                    hint = (f" (the checkpoint's E_P reads {c} joint channels{' = ' + orders[0] if orders else ''}, "
                            f"this model MODEL.POSE_TRANSFER.GAN.POSE.JOINTS {self.joints!r} reads "
                            f"{self.pose_encoder.joints}: set the joint order the checkpoint was trained with)")
                raise ValueError(f"{key} {path}: {len(bad)} tensor(s) of {name} do not fit, e.g. {bad[:2]}{hint}")
            missing = [k for k in own if name + "." + k not in sd and not k.endswith("num_batches_tracked")]
            if missing:
                raise ValueError(f"{key} {path}: {name} lacks {len(missing)} tensor(s), e.g. {missing[:3]}")
            getattr(self, name).load_state_dict({k: sd[name + "." + k] for k in have}, strict=False)
            out[name] = len(have)
        return out

    # ------------------------------------------------------------------------------------------------ passes
    def pose_maps(self, keypoints) -> torch.Tensor:
        """Pose maps of ``keypoints`` (B, K, 3) at the model's input size, in E_P's joint order."""
        return pose_maps(keypoints, self.pose_encoder.size, self.joints, self.input_order, self.sigma,
                         self.score_thresh).to(self.device)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Loader images (0..255) -> [-1, 1], G's output range."""
        return images.to(self.device).float() / 127.5 - 1.0

    def unit_to_input(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> E_I's normalized input (pixel mean / std), for D_i."""
        return ((x + 1.0) * 127.5 - self.pixel_mean) / self.pixel_std

    def identity_features(self, batched_inputs) -> torch.Tensor:
        """E_I's pooled 512-d output (C_v's input, G's identity input)."""
        maps = self.encode(batched_inputs, need_out=True)
        return self.verification_feature(maps["out"])

    def generate(self, identity: torch.Tensor, target_maps: torch.Tensor,
                 noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """G(identity, E_P(target maps), noise) in [-1, 1] (with ``GAN.G.CONNECT_LAYERS`` G also reads E_P's
        intermediate maps); noise N(0, 1) from ``generator`` when not given."""
        if noise is None:
            noise = torch.randn(len(identity), self.generator.noise_dim, generator=generator).to(identity.device)
        pose, skips = self.encode_pose(target_maps)
        return self.generator(identity, pose, noise, skips)

    def encode_pose(self, target_maps: torch.Tensor):
        """E_P on pose maps: ``(pose feature, intermediate maps or None)``; the maps only when G connects them
        (``GAN.G.CONNECT_LAYERS``)."""
        if self.generator.connect_layers:
            return self.pose_encoder.forward_maps(target_maps)
        return self.pose_encoder(target_maps), None

    def gan_forward(self, batched_inputs, generator: Optional[torch.Generator] = None) -> Dict[str, object]:
        """E_I on the batch (with the head, for the model's own losses), target poses and same-pose pairs
        (:func:`~fastreid_ext.pose_transfer.gan_sampling.sample_pose_targets`), G's images. Returns a dict for
        :meth:`discriminator_losses` / :meth:`generator_losses`."""
        if "keypoints" not in batched_inputs:
            raise ValueError("PoseGAN's batch has no 'keypoints': set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True (the "
                             "generator stage renders every image in another image's pose)")
        targets = batched_inputs["targets"].to(self.device)
        maps = self.pose_maps(batched_inputs["keypoints"])
        outputs = self.branch_outputs(batched_inputs, targets)
        ident = outputs.context["verif_feature"]
        pt: PoseTargets = sample_pose_targets(targets, generator)
        tgt = pt.target.to(self.device)
        noise = torch.randn(max(pt.num_groups, 1), self.generator.noise_dim, generator=generator)
        noise = noise[pt.group].to(self.device)
        fake = self.generate(ident, maps[tgt], noise)
        x = self.preprocess_image(batched_inputs)
        return {"fake": fake, "real_target": self.to_unit(batched_inputs["images"])[tgt], "origin": x,
                "origin_target": x[tgt], "target_maps": maps[tgt], "pose_targets": pt, "outputs": outputs,
                "targets": targets, "identity": ident}

    def discriminator_losses(self, st: Dict[str, object],
                             generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """D_i: (input, real image of the same person in the target pose) real vs (input, generated) fake; D_p: (real
        target image, target pose) real vs (generated image, target pose) fake; smoothed labels (FD-GAN)."""
        fake = st["fake"].detach()
        out = {}
        if self.loss_weights["adv_id"]:  # with GAN.LOSS.ADV_ID 0 D_i plays no part: not run
            di_real = self.disc_id(st["origin"], st["origin_target"])
            di_fake = self.disc_id(st["origin"], self.unit_to_input(fake))
            out["loss_d_id"] = discriminator_loss(di_real, di_fake, self.smooth, generator)
        if self.loss_weights["adv_pose"]:
            dp_real = self.disc_pose(st["real_target"], st["target_maps"])
            dp_fake = self.disc_pose(fake, st["target_maps"])
            out["loss_d_pose"] = discriminator_loss(dp_real, dp_fake, self.smooth, generator)
        return out

    def generator_losses(self, st: Dict[str, object], batched_inputs) -> Dict[str, torch.Tensor]:
        """FD-GAN's L_G: ``ADV_ID`` GAN(D_i) + ``ADV_POSE`` GAN(D_p) + ``RECON`` L1 + ``SAME_POSE`` same-pose L1 +
        ``VERIF`` x the model's own losses (C_v's BCE, FastReID's losses; only when E_I or C_v train)."""
        w, fake, pt = self.loss_weights, st["fake"], st["pose_targets"]
        out = {}
        if w["adv_id"]:
            out["loss_g_adv_id"] = w["adv_id"] * adversarial_loss(self.disc_id(st["origin"], self.unit_to_input(fake)),
                                                                  True)
        if w["adv_pose"]:
            out["loss_g_adv_pose"] = w["adv_pose"] * adversarial_loss(self.disc_pose(fake, st["target_maps"]), True)
        out["loss_g_recon"] = w["recon"] * reconstruction_l1(fake, st["real_target"])
        if w["same_pose"]:
            out["loss_g_same_pose"] = w["same_pose"] * same_pose_l1(fake, pt.pair_i.to(fake.device),
                                                                    pt.pair_j.to(fake.device))
        if w["verif"] and self.freeze != "encoder":
            for k, v in self.model_losses(st["outputs"], batched_inputs, st["targets"]).items():
                out[k] = w["verif"] * v
        return out
