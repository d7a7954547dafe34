"""k-reciprocal re-ranking of a query x gallery problem with sparse Jaccard distances (no FastReID import).

Zhong et al., "Re-ranking person re-identification with k-reciprocal encoding", CVPR 2017, Sec. 3: the Jaccard
distance of Eq. (13)-(14) between the (query-expanded, Eq. 11) k-reciprocal weight vectors of Eq. (10), computed
over the union of query and gallery, mixed with the original distance as in Eq. (15):
``d* = (1 - lambda) d_J + lambda d``.

FastReID's ``TEST.RERANK`` (``build_dist(..., metric="jaccard")`` in ``fastreid.utils.compute_dist``) builds
dense N x N weight and distance matrices for N = query + gallery (Market-1501: 19,281^2 floats each) and loops in
Python over every row, although the evaluator keeps only the query x gallery block. Here the weights are the
sparse ones of :mod:`fastreid_ext.functional.jaccard` (about k1..3 k1 entries per row) and only the query rows are
paired, so memory is linear in N plus the query x gallery output; the values are FastReID's (same definitions:
neighbour table of k1 columns from an exact L2 search, squared Euclidean kernel on the given features, k2
query expansion, negative rounding clipped to 0).

The exact neighbour search is the largest cost at Market-1501 size (19,281 x 19,281 x 2048 multiply-adds);
``knn="torch"`` (default) does it with torch's matrix product, several times faster on CPU than the BLAS bundled
with the faiss wheel that FastReID's ``IndexFlatL2`` uses; ``knn="flat_l2"`` is FastReID's faiss search itself.
Both compute the same float32 squared distances, so they differ only where two neighbours are tied within
float32 rounding at the k-th place (``bench/bench_rerank.py`` reports the resulting difference at Market size).
"""
from __future__ import annotations

import numpy as np

from .jaccard import _as_float32, jaccard_upper_chunks, jaccard_weights, knn_search

__all__ = ["jaccard_query_gallery", "rerank_distance"]


def jaccard_query_gallery(query, gallery, k1: int = 20, k2: int = 6, max_pairs: int = 1 << 22,
                          knn: str = "torch") -> np.ndarray:
    """Jaccard distance (Zhong et al. Eq. 14) of every query to every gallery sample, computed over the union
    ``[query; gallery]`` as FastReID does: a dense ``(num_query, num_gallery)`` float32 array.

    Features are used as given (FastReID L2-normalizes them first when ``TEST.METRIC`` is cosine).
    Only pairs whose weight vectors overlap are computed; every other pair is at distance 1. ``knn``: the
    exact neighbour search, ``"torch"`` or ``"flat_l2"`` (faiss, FastReID's), see
    :func:`fastreid_ext.functional.jaccard.knn_search`.
    """
    q = _as_float32(query)
    g = _as_float32(gallery)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery features must be 2-D with the same width: {q.shape} vs {g.shape}")
    nq, ng = q.shape[0], g.shape[0]
    if nq == 0 or ng == 0:
        raise ValueError(f"re-ranking needs queries and gallery samples: got {nq} queries, {ng} gallery samples")
    if knn not in ("torch", "flat_l2"):
        raise ValueError(f"re-ranking needs an exact neighbour search: knn='torch' or 'flat_l2', got {knn!r}")
    x = np.concatenate([q, g])
    v = jaccard_weights(x, k1=k1, k2=k2, normalize=False, rank=knn_search(x, k1, index=knn))
    del x
    out = np.ones((nq, ng), dtype=np.float32)
    # pairs (i, j) with i < nq <= j are all in the upper triangle, so only the query rows' chunks are needed
    for start, stop, counts, cols, dists in jaccard_upper_chunks(v, max_pairs=max_pairs):
        if start >= nq:
            break
        rows = np.repeat(np.arange(start, stop), counts)
        keep = (rows < nq) & (cols >= nq)
        out[rows[keep], cols[keep] - nq] = dists[keep]
    return out


def rerank_distance(query, gallery, original_dist: np.ndarray, k1: int = 20, k2: int = 6,
                    lambda_value: float = 0.3) -> np.ndarray:
    """Zhong et al. Eq. (15): ``(1 - lambda) * jaccard + lambda * original_dist`` for the query x gallery block
    (``original_dist`` is the evaluator's own distance matrix, e.g. cosine or Euclidean)."""
    jac = jaccard_query_gallery(query, gallery, k1, k2)
    original_dist = np.asarray(original_dist)
    if original_dist.shape != jac.shape:
        raise ValueError(f"original distance {original_dist.shape} does not match query x gallery {jac.shape}")
    return jac * (1 - lambda_value) + original_dist * lambda_value
