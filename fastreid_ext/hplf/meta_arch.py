"""HPLF: horizontal pooling for local features (SPEC section 003), a FastReID ``Baseline`` with a local branch.

Global branch: FastReID's backbone + ``EmbeddingHead`` + losses (softmax CE and TriHard, HPLF Eq. 1-3).
Local branch: the N x C x H x W backbone map is pooled with a 1 x W window into K stripes (HPLF Sec. 2.2),
reduced by a 1x1 conv + BN + ReLU (AlignedReID), and trained with TriHard (Eq. 3) on the AlignedReID local
distance (shortest path through the K x K stripe distance matrix), the hardest pairs being mined with the
global distance. Total loss (HPLF Sec. 1/2.3): ``L = L_CE + L_TriHard(global) + w * L_TriHard(local)``.

Test: the global (BN-neck) feature is the re-id feature. With ``MODEL.HPLF.TEST_LOCAL`` the model returns
``[global | flattened local stripes]`` and :class:`fastreid_ext.hplf.evaluator.HPLFEvaluator`
(wired through the trainer's evaluator registry) reports global-only and global + w * local numbers.
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

__all__ = ["HPLF", "add_hplf_config", "local_feature_dim"]




def local_feature_dim(cfg) -> int:
    """Channels of one stripe feature of the local branch."""
    return cfg.MODEL.HPLF.LOCAL_DIM if cfg.MODEL.HPLF.LOCAL_DIM > 0 else cfg.MODEL.BACKBONE.FEAT_DIM


@META_ARCH_REGISTRY.register()
class HPLF(MultiBranchModel, Baseline):
    """FastReID ``Baseline`` + horizontal-pooling local branch with local TriHard loss."""

    @configurable
    def __init__(self, *, local_reduction, num_stripes=0, pool="avg", norm_local=False,
                 distance="shortest_path", normalize_dist=True, mining="global", local_margin=0.3,
                 local_scale=1.0, on_empty="warn", test_local=False, **kwargs):
        super().__init__(**kwargs)
        if distance not in METHODS:
            raise ValueError(f"MODEL.HPLF.DISTANCE must be one of {METHODS}, got {distance!r}")
        if mining not in ("global", "local"):
            raise ValueError(f"MODEL.HPLF.MINING must be 'global' or 'local', got {mining!r}")
        if pool not in ("avg", "max"):
            raise ValueError(f"MODEL.HPLF.POOL must be 'avg' or 'max', got {pool!r}")
        if on_empty not in ("warn", "raise"):
            raise ValueError(f"MODEL.HPLF.ON_EMPTY must be 'warn' or 'raise', got {on_empty!r}")
        self.local_reduction = local_reduction
        self.num_stripes = num_stripes
        self.pool = pool
        self.norm_local = norm_local
        self.distance = distance
        self.normalize_dist = normalize_dist
        self.mining = mining
        self.local_margin = local_margin
        self.local_scale = local_scale
        self.on_empty = on_empty
        self.test_local = test_local

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        h = cfg.MODEL.HPLF
        feat_dim = cfg.MODEL.BACKBONE.FEAT_DIM
        if h.LOCAL_DIM > 0:
            reduction = nn.Sequential(nn.Conv2d(feat_dim, h.LOCAL_DIM, 1, bias=False),
                                      nn.BatchNorm2d(h.LOCAL_DIM), nn.ReLU(inplace=True))
            reduction.apply(weights_init_kaiming)
        else:
            reduction = nn.Identity()
        ret.update(local_reduction=reduction, num_stripes=h.NUM_STRIPES, pool=h.POOL, norm_local=h.NORM_FEAT,
                   distance=h.DISTANCE, normalize_dist=h.NORMALIZE_DIST, mining=h.MINING,
                   local_margin=h.MARGIN, local_scale=h.SCALE, on_empty=h.ON_EMPTY, test_local=h.TEST_LOCAL)
        return ret

    def local_features(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone map (N, C, H, W) -> stripe features (N, K, C_local)."""
        stripes = horizontal_pool(features, self.num_stripes, self.pool)  # (N, C, K, 1)
        local = self.local_reduction(stripes).squeeze(-1).transpose(1, 2)
        if self.norm_local:
            local = nn.functional.normalize(local, dim=-1)
        return local

    # multi-branch interface (fastreid_ext.modeling.multi_branch): one "plain" branch + the local stripes
    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        features = self.backbone(self.preprocess_image(batched_inputs))
        return BranchOutputs({"plain": self.heads(features, targets)}, {"local": self.local_features(features)})

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """The local TriHard loss (weight ``MODEL.HPLF.SCALE``). On FastReID's PreciseBN pass (fake labels) the
        branch runs for its BN statistics, without mining."""
        local = outputs.context["local"]
        if outputs.context.get("precise_bn"):
            return {"loss_local_triplet": local.sum() * 0.0}
        return {"loss_local_triplet": self.local_loss(local, outputs.heads["plain"]["features"], targets)}

    def inference(self, batched_inputs) -> torch.Tensor:
        """Global BN-neck feature, or ``[global | flattened local stripes]`` with ``MODEL.HPLF.TEST_LOCAL``."""
        features = self.backbone(self.preprocess_image(batched_inputs))
        outputs = self.heads(features)
        if not self.test_local:
            return outputs
        return torch.cat([outputs, self.local_features(features).flatten(1)], 1)

    def feature_maps(self, batched_inputs) -> Dict[str, torch.Tensor]:
        features = self.backbone(self.preprocess_image(batched_inputs))
        return {"backbone": features, "local_stripes": horizontal_pool(features, self.num_stripes, self.pool)}

    def local_loss(self, local: torch.Tensor, global_feat: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Local TriHard (HPLF Eq. 3), mined on the global triplet distance (AlignedReID) or the local one."""
        mining_dist = None
        if self.mining == "global":
            tri = self.loss_kwargs["tri"]
            g = global_feat.detach()
            mining_dist = cosine_dist(g, g) if tri.get("norm_feat") else euclidean_dist(g, g)
        loss, _ = local_triplet_loss(local, targets, self.local_margin, mining_dist, self.distance,
                                     self.normalize_dist, self.on_empty)
        return loss * self.local_scale
