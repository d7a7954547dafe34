"""TEST.RERANK with sparse Jaccard distances (issue 17): the same values and the same metrics as FastReID's dense
k-reciprocal re-ranking, through FastReID's own ReidEvaluator."""
import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext.functional.rerank import jaccard_query_gallery, rerank_distance

pytestmark = pytest.mark.usefixtures("one_thread")


def _clustered(ids=30, per_id=6, dim=24, noise=0.6, seed=0):
    rs = np.random.RandomState(seed)
    x = np.repeat(rs.randn(ids, dim), per_id, 0) + noise * rs.randn(ids * per_id, dim)
    pids = np.repeat(np.arange(ids), per_id)
    cams = np.tile(np.arange(per_id), ids)
    return torch.from_numpy(x.astype(np.float32)), pids, cams


def _dense_fastreid_jaccard(q, g, k1, k2):
    """FastReID's own dense computation (fastreid.utils.compute_dist.compute_jaccard_distance, faiss on CPU)."""
    import fastreid.utils.compute_dist as cd

    dense = getattr(cd.compute_jaccard_distance, "__wrapped__", cd.compute_jaccard_distance)
    full = dense(torch.cat([q, g]), k1=k1, k2=k2, search_option=3)
    return full[: len(q), len(q):]


@pytest.mark.parametrize("normalize,k1,k2", [(True, 20, 6), (False, 20, 6), (True, 10, 1), (True, 7, 3)])
def test_sparse_jaccard_equals_fastreid_dense(normalize, k1, k2):
    x, _, _ = _clustered()
    if normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    q, g = x[:40], x[40:]
    dense = _dense_fastreid_jaccard(q, g, k1, k2)
    ours = jaccard_query_gallery(q, g, k1, k2)
    assert ours.shape == (40, len(x) - 40) and ours.dtype == np.float32
    assert 0 < (dense < 1).mean() < 1  # both stored (< 1) and unstored (= 1) pairs occur
    np.testing.assert_allclose(ours, dense, atol=2e-6)
    d0 = np.random.RandomState(1).rand(*ours.shape).astype(np.float32)
    np.testing.assert_allclose(rerank_distance(q, g, d0, k1, k2, 0.3), 0.7 * dense + 0.3 * d0, atol=2e-6)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="same width"):
        jaccard_query_gallery(np.zeros((3, 4)), np.zeros((5, 6)))
    with pytest.raises(ValueError, match="0 queries"):
        jaccard_query_gallery(np.zeros((0, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="does not match"):
        rerank_distance(np.eye(3, 4), np.eye(5, 4), np.zeros((5, 3)))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_fastreid_evaluator_rerank_metrics_equal_the_dense_computation(metric, monkeypatch):
    import fastreid.evaluation.reid_evaluation as reid_evaluation
    import fastreid.utils.compute_dist as cd
    from fastreid.evaluation import ReidEvaluator

    assert getattr(reid_evaluation.build_dist, "__fastreid_ext_patched__", False)  # the compat patch is in place
    x, pids, cams = _clustered(noise=1.5, seed=2)
    # unit-length features: FastReID mixes the Jaccard distance (0..1) with the raw metric's distance, which for
    # squared Euclidean distances of unnormalised features would swamp it
    x = torch.nn.functional.normalize(x, dim=1)
    nq = 45
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["TEST.METRIC", metric, "TEST.RERANK.ENABLED", "True", "TEST.RERANK.K1", "12",
                         "TEST.RERANK.K2", "4", "TEST.RERANK.LAMBDA", "0.3"])

    def evaluate():
        ev = ReidEvaluator(cfg, nq)
        ev.process({"targets": torch.from_numpy(pids), "camids": torch.from_numpy(cams)}, x)
        return ev.evaluate()

    ours = evaluate()
    original = reid_evaluation.build_dist.__wrapped__  # FastReID's build_dist, dense Jaccard

    def dense_build_dist(f1, f2, metric="euclidean", **kw):
        if metric == "jaccard":
            return _dense_fastreid_jaccard(f1, f2, kw["k1"], kw["k2"])
        return original(f1, f2, metric, **kw)

    monkeypatch.setattr(reid_evaluation, "build_dist", dense_build_dist)
    dense = evaluate()
    cfg.TEST.RERANK.ENABLED = False  # the test's own cfg: no undo needed (pytest 9.2's monkeypatch undo fails on a CfgNode)
    plain = evaluate()
    for key in ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"):
        assert ours[key] == pytest.approx(dense[key], abs=1e-4), key
    assert abs(ours["mAP"] - plain["mAP"]) > 0.5, (ours["mAP"], plain["mAP"])  # re-ranking changed the ranking
    assert cd.build_dist is not dense_build_dist
