"""MMT's measurements for the experiment runner (:mod:`fastreid_ext.experiments.measure`):

* ``mmt_pseudo_labels``: the DBSCAN pseudo labels of the target train split (Ge, Chen & Li, "Mutual Mean-Teaching",
  ICLR 2020, Sec. 3.1): clusters, outliers and the adjusted Rand index against the true identities (outliers as
  singletons), at the first clustering (the two source models: ``pl_init/``) and with the final mean nets
  (``pl_final/``, the eps the run fixed at its first clustering);
* ``adabn``: the weights after AdaBN on the last test set's train images, evaluated there
  (:func:`fastreid_ext.mmt.evaluation.adabn_evaluate`): ``adabn/<test set>/<metric>``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from ..experiments.measure import adjusted_rand_with_outliers, register_measurement


@register_measurement("mmt_pseudo_labels")
def mmt_pseudo_labels(cfg, weights: str) -> Dict[str, float]:
    from fastreid.modeling.meta_arch import build_model
    from fastreid.utils.checkpoint import Checkpointer

    from ..engine import seed_from_config
    from .hooks import PseudoLabeler, extract_target_features, target_items, UDAState, unwrap

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
    out: Dict[str, float] = {"true_ids": float(len(set(truth))), "images": float(len(items))}

    def one(prefix, labeler):
        feats = extract_target_features(model, state.cluster_loader(), desc=f"{prefix}: target features")
        res = labeler(feats)
        raw = res.labels if res.labels is not None else np.full(len(items), -1)
        out.update({f"{prefix}/clusters": float(res.num_clusters), f"{prefix}/outliers": float(res.num_outliers),
                    f"{prefix}/eps": float(res.eps), f"{prefix}/ARI": adjusted_rand_with_outliers(truth, raw)})
        return res

    first = one("pl_init", PseudoLabeler(c))
    Checkpointer(model).load(weights)
    eps = float(unwrap(model).uda_eps) or first.eps
    one("pl_final", PseudoLabeler(c, eps))
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
