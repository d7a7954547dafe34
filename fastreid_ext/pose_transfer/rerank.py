"""Verification re-ranking of the top-k gallery of each query. Plain torch / numpy: no FastReID import.

FD-GAN's test (Ge et al., NeurIPS 2018; its public code, ``CascadeEvaluator``) ranks the gallery by the feature
distance, re-scores the first ``k`` (100 in its reported numbers) of every query with the verification classifier
and orders them by its "different person" probability; the rest keep their order behind them. Here::

    d'(q, g) = 1 - C_v(f_q, f_g)                          for the k nearest g of q
    d'(q, g) = d(q, g) + max(0, max_topk d' + 1 - d_(k+1)) otherwise

(``d_(k+1)``: q's (k+1)-th smallest distance), so every re-scored entry comes before every other one.

Cost: ``Nq * k`` classifier evaluations (pairs), in chunks of ``batch_pairs``. With FD-GAN's classifier
(``(f1 - f2)^2 -> BatchNorm1d -> Linear``, :class:`~fastreid_ext.pose_transfer.verifier.VerificationClassifier`)
the eval-mode logit is ``sum_d a_d (f1_d - f2_d)^2 + c``, a diagonally weighted squared distance: re-scoring
the top-k with it is the same as ranking them by that weighted distance.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Tuple

import numpy as np
import torch

__all__ = ["verification_rerank"]


@torch.no_grad()
def verification_rerank(dist, query_feats: torch.Tensor, gallery_feats: torch.Tensor,
                        different_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], topk: int = 100,
                        batch_pairs: int = 65536) -> Tuple[np.ndarray, Dict[str, float]]:
    """Re-rank ``dist`` (Nq x Ng, smaller = closer; numpy or torch) with ``different_prob(f_q, f_g)`` (pairs of
    feature rows -> probability in [0, 1] that they show different people) on each query's ``topk`` nearest gallery
    entries (module docstring). Returns the new float32 distance matrix and ``{"pairs", "seconds",
    "ms_per_query"}``."""
    t0 = time.perf_counter()
    d = torch.as_tensor(np.asarray(dist), dtype=torch.float32).clone()
    nq, ng = d.shape
    if len(query_feats) != nq or len(gallery_feats) != ng:
        raise ValueError(f"distance matrix {tuple(d.shape)} vs {len(query_feats)} query / {len(gallery_feats)} "
                         f"gallery features")
    k = int(min(max(int(topk), 0), ng))
    if k == 0 or nq == 0:
        return d.numpy(), {"pairs": 0.0, "seconds": time.perf_counter() - t0, "ms_per_query": 0.0}
    order = torch.argsort(d, dim=1, stable=True)  # ties keep gallery order
    top = order[:, :k]
    scores = torch.empty(nq, k, dtype=torch.float32)
    qf = torch.as_tensor(query_feats)
    gf = torch.as_tensor(gallery_feats)
    rows = max(1, int(batch_pairs) // k)
    for s in range(0, nq, rows):
        e = min(nq, s + rows)
        g = gf[top[s:e].reshape(-1)]
        q = qf[s:e].repeat_interleave(k, dim=0)
        scores[s:e] = different_prob(q, g).reshape(e - s, k).float().cpu()
    new = d.clone()
    if k < ng:
        kth = torch.gather(d, 1, order[:, k:k + 1])  # (Nq, 1): the nearest entry left out of the top-k
        bar = scores.max(dim=1, keepdim=True).values
        new += torch.clamp(bar + 1.0 - kth, min=0.0)  # shifts the rest behind the re-scored ones
    new.scatter_(1, top, scores)
    secs = time.perf_counter() - t0
    return new.numpy(), {"pairs": float(nq * k), "seconds": secs, "ms_per_query": 1000.0 * secs / nq}
