"""RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", Journal of Jilin University
(Engineering and Technology Edition), 2024), supervised part.

Pipeline (Fig. 1, Section 1.1)::

    x_raw (0..255) --normalize--> x --backbone 1--> conv1, layer1..layer4 --head 1--> L_id, L_tri
                                         |
                                   reverse backbone --re_conv1--> 17 heatmaps (H/2 x W/2) --> L_MSE
                                         | re_layer1 (+ conv1)
                                   mask generator --> M(x) in [0, 1], H x W
    x_raw * M(x) --normalize--> backbone 2 --> layer4 --head 2--> L_id2, L_tri2
                                    ^ (option) same-level reverse features fused in (Section 1.1 step 3)

    L = l1 L_id + l2 L_tri + l3 L_MSE + l4 L_id2 + l5 L_tri2                          (Eq. 4)

Choices where the paper is silent (documented here and in projects/RBNet/README.md):

* **Masking the raw image.** The mask multiplies the un-normalized image (0..255) and the product is then
  normalized, so masked-out pixels become black (like background removal), not the dataset mean. The raw
  batch is kept aside because FastReID's normalization (patched out of place) returns a new tensor.
* **Backbone 2 shares backbone 1's weights by default** (``MODEL.RBNET.SHARE_BACKBONE True``): the paper
  lets "the backbone re-learn features" from the masked image and calls that pass "backbone 2"; only for
  MMT does it keep backbone 2's parameters "in a new instance" (the temporal mean net), which implies that
  in supervised training there is no separate instance. ``SHARE_BACKBONE False`` builds a separate copy
  (same initial weights). ``FREEZE_BACKBONE2 True``: L_id2/L_tri2 do not update backbone 2's weights nor its
  BN statistics but still train the mask (and, through it, the reverse backbone and backbone 1); with a
  shared backbone the second pass runs on detached copies of the shared weights, with a separate one the
  copy is fixed (no gradients, BN in eval mode).
* **Heads.** Backbone 2 has its own ``EmbeddingHead`` (BNNeck + classifier): masked images have other
  feature statistics. ``MODEL.LOSSES.CE`` (EPSILON, ALPHA) and ``MODEL.LOSSES.TRI`` (MARGIN, NORM_FEAT,
  HARD_MINING) configure both ID and both triplet losses; their weights are ``MODEL.RBNET.LOSS.*``
  (``MODEL.LOSSES.NAME`` / ``*.SCALE`` are not used by RBNet).
* **l3.** ``MODEL.RBNET.LOSS.MSE < 0`` (default) picks l3 so that l3 L_MSE is about l2 L_tri at the start
  (paper, below Eq. 4): l3 = l2 * margin * H_hm W_hm / (pi sigma^2)
  (:func:`fastreid_ext.functional.heatmaps.mse_weight_for_triplet`); a positive value is used as is.
* **Targets.** Heatmaps are rendered on the fly from ``batched_inputs["keypoints"]`` (B x 17 x 3, input
  pixels; ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True``) with ``MODEL.RBNET.HEATMAP.SIGMA``. No loader of this
  package produces heatmaps; a custom batch may carry ``batched_inputs["heatmaps"]`` (B x 17 x h x w at the
  predicted size, following the batch's augmentation) and they are used instead.
* **Widths** (``MODEL.RBNET.GROUPING``, ``WIDTH_MULT``): Table 1's widths with 17-way grouping only where heatmaps
  and part masks are formed (``heads``, default), or a reduced, 17-grouped reverse path (``all``);
  :mod:`fastreid_ext.rbnet.reverse_backbone`.
* **Fusion into backbone 2** (``MODEL.RBNET.FUSION.LEVELS``, off by default): :mod:`fastreid_ext.rbnet.fusion`.
* **Test feature** (``MODEL.RBNET.TEST_FEATURE``): ``backbone1`` (head 1's BNNeck feature of the plain
  image), ``backbone2`` (head 2's, of the masked image; default) or ``concat`` (both, each L2-normalized).
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, Optional

import torch
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.heads import build_heads
from fastreid.modeling.meta_arch.baseline import Baseline
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..functional.heatmaps import (check_heatmap_shapes, heatmap_mse_loss, mse_weight_for_triplet,
                                    render_heatmaps, visibility_weights)
from ..modeling.backbones.multiscale import as_multiscale, level_table
from ..modeling.multi_branch import BranchOutputs, LossTerm, MultiBranchModel
from .fusion import Backbone2Fusion, FusedBackbone
from .masking import REDUCTIONS, apply_mask
from .reverse_backbone import GROUPINGS, MASK_SOURCES, NUM_KEYPOINTS, SAME_LEVEL, MaskGenerator, ReverseBackbone

logger = logging.getLogger(__name__)

TEST_FEATURES = ("backbone1", "backbone2", "concat")


def _storage():
    from fastreid.utils.events import get_event_storage

    try:
        return get_event_storage()
    except AssertionError:  # called outside a trainer (tests, scripts)
        return None


@META_ARCH_REGISTRY.register()
class RBNet(MultiBranchModel, Baseline):
    """RBNet: ResNet backbone + reverse backbone (keypoint heatmaps) + mask + backbone 2 (module docstring)."""

    @configurable
    def __init__(self, *, backbone, heads, pixel_mean, pixel_std, loss_kwargs=None, heads2, reverse,
                 mask_generator, share_backbone=True, freeze_backbone2=False, test_feature="backbone2",
                 loss_weights=None, heatmap_size=None, heatmap_sigma=2.0, score_thresh=0.3, mask_detach=False,
                 fusion=None, keypoints_configured=None):
        """NOTE: this interface is experimental. ``keypoints_configured``: the config's
        ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS`` (``None``: unknown), so that the error for a batch without keypoints
        says what to change."""
        backbone = as_multiscale(backbone)
        super().__init__(backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs=loss_kwargs)
        if test_feature not in TEST_FEATURES:
            raise ValueError(f"MODEL.RBNET.TEST_FEATURE must be one of {TEST_FEATURES}, got {test_feature!r}")
        self.heads2 = heads2
        self.reverse = reverse
        self.mask_generator = mask_generator
        self.share_backbone = bool(share_backbone)
        self.freeze_backbone2 = bool(freeze_backbone2)
        self.test_feature = test_feature
        self.mask_detach = bool(mask_detach)
        #: Section 1.1 step 3 (optional): same-level reverse features fused into backbone 2
        self.fusion = fusion
        self.loss_weights = {"ID": 1.0, "TRI": 1.0, "MSE": -1.0, "ID2": 1.0, "TRI2": 1.0}
        self.loss_weights.update(loss_weights or {})
        self.heatmap_size = tuple(heatmap_size) if heatmap_size else None
        self.heatmap_sigma = float(heatmap_sigma)
        self.score_thresh = float(score_thresh)
        self.keypoints_configured = keypoints_configured
        self._auto_mse: Dict[tuple, float] = {}
        if self.share_backbone:
            self.backbone2 = None
        else:
            self.backbone2 = copy.deepcopy(self.backbone)
            if self.freeze_backbone2:
                self.backbone2.requires_grad_(False)
                self.backbone2.eval()

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        backbone = as_multiscale(ret["backbone"])
        feat_dim = cfg.MODEL.BACKBONE.FEAT_DIM
        if backbone.out_channels["layer4"] != feat_dim:
            hint = (" and MODEL.BACKBONE.TORCHREID.OUTPUT featuremap (the head reads the last feature map)"
                    if cfg.MODEL.BACKBONE.NAME in ("build_torchreid_backbone", "build_osnet_torchreid_backbone") else "")
            raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {feat_dim} but the backbone's last level (layer4) has "
                             f"{backbone.out_channels['layer4']} channels ({cfg.MODEL.BACKBONE.NAME}, DEPTH "
                             f"{cfg.MODEL.BACKBONE.DEPTH}): set FEAT_DIM {backbone.out_channels['layer4']}{hint}")
        logger.info("RBNet: backbone levels (stride / channels): %s",
                    ", ".join(f"{lvl} {s}/{c}" for lvl, s, c in level_table(backbone)))
        r = cfg.MODEL.RBNET
        if r.MASK_SOURCE not in MASK_SOURCES:
            raise ValueError(f"MODEL.RBNET.MASK_SOURCE must be one of {MASK_SOURCES}, got {r.MASK_SOURCE!r}")
        if r.GROUPING not in GROUPINGS:
            raise ValueError(f"MODEL.RBNET.GROUPING must be one of {GROUPINGS}, got {r.GROUPING!r}")
        if r.MASK_REDUCE not in REDUCTIONS:
            raise ValueError(f"MODEL.RBNET.MASK_REDUCE must be one of {REDUCTIONS}, got {r.MASK_REDUCE!r}")
        reverse = ReverseBackbone(backbone.out_channels, NUM_KEYPOINTS, r.WIDTH_MULT, r.MIN_GROUP_WIDTH, r.BLOCKS,
                                  grouping=r.GROUPING, head_group_width=r.HEAD_GROUP_WIDTH, pointwise=r.POINTWISE,
                                  strides=backbone.strides)
        mask_generator = MaskGenerator(r.MASK_SOURCE, reverse.output_channels(), NUM_KEYPOINTS, r.MASK_REDUCE,
                                       r.MASK_INIT_BIAS, r.MASK_INIT_WEIGHT, align=reverse.head_width)
        levels = list(r.FUSION.LEVELS)
        fusion = None
        if levels:
            rc = reverse.output_channels()
            fusion = Backbone2Fusion(levels, {lvl: rc[SAME_LEVEL[lvl]] for lvl in SAME_LEVEL},
                                     backbone.out_channels)
        if not cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS:
            logger.warning("RBNet trains on keypoint heatmaps: set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True "
                           "(only evaluation works without keypoints)")
        size = list(r.HEATMAP.SIZE)
        if size and (len(size) != 2 or min(size) <= 0):
            raise ValueError(f"MODEL.RBNET.HEATMAP.SIZE must be [] or [H, W], got {size}")
        ret.update(
            backbone=backbone, heads2=build_heads(cfg), reverse=reverse, mask_generator=mask_generator,
            share_backbone=r.SHARE_BACKBONE, freeze_backbone2=r.FREEZE_BACKBONE2, test_feature=r.TEST_FEATURE,
            mask_detach=r.MASK_DETACH, fusion=fusion,
            loss_weights={k: float(v) for k, v in r.LOSS.items()}, heatmap_size=size or None,
            heatmap_sigma=r.HEATMAP.SIGMA, score_thresh=r.HEATMAP.SCORE_THRESH,
            keypoints_configured=bool(cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS))
        return ret

    # ------------------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone2 is not None and self.freeze_backbone2:
            self.backbone2.eval()  # a frozen copy keeps its BN statistics
        return self

    def _raw_images(self, batched_inputs) -> torch.Tensor:
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise TypeError("RBNet expects images as a (B, 3, H, W) tensor in 0..255 (or a dict with 'images'), "
                            f"got {type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
        return images.to(self.device, non_blocking=True).float()

    def _normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.pixel_mean) / self.pixel_std

    def _backbone2_module(self) -> nn.Module:
        return self.backbone2 if self.backbone2 is not None else self.backbone

    def _backbone2_features(self, x: torch.Tensor, upto: Optional[str] = None,
                            fusion_feats: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Backbone 2 on the (normalized) masked image; with the fusion option, ``fusion_feats`` are the reverse
        features (:meth:`fusion_inputs`) added at the fused levels."""
        upto = upto or "layer4"
        fused = self.fusion is not None
        if fused and fusion_feats is None:
            raise ValueError("RBNet with MODEL.RBNET.FUSION.LEVELS needs the reverse features for backbone 2")
        shared_frozen = self.backbone2 is None and self.freeze_backbone2 and self.training
        if shared_frozen:
            # shared weights, but L_*2 must not update them nor the BN statistics: run on detached copies
            state = {n: p.detach() for n, p in self.backbone.named_parameters()}
            state.update({n: b.clone() for n, b in self.backbone.named_buffers()})
            if not fused:
                return {"layer4": torch.func.functional_call(self.backbone, state, (x,))}
            module = FusedBackbone(self.backbone, self.fusion, SAME_LEVEL)
            return torch.func.functional_call(module, {f"backbone.{k}": v for k, v in state.items()},
                                              (x, fusion_feats, upto), strict=False)
        if fused:
            return FusedBackbone(self._backbone2_module(), self.fusion, SAME_LEVEL)(x, fusion_feats, upto)
        return self._backbone2_module().forward_features(x, upto)

    def reverse_upto(self, need_heatmaps: bool) -> str:
        """The last reverse-backbone output one pass needs (mask, fusion, heatmaps)."""
        if need_heatmaps:
            return "heatmaps"
        needed = [self.mask_generator.reverse_upto]
        if self.fusion is not None:
            needed += [SAME_LEVEL[lvl] for lvl in self.fusion.levels]
        return ReverseBackbone.last_needed(*needed)

    def fusion_inputs(self, rev: Dict[str, torch.Tensor]) -> Optional[Dict[str, torch.Tensor]]:
        """The reverse features fused into backbone 2 (``None`` without the fusion option); detached with
        ``MASK_DETACH`` like the mask's inputs."""
        if self.fusion is None:
            return None
        feats = {SAME_LEVEL[lvl]: rev[SAME_LEVEL[lvl]] for lvl in self.fusion.levels}
        return {k: v.detach() for k, v in feats.items()} if self.mask_detach else feats

    def masked_forward(self, raw: torch.Tensor, feats: Dict[str, torch.Tensor], need_heatmaps: bool):
        """Reverse backbone, mask and the masked input: ``(rev outputs, mask, part masks, x * M(x) raw)``."""
        rev = self.reverse(feats, heatmap_size=self.heatmap_size, upto=self.reverse_upto(need_heatmaps))
        mask_in = {k: v.detach() for k, v in rev.items()} if self.mask_detach else rev
        mask, parts = self.mask_generator(mask_in, raw.shape[-2:])
        return rev, mask, parts, apply_mask(raw, mask)

    # ------------------------------------------------------------------------------------------------
    # multi-branch interface (fastreid_ext.modeling.multi_branch): "plain" = backbone 1 + head 1 on the image,
    # "masked" = backbone 2 + head 2 on x * M(x); RBNet's own forward is the interface's
    branch_names = ("plain", "masked")
    mutual_id_pair = ("plain", "masked")  # Eqs. 7-8: C_1(F(x|theta_1)) vs C_2'(F(M(x) x | E[theta_2]))
    mutual_metric_pair = ("masked", "masked")  # Eqs. 9-11: triplet on the masked-image features

    @property
    def retrieval_branches(self):
        return {"backbone1": ("plain",), "backbone2": ("masked",), "concat": ("plain", "masked")}[self.test_feature]

    def classifiers(self):
        return {"plain": self.heads, "masked": self.heads2}

    @property
    def needs_heatmaps(self) -> bool:
        return self.loss_weights["MSE"] != 0

    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        """Backbone 1 + head 1, reverse backbone (heatmaps when L_MSE is on), mask, backbone 2 + head 2 on the
        masked image. ``context``: ``raw`` (input 0..255), ``heatmaps``, ``mask``, ``masked_input`` (detached
        x * M(x), what RBNet's MMT mean net sees), ``fusion_inputs`` (detached reverse features fused into backbone
        2, or ``None``; the MMT mean net's backbone 2 fuses its student's, as it uses its student's mask)."""
        raw = self._raw_images(batched_inputs)
        feats = self.backbone.forward_features(self._normalize(raw))
        out1 = self.heads(feats["layer4"], targets)
        rev, mask, _, masked = self.masked_forward(raw, feats, self.needs_heatmaps)
        fin = self.fusion_inputs(rev)
        f2 = self._backbone2_features(self._normalize(masked), "layer4", fin)["layer4"]
        out2 = self.heads2(f2, targets)
        st = _storage()
        if st is not None:
            st.put_scalar("rbnet/mask_mean", float(mask.detach().mean()))
        return BranchOutputs({"plain": out1, "masked": out2},
                             {"raw": raw, "heatmaps": rev.get("heatmaps"), "mask": mask,
                              "masked_input": masked.detach(),
                              "fusion_inputs": None if fin is None else {k: v.detach() for k, v in fin.items()}})

    def teacher_outputs(self, batched_inputs, targets, student: BranchOutputs):
        """RBNet Eq. 7: the mean net's backbone 2 + head 2 on the input masked by its student's mask (and, with the
        fusion option, fusing its student's reverse features)."""
        x = self._normalize(student.context["masked_input"])
        fin = student.context.get("fusion_inputs")
        return {"masked": self.heads2(self._backbone2_features(x, "layer4", fin)["layer4"], targets)}

    def loss_terms(self):
        """Eq. 4's l1, l2 (backbone 1) and l4, l5 (backbone 2); l3 (L_MSE) is in :meth:`aux_losses`."""
        w = self.loss_weights
        return [LossTerm("loss_cls", "plain", "id", w["ID"]), LossTerm("loss_triplet", "plain", "metric", w["TRI"]),
                LossTerm("loss_cls2", "masked", "id", w["ID2"]),
                LossTerm("loss_triplet2", "masked", "metric", w["TRI2"])]

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """l3 L_MSE (Eqs. 3-4) on the keypoint heatmaps; needs keypoints (or heatmaps) in the batch."""
        if not self.needs_heatmaps:
            return {}
        if not isinstance(batched_inputs, dict) or ("keypoints" not in batched_inputs
                                                    and "heatmaps" not in batched_inputs):
            keys = sorted(batched_inputs) if isinstance(batched_inputs, dict) else type(batched_inputs).__name__
            need = (f"RBNet training needs batched_inputs['keypoints'] (B x 17 x 3: x, y, score in input pixels) to "
                    f"render the keypoint heatmaps of L_MSE, and this batch has none (keys: {keys}). ")
            if self.keypoints_configured:  # the key is set: the loader is what ignored it
                raise KeyError(
                    need + "DATASETS.ANNOTATIONS.LOAD_KEYPOINTS is already True, so the data loader that built this "
                    "batch did not read the annotations: build it with fastreid_ext (fastreid_ext.data.build."
                    "build_train_loader, used by fastreid_ext.engine.build_trainer and tools/train_net.py, and by "
                    "FastReID's DefaultTrainer once fastreid_ext is imported before the trainer is built), or pass "
                    "the keypoints in your own batches; MODEL.RBNET.LOSS.MSE 0 trains without the heatmap loss.")
            raise KeyError(
                need + "Set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True (and provide keypoints, see "
                "DATASETS.ANNOTATIONS.KEYPOINTS_FILES / tools/extract_keypoints.py), or MODEL.RBNET.LOSS.MSE 0 to "
                "train without the heatmap loss.")
        pred = outputs.context["heatmaps"]
        tgt, weights = self.heatmap_targets(batched_inputs, outputs.context["raw"].shape[-2:], pred.shape[-2:])
        check_heatmap_shapes(pred, tgt, weights)
        return {"loss_heatmap": heatmap_mse_loss(pred, tgt, weights) * self.mse_weight(pred.shape[-2:])}

    def branch_features(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Eval-mode BN-neck features of both branches."""
        raw = self._raw_images(batched_inputs)
        feats = self.backbone.forward_features(self._normalize(raw))
        rev, _, _, masked = self.masked_forward(raw, feats, need_heatmaps=False)
        f2 = self.heads2(self._backbone2_features(self._normalize(masked), "layer4", self.fusion_inputs(rev))["layer4"])
        return {"plain": self.heads(feats["layer4"]), "masked": f2}

    def feature_maps(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Spatial maps of :meth:`inference_maps` (heatmaps, mask, part masks, backbone 1 / 2 conv1 and layer4)."""
        maps = self.inference_maps(batched_inputs)
        return {k: v for k, v in maps.items() if k not in ("features", "masked_images")}

    def heatmap_targets(self, batched_inputs, input_size, heatmap_size):
        """``(targets (B, 17, h, w), weights (B, 17))`` rendered from ``batched_inputs['keypoints']`` (or taken
        from ``batched_inputs['heatmaps']``), checked against ``heatmap_size``."""
        b = batched_inputs["images"].shape[0] if isinstance(batched_inputs, dict) else None
        kps = batched_inputs.get("keypoints")
        if kps is not None:
            kps = torch.as_tensor(kps).to(self.device).float()
            if kps.dim() != 3 or kps.shape[0] != b or kps.shape[1:] != (NUM_KEYPOINTS, 3):
                raise ValueError(f"batched_inputs['keypoints'] must be (B, {NUM_KEYPOINTS}, 3) with B={b}, got "
                                 f"{tuple(kps.shape)}")
        if "heatmaps" in batched_inputs:
            tgt = torch.as_tensor(batched_inputs["heatmaps"]).to(self.device).float()
            expected = (b, NUM_KEYPOINTS) + tuple(heatmap_size)
            if tuple(tgt.shape) != expected:
                raise ValueError(f"batched_inputs['heatmaps'] has shape {tuple(tgt.shape)}, the reverse backbone "
                                 f"predicts {expected}: render the targets at the predicted size (see "
                                 f"MODEL.RBNET.HEATMAP.SIZE)")
            weights = (visibility_weights(kps, self.score_thresh) if kps is not None
                       else tgt.new_ones(tgt.shape[:2]))
            return tgt, weights
        return render_heatmaps(kps, input_size, heatmap_size, self.heatmap_sigma, self.score_thresh)

    def mse_weight(self, heatmap_size) -> float:
        """l3 of Eq. 4 (``MODEL.RBNET.LOSS.MSE``, or the automatic value when it is negative)."""
        w = self.loss_weights
        if w["MSE"] >= 0:
            return w["MSE"]
        key = tuple(int(s) for s in heatmap_size)
        if key not in self._auto_mse:
            margin = self.loss_kwargs["tri"]["margin"] if self.loss_kwargs else 0.3
            self._auto_mse[key] = mse_weight_for_triplet(w["TRI"] if w["TRI"] > 0 else 1.0, margin, key,
                                                         self.heatmap_sigma)
            logger.info("RBNet: automatic l3 = %.1f for %dx%d heatmaps, sigma %.2f", self._auto_mse[key],
                        key[0], key[1], self.heatmap_sigma)
        return self._auto_mse[key]

    # ------------------------------------------------------------------------------------------------
    def inference(self, batched_inputs) -> torch.Tensor:
        """Retrieval features (``MODEL.RBNET.TEST_FEATURE``), computing only what the feature needs."""
        raw = self._raw_images(batched_inputs)
        x = self._normalize(raw)
        if self.test_feature == "backbone1":
            return self.heads(self.backbone(x))
        if self.test_feature == "concat":
            return self.retrieval_feature(self.branch_features(batched_inputs))
        # a conv1 mask needs backbone 1 up to conv1 only (the backbone2 feature then costs ~1.1 Baseline)
        upto = "conv1" if self.reverse_upto(False) == "cc_conv1" else None
        feats = self.backbone.forward_features(x, upto=upto)
        rev, _, _, masked = self.masked_forward(raw, feats, need_heatmaps=False)
        f2 = self._backbone2_features(self._normalize(masked), "layer4", self.fusion_inputs(rev))["layer4"]
        return self.heads2(f2)

    @torch.no_grad()
    def inference_maps(self, images) -> Dict[str, torch.Tensor]:
        """Everything worth looking at, in eval mode: ``heatmaps`` (B, 17, h, w), ``mask`` (B, 1, H, W),
        ``part_masks`` (B, 17, h, w), ``masked_images`` (raw 0..255), ``b1_conv1`` / ``b1_layer4`` (backbone 1
        on the image) and ``b2_conv1`` / ``b2_layer4`` (backbone 2 on the masked image), ``features``
        (the retrieval feature). ``images``: (B, 3, H, W) in 0..255 or a batch dict."""
        was_training = self.training
        self.eval()
        try:
            raw = self._raw_images(images)
            x = self._normalize(raw)
            feats = self.backbone.forward_features(x)
            rev, mask, parts, masked = self.masked_forward(raw, feats, need_heatmaps=True)
            feats2 = self._backbone2_features(self._normalize(masked), "layer4", self.fusion_inputs(rev))
            feat = self.retrieval_feature({"plain": self.heads(feats["layer4"]), "masked": self.heads2(feats2["layer4"])})
            return {"heatmaps": rev["heatmaps"], "mask": mask, "part_masks": parts, "masked_images": masked,
                    "b1_conv1": feats["conv1"], "b1_layer4": feats["layer4"], "b2_conv1": feats2["conv1"],
                    "b2_layer4": feats2["layer4"], "features": feat}
        finally:
            self.train(was_training)
