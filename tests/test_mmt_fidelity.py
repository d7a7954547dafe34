"""MMT as its paper and code do it (Ge, Chen & Li, ICLR 2020): mean nets keep their own BN statistics, both
mean nets are evaluated and the better reported, k-means pseudo labels (MMT-500) next to DBSCAN."""
import os

import numpy as np
import pytest
import torch

import fastreid_ext

from .test_multi_branch import build_mmt, mmt_cfg, two_view_batch


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("policy", ["own", "copy"])
def test_mean_net_bn_statistics_follow_the_policy(policy):
    m = build_mmt(mmt_cfg("Baseline", "MODEL.MMT.MEAN_NET_BN", policy))
    batch = two_view_batch()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    sum(m(batch).values()).backward()
    opt.step()  # the students move, the mean nets not yet
    with torch.no_grad():
        m(batch)  # train mode: students and mean nets update their own running statistics
    mean_bn_before = m.mean1.backbone.bn1.running_mean.clone()
    m.update_mean_nets()
    student, mean = m.net1.backbone.bn1.running_mean, m.mean1.backbone.bn1.running_mean
    assert not torch.equal(mean_bn_before, student)  # the two passes saw different statistics
    if policy == "copy":
        assert torch.equal(mean, student)
    else:  # MMT's code: parameters averaged, BN statistics the mean net's own
        assert torch.equal(mean, mean_bn_before)
    # the parameters are averaged either way (alpha at step 0 with MMT's warm-up: a_0 = 0, a copy)
    torch.testing.assert_close(m.mean1.backbone.conv1.weight, m.net1.backbone.conv1.weight)


def test_unknown_mean_net_bn_policy_is_refused():
    with pytest.raises(ValueError, match="MEAN_NET_BN"):
        build_mmt(mmt_cfg("Baseline", "MODEL.MMT.MEAN_NET_BN", "average"))


def _retrieval_set(rs, n_ids, per_id, d, noise):
    centres = rs.randn(n_ids, d)
    pids = np.repeat(np.arange(n_ids), per_id)
    feats = centres[pids] + noise * rs.randn(len(pids), d)
    camids = np.tile(np.arange(per_id), n_ids)
    return torch.tensor(feats, dtype=torch.float32), torch.tensor(pids), torch.tensor(camids)


def test_mean_nets_evaluator_reports_both_and_the_better_as_headline():
    from fastreid_ext.mmt.evaluator import MeanNetsEvaluator

    cfg = mmt_cfg("Baseline")
    rs = np.random.RandomState(0)
    good, pids, camids = _retrieval_set(rs, 10, 4, 16, 0.1)
    bad = torch.tensor(rs.randn(*good.shape), dtype=torch.float32)  # random features: low mAP
    nq = 10  # first image of every id as query (camera 0), the rest gallery (cameras 1..3)
    order = torch.cat([torch.arange(0, 40, 4), torch.tensor([i for i in range(40) if i % 4])])
    good, bad, pids, camids = good[order], bad[order], pids[order], camids[order]

    def run(first, second):
        ev = MeanNetsEvaluator(cfg, nq)
        ev.reset()
        ev.process({"targets": pids, "camids": camids}, torch.cat([first, second], dim=1))
        return ev.evaluate()

    res = run(bad, good)
    assert res["best_mean_net"] == 2.0
    assert res["mAP"] == res["mean2/mAP"] > res["mean1/mAP"]
    res_swapped = run(good, bad)
    assert res_swapped["best_mean_net"] == 1.0 and res_swapped["mAP"] == pytest.approx(res["mean2/mAP"])
    assert res_swapped["mean2/mAP"] == pytest.approx(res["mean1/mAP"])


def test_mmt_both_eval_feature_is_the_two_mean_nets():
    m = build_mmt(mmt_cfg("Baseline", "MODEL.MMT.EVAL_NET", "both")).eval()
    batch = {k: v for k, v in two_view_batch().items() if not k.endswith("_2")}
    with torch.no_grad():
        f = m(batch)
        torch.testing.assert_close(f, torch.cat([m.mean1(batch), m.mean2(batch)], dim=1))


def test_kmeans_labels_give_the_requested_clusters_and_recover_separated_ids():
    from sklearn.metrics import adjusted_rand_score

    from fastreid_ext.functional.clustering import kmeans_labels

    rs = np.random.RandomState(0)
    centres = rs.randn(12, 32)
    ids = np.repeat(np.arange(12), 20)
    x = centres[ids] + 0.02 * rs.randn(len(ids), 32)
    labels = kmeans_labels(x, 12, seed=0)
    assert labels.min() == 0 and labels.max() == 11 and len(np.unique(labels)) == 12
    assert adjusted_rand_score(ids, labels) > 0.8
    np.testing.assert_array_equal(labels, kmeans_labels(x, 12, seed=0))  # seeded: deterministic
    with pytest.raises(ValueError, match="NUM_CLUSTERS"):
        kmeans_labels(x, 1000)


def test_mmt_trains_with_kmeans_pseudo_labels(datasets_root, tmp_path):
    """UDA.CLUSTERING kmeans: exactly UDA.NUM_CLUSTERS pseudo classes at every clustering, and MMT trains."""
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.engine import build_trainer

    src = fastreid_ext.get_cfg()
    src.merge_from_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "configs/SynthPed/bagtricks_R18.yml"))
    src.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                         "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "24"])
    ck = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ck.append(str(tmp_path / f"src{seed}.pth"))
        torch.save({"model": build_model(src).state_dict()}, ck[-1])
    out = tmp_path / "mmt"
    cfg = mmt_cfg("Baseline", "MODEL.HEADS.NUM_CLASSES", "0", "DATASETS.SYNTHPED.PRESET", "tiny",
                  "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4",
                  "TEST.IMS_PER_BATCH", "64", "UDA.CLUSTERING", "kmeans", "UDA.NUM_CLUSTERS", "10",
                  "MODEL.MMT.WEIGHTS_1", ck[0], "MODEL.MMT.WEIGHTS_2", ck[1], "SOLVER.MAX_EPOCH", "2",
                  "SOLVER.ITERS_PER_EPOCH", "2", "TEST.EVAL_PERIOD", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
                  "OUTPUT_DIR", str(out))
    trainer = build_trainer(cfg)
    assert int(trainer.model.num_classes) == 10
    trainer.resume_or_load(resume=False)
    w0 = trainer.model.net1.backbone.conv1.weight.detach().clone()
    trainer.train()
    assert [h.num_classes for h in trainer.uda.history] == [10, 10]  # the first clustering and one re-clustering
    assert not torch.equal(w0, trainer.model.net1.backbone.conv1.weight)
