"""Evaluation of both MMT mean nets, as MMT's code does (Ge, Chen & Li, "Mutual Mean-Teaching", ICLR 2020:
its trainer evaluates ``model_1_ema`` and ``model_2_ema`` after every epoch and keeps the better).

With ``MODEL.MMT.EVAL_NET both`` the MMT model's test feature is ``[mean net 1 | mean net 2]`` (one tensor, so
FastReID's flip test keeps working). :class:`MeanNetsEvaluator` runs FastReID's ``ReidEvaluator`` on each half
and reports both (``mean1/Rank-1``, ``mean2/mAP``, ...); the plain keys (``Rank-1``, ``mAP``, ``metric``, which
FastReID's best-checkpoint hook reads) are those of the better mean net by mAP, and ``best_mean_net`` says
which (1 or 2).
"""
from __future__ import annotations

import logging
from collections import OrderedDict

from fastreid.evaluation.reid_evaluation import ReidEvaluator

from ..engine.trainer import register_evaluator

logger = logging.getLogger(__name__)

__all__ = ["MeanNetsEvaluator"]


class MeanNetsEvaluator(ReidEvaluator):
    """FastReID's ``ReidEvaluator`` on each half of ``[mean net 1 | mean net 2]`` features."""

    def evaluate(self):
        whole = self._predictions
        dims = {int(p["feats"].shape[1]) for p in whole}
        if len(dims) != 1 or next(iter(dims)) % 2:
            raise ValueError(f"MeanNetsEvaluator expects [mean net 1 | mean net 2] features of even width, got "
                             f"widths {sorted(dims)}; is MODEL.MMT.EVAL_NET 'both'?")
        d = next(iter(dims)) // 2
        per_net = []
        try:
            for k in range(2):
                self._predictions = [dict(p, feats=p["feats"][:, k * d:(k + 1) * d]) for p in whole]
                per_net.append(super().evaluate())
        finally:
            self._predictions = whole
        if not per_net[0]:  # not the main process under DDP
            return {}
        best = max(range(2), key=lambda k: per_net[k].get("mAP", float("-inf")))
        out = OrderedDict(per_net[best])
        for k, res in enumerate(per_net, 1):
            for key, v in res.items():
                out[f"mean{k}/{key}"] = v
        out["best_mean_net"] = float(best + 1)
        logger.info("MMT mean nets: mAP %.2f (mean net 1) / %.2f (mean net 2); reporting mean net %d",
                    per_net[0].get("mAP", float("nan")), per_net[1].get("mAP", float("nan")), best + 1)
        return out


@register_evaluator("MMT")
def build_mmt_evaluator(trainer_cls, cfg, dataset_name, output_dir=None):
    """Both mean nets when ``MODEL.MMT.EVAL_NET both``; ``None`` keeps FastReID's evaluator."""
    if cfg.MODEL.MMT.EVAL_NET != "both":
        return None
    data_loader, num_query = trainer_cls.build_test_loader(cfg, dataset_name)
    return data_loader, MeanNetsEvaluator(cfg, num_query, output_dir)
