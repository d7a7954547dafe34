"""Tests for fastreid_ext.evaluation.rank (vectorized CMC/mAP/mINP) and cython_build.

The vectorized evaluator is checked against a hand-computed example and against
FastReID's own Cython ``evaluate_cy`` (compiled into the fastreid_ext cache by
``fastreid_ext.evaluation.cython_build``).  The Cython comparisons are skipped
when the extension cannot be built, unless ``FASTREID_EXT_REQUIRE_CYTHON=1``,
in which case they fail.
"""

import os

import numpy as np
import pytest

from fastreid_ext.evaluation import cython_build
from fastreid_ext.evaluation.rank import evaluate_rank, evaluate_rank_vectorized

ATOL = 1e-6


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def rank_cy():
    mod = cython_build.load_cython_evaluator()
    if mod is None:
        cython_build.build_cython_evaluator()
        mod = cython_build.load_cython_evaluator()
    if mod is None:
        reason = ("FastReID's Cython evaluator (rank_cy.pyx) could not be built/loaded "
                  f"into {cython_build.cython_cache_dir()}; see "
                  "`python -m fastreid_ext.evaluation.cython_build --verbose`")
        if os.environ.get("FASTREID_EXT_REQUIRE_CYTHON") == "1":
            pytest.fail(reason + " (FASTREID_EXT_REQUIRE_CYTHON=1)")
        pytest.skip(reason)
    return mod


def reid_problem(rs, num_q, num_g, num_ids, num_cams, num_distractors=0, noise=1.0, dim=16):
    """Distances from noisy identity embeddings, Market-like label layout."""
    centers = rs.randn(num_ids + num_distractors, dim)
    q_pids = rs.randint(0, num_ids, num_q)
    g_pids = np.concatenate([rs.randint(0, num_ids, num_g - num_distractors),
                             num_ids + np.arange(num_distractors)])
    q_cams = rs.randint(0, num_cams, num_q)
    g_cams = rs.randint(0, num_cams, num_g)
    q = centers[q_pids] + noise * rs.randn(num_q, dim)
    g = centers[g_pids] + noise * rs.randn(num_g, dim)
    dist = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1).astype(np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def assert_market_close(ref, got):
    cmc_r, ap_r, inp_r = ref
    cmc, ap, inp = got
    assert cmc.dtype == np.float32 and ap.dtype == np.float32 and inp.dtype == np.float32
    assert cmc.shape == np.asarray(cmc_r).shape
    assert ap.shape == np.asarray(ap_r).shape and inp.shape == np.asarray(inp_r).shape
    np.testing.assert_allclose(cmc, cmc_r, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ap, ap_r, rtol=0, atol=ATOL)
    np.testing.assert_allclose(inp, inp_r, rtol=0, atol=ATOL)
    assert abs(float(np.mean(ap)) - float(np.mean(ap_r))) <= ATOL  # mAP
    assert abs(float(np.mean(inp)) - float(np.mean(inp_r))) <= ATOL  # mINP


def compare_market(rank_cy, dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, chunk_size=None):
    ref = rank_cy.evaluate_cy(dist, q_pids, g_pids, q_cams, g_cams, max_rank, False)
    got = evaluate_rank_vectorized(dist, q_pids, g_pids, q_cams, g_cams, max_rank, chunk_size=chunk_size)
    assert_market_close(ref, got)
    return got


# --------------------------------------------------------------------------- Cython-independent
def hand_example():
    #            g0    g1    g2    g3    g4    g5
    g_pids = np.array([1, 2, 1, 3, 1, 2])
    g_cams = np.array([0, 1, 1, 1, 2, 0])
    q_pids = np.array([1, 2, 3])
    q_cams = np.array([0, 1, 1])
    dist = np.array([
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # q0: g0 removed (pid 1, cam 0) -> [0,1,0,1,0]
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # q1: ranks g5 g4 g3 g2 (g1 removed) g0 -> [1,0,0,0,0]
        [0.3, 0.2, 0.1, 0.0, 0.5, 0.4],  # q2: its only match g3 is same-camera -> skipped
    ], dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def test_hand_computed_example():
    dist, q_pids, g_pids, q_cams, g_cams = hand_example()
    cmc, all_ap, all_inp = evaluate_rank_vectorized(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    # q0: hits at filtered ranks 2 and 4 -> AP = (1/2 + 2/4) / 2, INP = 2 / 4
    # q1: hit at rank 1 -> AP = INP = 1;  q2: skipped
    np.testing.assert_array_equal(cmc, np.array([0.5, 1.0, 1.0, 1.0], np.float32))
    np.testing.assert_array_equal(all_ap, np.array([0.5, 1.0], np.float32))
    np.testing.assert_array_equal(all_inp, np.array([0.5, 1.0], np.float32))
    assert cmc.dtype == all_ap.dtype == all_inp.dtype == np.float32
    # dispatcher, python path, torch input
    torch = pytest.importorskip("torch")
    out = evaluate_rank(torch.from_numpy(dist), q_pids, g_pids, q_cams, g_cams, 4, use_cython=False)
    for a, b in zip(out, (cmc, all_ap, all_inp)):
        np.testing.assert_array_equal(a, b)


def test_hand_computed_cuhk03_single_shot_is_deterministic():
    # every gallery identity has exactly one image left after filtering, so the
    # single-gallery-shot sampling has no choice: CMC equals the market CMC
    dist, q_pids, g_pids, q_cams, g_cams = hand_example()
    g_pids = np.array([1, 2, 4, 3, 5, 2])
    cmc, m_ap = evaluate_rank_vectorized(dist[:2], q_pids[:2], g_pids, q_cams[:2], g_cams, 4,
                                         use_metric_cuhk03=True)
    # q0: g0 removed, no other pid-1 image -> skipped; q1: g1 removed, g5 at rank 1
    # (10 float32 additions of 0.1f give 1.0000001, exactly like the Cython)
    np.testing.assert_allclose(cmc, np.ones(4, np.float32), rtol=0, atol=ATOL)
    assert m_ap == pytest.approx(1.0)
    assert isinstance(m_ap, float)


def test_ties_and_small_gallery_hand_example():
    # all distances equal: ordering is np.argsort's (default kind) on float32
    g_pids = np.array([5, 7, 5])
    g_cams = np.array([1, 1, 2])
    dist = np.zeros((1, 3), np.float32)
    cmc, ap, inp = evaluate_rank_vectorized(dist, [5], g_pids, [1], g_cams, max_rank=50)
    order = np.argsort(dist, axis=1)[0]
    kept = [g for g in order if not (g_pids[g] == 5 and g_cams[g] == 1)]
    hits = np.array([g_pids[g] == 5 for g in kept])
    first = int(np.argmax(hits))
    assert cmc.shape == (3,)  # max_rank clipped to num_gallery
    np.testing.assert_array_equal(cmc[:2], (np.arange(2) >= first).astype(np.float32))
    assert ap[0] == pytest.approx(1.0 / (first + 1))


def test_chunking_does_not_change_results():
    rs = np.random.RandomState(3)
    prob = reid_problem(rs, 57, 140, 12, 3, num_distractors=10, noise=1.5)
    ref = evaluate_rank_vectorized(*prob, max_rank=20, chunk_size=1000)
    for cs in (1, 5, 16):
        got = evaluate_rank_vectorized(*prob, max_rank=20, chunk_size=cs)
        for a, b in zip(ref, got):
            np.testing.assert_array_equal(a, b)
    np.random.seed(1)
    ref = evaluate_rank_vectorized(*prob, max_rank=20, use_metric_cuhk03=True, chunk_size=1000)
    np.random.seed(1)
    got = evaluate_rank_vectorized(*prob, max_rank=20, use_metric_cuhk03=True, chunk_size=7)
    np.testing.assert_array_equal(ref[0], got[0])
    assert ref[1] == got[1]


def test_no_valid_query_raises():
    dist = np.random.RandomState(0).rand(2, 3).astype(np.float32)
    with pytest.raises(AssertionError, match="do not appear in gallery"):
        evaluate_rank_vectorized(dist, [1, 2], [3, 3, 1], [0, 0], [1, 1, 0])
    with pytest.raises(AssertionError):
        evaluate_rank_vectorized(dist, [1, 2], [3, 3, 1], [0, 0], [1, 1, 0], use_metric_cuhk03=True)


def test_cython_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTREID_EXT_CACHE", str(tmp_path))
    d = cython_build.cython_cache_dir()
    assert d.parent == tmp_path / "cython"
    assert "fastreid-" in d.name and f"np{'.'.join(np.__version__.split('.')[:2])}" in d.name
    monkeypatch.delenv("FASTREID_EXT_CACHE")
    assert ".cache" in str(cython_build.cython_cache_dir())


# --------------------------------------------------------------------------- vs FastReID's Cython
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_matrices_match_cython(rank_cy, seed):
    rs = np.random.RandomState(seed)
    prob = reid_problem(rs, num_q=150, num_g=900, num_ids=60, num_cams=6, num_distractors=100,
                        noise=[0.7, 1.2, 2.0][seed])
    compare_market(rank_cy, *prob, max_rank=50, chunk_size=[None, 13, 64][seed])
    # uniform random distances, no structure at all
    dist = rs.rand(120, 700).astype(np.float32)
    q_pids, g_pids = rs.randint(0, 40, 120), rs.randint(0, 40, 700)
    q_cams, g_cams = rs.randint(0, 4, 120), rs.randint(0, 4, 700)
    compare_market(rank_cy, dist, q_pids, g_pids, q_cams, g_cams, max_rank=30)


@pytest.mark.parametrize("levels", [2, 5, "int"])
def test_tie_heavy_matrices_match_cython(rank_cy, levels):
    rs = np.random.RandomState(10)
    dist, q_pids, g_pids, q_cams, g_cams = reid_problem(rs, 100, 600, 30, 4, noise=1.0)
    if levels == "int":
        dist = np.floor(dist / 4).astype(np.int64)  # integer valued (cast to float32 inside)
    else:
        dist = np.round(dist / dist.max() * levels).astype(np.float32)
    assert len(np.unique(dist)) < 100
    compare_market(rank_cy, dist, q_pids, g_pids, q_cams, g_cams, max_rank=50, chunk_size=17)
    compare_market(rank_cy, np.zeros_like(dist, dtype=np.float32), q_pids, g_pids, q_cams, g_cams, 10)


def test_same_camera_only_queries_are_skipped(rank_cy):
    rs = np.random.RandomState(4)
    dist, q_pids, g_pids, q_cams, g_cams = reid_problem(rs, 80, 400, 20, 3, noise=1.0)
    # identities 100..104: every gallery image is in the query's own camera
    extra_q = np.arange(100, 105)
    extra_g = np.repeat(extra_q, 3)
    q_pids = np.concatenate([q_pids, extra_q])
    q_cams = np.concatenate([q_cams, np.full(5, 7)])
    g_pids = np.concatenate([g_pids, extra_g])
    g_cams = np.concatenate([g_cams, np.full(15, 7)])
    dist = rs.rand(len(q_pids), len(g_pids)).astype(np.float32)
    # and one query identity that is absent from the gallery altogether
    q_pids[0] = 999
    cmc, ap, inp = compare_market(rank_cy, dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, chunk_size=9)
    valid = [i for i in range(len(q_pids))
             if np.any((g_pids == q_pids[i]) & (g_cams != q_cams[i]))]
    assert len(ap) == len(inp) == len(valid) < len(q_pids)


@pytest.mark.parametrize("num_g", [1, 4, 9, 23])
def test_gallery_smaller_than_max_rank_matches_cython(rank_cy, num_g):
    # covers the Cython's reuse of its cmc buffer when a query's filtered
    # gallery is shorter than max_rank
    rs = np.random.RandomState(num_g)
    num_q = 40
    q_pids, g_pids = rs.randint(0, 4, num_q), rs.randint(0, 4, num_g)
    q_cams, g_cams = rs.randint(0, 2, num_q), rs.randint(0, 2, num_g)
    dist = rs.rand(num_q, num_g).astype(np.float32)
    try:
        ref = rank_cy.evaluate_cy(dist, q_pids, g_pids, q_cams, g_cams, 50, False)
    except AssertionError:
        with pytest.raises(AssertionError):
            evaluate_rank_vectorized(dist, q_pids, g_pids, q_cams, g_cams, 50)
        return
    for cs in (None, 3):
        got = evaluate_rank_vectorized(dist, q_pids, g_pids, q_cams, g_cams, 50, chunk_size=cs)
        assert got[0].shape == (num_g,)
        assert_market_close(ref, got)


@pytest.mark.parametrize("seed", [0, 7])
def test_cuhk03_mode_matches_cython(rank_cy, seed):
    rs = np.random.RandomState(100 + seed)
    dist, q_pids, g_pids, q_cams, g_cams = reid_problem(rs, 40, 260, 25, 2, noise=1.5)
    if seed:
        dist = np.round(dist)  # ties too
    np.random.seed(seed)
    cmc_r, map_r = rank_cy.evaluate_cy(dist, q_pids, g_pids, q_cams, g_cams, 20, True)
    state_r = np.random.get_state()
    np.random.seed(seed)
    cmc, m_ap = evaluate_rank_vectorized(dist, q_pids, g_pids, q_cams, g_cams, 20, True, chunk_size=11)
    state = np.random.get_state()
    assert cmc.dtype == np.float32 and cmc.shape == cmc_r.shape
    np.testing.assert_allclose(cmc, cmc_r, rtol=0, atol=ATOL)
    assert abs(m_ap - map_r) <= ATOL
    # the global RNG was consumed exactly as the Cython consumes it
    assert state[2] == state_r[2] and np.array_equal(state[1], state_r[1])
    # small gallery: cmc is zero padded past the number of sampled identities
    np.random.seed(seed)
    ref = rank_cy.evaluate_cy(dist[:, :12], q_pids, g_pids[:12], q_cams, g_cams[:12], 50, True)
    np.random.seed(seed)
    got = evaluate_rank_vectorized(dist[:, :12], q_pids, g_pids[:12], q_cams, g_cams[:12], 50, True)
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=ATOL)
    assert abs(got[1] - ref[1]) <= ATOL


def test_evaluate_rank_dispatch_and_registration(rank_cy):
    import sys

    rs = np.random.RandomState(5)
    dist, q_pids, g_pids, q_cams, g_cams = reid_problem(rs, 30, 200, 15, 3)
    assert sys.modules["fastreid.evaluation.rank_cylib.rank_cy"] is rank_cy
    torch = pytest.importorskip("torch")
    via_cy = evaluate_rank(torch.from_numpy(dist), q_pids, g_pids, q_cams, g_cams, 50)
    via_np = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, 50, use_cython=False)
    assert_market_close(via_cy, via_np)
    assert cython_build.build_cython_evaluator() == cython_build.cython_cache_dir()  # cached no-op
