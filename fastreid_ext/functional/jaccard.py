"""Sparse k-reciprocal Jaccard distance (no FastReID import).

Zhong et al., "Re-ranking person re-identification with k-reciprocal encoding", CVPR 2017: Eq. (7)-(8)
(k-reciprocal set R(p, k) and its expansion R*(p, k) with the 2/3 rule), Eq. (10) (Gaussian-kernel
weights V_pg = exp(-d(p, g)) / sum_{g' in R*} exp(-d(p, g'))), Eq. (11)-(12) (local query expansion over the
k2 nearest neighbours) and Eq. (13)-(14) (Jaccard distance
d_J(p, g) = 1 - sum_k min(V_pk, V_gk) / sum_k max(V_pk, V_gk), computed as 1 - t / (2 - t) with
t = sum_k min(V_pk, V_gk) because every row of V sums to 1).

The result is the same as FastReID's dense ``fastreid.utils.compute_dist.compute_jaccard_distance`` (and
MMT's / OpenUnReID's, which it copies) wherever that one is below 1, but it is **sparse**: two samples
can only be closer than 1 if the supports of their rows of V overlap, so only those pairs are stored
(a ``scipy.sparse.csr_matrix`` with explicit values, zeros included); every pair that is not stored has
distance exactly 1. Memory grows linearly with N (about N * (number of overlapping rows)), never N x N.

Definitions follow FastReID's implementation exactly, including its details:

* the neighbour table has ``k1`` columns (the sample itself is its own first neighbour), so the
  "k1" reciprocal set uses ``k1`` neighbours and the "k1/2" one uses ``round(k1 / 2) + 1``;
* weights use squared Euclidean distances of the given features (L2-normalize them first, as MMT does);
* query expansion averages the rows of V of the ``k2`` nearest neighbours (itself included).
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import numpy as np
import scipy.sparse as sp

__all__ = ["knn_search", "knn_recall", "torch_knn", "approx_knn", "k_reciprocal_sets", "expanded_sets",
           "kernel_weights", "query_expansion",
           "jaccard_upper_chunks", "jaccard_from_weights", "jaccard_eps_and_pairs", "symmetrize_upper",
           "sparse_jaccard_distance", "jaccard_weights", "mmt_eps", "dense_mmt_eps"]


def _as_float32(features) -> np.ndarray:
    try:  # torch tensor
        import torch

        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.ascontiguousarray(np.asarray(features, dtype=np.float32))


#: above this many samples ``index="auto"`` switches from the exact search (``"torch"``) to the approximate one
#: (``"approx"``)
AUTO_IVF_ABOVE = 50_000

#: ``"approx"``'s recall target: the fraction of the exact k nearest neighbours it must find on a random sample of
#: queries (checked by an exact search for those queries); below it, the search is widened and repeated
APPROX_TARGET_RECALL = 0.95


def _torch_block_rows(n: int, budget: int = 1 << 25) -> int:
    """Query rows per block so that a (rows, n) float32 distance block stays under ``budget`` elements (128 MB)."""
    return int(max(64, min(n, budget // max(n, 1))))


def torch_knn(x: np.ndarray, k: int, queries: Optional[np.ndarray] = None, block: int = 2048,
              bf16: bool = False) -> np.ndarray:
    """Exact k nearest neighbours (squared Euclidean, ascending; N x k int64) by blocked matrix products in torch.

    Same definition as ``faiss.IndexFlatL2`` (``|x|^2 + |y|^2 - 2 x.y`` in float32) but through torch's BLAS,
    which on this kind of CPU is several times faster than the BLAS bundled with the faiss wheel. Neighbours at
    equal distance up to float32 rounding may be ordered differently than faiss orders them. ``queries``: row
    indices of ``x`` to search for (default: all rows); the database is always all of ``x``.

    For all rows the distance matrix is symmetric, so only the blocks on and above the diagonal are multiplied
    (half of the products); each block updates the running top-k of its rows and, transposed, of its columns.
    ``bf16``: products in bfloat16 (float32 accumulation; several times faster on CPUs with AMX / AVX512-BF16,
    not exact: for candidate generation only, see :func:`approx_knn`)."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    xm = xt.to(torch.bfloat16) if bf16 else xt
    n = xt.shape[0]
    k = int(min(k, n))
    sq = (xt * xt).sum(1)
    if queries is not None:
        q_idx = np.asarray(queries, dtype=np.int64)
        out = np.empty((q_idx.size, k), dtype=np.int64)
        step = _torch_block_rows(n)
        with torch.no_grad():
            for s in range(0, q_idx.size, step):
                qi = torch.from_numpy(q_idx[s:s + step])
                d = torch.addmm(sq.unsqueeze(0), xt.index_select(0, qi), xt.T, beta=1.0, alpha=-2.0)
                d += sq.index_select(0, qi).unsqueeze(1)
                out[s:s + step] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices.numpy()
        return out
    b = int(max(k, min(block, n)))
    best_d = torch.full((n, k), float("inf"))
    best_i = torch.zeros((n, k), dtype=torch.int64)

    def merge(rows: slice, d: torch.Tensor, col0: int) -> None:
        kk = min(k, d.shape[1])
        v, i = torch.topk(d, kk, dim=1, largest=False, sorted=False)
        cat_d = torch.cat([best_d[rows], v], 1)
        cat_i = torch.cat([best_i[rows], i + col0], 1)
        v2, j = torch.topk(cat_d, k, dim=1, largest=False, sorted=False)
        best_d[rows] = v2
        best_i[rows] = torch.gather(cat_i, 1, j)

    with torch.no_grad():
        for r0 in range(0, n, b):
            r1 = min(n, r0 + b)
            xr = xm[r0:r1]
            for c0 in range(r0, n, b):
                c1 = min(n, c0 + b)
                if bf16:
                    d = (xr @ xm[c0:c1].T).float().mul_(-2.0).add_(sq[c0:c1].unsqueeze(0))
                else:
                    d = torch.addmm(sq[c0:c1].unsqueeze(0), xr, xt[c0:c1].T, beta=1.0, alpha=-2.0)
                d += sq[r0:r1].unsqueeze(1)
                merge(slice(r0, r1), d, c0)
                if c0 != r0:
                    merge(slice(c0, c1), d.T, r0)
        # ascending order, ties by index (as a stable sort of the candidates)
        order = torch.argsort(best_i, dim=1)
        best_d, best_i = torch.gather(best_d, 1, order), torch.gather(best_i, 1, order)
        order = torch.sort(best_d, dim=1, stable=True).indices
        return torch.gather(best_i, 1, order).numpy()


def _pca_project(x: np.ndarray, dim: int, sample: int, rs: np.random.RandomState) -> np.ndarray:
    """``x`` projected on the top ``dim`` principal axes of a random sample of its rows (randomized SVD in torch;
    faiss' ``PCAMatrix`` does a full eigendecomposition through the slow bundled BLAS), float32. Only the sample
    is centred (``svd_lowrank``'s ``M`` argument was slower: it multiplies the broadcast mean as a full matrix);
    no centred copy of ``x``: ``(x - mu) V = x V - mu V``."""
    import torch

    n, d = x.shape
    if not 0 < dim < d:
        return x
    xs = torch.from_numpy(x[np.sort(rs.choice(n, min(n, sample), replace=False))])
    mean = xs.mean(0, keepdim=True)
    torch.manual_seed(int(rs.randint(1 << 30)))
    xs -= mean
    _, _, v = torch.svd_lowrank(xs, q=min(dim + 10, d, xs.shape[0]), niter=3)
    del xs
    v = v[:, :dim].contiguous()
    z = torch.from_numpy(x) @ v
    z -= mean @ v
    return np.ascontiguousarray(z.numpy(), dtype=np.float32)


def _sample_thresholds(a_rows: "torch.Tensor", b_sample: "torch.Tensor", t: int, block: int) -> "torch.Tensor":
    """Per row of ``a_rows``: its ``t``-th smallest squared distance to the sample rows, both in the augmented
    form of :func:`_threshold_knn` (the product is the distance); ``torch.topk`` per row block, on the product's
    own format (on this CPU cheaper than ``kthvalue`` or ``np.partition`` of float32 rows, measured)."""
    import torch

    out = torch.empty(a_rows.shape[0])
    for r0 in range(0, a_rows.shape[0], block):
        d = a_rows[r0:r0 + block] @ b_sample.T
        out[r0:r0 + block] = torch.topk(d, t, dim=1, largest=False, sorted=False).values.amax(1).float()
    return out


def _threshold_knn(z: np.ndarray, m: int, bf16: bool = True, block: int = 2048, sample: int = 4096,
                   seed: int = 0, info: Optional[dict] = None) -> np.ndarray:
    """The ``m`` nearest rows of every row of ``z`` (N x m int64, unordered) by an exhaustive blocked search that
    keeps, instead of a running top-m (``torch.topk`` on a 2048 x 4096 block costs ~10x its product on this CPU),
    every distance below a per-row threshold: the ``t``-th smallest distance to a random sample of ``sample`` rows,
    ``t`` chosen so that about ``2 m`` rows fall below it.

    Hand-written because neither torch nor faiss has a thresholded ("range") search over bfloat16 products; the
    filter is arranged so that it costs about as much as the products (measured at N = 30,000, one thread:
    0.6 s products, 0.9 s filter, against 11 s for the earlier float32 element-wise filter):

    * rows are sorted by threshold, so that in the upper-triangle block (rows R, columns C) one scalar, the
      largest threshold of R and C, bounds both sides' tests; the per-row / per-column tests run on the few
      survivors only;
    * the distances come straight out of one bfloat16 product with float32 accumulation,
      ``[-2 z_i, |z_i|^2, 1] . [z_j, 1, |z_j|^2]`` (the squared norms split into two bfloat16 terms, high and
      low, so that they keep ~16 bits), and the scalar test reads the bfloat16 block as int16 in numpy (positive
      bfloat16 values order like their bit patterns; torch's element-wise compare and ``nonzero`` are ~5x slower
      here, measured);
    * the survivors are ordered by one ``np.sort`` of int64 keys (row, bfloat16 bits of the distance, column).

    Rows with fewer than ``m`` distances below their threshold (the sampled threshold fell too low) are searched
    again with a doubled ``t`` (rows side only), and any left after that exactly (:func:`torch_knn`); so the
    result is the exact top-``m`` of the distances computed (bfloat16 products when ``bf16``, float32 otherwise).
    ``info`` receives timings and counts."""
    import time

    import torch

    tic = time.perf_counter()
    n = z.shape[0]
    m = int(min(m, n))
    rs = np.random.RandomState(seed)
    zt = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    dt = torch.bfloat16 if bf16 else torch.float32
    sq = (zt * zt).sum(1)
    hi = sq.to(dt).float()
    lo = sq - hi
    one = torch.ones(n, 1)
    # d_ij = a_i . b_j (one product, float32 accumulation)
    a_mat = torch.cat([-2.0 * zt, hi[:, None], lo[:, None], one, one], 1).to(dt)
    b_mat = torch.cat([zt, one, one, hi[:, None], lo[:, None]], 1).to(dt)
    del hi, lo, one, sq, zt
    s_idx = torch.from_numpy(np.sort(rs.choice(n, min(n, sample), replace=False)))
    ns = s_idx.numel()
    t = int(min(ns, max(1, math.ceil(2 * m * ns / n))))
    b_s = b_mat.index_select(0, s_idx)
    with torch.no_grad():
        thr = _sample_thresholds(a_mat, b_s, t, block)
    t_thr = time.perf_counter() - tic
    perm = torch.argsort(thr)
    pn = perm.numpy()
    a_mat, b_mat = a_mat.index_select(0, perm), b_mat.index_select(0, perm)

    def bits(v):  # values comparable with the block as read below (bfloat16: int16 bits, rounded up)
        v = np.asarray(v, dtype=np.float32)
        if not bf16:
            return v
        tb = torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16)
        out = tb.view(torch.int16).numpy().astype(np.int32)
        return out + (tb.float().numpy() < v)

    thr_p = thr.index_select(0, perm).numpy()
    tb_p = bits(thr_p)
    cb = max(1, int(n - 1).bit_length())
    use_keys = bf16 and 2 * cb + 16 <= 63  # else (float32 products: tests) np.lexsort

    def read(e):  # a product block as numpy, comparable with bits(...) (bfloat16: its int16 bit patterns)
        if bf16:
            return e.view(torch.int16).numpy()
        return e.numpy()

    parts = []

    def emit(i, j, v):
        if use_keys:
            parts.append((i.astype(np.int64) << (16 + cb)) | (np.maximum(v, 0).astype(np.int64) << cb) | j)
        else:
            parts.append((i, j, v))

    with torch.no_grad():
        for r0 in range(0, n, block):
            r1 = min(n, r0 + block)
            for c0 in range(r0, n, block):
                c1 = min(n, c0 + block)
                w = read(a_mat[r0:r1] @ b_mat[c0:c1].T)
                bound = tb_p[max(r1, c1) - 1]  # largest threshold of rows and columns (sorted ascending)
                flat = np.flatnonzero(w <= bound)
                v = w.reshape(-1)[flat]
                i = flat // (c1 - c0) + r0
                j = flat % (c1 - c0) + c0
                keep = v <= tb_p[i]
                emit(i[keep], j[keep], v[keep])
                if c0 != r0:  # the same block seen from the columns' side
                    keep = v <= tb_p[j]
                    emit(j[keep], i[keep], v[keep])
    t_scan = time.perf_counter() - tic - t_thr

    def select(parts_):
        if use_keys:
            keys = np.sort(np.concatenate(parts_))
            rows, cols = keys >> (16 + cb), keys & ((1 << cb) - 1)
        else:
            rows = np.concatenate([p[0] for p in parts_])
            cols = np.concatenate([p[1] for p in parts_])
            order = np.lexsort((np.concatenate([p[2] for p in parts_]), rows))
            rows, cols = rows[order], cols[order]
        counts = np.bincount(rows, minlength=n)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cols, counts, start

    cols, counts, start = select(parts)
    entries = int(cols.size)
    parts.clear()
    out = np.empty((n, m), dtype=np.int64)  # in sorted (permuted) order
    ok = counts >= m
    out[ok] = cols[start[ok][:, None] + np.arange(m)[None, :]]
    del cols
    redo = np.flatnonzero(~ok)
    n_redo = int(redo.size)
    if redo.size:  # second chance: a doubled t for these rows, rows' side only (a few % of the rows)
        rt = torch.from_numpy(redo)
        with torch.no_grad():
            thr2 = _sample_thresholds(a_mat.index_select(0, rt), b_s, min(ns, 2 * t), block)
            tb2 = bits(thr2.numpy())
            for r0 in range(0, redo.size, block):
                ri = rt[r0:r0 + block]
                ar = a_mat.index_select(0, ri)
                for c0 in range(0, n, block):
                    c1 = min(n, c0 + block)
                    w = read(ar @ b_mat[c0:c1].T)
                    flat = np.flatnonzero(w <= tb2[r0:r0 + block, None])
                    v = w.reshape(-1)[flat]
                    emit(redo[r0 + flat // (c1 - c0)], flat % (c1 - c0) + c0, v)
        if parts:
            cols, counts, start = select(parts)
            parts.clear()
            ok2 = counts[redo] >= m
            done = redo[ok2]
            out[done] = cols[start[done][:, None] + np.arange(m)[None, :]]
            redo = redo[~ok2]
    if redo.size:  # still short: exact search for these rows
        out[redo] = torch_knn(np.ascontiguousarray(z[pn]), m, queries=redo)
    res = np.empty_like(out)
    res[pn] = pn[out]
    if info is not None:
        info.update(t_thresholds=t_thr, t_scan=t_scan, t_select=time.perf_counter() - tic - t_thr - t_scan,
                    entries_per_row=entries / n, second_pass=n_redo, exact_rows=int(redo.size))
    return res


def _pair_sq_dists(x: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Exact squared L2 distances (float32, ``|x|^2 + |y|^2 - 2 x.y``) of every row i of ``x`` to the rows
    ``cand[i]`` (N x m), from sampled dot products (:func:`_sampled_dots`, no gathered copy of the rows). Each
    unordered pair is multiplied once: neighbour lists are largely mutual (~40 % of the (i, j) are repeats as
    (j, i) at N = 30,000), and the cost is reading the rows (measured 1.7 s -> 1.1 s)."""
    n, m = cand.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), m)
    cols = cand.reshape(-1).astype(np.int64)
    pair, inv = np.unique(np.minimum(rows, cols) * n + np.maximum(rows, cols), return_inverse=True)
    del rows, cols
    lo, hi = pair // n, pair % n
    indptr = np.searchsorted(lo, np.arange(n + 1))
    support = sp.csr_matrix((np.ones(pair.size, dtype=np.float32), hi, indptr), shape=(n, n))
    del pair, lo, hi
    dots = _sampled_dots(x, support)[inv.reshape(-1)].reshape(n, m)  # CSR order = sorted unique pairs
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float32)
    return (sq[:, None] + sq[cand]) - 2.0 * dots


def approx_knn(x: np.ndarray, k: int, pca_dim: int = 128, candidates: int = 2, bf16: bool = True,
               target_recall: Optional[float] = None, check_queries: int = 500, max_rounds: int = 3,
               seed: int = 0, info: Optional[dict] = None) -> np.ndarray:
    """Approximate k nearest neighbours of every row of ``x`` (N x k int64, ascending squared L2), recall-driven.

    1. PCA to ``pca_dim`` dimensions (:func:`_pca_project`, randomized SVD of at most 20,000 random rows);
    2. ``candidates * k`` nearest neighbours of every row in that space by the blocked exhaustive search of
    :func:`_threshold_knn`, with bfloat16 products when ``bf16`` (AMX / AVX512-BF16 CPUs run them ~4x faster than
    float32); 3. the candidates are re-ranked by their exact squared distance in the full space
    (:func:`_pair_sq_dists`) and the ``k`` closest kept: distances are exact, only neighbours missing from the
    candidate lists are errors; 4. the recall against an exact search (:func:`torch_knn` on the full features)
    is measured on ``check_queries`` random rows; while it is below ``target_recall`` (default
    :data:`APPROX_TARGET_RECALL`), ``candidates`` is doubled and steps 2-3 repeated (at most ``max_rounds``
    rounds; the last result is returned with a warning if the target is still missed). ``info`` (a dict)
    receives the rounds, parameters, measured recalls and the pieces' times.

    Cost: N^2 / 2 x (``pca_dim`` + 4) multiply-adds instead of N^2 / 2 x D, in a faster number format, plus a
    filter that costs about as much as the products (:func:`_threshold_knn`). Why not faiss' IVF or HNSW: on
    2048-d features on this CPU the IVF list scans are slower than these dense products and their recall at
    ``k`` = 30 on clustered re-id features was low (IVF with ``nprobe`` 16: 0.53, ``projects/MMT``);
    ``faiss.IndexHNSWFlat`` (M 16, efConstruction 40, efSearch 96, one thread) on the same PCA-128 vectors at
    N = 30,000 took 3.4 s to build and 6.9 s to search 60 neighbours per row, against ~4 s for
    :func:`_threshold_knn`, and its graph search is approximate on top of the PCA (measured for issue 17,
    ``BENCHMARKS.md`` section 3).
    """
    import logging
    import time

    target = APPROX_TARGET_RECALL if target_recall is None else float(target_recall)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k = int(min(k, n))
    rs = np.random.RandomState(seed)
    tic = time.perf_counter()
    z = _pca_project(x, int(pca_dim), 20_000, rs)
    t_pca = time.perf_counter() - tic
    q_check = np.sort(rs.choice(n, min(n, int(check_queries)), replace=False))
    tic = time.perf_counter()
    exact = torch_knn(x, k, queries=q_check)
    t_check = time.perf_counter() - tic
    rounds = []
    c = max(1, int(candidates))
    for _ in range(max(1, int(max_rounds))):
        m = int(min(n, c * k))
        tinfo = {}
        cand = _threshold_knn(z, m, bf16=bf16, seed=seed, info=tinfo)
        tic = time.perf_counter()
        dist = _pair_sq_dists(x, cand)
        keep = np.argsort(dist, axis=1, kind="stable")[:, :k]
        rank = np.take_along_axis(cand, keep, axis=1)
        del cand, dist, keep
        tinfo["t_rerank"] = time.perf_counter() - tic
        hits = sum(len(np.intersect1d(exact[i], rank[j])) for i, j in enumerate(q_check))
        recall = float(hits / exact.size)
        rounds.append({"candidates": m, "recall": recall, **{a: round(b, 3) for a, b in tinfo.items()}})
        if recall >= target or m >= n:
            break
        c *= 2
    else:
        logging.getLogger(__name__).warning("approximate kNN: recall@%d %.3f below the target %.2f after %d rounds "
                                            "(%s); use index='torch' for an exact search", k, recall, target,
                                            len(rounds), rounds)
    if info is not None:
        info.update(pca_dim=int(z.shape[1]), bf16=bool(bf16), rounds=rounds, recall=rounds[-1]["recall"],
                    t_pca=round(t_pca, 3), t_check=round(t_check, 3))
    return rank


def knn_search(x: np.ndarray, k: int, index: str = "flat_l2", nlist: int = 0, nprobe: int = 16,
               batch: int = 4096, info: Optional[dict] = None) -> np.ndarray:
    """Indices (N x k, int64) of the k nearest neighbours of every row of ``x`` among the rows of ``x``.

    ``index``: ``"flat_l2"`` (``faiss.IndexFlatL2``, exact; FastReID's CPU choice), ``"torch"`` (exact, same
    distances through torch's matrix product, :func:`torch_knn`: several times faster on CPU, ties within float32
    rounding may be ordered differently than faiss's), ``"flat_ip"`` (``faiss.IndexFlatIP``, exact for
    L2-normalized features), ``"ivf"`` (``faiss.IndexIVFFlat`` with inner product on the full features,
    approximate: ``nlist`` lists, 0 = ``2 sqrt(N)``, ``nprobe`` visited lists; check its recall with
    :func:`knn_recall`), ``"approx"`` (:func:`approx_knn`: candidates from an exhaustive bfloat16 search in a PCA
    space, re-ranked by exact distances, widened until a measured recall reaches :data:`APPROX_TARGET_RECALL`)
    or ``"auto"`` (exact ``torch`` up to
    ``AUTO_IVF_ABOVE`` samples, ``approx`` above). ``info`` receives what ``approx`` measured.
    The faiss searches run in query batches so that faiss' temporary memory stays bounded.
    """
    import faiss

    n, d = x.shape
    k = int(min(k, n))
    if index == "auto":
        index = "torch" if n <= AUTO_IVF_ABOVE else "approx"
    if index == "torch":
        return torch_knn(x, k)
    if index == "approx":
        return approx_knn(x, k, info=info)
    if index == "flat_l2":
        idx = faiss.IndexFlatL2(d)
    elif index == "flat_ip":
        idx = faiss.IndexFlatIP(d)
    elif index == "ivf":
        nlist = int(nlist) if nlist > 0 else max(1, int(2 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d)
        idx = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        idx.cp.niter = 10
        rs = np.random.RandomState(0)
        idx.train(x[np.sort(rs.choice(n, min(n, nlist * 40), replace=False))])
        idx.nprobe = int(nprobe)
    else:
        raise ValueError(f"unknown kNN index {index!r}: use 'auto', 'flat_l2', 'torch', 'flat_ip', 'ivf' or 'approx'")
    idx.add(x)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, batch):
        _, out[s:s + batch] = idx.search(x[s:s + batch], k)
    if (out < 0).any():
        raise RuntimeError("faiss returned fewer than k neighbours (IVF with too small nprobe?)")
    return out


def knn_recall(x: np.ndarray, rank: np.ndarray, num_queries: int = 500, seed: int = 0) -> float:
    """Fraction of the exact k nearest neighbours (squared L2, :func:`torch_knn`) that ``rank`` found, on
    ``num_queries`` random queries (exact search for those queries only)."""
    n, k = rank.shape
    q = np.random.RandomState(seed).choice(n, min(n, num_queries), replace=False)
    exact = torch_knn(x, k, queries=q)
    hits = [len(np.intersect1d(exact[i], rank[j])) for i, j in enumerate(q)]
    return float(np.sum(hits) / exact.size)


def _knn_graph(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean CSR A with A[i, j] = 1 iff j is among the first k columns of ``rank[i]``."""
    n = rank.shape[0]
    k = min(k, rank.shape[1])
    cols = rank[:, :k].reshape(-1)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    a = sp.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    a.sum_duplicates()
    return a


def k_reciprocal_sets(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """R(i, k) = {j in kNN_k(i) : i in kNN_k(j)} as a boolean CSR (Zhong et al. Eq. 7).

    ``kNN_k`` is the first ``k`` columns of ``rank`` (FastReID's ``initial_rank[i, :k + 1]`` on a table with
    fewer columns takes them all; pass the column count FastReID effectively uses)."""
    a = _knn_graph(rank, k)
    r = a.multiply(a.T).tocsr()
    r.data[:] = 1
    r.eliminate_zeros()
    r.sort_indices()
    return r.astype(np.int32)


def expanded_sets(rank: np.ndarray, k1: int) -> sp.csr_matrix:
    """R*(i, k1) = R(i, k1) united with R(c, k1/2) for every c in R(i, k1) with
    |R(c, k1/2) & R(i, k1)| > 2/3 |R(c, k1/2)| (Zhong et al. Eq. 8), boolean CSR.

    As in FastReID, the k1 set uses ``min(k1, columns)`` neighbours and the half set ``round(k1/2) + 1``.
    """
    ncol = rank.shape[1]
    r = k_reciprocal_sets(rank, min(k1, ncol))
    half = int(np.around(k1 / 2))
    h = k_reciprocal_sets(rank, min(half + 1, ncol))
    h_size = np.asarray(h.sum(axis=1)).ravel()
    # overlap[i, c] = |R(c, k1/2) & R(i, k1)| for c in R(i, k1)
    overlap = r.multiply(r @ h.T).tocsr()
    overlap.eliminate_zeros()
    rows = np.repeat(np.arange(r.shape[0]), np.diff(overlap.indptr))
    keep = overlap.data > 2 / 3 * h_size[overlap.indices]
    sel = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.int32), (rows[keep], overlap.indices[keep])),
                        shape=r.shape)
    e = (r + sel @ h).tocsr()
    e.data[:] = 1
    e.sort_indices()
    return e


def _sampled_dots(x: np.ndarray, support: sp.csr_matrix) -> np.ndarray:
    """x_i . x_j for every stored (i, j) of ``support`` (in its CSR order) with torch's sampled dense-dense
    product, which never gathers the rows; a chunked gather is the fallback."""
    import warnings

    import torch

    xt = torch.from_numpy(x)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = torch.sparse_csr_tensor(torch.from_numpy(support.indptr.astype(np.int64)),
                                        torch.from_numpy(support.indices.astype(np.int64)),
                                        torch.zeros(support.nnz, dtype=xt.dtype), size=support.shape)
            return torch.sparse.sampled_addmm(s, xt, xt.T, beta=0.0).values().numpy()
    except (RuntimeError, NotImplementedError, AttributeError):  # pragma: no cover - older torch
        rows = np.repeat(np.arange(support.shape[0]), np.diff(support.indptr))
        cols = support.indices.astype(np.int64)
        out = np.empty(rows.size, dtype=np.float32)
        for st in range(0, rows.size, 1 << 14):
            r, c = torch.from_numpy(rows[st:st + (1 << 14)]), torch.from_numpy(cols[st:st + (1 << 14)])
            out[st:st + (1 << 14)] = (xt.index_select(0, r) * xt.index_select(0, c)).sum(1).numpy()
        return out


def kernel_weights(x: np.ndarray, support: sp.csr_matrix) -> sp.csr_matrix:
    """V[i, j] = softmax_j(-||x_i - x_j||^2) over j in the support row of i (Zhong et al. Eq. 10), CSR
    float32. Squared distances are ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` in float32 like FastReID's."""
    n = support.shape[0]
    indptr, cols = support.indptr, support.indices.astype(np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float32)
    dist = (sq[rows] + sq[cols]) - 2.0 * _sampled_dots(x, support)
    neg = -dist.astype(np.float64)
    if np.any(np.diff(indptr) == 0):
        raise ValueError("a row of the k-reciprocal support is empty")
    row_max = np.maximum.reduceat(neg, indptr[:-1])
    e = np.exp(neg - row_max[rows])
    row_sum = np.add.reduceat(e, indptr[:-1])
    data = (e / row_sum[rows]).astype(np.float32)
    return sp.csr_matrix((data, cols.astype(np.int32), indptr.copy()), shape=(n, n))


def query_expansion(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """V_qe[i] = mean of V[j] over the k2 nearest neighbours j of i (Zhong et al. Eq. 11), CSR float32."""
    if k2 <= 1:
        return v
    n = v.shape[0]
    k2 = min(k2, rank.shape[1])
    rows = np.repeat(np.arange(n, dtype=np.int64), k2)
    q = sp.csr_matrix((np.ones(rows.size), (rows, rank[:, :k2].reshape(-1))), shape=(n, n))
    out = (q @ v.astype(np.float64)).tocsr()
    out.data /= k2
    out.sort_indices()
    return out.astype(np.float32)


def _segment_arange(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """concatenate(arange(s, s + l) for s, l in zip(starts, lens)) without a Python loop."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    excl = np.cumsum(lens) - lens
    return np.repeat(starts.astype(np.int64) - excl, lens) + np.arange(total, dtype=np.int64)


def _sum_duplicates_unsorted(m: sp.csr_matrix) -> sp.csr_matrix:
    """Sum duplicate entries of a CSR matrix in linear time (SMMP dense accumulator of ``m @ I``);
    scipy's ``sum_duplicates`` sorts every row first. Column order in the result is arbitrary."""
    n = m.shape[1]
    eye = sp.identity(n, dtype=m.dtype, format="csr")
    return m @ eye


def jaccard_upper_chunks(v: sp.csr_matrix, max_pairs: int = 1 << 22) -> Iterator[tuple]:
    """Jaccard distances of the pairs i <= j whose rows of V share a column, in row chunks of at most
    ``max_pairs`` (i, k, j) triples: yields ``(start, stop, counts, cols, dists)`` with, for rows
    ``start..stop-1``, the number of stored pairs per row, their columns (int32, unsorted within a row) and
    distances (float32). Memory per chunk is bounded by ``max_pairs``, whatever N."""
    n = v.shape[0]
    v = v.tocsr().astype(np.float32)
    v.sum_duplicates()
    v.sort_indices()
    nnz = v.nnz
    row_of = np.repeat(np.arange(n, dtype=np.int32), np.diff(v.indptr))
    # CSC order of the CSR entries: stable sort by column keeps rows ascending inside a column
    perm = np.argsort(v.indices, kind="stable")
    csc_pos = np.empty(nnz, dtype=np.int64)
    csc_pos[perm] = np.arange(nnz, dtype=np.int64)
    csc_rows = row_of[perm]
    csc_vals = v.data[perm]
    del perm
    col_end = np.cumsum(np.bincount(v.indices, minlength=n)).astype(np.int64)
    # entry (i, k) pairs with the rows j >= i of column k: CSC positions [pos(i, k), end(k))
    lens = col_end[v.indices] - csc_pos
    row_cum = np.cumsum(np.bincount(row_of, weights=lens, minlength=n)).astype(np.int64)  # pairs up to row end
    start = 0
    while start < n:
        base = row_cum[start - 1] if start > 0 else 0
        stop = int(np.searchsorted(row_cum, base + max_pairs, side="right"))
        stop = min(max(stop, start + 1), n)
        e0, e1 = v.indptr[start], v.indptr[stop]
        l_e = lens[e0:e1]
        pos = _segment_arange(csc_pos[e0:e1], l_e)
        mins = np.minimum(np.repeat(v.data[e0:e1], l_e), csc_vals[pos])
        row_pairs = np.bincount(row_of[e0:e1] - start, weights=l_e, minlength=stop - start).astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(row_pairs)])
        dup = sp.csr_matrix((mins, csc_rows[pos], indptr), shape=(stop - start, n))
        del pos, mins
        t = _sum_duplicates_unsorted(dup)
        del dup
        d = (1.0 - t.data / (2.0 - t.data)).astype(np.float32)
        d[d < 0] = 0.0
        yield start, stop, np.diff(t.indptr).astype(np.int64), t.indices.astype(np.int32), d
        del t, d
        start = stop


def jaccard_from_weights(v: sp.csr_matrix, max_pairs: int = 1 << 22, symmetric: bool = True,
                         max_dist: Optional[float] = None) -> sp.csr_matrix:
    """d_J(i, j) = 1 - t / (2 - t), t = sum_k min(V_ik, V_jk) (Zhong et al. Eq. 13-14), for every pair whose
    rows of V share a column; negative values (rounding) are clipped to 0 like FastReID does.

    Returns a CSR float32 matrix that stores explicit zeros (the diagonal, duplicates); a pair that is
    not stored has distance 1. Only pairs i <= j are computed (:func:`jaccard_upper_chunks`); with
    ``symmetric`` the lower triangle is their mirror, otherwise the upper triangle (diagonal included) is
    returned. ``max_dist`` keeps only the entries ``<= max_dist`` (chunk by chunk: with DBSCAN's eps known,
    memory stays small).
    """
    n = v.shape[0]
    parts = []
    for start, stop, counts, idx, d in jaccard_upper_chunks(v, max_pairs):
        if max_dist is not None:
            keep = d <= max_dist
            rows_t = np.repeat(np.arange(stop - start, dtype=np.int32), counts)
            counts = np.bincount(rows_t[keep], minlength=stop - start).astype(np.int64)
            d, idx = d[keep], idx[keep]
        parts.append((counts, idx, d))
    counts = np.concatenate([p[0] for p in parts])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate([p[1] for p in parts])
    data = np.concatenate([p[2] for p in parts])
    del parts
    up = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    return symmetrize_upper(up) if symmetric else up


def jaccard_eps_and_pairs(v: sp.csr_matrix, rho: float = 1.6e-3, zero_tol: float = 1e-6,
                          max_pairs: int = 1 << 22, stats: Optional[dict] = None, slack: int = 1 << 20
                          ) -> Tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """MMT's eps (:func:`mmt_eps`) and the pairs within it, streaming over :func:`jaccard_upper_chunks`
    without ever holding all distances: only the candidates for the ``round(rho * N (N - 1) / 2)``
    smallest distances are kept (a running threshold prunes the rest), which bounds memory by that count
    plus one chunk. Returns ``(eps, rows, cols, dists)`` of the upper-triangular pairs (diagonal
    included) with distance ``<= eps``. Pruning starts when more than ``2 top + slack`` pairs are held.
    ``stats`` (a dict) receives ``pairs``: the number of upper-triangular
    pairs below 1 that were computed, and ``held_max``: the most pairs held at once."""
    n = v.shape[0]
    top_max = int(np.round(rho * (n * (n - 1) // 2)))
    if top_max <= 0:
        raise ValueError(f"rho={rho} selects no distance among {n * (n - 1) // 2} pairs; raise UDA.EPS_RHO or "
                         f"set a fixed UDA.EPS")
    thr = np.inf
    keep_r, keep_c, keep_d = [], [], []
    held = held_max = 0
    n_zero = n_pairs = 0
    for start, stop, counts, idx, d in jaccard_upper_chunks(v, max_pairs):
        n_pairs += d.size
        rows = np.repeat(np.arange(start, stop, dtype=np.int32), counts)
        upper = idx != rows
        n_zero += int(np.count_nonzero(upper & (d <= zero_tol)))
        m = d <= thr
        keep_r.append(rows[m])
        keep_c.append(idx[m])
        keep_d.append(d[m])
        held += int(m.sum())
        held_max = max(held_max, held)
        if held > 2 * top_max + slack:  # prune: the top_max smallest non-zero upper values stay
            r, c, dd = (np.concatenate(x) for x in (keep_r, keep_c, keep_d))
            cand = dd[(c != r) & (dd > zero_tol)]
            if cand.size > top_max:
                thr = float(np.partition(cand, top_max - 1)[top_max - 1])
                m = dd <= thr
                r, c, dd = r[m], c[m], dd[m]
            keep_r, keep_c, keep_d, held = [r], [c], [dd], r.size
    r, c, dd = (np.concatenate(x) for x in (keep_r, keep_c, keep_d))
    pos = dd[(c != r) & (dd > zero_tol)].astype(np.float64)
    total = n * (n - 1) // 2 - n_zero
    top = int(np.round(rho * total))
    if top <= 0:
        raise ValueError(f"rho={rho} selects no distance among {total} pairs")
    if top < pos.size:
        eps = float(np.partition(pos, top - 1)[:top].mean())
    else:  # fewer stored distances than needed: the rest are the implicit 1s
        eps = float((pos.sum() + (top - pos.size) * 1.0) / top)
    m = dd <= eps
    if stats is not None:
        stats.update(pairs=n_pairs, held_max=held_max)
    return eps, r[m], c[m], dd[m]


def symmetrize_upper(up: sp.csr_matrix) -> sp.csr_matrix:
    """Full symmetric CSR from an upper-triangular one (diagonal included), keeping explicit zeros;
    linear time (no sorting)."""
    n = up.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(up.indptr))
    strict = up.indices != rows
    # lower part: transpose of the strict upper entries (CSC of up == CSR of up.T, converted linearly)
    lo_src = sp.csr_matrix((up.data[strict], up.indices[strict], np.concatenate(
        [[0], np.cumsum(np.bincount(rows[strict], minlength=n))])), shape=(n, n))
    lo = lo_src.T.tocsr()  # linear-time csc -> csr
    cnt_up = np.diff(up.indptr)
    cnt_lo = np.diff(lo.indptr)
    indptr = np.concatenate([[0], np.cumsum(cnt_up + cnt_lo)]).astype(np.int64)
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    # row i: its lower entries first, then its upper entries (diagonal included)
    lo_dst = _segment_arange(indptr[:-1], cnt_lo)
    up_dst = _segment_arange(indptr[:-1] + cnt_lo, cnt_up)
    indices[lo_dst] = lo.indices
    data[lo_dst] = lo.data
    indices[up_dst] = up.indices
    data[up_dst] = up.data
    return sp.csr_matrix((data, indices, indptr), shape=(n, n))


def sparse_jaccard_distance(features, k1: int = 20, k2: int = 6, normalize: bool = True,
                            index: str = "flat_l2", nprobe: int = 16, rank: Optional[np.ndarray] = None,
                            max_pairs: int = 1 << 22, symmetric: bool = True,
                            max_dist: Optional[float] = None) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of ``features`` (N x D, numpy or torch) as a sparse CSR matrix.

    Args:
        k1, k2: Zhong et al.'s k1 (k-reciprocal neighbours) and k2 (query expansion); MMT uses 30 / 6,
            FastReID's default is 20 / 6.
        normalize: L2-normalize the features first (MMT does; FastReID's function does not, so pass
            normalized features to both when comparing).
        index: kNN index for faiss, see :func:`knn_search`.
        rank: a precomputed neighbour table (N x k1), e.g. from a GPU search.
        symmetric: return the full symmetric matrix; ``False`` returns only the upper triangle (diagonal
            included), half the memory, which is what :func:`mmt_eps` and the DBSCAN helper need.
        max_dist: store only distances ``<= max_dist`` (e.g. DBSCAN's eps once it is fixed).

    Returns:
        ``scipy.sparse.csr_matrix`` (N x N, float32): stored entries are the distances below 1 (explicit
        zeros included, e.g. the diagonal); missing entries mean distance 1. Feed it to
        :func:`fastreid_ext.functional.clustering.dbscan_sparse`.
    """
    v = jaccard_weights(features, k1, k2, normalize, index, nprobe, rank)
    return jaccard_from_weights(v, max_pairs=max_pairs, symmetric=symmetric, max_dist=max_dist)


def jaccard_weights(features, k1: int = 20, k2: int = 6, normalize: bool = True, index: str = "flat_l2",
                    nprobe: int = 16, rank: Optional[np.ndarray] = None) -> sp.csr_matrix:
    """The query-expanded k-reciprocal weights V (N x N CSR, ~k1..3 k1 entries per row) whose row overlaps
    define the Jaccard distance (see :func:`sparse_jaccard_distance` for the arguments)."""
    x = _as_float32(features)
    if normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 features for a Jaccard distance, got {n}")
    if rank is None:
        rank = knn_search(x, k1, index=index, nprobe=nprobe)
    v = kernel_weights(x, expanded_sets(rank, k1))
    return query_expansion(v, rank, k2)


def mmt_eps(dist: sp.csr_matrix, rho: float = 1.6e-3, zero_tol: float = 1e-6) -> float:
    """MMT's DBSCAN radius from the first epoch's distances (Ge et al. 2020, code ``mmt_train_dbscan.py``):
    the mean of the smallest ``round(rho * M)`` non-zero upper-triangular entries of the full N x N matrix,
    M their count. Computed from the sparse matrix (full or upper triangle): every pair that is not
    stored counts as a 1.

    ``zero_tol``: entries ``<= zero_tol`` count as zeros. MMT's code drops exact zeros only, but samples
    with the same neighbourhood get 0 or ~1e-7 depending on rounding, and since the rule averages the
    smallest distances that choice moves eps by a few percent; with the tolerance the sparse and the dense
    computations agree to rounding (``zero_tol=0`` is MMT's literal rule)."""
    n = dist.shape[0]
    dist = dist.tocsr()
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(dist.indptr))
    vals = dist.data[dist.indices > rows].astype(np.float64)
    zero = vals <= zero_tol
    pos = vals[~zero]
    total = n * (n - 1) // 2 - int(zero.sum())  # implicit entries are 1 (non-zero)
    top = int(np.round(rho * total))
    if top <= 0:
        raise ValueError(f"rho={rho} selects no distance among {total} pairs; raise UDA.EPS_RHO or set a "
                         f"fixed UDA.EPS")
    if top < pos.size:
        return float(np.partition(pos, top - 1)[:top].mean())
    return float((pos.sum() + (top - pos.size) * 1.0) / top)


def dense_mmt_eps(dist: np.ndarray, rho: float = 1.6e-3, zero_tol: float = 1e-6) -> float:
    """:func:`mmt_eps` on a dense matrix (MMT's code with the same zero tolerance), for comparisons."""
    tri = dist[np.triu_indices(dist.shape[0], 1)].astype(np.float64)
    tri = np.sort(tri[tri > zero_tol])
    return float(tri[:int(np.round(rho * tri.size))].mean())


def sparse_to_dense(dist: sp.csr_matrix) -> np.ndarray:  # small N only (tests)
    """Dense view with 1 for the pairs that are not stored."""
    out = np.ones(dist.shape, dtype=np.float32)
    coo = dist.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def pairs_below(dist: sp.csr_matrix, thr: float = 1.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the stored entries strictly below ``thr``."""
    coo = dist.tocoo()
    m = coo.data < thr
    return coo.row[m], coo.col[m], coo.data[m]
