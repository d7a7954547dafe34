"""HPLF test: FastReID's global-feature numbers plus the global + local (AlignedReID) distance numbers.

The HPLF model with ``MODEL.HPLF.TEST_LOCAL`` returns ``[global feature | K stripes x C_local]`` per image
(one tensor, so flip-test averaging keeps working). :class:`HPLFEvaluator` hands the global part to
FastReID's ``ReidEvaluator`` (same keys and numbers as without the option), then ranks with
``d = d_global + w * d_local`` (AlignedReID's test distance; ``d_local`` the shortest-path local distance)
and with ``d_local`` alone, using FastReID's ``evaluate_rank``. Extra keys: ``GL/Rank-k``, ``GL/mAP``,
``GL/mINP`` (global + local) and ``L/...`` (local only).

The local distance is computed block by block (:func:`fastreid_ext.functional.local_distance.
local_distance_matrix`): a block holds ``MODEL.HPLF.TEST_BLOCK_ELEMS`` stripe distances, so a 3,000 x
15,000 problem needs the (Nq, Ng) float32 matrices and a few hundred MB on top (``bench/bench_hplf.py``).
"""
from __future__ import annotations

import copy
import itertools
import logging
import time
from collections import OrderedDict

import numpy as np
import torch

from fastreid.evaluation.reid_evaluation import ReidEvaluator
from fastreid.utils import comm
from fastreid.utils.compute_dist import build_dist

from ..engine.trainer import register_evaluator
from ..functional.local_distance import local_distance_matrix

logger = logging.getLogger(__name__)

__all__ = ["HPLFEvaluator", "global_dim", "local_dim"]


def global_dim(cfg) -> int:
    """Size of the global (BN-neck) test feature of FastReID's ``EmbeddingHead``."""
    return cfg.MODEL.HEADS.EMBEDDING_DIM if cfg.MODEL.HEADS.EMBEDDING_DIM > 0 else cfg.MODEL.BACKBONE.FEAT_DIM


def local_dim(cfg) -> int:
    """Channels of one stripe feature of the HPLF local branch."""
    return cfg.MODEL.HPLF.LOCAL_DIM if cfg.MODEL.HPLF.LOCAL_DIM > 0 else cfg.MODEL.BACKBONE.FEAT_DIM


class HPLFEvaluator(ReidEvaluator):
    """``ReidEvaluator`` on the global feature + the same metrics for global + local and local distances."""

    def __init__(self, cfg, num_query, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self._gdim = global_dim(cfg)
        self._ldim = local_dim(cfg)
        h = cfg.MODEL.HPLF
        self._weight = float(h.TEST_LOCAL_WEIGHT)
        self._method = h.DISTANCE
        self._normalize = bool(h.NORMALIZE_DIST)
        self._block = int(h.TEST_BLOCK_ELEMS)

    def process(self, inputs, outputs):
        outputs = outputs.to(self._cpu_device, torch.float32)
        extra = outputs.shape[1] - self._gdim
        if outputs.dim() != 2 or extra <= 0 or extra % self._ldim:
            raise ValueError(
                f"HPLFEvaluator expects model outputs [global ({self._gdim}) | K x {self._ldim} local], got "
                f"{tuple(outputs.shape)}; is MODEL.HPLF.TEST_LOCAL on and the model an HPLF?")
        self._predictions.append({
            "feats": outputs[:, :self._gdim].contiguous(),
            "local": outputs[:, self._gdim:].reshape(len(outputs), -1, self._ldim).contiguous(),
            "pids": inputs["targets"].to(self._cpu_device),
            "camids": inputs["camids"].to(self._cpu_device),
        })

    def evaluate(self):
        results = super().evaluate()  # global feature, exactly FastReID's numbers
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        nq = self._num_query
        feats = torch.cat([p["feats"] for p in predictions])
        local = torch.cat([p["local"] for p in predictions])
        pids = torch.cat([p["pids"] for p in predictions]).numpy()
        camids = torch.cat([p["camids"] for p in predictions]).numpy()

        t0 = time.perf_counter()
        d_local = local_distance_matrix(local[:nq], local[nq:], self._method, self._normalize, self._block)
        logger.info("HPLF local distance %d x %d (%d stripes x %d) in %.1f s", nq, len(local) - nq,
                    local.shape[1], local.shape[2], time.perf_counter() - t0)
        del local
        d_local = d_local.numpy()
        d_global = build_dist(feats[:nq], feats[nq:], self.cfg.TEST.METRIC)  # float32 numpy (q x g)
        del feats
        d_global += self._weight * d_local  # in place: global + w * local
        args = (pids[:nq], pids[nq:], camids[:nq], camids[nq:])
        for prefix, dist in (("GL/", d_global), ("L/", d_local)):
            results.update(self._metrics(dist, *args, prefix=prefix))
        self._results = results
        return copy.deepcopy(results)

    @staticmethod
    def _metrics(dist, q_pids, g_pids, q_camids, g_camids, prefix=""):
        from fastreid.evaluation.rank import evaluate_rank  # the compat layer's (Cython or vectorized)

        cmc, all_ap, all_inp = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids)
        out = OrderedDict()
        for r in (1, 5, 10):
            out[f"{prefix}Rank-{r}"] = float(cmc[r - 1] * 100)
        out[f"{prefix}mAP"] = float(np.mean(all_ap) * 100)
        out[f"{prefix}mINP"] = float(np.mean(all_inp) * 100)
        return out


@register_evaluator("HPLF")
def build_hplf_evaluator(trainer_cls, cfg, dataset_name, output_dir=None):
    """Global + local evaluation when ``MODEL.HPLF.TEST_LOCAL``; ``None`` keeps FastReID's evaluator."""
    if not cfg.MODEL.HPLF.TEST_LOCAL:
        return None
    data_loader, num_query = trainer_cls.build_test_loader(cfg, dataset_name)
    return data_loader, HPLFEvaluator(cfg, num_query, output_dir)
