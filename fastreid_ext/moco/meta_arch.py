"""``MoCoV2``: MoCo v2 self-supervised training on any FastReID backbone; the global average pooling of the
backbone map is the embedding.

He et al., "Momentum contrast for unsupervised visual representation learning", CVPR 2020, and Chen et al.,
"Improved baselines with momentum contrastive learning", 2020: a query encoder (backbone -> GAP -> MLP head, trained)
and a key encoder (a copy updated by momentum, Eq. 2), a queue of past keys as negatives and the InfoNCE loss with a
temperature (Eq. 1) on two augmentations of each unlabelled image (:mod:`fastreid_ext.moco.data`). Fu et al.,
"Unsupervised pre-training for person re-identification", CVPR 2021, train it on LUPerson's person crops; Yoshida et
al., "Evaluation of metric learning model for Person Re-identification", read that model at the 2048-d GAP feature.

Named ``MoCoV2`` because FastReID 1.4.0 already registers a ``MoCo`` (``fastreid/modeling/meta_arch/moco.py``): a
supervised ``Baseline`` whose extra loss is a pairwise CosFace loss against a label-carrying memory queue of its own
features, neither momentum encoder nor InfoNCE nor unlabelled training, so it cannot be reused here.

Multi-branch interface (:mod:`fastreid_ext.modeling.multi_branch`): one branch ``plain``. ``branch_outputs`` runs
both encoders, updates the key encoder and the queue, and returns the InfoNCE logits as the branch's
``cls_outputs`` / ``pred_class_logits`` (MoCo's (1 + K)-way classification, the positive is class 0; the logged
accuracy is the instance-discrimination accuracy, our MoCo loader gives every image target 0) and the query's GAP
feature as ``features``; ``loss_terms`` is empty (labels are ignored) and ``aux_losses`` is the InfoNCE loss.
``branch_features`` (eval) is the GAP of the query backbone.

One departure from MoCo's reference code, ``MODEL.MOCO.MASK_EMPTY_QUEUE`` (default on): queue columns that hold
no key yet (MoCo starts the queue with random unit vectors) are left out of the logits. With random vectors as the
only negatives, the first steps are won by pulling every feature towards one direction; on a short CPU budget
(hundreds of steps, not MoCo's hundreds of thousands) the model did not leave that collapse (all SynthPed features at
cosine 0.998 after 5 steps). Off: MoCo's behaviour.

Multi-process training (FastReID's ``launch``, DistributedDataParallel): only the query backbone and projection
head are trainable, so DDP all-reduces exactly the parameters that get a gradient (the key encoder and FastReID's
unused head are frozen). Every process enqueues the keys of all processes (gathered in rank order, MoCo's Alg. 1
``concat_all_gather``), so the queues stay identical; the key encoder, updated from the all-reduced query encoder,
stays identical too; the initial queue comes from a fixed generator, the same in every process (FastReID's DDP does
not broadcast buffers). Shuffling BN (MoCo Sec. 3.3) shuffles each process's own key batch over its sub-batches
(``SHUFFLE_BN_CHUNKS``, so BN batches of ``IMS_PER_BATCH / processes / SHUFFLE_BN_CHUNKS`` images) instead of MoCo's
shuffle across GPUs: either way the BN statistics of a key come from other images than those of its query.
"""
from __future__ import annotations

import copy
import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from fastreid.config import configurable
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY, Baseline
from torch import nn

from ..modeling.multi_branch import BranchOutputs, LossTerm, MultiBranchModel
from .functional import enqueue_, info_nce_logits, momentum_update_, shuffle_permutation

__all__ = ["MoCoV2", "projection_head"]

logger = logging.getLogger(__name__)


def projection_head(in_dim: int, hidden: int, out_dim: int, mlp: bool = True) -> nn.Sequential:
    """MoCo v2's head ``fc -> ReLU -> fc`` (indices 0 and 2, as ``encoder_q.fc`` in MoCo checkpoints), or MoCo v1's
    single ``fc`` (index 0)."""
    if mlp:
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
    return nn.Sequential(nn.Linear(in_dim, out_dim))


@META_ARCH_REGISTRY.register()
class MoCoV2(MultiBranchModel, Baseline):
    """MoCo v2 on a FastReID backbone (module docstring)."""

    @configurable
    def __init__(self, *, backbone_k, projector, projector_k, queue_size=65536, momentum=0.999, temperature=0.07,
                 shuffle_bn_chunks=2, loss_scale=1.0, mask_empty_queue=True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MODEL.MOCO.MOMENTUM must be in [0, 1), got {momentum}")
        if temperature <= 0:
            raise ValueError(f"MODEL.MOCO.TEMPERATURE must be > 0, got {temperature}")
        if queue_size < 1 or shuffle_bn_chunks < 1:
            raise ValueError(f"MODEL.MOCO.QUEUE_SIZE and SHUFFLE_BN_CHUNKS must be >= 1, got {queue_size}, "
                             f"{shuffle_bn_chunks}")
        self.projector = projector
        self.backbone_k = backbone_k
        self.projector_k = projector_k
        for q, k in zip(self.query_parameters(), self.key_parameters()):
            k.data.copy_(q.data)
            k.requires_grad_(False)
        # FastReID's head (its 1-class classifier, and the BNNeck when WITH_BNNECK) is kept for the interface only
        # and never runs in training: frozen, so that it is neither an optimizer parameter nor one of
        # DistributedDataParallel's (which, without find_unused_parameters, stops at the second iteration when a
        # trainable parameter got no gradient). The key encoder above is frozen too: it follows by momentum (Eq. 2).
        self.heads.requires_grad_(False)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.shuffle_bn_chunks = int(shuffle_bn_chunks)
        self.loss_scale = float(loss_scale)
        self.mask_empty_queue = bool(mask_empty_queue)
        dim = projector[-1].out_features
        # random unit vectors from a fixed generator: every process starts with the same queue (the processes are
        # seeded SEED + rank, and FastReID's DistributedDataParallel does not broadcast buffers)
        init = torch.randn(dim, int(queue_size), generator=torch.Generator().manual_seed(0))
        self.register_buffer("queue", F.normalize(init, dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # keys written so far (up to the queue size): columns >= it still hold the random initial vectors
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg):
        if len(cfg.MODEL.LOSSES.NAME):
            raise ValueError(f"MoCoV2 trains without labels (InfoNCE only): set MODEL.LOSSES.NAME () (got "
                             f"{tuple(cfg.MODEL.LOSSES.NAME)})")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.HEADS.NUM_CLASSES = 1  # no classifier is trained; the head is kept for the interface only
        ret = Baseline.from_config(cfg)
        m = cfg.MODEL.MOCO
        feat = int(cfg.MODEL.BACKBONE.FEAT_DIM)
        projector = projection_head(feat, int(m.MLP_DIM) or feat, int(m.DIM), bool(m.MLP))
        ret.update(backbone_k=copy.deepcopy(ret["backbone"]), projector=projector,
                   projector_k=copy.deepcopy(projector), queue_size=m.QUEUE_SIZE, momentum=m.MOMENTUM,
                   temperature=m.TEMPERATURE, shuffle_bn_chunks=m.SHUFFLE_BN_CHUNKS, loss_scale=m.LOSS_SCALE,
                   mask_empty_queue=m.MASK_EMPTY_QUEUE)
        return ret

    # ------------------------------------------------------------------------------------------------------
    def query_parameters(self) -> List[nn.Parameter]:
        return list(self.backbone.parameters()) + list(self.projector.parameters())

    def key_parameters(self) -> List[nn.Parameter]:
        return list(self.backbone_k.parameters()) + list(self.projector_k.parameters())

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` over the backbone and projection head (MoCo Eq. 2)."""
        momentum_update_(self.key_parameters(), self.query_parameters(), self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys by ``keys`` (gathered from every process in distributed training)."""
        from fastreid.utils import comm

        if comm.get_world_size() > 1:
            from fastreid.modeling.losses.utils import concat_all_gather

            keys = concat_all_gather(keys)
        self.queue_ptr.fill_(enqueue_(self.queue, int(self.queue_ptr), keys))
        self.queue_filled.fill_(min(self.queue.shape[1], int(self.queue_filled) + keys.shape[0]))

    def _encode(self, backbone, projector, images: torch.Tensor, chunks: int, shuffle: bool):
        """(backbone map, normalised projection) of ``images`` encoded in ``chunks`` sub-batches (a random
        permutation of the batch when ``shuffle``, undone on the outputs)."""
        n = images.shape[0]
        chunks = max(1, min(chunks, n))
        if shuffle and chunks > 1:
            perm, inv = shuffle_permutation(n, device=images.device)
            images = images[perm]
        maps = torch.cat([backbone(x) for x in images.chunk(chunks)]) if chunks > 1 else backbone(images)
        if shuffle and chunks > 1:
            maps = maps[inv]
        z = F.normalize(projector(maps.mean(dim=(2, 3))), dim=1)
        return maps, z

    # ------------------------------------------------------------------------------------------------------ interface
    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        """Both views (``images``: query, ``images_2``: key), the momentum and queue updates, the InfoNCE logits."""
        if not isinstance(batched_inputs, dict) or "images_2" not in batched_inputs:
            raise KeyError("MoCoV2 trains on two augmentations of every image (batched_inputs['images_2']): build its "
                           "loader with fastreid_ext.moco.data.build_moco_train_set (fastreid_ext.engine.build_trainer "
                           "does for MODEL.META_ARCHITECTURE MoCoV2)")
        x_q = self.preprocess_image(batched_inputs)
        x_k = self.preprocess_image(batched_inputs["images_2"].to(self.device))
        maps, q = self._encode(self.backbone, self.projector, x_q, self.shuffle_bn_chunks, shuffle=False)
        with torch.no_grad():
            self.momentum_update()
            _, k = self._encode(self.backbone_k, self.projector_k, x_k, self.shuffle_bn_chunks, shuffle=True)
        logits = info_nce_logits(q, k, self.queue.clone().detach(), self.temperature)
        filled = int(self.queue_filled)
        if self.mask_empty_queue and filled < self.queue.shape[1]:  # keys are written from column 0 on
            empty = logits.new_full((logits.shape[0], logits.shape[1] - 1 - filled), float("-inf"))
            logits = torch.cat([logits[:, :1 + filled], empty], 1)
        self.enqueue(k)
        head = {"cls_outputs": logits, "pred_class_logits": logits.detach(), "features": maps.mean(dim=(2, 3))}
        return BranchOutputs({"plain": head}, {"q": q, "k": k, "logits": logits, "backbone_features": maps})

    def teacher_outputs(self, batched_inputs, targets, student: BranchOutputs) -> Dict[str, dict]:
        raise NotImplementedError("MoCoV2 has its own momentum encoder; it is not a mean-teacher student")

    def loss_terms(self) -> List[LossTerm]:
        """None: MoCo ignores labels; its loss is :meth:`aux_losses`."""
        return []

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        logits = outputs.context["logits"]
        zeros = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
        return {"loss_infonce": F.cross_entropy(logits, zeros) * self.loss_scale}

    def branch_features(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """The GAP of the query backbone's map (the embedding)."""
        return {"plain": self.backbone(self.preprocess_image(batched_inputs)).mean(dim=(2, 3))}
