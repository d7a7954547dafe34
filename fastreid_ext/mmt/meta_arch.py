"""MMT: Mutual Mean-Teaching (Ge, Chen & Li, "Mutual Mean-Teaching: Pseudo Label Refinery for Unsupervised
Domain Adaptation on Person Re-identification", ICLR 2020) around any registered re-id model.

The base model is used only through the multi-branch interface (:mod:`fastreid_ext.modeling.multi_branch`;
Baseline, HPLF, JointIBN, RBNet implement it, any FastReID Baseline-like model gets its defaults).
Two networks ``net1``/``net2`` of ``MODEL.MMT.BASE_ARCH``, initialised from two
source-trained checkpoints (``MODEL.MMT.WEIGHTS_1/2``), and their temporal mean networks ``mean1``/``mean2``
(RBNet Eqs. 5-6: ``E^T = a E^{T-1} + (1 - a) theta`` after every optimizer step, parameters only, buffers
copied). Every batch brings two augmentations of each target image (:mod:`fastreid_ext.mmt.two_view`);
net k and mean net k see view k. Loss (MMT Sec. 3.3)::

    (1 - w_ce)  (CE_ls(net1) + CE_ls(net2))      + w_ce  (SoftCE(net1 | mean2) + SoftCE(net2 | mean1))
  + (1 - w_tri) (Tri(net1)   + Tri(net2))        + w_tri (SoftTri(net1 | mean2) + SoftTri(net2 | mean1))
  + the base model's auxiliary losses of both networks (``aux_losses``: RBNet's heatmap MSE, HPLF's local triplet)

where CE and Tri sum over the base model's ID / metric loss terms (``loss_terms``), each with its configured
weight (FastReID's ``MODEL.LOSSES.CE.SCALE`` / ``TRI.SCALE``, RBNet's ``MODEL.RBNET.LOSS.*``), with the hard pseudo labels of the current clustering (:mod:`fastreid_ext.mmt.hooks`); losses in
:mod:`fastreid_ext.mmt.losses`. Classifiers hold ``MODEL.HEADS.NUM_CLASSES`` rows (a capacity;
the trainer sets it to the number of target images) of which the first ``num_classes`` (a buffer) are in
use: they are re-initialised from the normalized cluster centres at every clustering, the rest are zero
and ignored. Evaluation uses ``MODEL.MMT.EVAL_NET`` (default ``both``: both mean nets evaluated, the better
reported, as MMT's code does). The mean nets average the students' parameters only and keep their own BN
statistics (MMT's code; ``MODEL.MMT.MEAN_NET_BN copy`` copies the students' statistics after every step).

MMT + RBNet (Yu & Piao 2024, Sec. 1.2, Fig. 2): each network is an RBNet; the mean nets see the input
masked by their network's mask, ``f_2 = F(M(x'|theta_2) x' | E[theta_2])`` (Eq. 7): soft ID between net k's
plain-image classifier and mean net j's classifier on the masked image (Eqs. 7-8), soft triplet between
the masked-image features of net k and of mean net j (Eqs. 9-11). Hard losses are applied to both RBNet
branches (plain and masked image) with RBNet's l1, l2, l4, l5, plus its keypoint-heatmap MSE (l3).
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..modeling.multi_branch import LossTerm, with_multi_branch
from .two_view import view
from .losses import (cross_entropy_ls, ema_alpha, ema_update_, soft_cross_entropy, soft_triplet,
                                      softmax_triplet)

logger = logging.getLogger(__name__)

EVAL_NETS = ("both", "mean1", "mean2", "mean_avg", "net1", "net2")
MEAN_NET_BN = ("own", "copy")




@torch.no_grad()
def adapt_batchnorm(nets, batches, device) -> int:
    """AdaBN (Li et al., "Revisiting batch normalization for practical domain adaptation", 2016; not part of MMT):
    replace every BatchNorm's running statistics of ``nets`` (models of the multi-branch interface) by the
    average over ``batches`` (target images, train-mode pass of every branch, no gradient). Returns the number of
    batches seen."""
    bns = [m for net in nets for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    was = [net.training for net in nets]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    n = 0
    try:
        for net in nets:
            net.train()
        for batch in batches:
            dummy = torch.zeros(batch["images"].shape[0], dtype=torch.long, device=device)
            for net in nets:
                net.branch_outputs(batch, dummy)
            n += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        for net, w in zip(nets, was):
            net.train(w)
    return n


def _head_weight(head: nn.Module) -> nn.Parameter:
    w = getattr(head, "weight", None)
    if not isinstance(w, nn.Parameter) or w.dim() != 2:
        raise TypeError(f"MMT re-initialises classifiers from cluster centres and needs a head with a 2-d "
                        f"`weight` (FastReID's EmbeddingHead); {type(head).__name__} has none")
    return w


def load_source_weights(net: nn.Module, path: str) -> None:
    """Load a FastReID checkpoint of the base architecture, skipping the source classifier (other classes)."""
    from ..compat import trusted_torch_load

    if not path:
        logger.warning("MMT: no source checkpoint given (MODEL.MMT.WEIGHTS_1/2): a network starts from its "
                       "initialisation")
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MMT source checkpoint {path!r} (MODEL.MMT.WEIGHTS_1/2) does not exist; train "
                                f"the source models first (projects/MMT/README.md)")
    state = trusted_torch_load(path)
    state = state.get("model", state)
    own = net.state_dict()
    loadable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    skipped = sorted(k for k in state if k in own and k not in loadable)
    missing = sorted(k for k in own if k not in state)
    if not loadable:
        raise RuntimeError(f"{path}: no parameter matches MODEL.MMT.BASE_ARCH {type(net).__name__}")
    net.load_state_dict(loadable, strict=False)
    logger.info("MMT: loaded %d tensors from %s (skipped, other shape: %s; missing: %s)", len(loadable), path,
                skipped or "-", missing or "-")


@META_ARCH_REGISTRY.register()
class MMT(nn.Module):
    """Mutual Mean-Teaching around ``MODEL.MMT.BASE_ARCH`` (module docstring)."""

    def __init__(self, cfg):
        super().__init__()
        base = cfg.MODEL.MMT.BASE_ARCH
        if base == "MMT":
            raise ValueError("MODEL.MMT.BASE_ARCH cannot be MMT")
        if cfg.MODEL.MMT.EVAL_NET not in EVAL_NETS:
            raise ValueError(f"MODEL.MMT.EVAL_NET must be one of {EVAL_NETS}, got {cfg.MODEL.MMT.EVAL_NET!r}")
        if cfg.MODEL.MMT.HARD_TRIPLET not in ("softmax", "hinge"):
            raise ValueError(f"MODEL.MMT.HARD_TRIPLET must be 'softmax' or 'hinge', got {cfg.MODEL.MMT.HARD_TRIPLET!r}")
        base_cfg = cfg.clone()
        base_cfg.defrost()
        base_cfg.MODEL.META_ARCHITECTURE = base
        cls = with_multi_branch(META_ARCH_REGISTRY.get(base))
        self.net1 = cls(base_cfg)
        self.net2 = cls(base_cfg)
        self.mean1 = copy.deepcopy(self.net1)
        self.mean2 = copy.deepcopy(self.net2)
        for m in (self.mean1, self.mean2):
            m.requires_grad_(False)
        self.terms = self._mmt_terms(self.net1)
        m = cfg.MODEL.MMT
        self.alpha = float(m.ALPHA)
        self.ema_warmup = bool(m.EMA_WARMUP)
        self.w_ce = float(m.SOFT_CE_WEIGHT)
        self.w_tri = float(m.SOFT_TRI_WEIGHT)
        self.ce_eps = float(m.CE_EPSILON)
        self.hard_triplet = m.HARD_TRIPLET
        self.tri_kwargs = dict(margin=cfg.MODEL.LOSSES.TRI.MARGIN, norm_feat=cfg.MODEL.LOSSES.TRI.NORM_FEAT,
                               hard_mining=cfg.MODEL.LOSSES.TRI.HARD_MINING)
        self.eval_net = m.EVAL_NET
        if m.MEAN_NET_BN not in MEAN_NET_BN:
            raise ValueError(f"MODEL.MMT.MEAN_NET_BN must be one of {MEAN_NET_BN}, got {m.MEAN_NET_BN!r}")
        self.copy_bn = m.MEAN_NET_BN == "copy"
        # checkpointed state: classes in use, EMA step, the DBSCAN eps fixed at the first clustering
        self.register_buffer("num_classes", torch.zeros((), dtype=torch.long))
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("uda_eps", torch.zeros((), dtype=torch.float64))

    @classmethod
    def build(cls, cfg):
        return cls(cfg)

    @property
    def device(self):
        return self.net1.device

    @property
    def capacity(self) -> int:
        return int(_head_weight(next(iter(self.net1.classifiers().values()))).shape[0])

    def students(self):
        return (self.net1, self.net2)

    def means(self):
        return (self.mean1, self.mean2)

    # ------------------------------------------------------------------------------------------------------
    def load_source(self, weights_1: str, weights_2: str) -> None:
        """Initialise net k and mean net k from source checkpoint k (MMT: E^0[theta] = theta)."""
        load_source_weights(self.net1, weights_1)
        load_source_weights(self.net2, weights_2)
        self.mean1.load_state_dict(self.net1.state_dict())
        self.mean2.load_state_dict(self.net2.state_dict())
        self.ema_step.zero_()

    @torch.no_grad()
    def adapt_bn(self, batches) -> int:
        """AdaBN of both networks (:func:`adapt_batchnorm`), then their statistics copied to the mean nets.
        Returns the number of batches seen."""
        n = adapt_batchnorm((self.net1, self.net2), batches, self.device)
        for net, mean in ((self.net1, self.mean1), (self.net2, self.mean2)):
            for bm, bn in zip(mean.buffers(), net.buffers()):
                bm.copy_(bn)
        return n

    @torch.no_grad()
    def update_mean_nets(self) -> float:
        """One temporal-mean step after an optimizer step; returns the momentum used."""
        a = ema_alpha(int(self.ema_step), self.alpha, self.ema_warmup)
        for net, mean in ((self.net1, self.mean1), (self.net2, self.mean2)):
            ema_update_(mean.parameters(), net.parameters(), a)
            if self.copy_bn:  # MODEL.MMT.MEAN_NET_BN copy; MMT's code ("own") averages parameters only
                for bm, bn in zip(mean.buffers(), net.buffers()):
                    bm.copy_(bn)
        self.ema_step += 1
        return a

    @torch.no_grad()
    def reset_classifiers(self, centers: Dict[str, torch.Tensor]) -> List[nn.Parameter]:
        """Rows ``0..C-1`` of every classifier <- L2-normalized cluster centres of its branch, the other rows
        0; ``num_classes`` <- C. Returns the students' classifier parameters (their optimizer state is stale)."""
        c = int(next(iter(centers.values())).shape[0])
        if c > self.capacity:
            raise ValueError(f"{c} pseudo classes but the classifiers hold {self.capacity}: raise "
                             f"MODEL.HEADS.NUM_CLASSES (the MMT trainer sets it to the number of target images)")
        params = []
        for net in (self.net1, self.net2, self.mean1, self.mean2):
            for branch, head in net.classifiers().items():
                w = _head_weight(head)
                w.zero_()
                w[:c].copy_(F.normalize(centers[branch].to(w), dim=1))
                if net in (self.net1, self.net2):
                    params.append(w)
        self.num_classes.fill_(c)
        return params

    # ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _mmt_terms(net) -> List[LossTerm]:
        """The base model's ID / metric terms (MMT replaces their losses by its pseudo-label versions and keeps
        their weights); FastReID's pairwise circle / cosface terms have no MMT version and are left out."""
        terms = [t for t in net.loss_terms() if t.kind in ("id", "metric")]
        dropped = [t.name for t in net.loss_terms() if t.kind not in ("id", "metric") and t.weight]
        if dropped:
            logger.warning("MMT: the base model's %s have no pseudo-label version in MMT and are not used", dropped)
        if not any(t.kind == "id" and t.weight for t in terms):
            logger.warning("MMT: the base model has no weighted identity loss: MMT's hard CE is off")
        return terms

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        c = int(self.num_classes)
        if c <= 0:
            raise RuntimeError("MMT has no pseudo labels yet: train it with fastreid_ext's MMT trainer "
                               "(fastreid_ext.engine.build_trainer), which clusters the target domain before the "
                               "first epoch")
        targets = batched_inputs["targets"].to(self.device).long()
        if int(targets.max()) >= c:
            raise RuntimeError(f"pseudo label {int(targets.max())} >= number of classes {c}")
        v1, v2 = view(batched_inputs, 1), view(batched_inputs, 2)
        s1 = self.net1.branch_outputs(v1, targets)
        s2 = self.net2.branch_outputs(v2, targets)
        with torch.no_grad():
            t1 = self.mean1.teacher_outputs(v1, targets, s1)
            t2 = self.mean2.teacher_outputs(v2, targets, s2)

        def logits(out):
            return out["cls_outputs"][:, :c]

        # hard losses on pseudo labels with the base model's weights (MMT Sec. 3.3; RBNet Eq. 4's l1, l2, l4, l5)
        ce = tri = 0.0
        for t in self.terms:
            if not t.weight:
                continue
            for s in (s1, s2):
                if t.kind == "id":
                    ce = ce + t.weight * cross_entropy_ls(logits(s.heads[t.branch]), targets, self.ce_eps)
                else:
                    tri = tri + t.weight * self._hard_triplet(s.heads[t.branch]["features"], targets)
        sb, tb = self.net1.mutual_id_pair
        soft_ce = (soft_cross_entropy(logits(s1.heads[sb]), logits(t2[tb]))
                   + soft_cross_entropy(logits(s2.heads[sb]), logits(t1[tb])))
        sb, tb = self.net1.mutual_metric_pair
        soft_tri = (soft_triplet(s1.heads[sb]["features"], t2[tb]["features"], targets)
                    + soft_triplet(s2.heads[sb]["features"], t1[tb]["features"], targets))
        losses = {"loss_ce": (1 - self.w_ce) * ce, "loss_tri": (1 - self.w_tri) * tri,
                  "loss_ce_soft": self.w_ce * soft_ce, "loss_tri_soft": self.w_tri * soft_tri}
        losses = {k: v for k, v in losses.items() if isinstance(v, torch.Tensor)}
        # the base model's own other losses (RBNet's heatmap MSE, HPLF's local triplet), with their weights
        for k, (net, s, v) in enumerate(((self.net1, s1, v1), (self.net2, s2, v2)), 1):
            for name, value in net.aux_losses(s, v, targets).items():
                losses[f"{name}{k}"] = value
        self._log_accuracy(logits(s1.heads[self.net1.branch_names[0]]), targets)
        return losses

    def _hard_triplet(self, feats, targets):
        if self.hard_triplet == "softmax":
            return softmax_triplet(feats, targets)
        from fastreid.modeling.losses import triplet_loss

        return triplet_loss(feats, targets, **self.tri_kwargs)

    @staticmethod
    def _log_accuracy(logits, targets):
        from fastreid.modeling.losses import log_accuracy

        try:
            log_accuracy(logits.detach(), targets)
        except AssertionError:  # no EventStorage (tests, scripts)
            pass

    # ------------------------------------------------------------------------------------------------------
    def inference(self, batched_inputs) -> torch.Tensor:
        """Retrieval feature of ``MODEL.MMT.EVAL_NET`` (``both``: ``[mean net 1 | mean net 2]``, split by
        :class:`fastreid_ext.mmt.evaluator.MeanNetsEvaluator`)."""
        if self.eval_net == "both":
            return torch.cat([self.mean1(batched_inputs), self.mean2(batched_inputs)], dim=1)
        if self.eval_net == "mean_avg":
            f = [F.normalize(m(batched_inputs), dim=1) for m in (self.mean1, self.mean2)]
            return (f[0] + f[1]) / 2
        return getattr(self, self.eval_net)(batched_inputs)

    def feature_signature(self) -> str:
        """Which test feature :meth:`inference` returns (mean1, mean2, net1 and net2 have the same width): stored in
        an ONNX export so that evaluating it under another ``MODEL.MMT.EVAL_NET`` is refused
        (:func:`fastreid_ext.deploy.onnx_export.check_same_model`)."""
        return f"MODEL.MMT.EVAL_NET={self.eval_net}"

    @torch.no_grad()
    def extract_for_clustering(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Eval-mode features of both mean nets (MMT: the average of the two L2-normalized features): one entry
        per branch (for the classifier centres) and ``cluster`` (the base model's retrieval feature)."""
        outs = [m.branch_features(batched_inputs) for m in (self.mean1, self.mean2)]
        res = {b: (F.normalize(outs[0][b], dim=1) + F.normalize(outs[1][b], dim=1)) / 2 for b in outs[0]}
        res["cluster"] = self.mean1.retrieval_feature(res)
        return res
