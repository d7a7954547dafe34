"""MMT's measurements for the experiment runner (:mod:`fastreid_ext.experiments.measure`):

* ``mmt_pseudo_labels``: the pseudo labels (the run's clustering: DBSCAN or k-means) of the target train split (Ge,
  Chen & Li, "Mutual Mean-Teaching", ICLR 2020, Sec. 3.1): clusters, outliers and the adjusted Rand index against the true identities (outliers as
  singletons), at the first clustering (the two source models: ``pl_init/``) and with the final mean nets
  (``pl_final/``, the eps the run fixed at its first clustering);
* ``mmt_pseudo_labels_adabn``: a diagnostic, not MMT: the first clustering of ``mmt_pseudo_labels`` after AdaBN of
  the two source models on the target train images (``pl_adabn/``): how much of the pseudo labels' quality at the
  start is the source BatchNorm statistics;
* ``adabn``: the weights after AdaBN on the last test set's train images, evaluated there
  (:func:`fastreid_ext.mmt.evaluation.adabn_evaluate`): ``adabn/<test set>/<metric>``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..experiments.measure import adjusted_rand_with_outliers, register_measurement


def _source_mmt(cfg):
    """The MMT model of ``cfg`` with its source models loaded, the target items, their true ids and the UDA state."""
    from fastreid.modeling.meta_arch import build_model

    from ..engine import seed_from_config
    from .hooks import target_items, UDAState, unwrap

    c = cfg.clone()
    c.defrost()
    seed_from_config(c)
    items = target_items(c)
    if c.MODEL.HEADS.NUM_CLASSES <= 0:
        c.MODEL.HEADS.NUM_CLASSES = len(items)
    truth = [pid for _, pid, _ in items]
    model = build_model(c)
    unwrap(model).load_source(c.MODEL.MMT.WEIGHTS_1, c.MODEL.MMT.WEIGHTS_2)
    state = UDAState(c, items)
    return c, model, truth, state


def _cluster_quality(out: Dict[str, float], prefix: str, model, state, truth, labeler):
    from .hooks import extract_target_features

    feats = extract_target_features(model, state.cluster_loader(), desc=f"{prefix}: target features")
    res = labeler(feats)
    raw = res.labels if res.labels is not None else np.full(len(truth), -1)
    out.update({f"{prefix}/clusters": float(res.num_clusters), f"{prefix}/outliers": float(res.num_outliers),
                f"{prefix}/eps": float(res.eps), f"{prefix}/ARI": adjusted_rand_with_outliers(truth, raw)})
    return res


@register_measurement("mmt_pseudo_labels")
def mmt_pseudo_labels(cfg, weights: str) -> Dict[str, float]:
    from fastreid.utils.checkpoint import Checkpointer

    from .hooks import PseudoLabeler, unwrap

    c, model, truth, state = _source_mmt(cfg)
    out: Dict[str, float] = {"true_ids": float(len(set(truth))), "images": float(len(truth))}

    def one(prefix, labeler):
        return _cluster_quality(out, prefix, model, state, truth, labeler)

    first = one("pl_init", PseudoLabeler(c))
    Checkpointer(model).load(weights)
    eps = float(unwrap(model).uda_eps) or first.eps
    one("pl_final", PseudoLabeler(c, eps))
    return out


@register_measurement("mmt_pseudo_labels_adabn")
def mmt_pseudo_labels_adabn(cfg, weights: str) -> Dict[str, float]:
    """``pl_adabn/``: the first clustering of :func:`mmt_pseudo_labels` after AdaBN (Li et al., 2016; not part of MMT)
    of the mean nets (= the source models) on the target train images. ``weights`` is not used: only the source
    models of ``MODEL.MMT.WEIGHTS_1`` / ``_2`` are."""
    from .evaluation import adabn as adabn_stats
    from .hooks import PseudoLabeler, unwrap

    c, model, truth, state = _source_mmt(cfg)
    for net in unwrap(model).means():
        adabn_stats(net, c)
    out: Dict[str, float] = {}
    _cluster_quality(out, "pl_adabn", model, state, truth, PseudoLabeler(c))
    return out


@register_measurement("adabn")
def adabn(cfg, weights: str) -> Dict[str, float]:
    """The model of ``weights`` after AdaBN on the last test set's train images, evaluated on that test set
    (:func:`fastreid_ext.mmt.evaluation.adabn_evaluate`): ``adabn/<test set>/<metric>``."""
    from .evaluation import adabn_evaluate

    target = cfg.DATASETS.TESTS[-1]
    res = adabn_evaluate(cfg, weights, target)
    out = {}
    for k, v in res.items():
        try:
            out[f"adabn/{target}/{k}"] = float(v)  # numpy / torch scalars too
        except (TypeError, ValueError):
            pass
    return out
