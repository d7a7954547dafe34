"""Pseudo labels for unsupervised domain adaptation: DBSCAN on a sparse k-reciprocal Jaccard distance.

Ester et al., "A density-based algorithm for discovering clusters in large spatial databases with noise",
KDD 1996 (DBSCAN: core points have at least ``min_samples`` neighbours within ``eps``, themselves
included); MMT (Ge et al., ICLR 2020) clusters the target features with it on the Jaccard distance of
:mod:`fastreid_ext.functional.jaccard` and drops the outliers. No FastReID import.

scikit-learn's DBSCAN accepts a sparse precomputed neighbourhood graph (``metric="precomputed"``): a
stored entry is a distance, a missing entry means "not a neighbour". Every pair that matters (distance
<= eps < 1) is stored by the sparse Jaccard distance, zeros explicitly, so the labels are identical to
DBSCAN on the dense matrix.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import scipy.sparse as sp

from .jaccard import jaccard_eps_and_pairs, jaccard_upper_chunks, jaccard_weights, symmetrize_upper

__all__ = ["radius_graph", "dbscan_sparse", "apply_outlier_policy", "cluster_centers", "ClusterResult", "kmeans_labels",
           "jaccard_dbscan", "graph_from_pairs", "NoClusterError"]

logger = logging.getLogger(__name__)


class NoClusterError(RuntimeError):
    """DBSCAN put every sample in the noise: eps too small (or min_samples too large) for these features."""


def _is_upper(dist: sp.csr_matrix) -> bool:
    rows = np.repeat(np.arange(dist.shape[0], dtype=np.int64), np.diff(dist.indptr))
    return bool(np.all(dist.indices >= rows))


def radius_graph(dist: sp.csr_matrix, eps: float, upper: Optional[bool] = None) -> sp.csr_matrix:
    """The entries ``<= eps`` of a sparse distance matrix (full, or upper triangle with ``upper``), as a full
    symmetric CSR that keeps explicit zeros and is sorted by value within each row (what scikit-learn
    wants for a precomputed sparse graph)."""
    from sklearn.neighbors import sort_graph_by_row_values

    dist = dist.tocsr()
    if upper is None:
        upper = _is_upper(dist)
    n = dist.shape[0]
    keep = dist.data <= eps
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(dist.indptr))[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    g = sp.csr_matrix((dist.data[keep].astype(np.float64), dist.indices[keep], indptr), shape=dist.shape)
    if upper:
        g = symmetrize_upper(g.astype(np.float32)).astype(np.float64)
    return sort_graph_by_row_values(g, copy=False, warn_when_not_sorted=False)


def dbscan_sparse(dist: sp.csr_matrix, eps: float, min_samples: int = 4, upper: Optional[bool] = None,
                  n_jobs: Optional[int] = None) -> np.ndarray:
    """DBSCAN labels (-1: noise) from a sparse precomputed distance matrix where missing pairs are far
    (farther than ``eps``). Only the entries ``<= eps`` are handed to scikit-learn."""
    from sklearn.cluster import DBSCAN

    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) for a Jaccard distance, got {eps}")
    g = radius_graph(dist, eps, upper)
    return DBSCAN(eps=eps, min_samples=int(min_samples), metric="precomputed", n_jobs=n_jobs).fit_predict(g)


def apply_outlier_policy(labels: np.ndarray, policy: str = "drop") -> np.ndarray:
    """``"drop"``: outliers keep label -1 (the caller leaves them out of training, as MMT does);
    ``"keep"``: every outlier becomes a class of its own, numbered after the clusters."""
    labels = np.asarray(labels).copy()
    if policy == "drop":
        return labels
    if policy != "keep":
        raise ValueError(f"outlier policy must be 'drop' or 'keep', got {policy!r}")
    out = labels < 0
    labels[out] = labels.max(initial=-1) + 1 + np.arange(int(out.sum()))
    return labels


def cluster_centers(features: np.ndarray, labels: np.ndarray, num_classes: Optional[int] = None) -> np.ndarray:
    """Mean feature of every class 0..C-1 (rows with label < 0 ignored), C x D float32."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    c = int(labels.max(initial=-1) + 1) if num_classes is None else int(num_classes)
    m = labels >= 0
    onehot = sp.csr_matrix((np.ones(int(m.sum()), dtype=np.float64), (labels[m], np.flatnonzero(m))),
                           shape=(c, len(labels)))
    counts = np.asarray(onehot.sum(axis=1)).ravel()
    sums = onehot @ features.astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def graph_from_pairs(n: int, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> sp.csr_matrix:
    """Symmetric CSR (explicit zeros kept, rows sorted by value) from upper-triangular pairs (i <= j)."""
    from sklearn.neighbors import sort_graph_by_row_values

    off = rows != cols
    r = np.concatenate([rows, cols[off]]).astype(np.int64)
    c = np.concatenate([cols, rows[off]]).astype(np.int64)
    d = np.concatenate([dists, dists[off]]).astype(np.float64)
    g = sp.coo_matrix((d, (r, c)), shape=(n, n)).tocsr()  # no duplicates: (i, j) appears once per triangle
    return sort_graph_by_row_values(g, copy=False, warn_when_not_sorted=False)


@dataclass
class ClusterResult:
    labels: np.ndarray  # DBSCAN labels, -1 = outlier (before the outlier policy)
    eps: float
    num_clusters: int
    num_outliers: int
    pairs_within_eps: int = 0
    extra: dict = field(default_factory=dict)


def jaccard_dbscan(features, eps: Optional[float] = None, rho: float = 1.6e-3, min_samples: int = 4,
                   k1: int = 30, k2: int = 6, index: str = "flat_l2", nprobe: int = 16,
                   n_jobs: Optional[int] = None, max_pairs: int = 1 << 22) -> ClusterResult:
    """Sparse Jaccard distance + DBSCAN without ever storing all distances: with a fixed ``eps`` only the
    pairs within eps are kept; ``eps=None`` (or <= 0) chooses it MMT's way (:func:`mmt_eps`, ``rho``) while
    streaming (:func:`~fastreid_ext.functional.jaccard.jaccard_eps_and_pairs`)."""
    from sklearn.cluster import DBSCAN

    v = jaccard_weights(features, k1=k1, k2=k2, normalize=True, index=index, nprobe=nprobe)
    n = v.shape[0]
    if eps is not None and eps > 0:
        rs, cs, ds = [], [], []
        for start, stop, counts, idx, d in jaccard_upper_chunks(v, max_pairs):
            rows = np.repeat(np.arange(start, stop, dtype=np.int32), counts)
            m = d <= eps
            rs.append(rows[m])
            cs.append(idx[m])
            ds.append(d[m])
        r, c, d = (np.concatenate(x) for x in (rs, cs, ds))
    else:
        eps, r, c, d = jaccard_eps_and_pairs(v, rho, max_pairs=max_pairs)
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1) for a Jaccard distance, got {eps}")
    g = graph_from_pairs(n, r, c, d)
    labels = DBSCAN(eps=eps, min_samples=int(min_samples), metric="precomputed", n_jobs=n_jobs).fit_predict(g)
    return ClusterResult(labels=labels, eps=float(eps), num_clusters=int(labels.max(initial=-1) + 1),
                         num_outliers=int((labels < 0).sum()), pairs_within_eps=int(r.size))


def kmeans_labels(features: np.ndarray, num_clusters: int, seed: int = 0, niter: int = 20,
                  normalize: bool = True) -> np.ndarray:
    """k-means pseudo labels (Lloyd's algorithm in faiss), MMT's ``MMT-500`` / ``MMT-700`` setting (Ge et al.,
    ICLR 2020, Sec. 4: a fixed number of clusters instead of DBSCAN). ``features`` (N, D) are L2-normalized first
    when ``normalize`` (MMT clusters normalized features). Returns labels in ``0..num_clusters-1``, every label
    used (empty clusters are dropped and the labels renumbered)."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    if not 1 <= int(num_clusters) <= n:
        raise ValueError(f"k-means needs 1 <= clusters <= samples, got {num_clusters} clusters for {n} samples "
                         f"(UDA.NUM_CLUSTERS)")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = faiss.Kmeans(x.shape[1], int(num_clusters), niter=int(niter), seed=int(seed), verbose=False,
                      max_points_per_centroid=max(256, n // int(num_clusters) + 1), spherical=normalize)
    km.train(x)
    _, assign = km.index.search(x, 1)
    labels = assign[:, 0].astype(np.int64)
    _, labels = np.unique(labels, return_inverse=True)  # drop empty clusters, labels 0..C-1
    return labels.astype(np.int64)
