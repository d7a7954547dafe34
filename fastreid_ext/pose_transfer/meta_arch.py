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
