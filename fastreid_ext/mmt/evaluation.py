"""Evaluations that go with MMT's domain adaptation but are not MMT: a source model with AdaBN.

AdaBN (Li, Wang, Shi, Liu & Hou, "Revisiting batch normalization for practical domain adaptation", arXiv
1603.04779, 2016) replaces every BatchNorm layer's running statistics of a source-trained model by the
statistics of the target domain's images, without any training. Next to a source-only model and MMT (Ge, Chen &
Li, "Mutual Mean-Teaching: pseudo label refinery for unsupervised domain adaptation on person
re-identification", ICLR 2020), it tells how much of the source -> target gap is normalisation statistics.

* :func:`adabn` re-estimates the statistics of a model of the multi-branch interface
  (:mod:`fastreid_ext.modeling.multi_branch`) on the train images of ``cfg.DATASETS.NAMES`` (labels unused),
  every branch in training mode (RBNet: plain and masked image), with the configured per-image annotations
  (a background-removing JointIBN model gets its masks);
* :func:`adabn_evaluate` loads a source checkpoint, applies :func:`adabn` and evaluates on ``cfg.DATASETS.TESTS``.
"""
from __future__ import annotations

from typing import Optional

__all__ = ["adabn", "adabn_evaluate"]


def adabn(model, cfg) -> int:
    """Replace the BatchNorm running statistics of ``model`` by their average over the train images of
    ``cfg.DATASETS.NAMES`` (test-time transforms, no gradient); returns the number of batches seen. The model's
    training flag is restored."""
    from ..data.build import build_test_loader
    from ..data.common import AnnotatedDataset
    from .hooks import target_dataset, target_items
    from .meta_arch import adapt_batchnorm

    ds = target_dataset(cfg, AnnotatedDataset, target_items(cfg), is_train=False, relabel=False)
    loader, _ = build_test_loader(cfg, test_set=ds, num_query=0)
    return adapt_batchnorm([model], loader, model.device)


def adabn_evaluate(cfg, weights: str, target: Optional[str] = None):
    """Evaluate the model of ``cfg`` (a source config: ``MODEL.META_ARCHITECTURE`` Baseline, RBNet, JointIBN,
    ...) loaded from the checkpoint ``weights``, after :func:`adabn` on the target domain.

    ``target``: the target dataset, both the unlabelled images of the statistics and the test set (default: the
    config's ``DATASETS.NAMES`` and ``DATASETS.TESTS``). The source classifier is not loaded (another number of
    identities; it plays no part in the test feature). Returns FastReID's results (``Rank-1``, ``mAP``, ...)."""
    from fastreid.utils.checkpoint import Checkpointer

    from ..engine import Trainer
    from ..modeling.multi_branch import build_multi_branch_model

    c = cfg.clone()
    c.defrost()
    if target:
        c.DATASETS.NAMES = (target,)
        c.DATASETS.TESTS = (target,)
    c.MODEL.HEADS.NUM_CLASSES = 1
    c.MODEL.BACKBONE.PRETRAIN = False
    c.freeze()
    model = build_multi_branch_model(c)
    Checkpointer(model).load(weights)
    adabn(model, c)
    model.eval()
    return Trainer.test(c, model)
