"""HPLF test: FastReID's global-feature numbers plus the global + local (AlignedReID) distance numbers.

The HPLF model with ``MODEL.HPLF.TEST_LOCAL`` returns ``[global feature | K stripes x C_local]`` per image
(one tensor, so flip-test averaging keeps working). :class:`HPLFEvaluator` hands the global part to
FastReID's ``ReidEvaluator`` (same keys and numbers as without the option: the global feature of
``MODEL.HPLF.TEST_FEAT`` ranked with ``TEST.METRIC``, the paper's protocol with ``before`` + ``euclidean``,
HPLF Sec. 3.2), then ranks with the global + local distance (AlignedReID's test distance; ``d_local`` the
shortest-path local distance) and with ``d_local`` alone, using FastReID's ``evaluate_rank``. Extra keys:
``GL/Rank-k``, ``GL/mAP``, ``GL/mINP`` (global + local) and ``L/...`` (local only), k = 1, 5, 10, 20 (the
paper's Tables 2 and 4 report Rank-20).

The two distances live on different scales: ``d_local`` over 0 .. 2K-1 (K stripes, normalised stripe
distances below 1 on a path of at most 2K-1 cells), FastReID's cosine distance over 0 .. 2, its (squared)
Euclidean distance unbounded. ``MODEL.HPLF.TEST_LOCAL_NORM mean`` divides each matrix by its mean over
query x gallery before ``d = d_global / mean(d_global) + w * d_local / mean(d_local)`` (each term keeps its own
ranking; ``w = MODEL.HPLF.TEST_LOCAL_WEIGHT`` then weighs terms of equal average size); ``none`` is AlignedReID's
raw ``d_global + w * d_local``.

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
from .config import TEST_LOCAL_NORMS
from .meta_arch import global_test_dim, local_feature_dim

logger = logging.getLogger(__name__)

__all__ = ["HPLFEvaluator", "RANKS", "combine_distances", "global_dim", "local_dim"]

#: CMC ranks reported for the GL/ and L/ rankings (HPLF Tables 2 and 4: Rank-1, 5, 10, 20)
RANKS = (1, 5, 10, 20)

global_dim = global_test_dim  # size of the global test feature (``MODEL.HPLF.TEST_FEAT``)
local_dim = local_feature_dim  # channels of one stripe feature


def combine_distances(d_global: np.ndarray, d_local: np.ndarray, weight: float = 1.0,
                      norm: str = "mean", inplace: bool = False) -> np.ndarray:
    """Global + local test distance. ``norm="mean"``: ``d_g / mean(d_g) + w * d_l / mean(d_l)`` (a matrix with zero
    mean is left unscaled); ``"none"``: ``d_g + w * d_l`` (AlignedReID). ``inplace``: reuse ``d_global`` (a float32
    array) for the result; the sum runs over row blocks, so no other (Nq, Ng) temporary is made."""
    if norm not in TEST_LOCAL_NORMS:
        raise ValueError(f"MODEL.HPLF.TEST_LOCAL_NORM must be one of {TEST_LOCAL_NORMS}, got {norm!r}")
    out = np.asarray(d_global, dtype=np.float32)
    if not (inplace and out is d_global):
        out = out.copy()
    d_local = np.asarray(d_local, dtype=np.float32)
    f_global, f_local = 1.0, float(weight)
    if norm == "mean":
        sg = float(np.mean(out, dtype=np.float64)) if out.size else 0.0
        sl = float(np.mean(d_local, dtype=np.float64)) if d_local.size else 0.0
        f_global = 1.0 / sg if sg > 0 else 1.0
        f_local = float(weight) / sl if sl > 0 else float(weight)
    for i in range(0, len(out), 1024):
        blk = out[i:i + 1024]
        if f_global != 1.0:
            blk *= np.float32(f_global)
        blk += np.float32(f_local) * d_local[i:i + 1024]
    return out


class HPLFEvaluator(ReidEvaluator):
    """``ReidEvaluator`` on the global feature + the same metrics for global + local and local distances."""

    def __init__(self, cfg, num_query, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self._gdim = global_dim(cfg)
        self._ldim = local_dim(cfg)
        h = cfg.MODEL.HPLF
        self._weight = float(h.TEST_LOCAL_WEIGHT)
        if h.TEST_LOCAL_NORM not in TEST_LOCAL_NORMS:
            raise ValueError(f"MODEL.HPLF.TEST_LOCAL_NORM must be one of {TEST_LOCAL_NORMS}, got "
                             f"{h.TEST_LOCAL_NORM!r}")
        self._norm = h.TEST_LOCAL_NORM
        self._method = h.DISTANCE
        self._normalize = bool(h.NORMALIZE_DIST)
        self._block = int(h.TEST_BLOCK_ELEMS)

    def process(self, inputs, outputs):
        outputs = outputs.to(self._cpu_device, torch.float32)
        extra = outputs.shape[1] - self._gdim
        if outputs.dim() != 2 or extra <= 0 or extra % self._ldim:
            raise ValueError(
                f"HPLFEvaluator expects model outputs [global ({self._gdim}) | K x {self._ldim} local], got "
                f"{tuple(outputs.shape)}; is MODEL.HPLF.TEST_LOCAL on, the model an HPLF, and "
                f"MODEL.HPLF.TEST_FEAT ({self.cfg.MODEL.HPLF.TEST_FEAT}) the model's?")
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
        d_global = combine_distances(d_global, d_local, self._weight, self._norm, inplace=True)
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
        for r in RANKS:
            out[f"{prefix}Rank-{r}"] = float(cmc[min(r, len(cmc)) - 1] * 100)  # a gallery under r: CMC at its end
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
