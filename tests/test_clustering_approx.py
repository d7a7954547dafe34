"""Exact and approximate kNN for the k-reciprocal Jaccard clustering (issue 17): the torch exact search finds
faiss' neighbours, the approximate search (PCA + thresholded bfloat16 search + exact re-ranking) widens itself
until its measured recall reaches the target, its bfloat16 candidate search finds a numpy brute force's top-m
within rounding, and its DBSCAN pseudo labels agree with the exact path's."""
import numpy as np
import pytest

from fastreid_ext.functional import jaccard as J
from fastreid_ext.functional.clustering import jaccard_dbscan

pytestmark = pytest.mark.usefixtures("one_thread")


def _clustered(n=3000, ids=150, dim=96, rank=12, noise=0.7, seed=0):
    """Unit vectors: identity centre + noise in a ``rank``-d subspace, a little isotropic noise in all dims."""
    rs = np.random.RandomState(seed)
    basis = np.linalg.qr(rs.randn(dim, rank))[0].T
    c = rs.randn(ids, rank)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    lab = rs.randint(0, ids, n)
    x = (c[lab] + noise * rs.randn(n, rank) / np.sqrt(rank)) @ basis + 0.1 * rs.randn(n, dim) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), lab


def test_torch_knn_finds_faiss_neighbours():
    import faiss

    x = np.random.RandomState(1).randn(1500, 40).astype(np.float32)
    idx = faiss.IndexFlatL2(40)
    idx.add(x)
    _, ref = idx.search(x, 15)
    sym = J.torch_knn(x, 15, block=256)  # several blocks: the symmetric path's merging is exercised
    rows = J.torch_knn(x, 15, queries=np.arange(1500))
    assert sym.shape == (1500, 15)
    np.testing.assert_array_equal(sym[:, 0], np.arange(1500))  # itself first, as in FastReID's table
    same = np.mean([set(a) == set(b) for a, b in zip(sym, ref)])
    assert same == 1.0, same  # random continuous data: no ties within float32 rounding here
    assert (sym == rows).all()


def test_approx_knn_widens_until_the_recall_target():
    x, _ = _clustered()
    info = {}
    # deliberately too narrow first round: a 6-d PCA and exactly k candidates
    rank = J.approx_knn(x, 20, pca_dim=6, candidates=1, target_recall=0.97, max_rounds=5, info=info)
    assert info["pca_dim"] == 6
    assert len(info["rounds"]) >= 2 and info["rounds"][0]["recall"] < 0.97 <= info["recall"], info
    assert [r["candidates"] for r in info["rounds"]][:2] == [20, 40]
    assert J.knn_recall(x, rank, 300, seed=3) >= 0.95  # an independent sample of queries
    d_found = ((x[:, None, :] - x[rank]) ** 2).sum(-1)
    assert (np.diff(d_found, axis=1) >= -1e-5).all()  # re-ranked by exact distances: ascending
    np.testing.assert_array_equal(rank[:, 0], np.arange(len(x)))  # itself first


def test_threshold_search_equals_the_exact_top_m():
    x, _ = _clustered(n=1200)
    got = J._threshold_knn(x, 25, bf16=False, block=256, sample=200)  # several blocks and thresholds
    ref = J.torch_knn(x, 25)
    assert np.mean([set(a) == set(b) for a, b in zip(got, ref)]) == 1.0


def test_approx_pseudo_labels_agree_with_exact():
    from sklearn.metrics import adjusted_rand_score

    x, _ = _clustered(seed=2)
    exact = jaccard_dbscan(x, k1=20, k2=6, index="torch")
    approx = jaccard_dbscan(x, k1=20, k2=6, index="approx")
    assert exact.num_clusters > 50
    assert adjusted_rand_score(exact.labels, approx.labels) >= 0.95
    assert approx.eps == pytest.approx(exact.eps, rel=0.02)


def test_bf16_threshold_search_finds_the_numpy_top_m_within_rounding():
    """The bfloat16 path (int16-read scalar bound per block, int64 sort keys, second pass for rows whose sampled
    threshold fell too low) against a float64 numpy brute force: every neighbour clearly inside the true top-m is
    found, and nothing clearly outside it is returned; "clearly" = beyond bfloat16's rounding of the distance
    (relative 2^-8 of the largest distance involved, plus the rounding of the coordinates)."""
    x, _ = _clustered(n=1500, dim=48, seed=4)
    m = 20
    info = {}
    # a tiny threshold sample makes many sampled thresholds fall below the m-th distance: the second pass runs
    got = J._threshold_knn(x, m, bf16=True, block=256, sample=60, info=info)
    assert info["second_pass"] > 0, info
    x64 = x.astype(np.float64)
    d = ((x64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    dm = np.sort(d, axis=1)[:, m - 1:m]  # the true m-th distance of each row
    tol = 2.0 ** -7 * d.max() + 0.02 * dm  # bfloat16 product rounding + input rounding (|x| = 1, 8-bit mantissa)
    found = np.zeros_like(d, dtype=bool)
    np.put_along_axis(found, got, True, axis=1)
    assert got.shape == (1500, m) and (found.sum(1) == m).all()  # m distinct neighbours per row
    assert not (~found & (d < dm - tol)).any()  # clearly inside the top-m: found
    assert not (found & (d > dm + tol)).any()  # clearly outside: not returned
