"""HPLF: "Horizontal Pooling for Local Feature" person re-identification (a Chinese journal article; the sections,
equations and tables cited are its own), a FastReID ``Baseline`` with a local branch. The local distance and its
shortest-path alignment follow AlignedReID (Zhang et al., "AlignedReID: Surpassing human-level performance in person
re-identification", 2017); the paper names only "a distance function" (Sec. 2.1).

Global branch: FastReID's backbone + ``EmbeddingHead`` + losses (softmax CE and TriHard, HPLF Eq. 1-3).
Local branch: the N x C x H x W backbone map is pooled with a 1 x W window into K stripes (HPLF Sec. 2.2),
reduced by a 1x1 conv + BN + ReLU (AlignedReID), L2-normalised (``MODEL.HPLF.NORM_FEAT``), and trained with TriHard
(Eq. 3) on the AlignedReID local distance (shortest path through the K x K stripe distance matrix). Each branch
builds its own hard triplets (Sec. 2.1): the local TriHard mines on the local distance (``MODEL.HPLF.MINING
local``; ``global`` is AlignedReID's choice). Total loss (Sec. 2.3): ``L = L_CE + L_TriHard(global) + w *
L_TriHard(local)``.

Test (Sec. 3.2: Euclidean distance on the features of the last conv layer): ``MODEL.HPLF.TEST_FEAT before`` returns
the global average pooling of the backbone map (before FastReID's BN neck) as the global feature, ranked with
FastReID's ``TEST.METRIC``; ``after`` (the key's default) keeps FastReID's BN-neck feature. With
``MODEL.HPLF.TEST_LOCAL`` the model returns ``[global | flattened local stripes]`` and
:class:`fastreid_ext.hplf.evaluator.HPLFEvaluator` (wired through the trainer's evaluator registry) reports
global-only and global + w * local numbers. ``MODEL.HPLF.ENABLED False`` drops the local branch (Table 4's model
without HPLF, same recipe and test protocol).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from fastreid.config import configurable
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.losses.utils import cosine_dist, euclidean_dist
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline

from ..functional.local_distance import METHODS, horizontal_pool, local_triplet_loss
from ..modeling.multi_branch import BranchOutputs, MultiBranchModel
from .config import TEST_FEATS

__all__ = ["HPLF", "local_feature_dim", "global_test_dim"]


def local_feature_dim(cfg) -> int:
    """Channels of one stripe feature of the local branch."""
    return cfg.MODEL.HPLF.LOCAL_DIM if cfg.MODEL.HPLF.LOCAL_DIM > 0 else cfg.MODEL.BACKBONE.FEAT_DIM


def global_test_dim(cfg) -> int:
    """Size of the global test feature: the backbone's channels for ``MODEL.HPLF.TEST_FEAT before`` (the pooled
    map), else FastReID's BN-neck feature (``MODEL.HEADS.EMBEDDING_DIM`` when > 0)."""
    if cfg.MODEL.HPLF.TEST_FEAT == "before" or cfg.MODEL.HEADS.EMBEDDING_DIM <= 0:
        return cfg.MODEL.BACKBONE.FEAT_DIM
    return cfg.MODEL.HEADS.EMBEDDING_DIM


@META_ARCH_REGISTRY.register()
class HPLF(MultiBranchModel, Baseline):
    """FastReID ``Baseline`` + horizontal-pooling local branch with local TriHard loss (module docstring)."""

    @configurable
    def __init__(self, *, local_reduction, enabled=True, num_stripes=0, pool="avg", norm_local=True,
                 distance="shortest_path", normalize_dist=True, mining="local", local_margin=0.3,
                 local_scale=1.0, on_empty="warn", test_feat="after", test_local=False, **kwargs):
        super().__init__(**kwargs)
        if distance not in METHODS:
            raise ValueError(f"MODEL.HPLF.DISTANCE must be one of {METHODS}, got {distance!r}")
        if mining not in ("global", "local"):
            raise ValueError(f"MODEL.HPLF.MINING must be 'global' or 'local', got {mining!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"MODEL.HPLF.POOL must be 'avg' or 'max', got {pool!r}")
        if on_empty not in ("warn", "raise"):
            raise ValueError(f"MODEL.HPLF.ON_EMPTY must be 'warn' or 'raise', got {on_empty!r}")
        if test_feat not in TEST_FEATS:
            raise ValueError(f"MODEL.HPLF.TEST_FEAT must be one of {TEST_FEATS}, got {test_feat!r}")
        if test_local and not enabled:
            raise ValueError("MODEL.HPLF.TEST_LOCAL needs the local branch: MODEL.HPLF.ENABLED is False")
        self.enabled = bool(enabled)
        self.local_reduction = local_reduction if self.enabled else None
        self.num_stripes = num_stripes
        self.pool = pool
        self.norm_local = norm_local
        self.distance = distance
        self.normalize_dist = normalize_dist
        self.mining = mining
        self.local_margin = local_margin
        self.local_scale = local_scale
        self.on_empty = on_empty
        self.test_feat = test_feat
        self.test_local = test_local

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        h = cfg.MODEL.HPLF
        feat_dim = cfg.MODEL.BACKBONE.FEAT_DIM
        if h.ENABLED and h.LOCAL_DIM > 0:
            reduction = nn.Sequential(nn.Conv2d(feat_dim, h.LOCAL_DIM, 1, bias=False),
                                      nn.BatchNorm2d(h.LOCAL_DIM), nn.ReLU(inplace=True))
            reduction.apply(weights_init_kaiming)
        elif h.ENABLED:
            reduction = nn.Identity()
        else:
            reduction = None
        ret.update(local_reduction=reduction, enabled=h.ENABLED, num_stripes=h.NUM_STRIPES, pool=h.POOL,
                   norm_local=h.NORM_FEAT, distance=h.DISTANCE, normalize_dist=h.NORMALIZE_DIST, mining=h.MINING,
                   local_margin=h.MARGIN, local_scale=h.SCALE, on_empty=h.ON_EMPTY, test_feat=h.TEST_FEAT,
                   test_local=h.TEST_LOCAL)
        return ret

    def local_features(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone map (N, C, H, W) -> stripe features (N, K, C_local)."""
        stripes = horizontal_pool(features, self.num_stripes, self.pool)  # (N, C, K, 1)
        local = self.local_reduction(stripes).squeeze(-1).transpose(1, 2)
        if self.norm_local:
            local = nn.functional.normalize(local, dim=-1)
        return local

    def global_test_feature(self, features: torch.Tensor) -> torch.Tensor:
        """Eval-mode global feature of a backbone map: the head's pooling of it (``TEST_FEAT before``: the last conv
        layer's features, HPLF Sec. 3.2) or FastReID's BN-neck feature (``after``)."""
        if self.test_feat == "before":
            return self.heads.pool_layer(features).flatten(1)
        return self.heads(features)

    # multi-branch interface (fastreid_ext.modeling.multi_branch): one "plain" branch + the local stripes
    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        features = self.backbone(self.preprocess_image(batched_inputs))
        context = {"local": self.local_features(features)} if self.enabled else {}
        return BranchOutputs({"plain": self.heads(features, targets)}, context)

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """The local TriHard loss (weight ``MODEL.HPLF.SCALE``); none without the local branch. On FastReID's
        PreciseBN pass (fake labels) the branch runs for its BN statistics, without mining."""
        if not self.enabled:
            return {}
        local = outputs.context["local"]
        if outputs.context.get("precise_bn"):
            return {"loss_local_triplet": local.sum() * 0.0}
        return {"loss_local_triplet": self.local_loss(local, outputs.heads["plain"]["features"], targets)}

    def inference(self, batched_inputs) -> torch.Tensor:
        """Global test feature (``MODEL.HPLF.TEST_FEAT``), or ``[global | flattened local stripes]`` with
        ``MODEL.HPLF.TEST_LOCAL``."""
        features = self.backbone(self.preprocess_image(batched_inputs))
        outputs = self.global_test_feature(features)
        if not self.test_local:
            return outputs
        return torch.cat([outputs, self.local_features(features).flatten(1)], 1)

    def feature_maps(self, batched_inputs) -> Dict[str, torch.Tensor]:
        features = self.backbone(self.preprocess_image(batched_inputs))
        maps = {"backbone": features}
        if self.enabled:
            maps["local_stripes"] = horizontal_pool(features, self.num_stripes, self.pool)
        return maps

    def local_loss(self, local: torch.Tensor, global_feat: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Local TriHard (HPLF Eq. 3), its hardest pairs mined on the local distance itself (``MINING local``, the
        paper's Sec. 2.1) or on the global TriHard's distance (``global``, AlignedReID)."""
        mining_dist = None
        if self.mining == "global":
            tri = self.loss_kwargs["tri"]
            g = global_feat.detach()
            mining_dist = cosine_dist(g, g) if tri.get("norm_feat") else euclidean_dist(g, g)
        loss, _ = local_triplet_loss(local, targets, self.local_margin, mining_dist, self.distance,
                                     self.normalize_dist, self.on_empty)
        return loss * self.local_scale
