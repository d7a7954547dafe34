"""The multi-branch model interface (fastreid_ext.modeling.multi_branch) and MMT around every base model through it:
a training step runs, the base model's configured loss weights are used, HPLF's local branch trains."""
import os

import pytest
import torch

import fastreid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMT_CFG = os.path.join(ROOT, "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml")
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "8"]
B = 8
C = 4  # pseudo classes in use (of the 8 rows of every classifier)

#: base architecture -> (extra config, (key, low, high) of a loss weight, losses whose value scales with it)
BASES = {
    "Baseline": ([], ("MODEL.LOSSES.CE.SCALE", 1.0, 2.0), ("loss_ce",)),
    "HPLF": (["MODEL.HPLF.TEST_LOCAL", "True", "MODEL.HPLF.NUM_STRIPES", "4"], ("MODEL.HPLF.SCALE", 1.0, 2.0),
             ("loss_local_triplet1", "loss_local_triplet2")),
    "JointIBN": (["DATASETS.ANNOTATIONS.LOAD_MASKS", "True"], ("MODEL.LOSSES.TRI.SCALE", 1.0, 2.0), ("loss_tri",)),
    "RBNet": (["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True", "MODEL.RBNET.LOSS.ID", "0.0"],
              ("MODEL.RBNET.LOSS.ID2", 1.0, 2.0), ("loss_ce",)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def mmt_cfg(base, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(MMT_CFG)
    cfg.merge_from_list(TINY + ["MODEL.MMT.BASE_ARCH", base] + BASES[base][0] + list(opts))
    return cfg


def two_view_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(B, 17, 3, generator=g) * torch.tensor([32.0, 64.0, 1.0])
    masks = (torch.rand(B, 1, 64, 32, generator=g) > 0.3).float()
    return {"images": torch.rand(B, 3, 64, 32, generator=g) * 255,
            "images_2": torch.rand(B, 3, 64, 32, generator=g) * 255,
            "targets": torch.arange(B) % C, "keypoints": kp, "keypoints_2": kp.clone(), "masks": masks,
            "masks_2": masks.clone()}


def build_mmt(cfg, state=None):
    from fastreid.modeling.meta_arch import build_model

    torch.manual_seed(0)
    m = build_model(cfg)
    if state is not None:
        m.load_state_dict(state)
    else:
        g = torch.Generator().manual_seed(1)
        m.reset_classifiers({b: torch.randn(C, 512, generator=g) for b in m.net1.branch_names})
    return m.train()


@pytest.mark.parametrize("base", sorted(BASES))
def test_mmt_trains_every_base_model_through_the_interface_with_its_loss_weights(base):
    from fastreid_ext.modeling.multi_branch import MultiBranchModel

    key, low, high = BASES[base][1]
    m = build_mmt(mmt_cfg(base, key, str(low)))
    assert isinstance(m.net1, MultiBranchModel) and type(m.net1).__name__ == base
    batch = two_view_batch()
    losses = m(batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    if base == "HPLF":  # the local branch trains under MMT
        assert {"loss_local_triplet1", "loss_local_triplet2"} <= set(losses)
    if base == "RBNet":
        assert {"loss_heatmap1", "loss_heatmap2"} <= set(losses)

    # one optimizer step moves the students (and, for HPLF, the local reduction layer), never the mean nets
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    sum(losses.values()).backward()
    opt.step()
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("net1.backbone.") for k in changed)
    assert not any(k.startswith(("mean1.", "mean2.")) and "running" not in k and "num_batches" not in k
                   for k in changed)
    if base == "HPLF":
        assert any(k.startswith("net1.local_reduction.") for k in changed)

    # the base model's configured weight: the same model, weights and batch with the weight raised
    m2 = build_mmt(mmt_cfg(base, key, str(high)), state={k: v for k, v in before.items()})
    m1 = build_mmt(mmt_cfg(base, key, str(low)), state={k: v for k, v in before.items()})
    m0 = build_mmt(mmt_cfg(base, key, "0.0"), state={k: v for k, v in before.items()})
    l2, l1, l0 = m2(batch), m1(batch), m0(batch)
    for name in BASES[base][2]:
        # the loss is affine in the weight: L(w) = L(0) + w * term, and the term is not zero
        term = float(l1[name]) - float(l0.get(name, torch.tensor(0.0)))
        assert abs(term) > 1e-4, (name, l1[name])
        assert float(l2[name]) == pytest.approx(float(l0.get(name, torch.tensor(0.0))) + high / low * term,
                                                rel=1e-4, abs=1e-5)
    for name in set(l1) - set(BASES[base][2]):  # every other loss is untouched by that weight
        assert float(l2[name]) == pytest.approx(float(l1[name]), rel=1e-5, abs=1e-6), name


def test_mmt_clusters_on_the_base_models_retrieval_feature_and_resets_every_classifier():
    m = build_mmt(mmt_cfg("RBNet", "MODEL.RBNET.TEST_FEATURE", "concat")).eval()
    batch = two_view_batch()
    feats = m.extract_for_clustering(batch)
    assert set(feats) == {"plain", "masked", "cluster"} and feats["cluster"].shape == (B, 1024)
    m.reset_classifiers({"plain": torch.randn(3, 512), "masked": torch.randn(3, 512)})
    for net in (m.net1, m.net2, m.mean1, m.mean2):
        for head in net.classifiers().values():
            assert torch.allclose(head.weight[:3].norm(dim=1), torch.ones(3)) and torch.all(head.weight[3:] == 0)
    # HPLF with its local test feature: clustering and centres use the global BN-neck feature (classifier space)
    h = build_mmt(mmt_cfg("HPLF")).eval()
    f = h.extract_for_clustering(batch)
    assert f["plain"].shape == f["cluster"].shape == (B, 512)
    assert h(batch).shape[1] > 512  # its test feature still carries the local stripes
    h.reset_classifiers({"plain": f["plain"][:3]})


def test_supervised_forward_is_the_interfaces_step():
    """RBNet's own training forward returns exactly model_losses(branch_outputs(...))."""
    from fastreid.modeling.meta_arch import build_model

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/RBNet/configs/SynthPed/rbnet_R18.yml"))
    cfg.merge_from_list(TINY)
    torch.manual_seed(0)
    m = build_model(cfg).train()
    batch = two_view_batch()
    batch = {k: v for k, v in batch.items() if not k.endswith("_2")}
    state = {k: v.clone() for k, v in m.state_dict().items()}
    own = m(batch)
    m.load_state_dict(state)  # same BN statistics for the second pass
    out = m.branch_outputs(batch, batch["targets"])
    via = m.model_losses(out, batch, batch["targets"])
    assert set(own) == set(via) == {"loss_cls", "loss_triplet", "loss_heatmap", "loss_cls2", "loss_triplet2"}
    for k in own:
        assert float(own[k]) == pytest.approx(float(via[k]), rel=1e-5), k


def test_fastreid_baseline_gets_the_interface_without_changing_its_computation():
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    from fastreid_ext.modeling.multi_branch import build_multi_branch_model, with_multi_branch

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml"))
    cfg.merge_from_list(TINY)
    base = META_ARCH_REGISTRY.get("Baseline")
    assert with_multi_branch(base) is with_multi_branch(base) and issubclass(with_multi_branch(base), base)
    torch.manual_seed(0)
    plain = base(cfg).eval()
    equipped = build_multi_branch_model(cfg).eval()
    equipped.load_state_dict(plain.state_dict())  # same modules, same keys
    batch = {"images": torch.rand(4, 3, 64, 32) * 255}
    with torch.no_grad():
        torch.testing.assert_close(plain(batch), equipped(batch))
        torch.testing.assert_close(equipped.retrieval_feature(equipped.branch_features(batch)), plain(batch))
    with pytest.raises(TypeError, match="Baseline-like"):
        with_multi_branch(torch.nn.Linear)
