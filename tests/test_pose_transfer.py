"""Pose-invariant feature transfer (issue 12): E_I split, E_A, C_v, pairs, fraction sampler, re-ranking, frozen E_I,
source checkpoints, bad input, configs, end to end on tiny SynthPed."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext.pose_transfer.fraction import check_fraction, fraction_subset
from fastreid_ext.pose_transfer.norm import GuardedBatchNorm
from fastreid_ext.pose_transfer.pairs import pair_index, sample_pairs, verification_loss
from fastreid_ext.pose_transfer.rerank import verification_rerank
from fastreid_ext.pose_transfer.verifier import VerificationClassifier

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(ROOT, "projects/PoseTransfer/configs")
R18 = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x",
       "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.LAST_STRIDE", "1",
       "MODEL.HEADS.NUM_CLASSES", "8", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_cfg(opts=(), config="Base-PoseTransfer.yml"):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(CFG_DIR, config))
    cfg.merge_from_list(R18 + list(opts))
    return cfg


def build(opts=(), config="Base-PoseTransfer.yml"):
    from fastreid.modeling.meta_arch import build_model

    return build_model(make_cfg(opts, config))


def batch(n=16, k=4, size=(64, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n, 3, *size, generator=g) * 255, "targets": torch.arange(n) // k}


# ---------------------------------------------------------------- pairs and C_v
def test_pairs_are_labelled_from_ids_all_and_balanced():
    t = torch.tensor([3, 3, 5, 5, 5, 9, 7, 7])
    i, j, lab = sample_pairs(t, "all")
    assert len(i) == 8 * 7 // 2 and bool((i < j).all())
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i)  # unordered, no repeats
    assert torch.equal(lab, (t[i] == t[j]).float())
    n_pos = int(lab.sum())
    assert n_pos == 1 + 3 + 1  # C(2,2) + C(3,2) + C(2,2)
    g = torch.Generator().manual_seed(0)
    for ratio in (1.0, 3.0):
        i, j, lab = sample_pairs(t, "balanced", ratio, generator=g)
        assert torch.equal(lab, (t[i] == t[j]).float())
        assert int(lab.sum()) == n_pos and int((lab == 0).sum()) == round(ratio * n_pos)
        assert bool((i < j).all()) and len(set(zip(i.tolist(), j.tolist()))) == len(i)
    # balanced is seeded: same generator state, same pairs
    a = sample_pairs(t, "balanced", 1.0, torch.Generator().manual_seed(5))
    b = sample_pairs(t, "balanced", 1.0, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # no positives (every id once): balanced keeps every pair
    assert len(sample_pairs(torch.arange(5), "balanced")[0]) == 10
    with pytest.raises(ValueError, match="PAIRS.MODE"):
        sample_pairs(t, "hard")
    with pytest.raises(ValueError, match="NEG_POS_RATIO"):
        sample_pairs(t, "balanced", 0.0)


@pytest.mark.parametrize("outputs", [1, 2])
def test_verifier_is_symmetric_and_a_weighted_squared_distance(outputs):
    torch.manual_seed(0)
    cv = VerificationClassifier(16, outputs=outputs)
    torch.nn.init.normal_(cv.classifier.weight, 0, 1)
    f1, f2 = torch.randn(32, 16) * 3, torch.randn(32, 16)
    for mode in (True, False):
        cv.train(mode)
        assert torch.equal(cv(f1, f2), cv(f2, f1))
    cv.eval()
    assert torch.allclose(cv.same_prob(f1, f2) + cv.different_prob(f1, f2), torch.ones(32))
    # eval-mode logit = sum_d a_d (f1 - f2)^2 + c (the re-ranking note in rerank.py)
    bn, lin = cv.bn, cv.classifier
    w = lin.weight if outputs == 1 else (lin.weight[1] - lin.weight[0]).unsqueeze(0)
    b = lin.bias if outputs == 1 else (lin.bias[1] - lin.bias[0]).unsqueeze(0)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    a = w[0] * scale
    c = b[0] + (w[0] * (bn.bias - bn.running_mean * scale)).sum()
    assert torch.allclose(cv(f1, f2), ((f1 - f2) ** 2 * a).sum(1) + c, atol=1e-4)
    with pytest.raises(ValueError, match="OUTPUTS"):
        VerificationClassifier(4, outputs=3)


def test_verification_loss_is_eq1_bce():
    torch.manual_seed(0)
    cv = VerificationClassifier(8, bn_min_batch=1)
    f = torch.randn(8, 8, requires_grad=True)
    t = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss, stats = verification_loss(f, t, cv, "all")
    i, j, y = pair_index(t)
    d = torch.sigmoid(cv(f[i], f[j]))
    y = y.float()
    manual = -(y * torch.log(d) + (1 - y) * torch.log(1 - d)).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert stats["pairs"] == 28 and stats["positives"] == 4
    loss.backward()
    assert f.grad is not None and cv.classifier.weight.grad is not None


def test_guarded_batchnorm_small_batches():
    bn = GuardedBatchNorm(4, min_batch=8)
    bn.train()
    x = torch.randn(3, 4, 2, 2)
    y = bn(x)  # small: running statistics (initial 0 / 1), untouched
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.allclose(y, x / (1 + 1e-5) ** 0.5)
    assert torch.equal(bn(x[:1]), bn(x)[:1])  # a sample's output does not depend on the rest of a small batch
    big = torch.randn(16, 4, 2, 2) + 5
    ref = torch.nn.BatchNorm2d(4)
    ref.train()
    assert torch.allclose(bn(big), ref(big), atol=1e-6) and torch.allclose(bn.running_mean, ref.running_mean)
    one = GuardedBatchNorm(4, min_batch=1)  # plain BN still takes a one-sample batch
    one.train()
    assert one(torch.randn(1, 4)).shape == (1, 4)


# ---------------------------------------------------------------- fraction sampler
def _items(n_ids=50, per=(3, 9), seed=0):
    rng = np.random.default_rng(seed)
    return [(f"{p}_{k}.jpg", f"ds_{p}", k % 3) for p in range(n_ids) for k in range(rng.integers(*per))]


def test_fraction_sampler_deterministic_exact_nested_and_no_leaks():
    items = _items()
    ids = sorted({it[1] for it in items})
    prev = None
    for f in (1.0, 0.8, 0.6, 0.4, 0.2):
        a = fraction_subset(items, f, "ids", seed=3)
        assert a == fraction_subset(items, f, "ids", seed=3)  # deterministic
        kept = {it[1] for it in a}
        assert len(kept) == round(f * len(ids))  # honours the fraction (of identities)
        assert a == [it for it in items if it[1] in kept]  # all images of a kept id, no other id, same order
        if prev is not None:
            assert kept <= prev  # nested across fractions for one seed
        prev = kept
        b = fraction_subset(items, f, "images", seed=3)
        assert b == fraction_subset(items, f, "images", seed=3)
        assert len(b) == round(f * len(items)) and set(b) <= set(items)
        assert b == [it for it in items if it in set(b)]
    assert fraction_subset(items, 1.0, "ids") == items
    ids_of = [{it[1] for it in fraction_subset(items, 0.4, "ids", s)} for s in (1, 2)]
    assert ids_of[0] != ids_of[1]  # the seed matters


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.5, float("nan"), "half"])
def test_fraction_outside_range_names_the_key(bad):
    with pytest.raises(ValueError, match=r"TRANSFER\.FRACTION"):
        fraction_subset(_items(), bad)
    with pytest.raises(ValueError, match=r"TRANSFER\.FRACTION"):
        check_fraction(bad)


def test_fraction_too_few_identities_names_the_key():
    with pytest.raises(ValueError, match=r"TRANSFER\.FRACTION 0\.1 .*leaves 5 identities.*at least 16"):
        fraction_subset(_items(50), 0.1, "ids", min_ids=16)
    with pytest.raises(ValueError, match="FRACTION_BY"):
        fraction_subset(_items(), 0.5, "people")


# ---------------------------------------------------------------- re-ranking
def test_rerank_with_a_perfect_verifier_puts_every_true_match_first():
    rng = np.random.default_rng(0)
    q_ids, g_ids = rng.integers(0, 6, 20), rng.integers(0, 6, 60)
    qf = torch.nn.functional.one_hot(torch.as_tensor(q_ids), 6).float()
    gf = torch.nn.functional.one_hot(torch.as_tensor(g_ids), 6).float()
    dist = rng.random((20, 60)).astype(np.float32)

    def perfect(a, b):
        return (a != b).any(1).float()  # P(different) = 0 for the same id, 1 otherwise

    for k in (60, 100):  # the whole gallery
        new, cost = verification_rerank(dist, qf, gf, perfect, topk=k)
        for i in range(20):
            order = np.argsort(new[i], kind="stable")
            n_true = int((g_ids == q_ids[i]).sum())
            assert (g_ids[order[:n_true]] == q_ids[i]).all()
        assert cost["pairs"] == 20 * 60
    # top-k < gallery: matches put inside the top-k by the first stage come first, the rest keep their order behind
    same = g_ids[None, :] == q_ids[:, None]
    dist2 = np.where(same, 0.3 + 0.3 * dist, 0.6 + dist).astype(np.float32)  # true matches within the 30 nearest
    hard = np.argsort(np.where(same, 9.0, dist), axis=1)[:, :5]  # ... but 5 other people even nearer
    np.put_along_axis(dist2, hard, 0.1 * np.take_along_axis(dist, hard, 1), 1)
    assert not same[np.arange(20), np.argsort(dist2, 1)[:, 0]].any()  # the first stage ranks a wrong person first
    new, _ = verification_rerank(dist2, qf, gf, perfect, topk=30, batch_pairs=7)
    for i in range(20):
        order = np.argsort(new[i], kind="stable")
        n_true = int((g_ids == q_ids[i]).sum())
        assert (g_ids[order[:n_true]] == q_ids[i]).all()
        top = set(np.argsort(dist2[i], kind="stable")[:30])
        assert set(order[:30]) == top
        rest = [j for j in order[30:]]
        assert rest == sorted(rest, key=lambda j: dist2[i, j])


# ---------------------------------------------------------------- model: split, shapes, freezing
@pytest.mark.parametrize("size,grid", [((256, 128), (16, 8)), ((64, 32), (4, 2))])
@pytest.mark.parametrize("variant,depth", [("A", 4), ("B", 5)])
def test_model_a_and_b_feature_shapes(size, grid, variant, depth):
    m = build(["MODEL.POSE_TRANSFER.VARIANT", variant, "MODEL.POSE_TRANSFER.EA.WIDTH", "64",
               "INPUT.SIZE_TRAIN", str(list(size))])
    assert m.split.branch_point == "layer4" and m.split.mid_channels == 256 and m.split.out_channels == 512
    assert len(m.ea.layers) == depth
    assert m.ea.in_channels == (512 if variant == "A" else 256)
    m.eval()
    x = batch(2, 1, size)
    with torch.no_grad():
        maps = m.feature_maps(x)
        assert maps["ei_mid"].shape == (2, 256, *grid) and maps["ei_out"].shape == (2, 512, *grid)
        assert maps["ea"].shape == (2, 64, *grid)
        assert m(x).shape == (2, 64)
        assert torch.equal(m(x), m.retrieval_feature(m.branch_features(x)))


def test_encoder_split_mobilenetv2_and_default_width():
    m = build(["MODEL.BACKBONE.NAME", "build_mobilenetv2_imagenet_backbone", "MODEL.BACKBONE.DEPTH", "1.0x",
               "MODEL.BACKBONE.FEAT_DIM", "1280", "MODEL.POSE_TRANSFER.VARIANT", "A",
               "MODEL.POSE_TRANSFER.EA.FIRST_KERNEL", "1", "MODEL.POSE_TRANSFER.EA.DEPTH", "2",
               "MODEL.POSE_TRANSFER.FREEZE", "trunk"])
    s = m.split
    assert s.branch_point == "features.14" and s.mid_channels == 96 and s.out_channels == 1280
    assert s.last_block_modules == ("features.14", "features.15", "features.16", "features.17", "conv")
    assert m.ea.width == 1280  # EA.WIDTH 0: E_I's output channels
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in m.backbone.named_parameters(prefix="b")
                 if p.requires_grad}
    assert trainable == {"features.14", "features.15", "features.16", "features.17", "conv.0", "conv.1"}
    with pytest.raises(ValueError, match="BRANCH_POINT"):
        build(["MODEL.POSE_TRANSFER.BRANCH_POINT", "layer9"])


class _ImagesOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model({"images": images})


def test_model_b_stops_ei_early_only_in_training():
    m = build(["MODEL.POSE_TRANSFER.VARIANT", "B", "MODEL.POSE_TRANSFER.EA.WIDTH", "16",
               "MODEL.POSE_TRANSFER.FREEZE", "encoder"])
    calls = []
    h = m.backbone.layer4[0].register_forward_hook(lambda *a: calls.append(1))
    x = batch(8, 4)
    m.train()
    m(x)
    assert calls == []  # training: E_I's last block is skipped
    m.eval()
    with torch.no_grad():
        m(x)
        traced = torch.jit.trace(_ImagesOnly(m), x["images"][:2], check_trace=False)
    assert calls == [1, 1]  # eval (and tracing) run the whole backbone, no exception inside a hook
    assert torch.allclose(traced(x["images"][:2]), m({"images": x["images"][:2]}), atol=1e-5)
    h.remove()


def _step(m, x, steps=2):
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=5e-4)
    m.train()
    for _ in range(steps):
        loss = sum(m(x).values())
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("variant", ["A", "B"])
def test_transfer_mode_changes_only_ea_head_and_cv(variant):
    m = build(["MODEL.POSE_TRANSFER.VARIANT", variant, "MODEL.POSE_TRANSFER.FREEZE", "encoder",
               "MODEL.POSE_TRANSFER.EA.WIDTH", "32", "MODEL.LOSSES.NAME", '("CrossEntropyLoss", "TripletLoss")'])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    snap = m.frozen_state()
    assert set(snap) == {"backbone." + k for k in m.backbone.state_dict()}
    assert any("running_mean" in k for k in snap)
    _step(m, batch(16, 4))
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.split(".")[0] in ("ea", "heads", "verifier") for k in changed), sorted(changed)[:5]
    assert any(k.startswith("ea.") and "running_mean" in k for k in changed)  # E_A's BN does train
    assert any(k.startswith("verifier.classifier") for k in changed)
    assert m.changed_frozen_tensors(snap) == []
    assert all(not p.requires_grad for p in m.backbone.parameters())
    assert all(not mod.training for mod in m.backbone.modules()) and m.ea.training
    # E_I in eval mode while training: its BN statistics are those of the source
    m.backbone.layer1[0].bn1.running_mean.add_(1.0)
    assert m.changed_frozen_tensors(snap) == ["backbone.layer1.0.bn1.running_mean"]


def test_trunk_mode_trains_only_the_last_block_of_ei():
    m = build(["MODEL.POSE_TRANSFER.VARIANT", "none", "MODEL.POSE_TRANSFER.FREEZE", "trunk"])
    assert m.ea is None
    before = {k: v.clone() for k, v in m.state_dict().items()}
    snap = m.frozen_state()
    _step(m, batch(16, 4))
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    bb = {k for k in changed if k.startswith("backbone.")}
    assert bb and all(k.startswith("backbone.layer4.") for k in bb)
    assert any("running_mean" in k for k in bb)  # the last block's BN trains
    assert m.changed_frozen_tensors(snap) == []
    assert not any(k.startswith("backbone.layer4") for k in snap)


def test_full_mode_and_interface():
    m = build(["MODEL.POSE_TRANSFER.VARIANT", "B", "MODEL.POSE_TRANSFER.EA.WIDTH", "32",
               "MODEL.LOSSES.NAME", '("CrossEntropyLoss",)'])
    assert m.frozen_state() == {}
    assert [t.branch for t in m.loss_terms()] == ["reid"] and set(m.classifiers()) == {"reid"}
    m.train()
    x = batch(16, 4)
    losses = m(x)
    assert set(losses) == {"loss_cls", "loss_verif"} and all(torch.isfinite(v) for v in losses.values())
    out = m.branch_outputs(x, x["targets"])
    assert out.heads["reid"]["features"].shape == (16, 32) and out.context["verif_feature"].shape == (16, 32)
    g = m.parameter_groups()
    assert g["E_I"]["trainable"] == g["E_I"]["total"] > 0 and g["E_A"]["total"] > 0


def test_mmt_around_pose_transfer_through_the_interface():
    from fastreid.modeling.meta_arch import build_model

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml"))
    cfg.merge_from_list(R18 + ["MODEL.MMT.BASE_ARCH", "PoseTransfer", "MODEL.POSE_TRANSFER.VARIANT", "B",
                               "MODEL.POSE_TRANSFER.EA.WIDTH", "16", "MODEL.POSE_TRANSFER.FREEZE", "encoder"])
    m = build_model(cfg)
    assert type(m.net1).__name__ == "PoseTransfer"
    m.reset_classifiers({"reid": torch.randn(4, 16, generator=torch.Generator().manual_seed(1))})
    m.train()
    x = batch(8, 2)
    x["images_2"] = x["images"].flip(3)
    losses = m(x)
    assert {"loss_verif1", "loss_verif2"} <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    snap = m.net1.frozen_state()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    sum(losses.values()).backward()
    opt.step()
    assert m.net1.changed_frozen_tensors(snap) == []


# ---------------------------------------------------------------- source checkpoints
def test_source_checkpoint_into_ei(tmp_path):
    from fastreid.modeling.meta_arch import build_model

    # a FastReID Baseline checkpoint (another config's encoder) fits E_I
    cfg = make_cfg(["MODEL.META_ARCHITECTURE", "Baseline"])
    base = build_model(cfg)
    with torch.no_grad():
        base.backbone.conv1.weight.add_(1.0)
        base.backbone.bn1.running_mean.fill_(0.5)
    torch.save({"model": base.state_dict(), "epoch": 3}, tmp_path / "baseline.pth")
    m = build(["MODEL.POSE_TRANSFER.VARIANT", "A", "MODEL.POSE_TRANSFER.FREEZE", "encoder",
               "MODEL.POSE_TRANSFER.EA.WIDTH", "32"])
    info = m.load_source(str(tmp_path / "baseline.pth"))
    assert "'backbone.'" in info["E_I"]
    assert torch.equal(m.backbone.conv1.weight, base.backbone.conv1.weight)
    assert torch.equal(m.backbone.bn1.running_mean, base.backbone.bn1.running_mean)
    # a PoseTransfer source checkpoint also brings E_A and C_v; a bare backbone state dict fits too
    src = build(["MODEL.POSE_TRANSFER.VARIANT", "A", "MODEL.POSE_TRANSFER.EA.WIDTH", "32"])
    torch.nn.init.normal_(src.verifier.classifier.weight)
    torch.save({"model": src.state_dict()}, tmp_path / "pt.pth")
    m.load_source(str(tmp_path / "pt.pth"))
    assert torch.equal(m.verifier.classifier.weight, src.verifier.classifier.weight)
    assert torch.equal(m.ea.layers[0].conv.weight, src.ea.layers[0].conv.weight)
    torch.save(base.backbone.state_dict(), tmp_path / "bare.pth")
    assert "''" in m.load_source(str(tmp_path / "bare.pth"))["E_I"]


def test_source_checkpoint_that_does_not_fit_names_the_key(tmp_path):
    from fastreid.modeling.meta_arch import build_model

    r34 = build_model(make_cfg(["MODEL.META_ARCHITECTURE", "Baseline", "MODEL.BACKBONE.DEPTH", "34x"]))
    torch.save({"model": r34.state_dict()}, tmp_path / "r34.pth")
    m = build(["MODEL.POSE_TRANSFER.FREEZE", "encoder", "MODEL.POSE_TRANSFER.EA.WIDTH", "32"])
    with pytest.raises(ValueError, match=r"TRANSFER\.SOURCE_WEIGHTS .*r34.pth does not fit E_I"):
        m.load_source(str(tmp_path / "r34.pth"))
    torch.save({"model": {"heads.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"TRANSFER\.SOURCE_WEIGHTS .*missing"):
        m.load_source(str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match=r"TRANSFER\.SOURCE_WEIGHTS"):
        m.load_source(str(tmp_path / "nope.pth"))


def test_bad_model_keys_raise():
    for key, val, msg in [("MODEL.POSE_TRANSFER.VARIANT", "C", "VARIANT"),
                          ("MODEL.POSE_TRANSFER.FREEZE", "all", "FREEZE"),
                          ("MODEL.POSE_TRANSFER.PAIRS.MODE", "hard", "PAIRS.MODE"),
                          ("MODEL.POSE_TRANSFER.EA.NORM", "LN", "EA.NORM"),
                          ("MODEL.POSE_TRANSFER.EA.KERNEL", "2", "KERNEL")]:
        with pytest.raises(ValueError, match=msg):
            build([key, val])


# ---------------------------------------------------------------- configs, imports
def test_configs_load_and_build():
    files = sorted(glob.glob(os.path.join(CFG_DIR, "**/*.yml"), recursive=True))
    assert len(files) >= 29
    for f in files:
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(f)
        assert cfg.MODEL.META_ARCHITECTURE in ("PoseTransfer", "PoseGAN"), f  # PoseGAN: part 2, test_pose_gan.py
    cfg = make_cfg(config="Market1501-DukeMTMC/modelB_R18_f0.6.yml")
    p = cfg.MODEL.POSE_TRANSFER
    assert (cfg.TRANSFER.FRACTION, p.VARIANT, p.FREEZE) == (0.6, "B", "encoder")
    assert cfg.TRANSFER.SOURCE_WEIGHTS.endswith("pretrain_B_R18/model_final.pth")
    cfg = make_cfg(config="Market1501-DukeMTMC/baseline_R18_f0.2.yml")
    assert (cfg.MODEL.POSE_TRANSFER.VARIANT, cfg.MODEL.POSE_TRANSFER.FREEZE) == ("none", "trunk")


def test_pure_modules_import_without_fastreid():
    """The plain torch / numpy modules import without FastReID; the package then defers its registrations to
    FastReID's import (compat's callbacks)."""
    code = ("import sys\n"
            "import fastreid_ext.pose_transfer.pairs, fastreid_ext.pose_transfer.fraction, "
            "fastreid_ext.pose_transfer.rerank, fastreid_ext.pose_transfer.verifier, "
            "fastreid_ext.pose_transfer.additional_encoder, fastreid_ext.pose_transfer.encoder, "
            "fastreid_ext.pose_transfer.checkpoint\n"
            "import fastreid_ext.pose_transfer as pt, fastreid_ext.compat as c\n"
            "print('fastreid' in sys.modules, pt._register in c._ON_FASTREID)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "True"]


# ---------------------------------------------------------------- end to end (tiny SynthPed, CPU)
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "1", "TEST.IMS_PER_BATCH", "64", "SOLVER.MAX_EPOCH", "1",
        "SOLVER.ITERS_PER_EPOCH", "3", "TEST.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
        "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.POSE_TRANSFER.EA.WIDTH", "32", "SEED", "1",
        "MODEL.POSE_TRANSFER.CHECK_PERIOD", "1"]
SYN = "SynthPedA-SynthPedB/"


def _trainer(config, out, opts=()):
    from fastreid_ext.engine import build_trainer

    os.makedirs(out, exist_ok=True)
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(CFG_DIR, config))
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out)] + list(opts))
    t = build_trainer(cfg)
    t.resume_or_load(resume=False)
    return t


def test_source_then_transfer_end_to_end(datasets_root, tmp_path, capsys, batch_losses):
    from fastreid_ext.pose_transfer.evaluator import PoseTransferEvaluator
    from fastreid_ext.pose_transfer.trainer import FrozenEncoderGuard, PoseTransferTrainer, build_fraction_train_set

    src = _trainer(SYN + "source_mobilenetv2.yml", tmp_path / "src")
    assert isinstance(src, PoseTransferTrainer)
    s_batch = next(iter(src.data_loader))
    s_before = batch_losses(src.model, s_batch)
    src.train()
    s_after = batch_losses(src.model, s_batch)
    weights = str(tmp_path / "src" / "model_final.pth")
    t = _trainer(SYN + "modelB_mobilenetv2.yml", tmp_path / "tr",
                 ["TRANSFER.SOURCE_WEIGHTS", weights, "TRANSFER.FRACTION", "0.5",
                  "MODEL.POSE_TRANSFER.RERANK.TOPK", "20", "SOLVER.BASE_LR", "0.0035"])  # 10x: see below
    assert len({it[1] for it in t.data_loader.dataset.img_items}) == 8  # half of tiny SynthPedB's 16 identities
    assert any(isinstance(h, FrozenEncoderGuard) for h in t._hooks)
    src_bb = {k: v.clone() for k, v in t.model.backbone.state_dict().items()}
    t_batch = next(iter(t.data_loader))
    t_before = batch_losses(t.model, t_batch)
    res = t.train()
    t_after = batch_losses(t.model, t_batch)
    for key in ("Rank-1", "mAP", "RR/Rank-1", "RR/mAP", "RR/pairs", "RR/seconds"):
        assert key in res, key
    assert res["RR/pairs"] > 0
    assert all(torch.equal(v, t.model.backbone.state_dict()[k]) for k, v in src_bb.items())
    with capsys.disabled():
        print(f"\n[PoseTransfer tiny e2e] R1 {res['Rank-1']:.1f} mAP {res['mAP']:.1f} | re-ranked R1 "
              f"{res['RR/Rank-1']:.1f} mAP {res['RR/mAP']:.1f} ({res['RR/pairs']:.0f} pairs, "
              f"{res['RR/seconds']:.4f} s) | C_v's BCE on a fixed batch, untrained -> trained: source "
              f"{s_before['loss_verif']:.4f} -> {s_after['loss_verif']:.4f}, transfer {t_before['loss_verif']:.4f} -> "
              f"{t_after['loss_verif']:.4f}")
    # both stages learned. 3 iterations from a random R18 barely move the verification BCE off chance (ln 2), and
    # the retrieval numbers of so short a run are noise (measured: source mAP 24.3 untrained -> 25.8, transfer
    # 13.2 -> 14.0), so the criterion is C_v's BCE on a fixed batch of each stage, which a model that does not
    # learn keeps exactly. Measured (SEED 1): source 0.6905 -> 0.6842; transfer 0.6936 -> 0.6919 with 10x the
    # config's SOLVER.BASE_LR 3.5e-4 (at which it moved by less than 0.1%); same time. Learning to verify is shown
    # in full (loss halved) by test_transfer_mode_learns_the_verification_task.
    assert s_after["loss_verif"] < 0.995 * s_before["loss_verif"], (s_before, s_after)
    assert t_after["loss_verif"] < 0.999 * t_before["loss_verif"], (t_before, t_after)
    PoseTransferTrainer._bound_model = t.model
    try:
        _, ev = PoseTransferTrainer.build_evaluator(t.cfg, "SynthPedB")
    finally:
        PoseTransferTrainer._bound_model = None
    assert isinstance(ev, PoseTransferEvaluator)
    from fastreid_ext.engine import Trainer

    with pytest.raises(RuntimeError, match="RERANK.ENABLED"):
        Trainer.build_evaluator(t.cfg, "SynthPedB")
    # tools/train_net.py --eval-only (the package CLI's run(), in process) re-ranks with the checkpoint's C_v
    from fastreid.engine import default_argument_parser

    from fastreid_ext.engine.cli import run

    args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(CFG_DIR, SYN + "modelB_mobilenetv2.yml"), "--eval-only", *TINY,
         "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.WEIGHTS", str(tmp_path / "tr" / "model_final.pth"),
         "MODEL.POSE_TRANSFER.RERANK.TOPK", "20"])
    ev_res = run(args)
    for key in ("Rank-1", "mAP", "RR/Rank-1", "RR/mAP"):
        assert ev_res[key] == pytest.approx(res[key], abs=1e-4), key
    # the guard notices a frozen tensor that changed
    guard = next(h for h in t._hooks if isinstance(h, FrozenEncoderGuard))
    guard.before_train()
    t.model.backbone.conv1.weight.data.mul_(1.01)
    with pytest.raises(RuntimeError, match="frozen E_I tensors changed"):
        guard.after_train()
    # bad fractions through the trainer's train set
    cfg = t.cfg.clone()
    cfg.defrost()
    cfg.TRANSFER.FRACTION = 1.2
    with pytest.raises(ValueError, match=r"TRANSFER\.FRACTION must be in \(0, 1\]"):
        build_fraction_train_set(cfg)
    cfg.TRANSFER.FRACTION = 0.1
    with pytest.raises(ValueError, match=r"TRANSFER\.FRACTION 0\.1 .*leaves 2 identities.*at least 4"):
        build_fraction_train_set(cfg)
    # a source checkpoint that does not fit E_I, through the trainer
    cfg.TRANSFER.FRACTION = 1.0
    cfg.MODEL.BACKBONE.DEPTH = "34x"
    with pytest.raises(ValueError, match=r"TRANSFER\.SOURCE_WEIGHTS"):
        PoseTransferTrainer.build_model(cfg)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_transfer_mode_learns_the_verification_task(variant):
    """Training only E_A and C_v (E_I frozen) must fit C_v's BCE on a fixed batch: the loss falls well below its
    value at the start (chance: ln 2), so a transfer that does not learn fails here."""
    torch.manual_seed(0)
    m = build(["MODEL.POSE_TRANSFER.VARIANT", variant, "MODEL.POSE_TRANSFER.FREEZE", "encoder",
               "MODEL.POSE_TRANSFER.EA.WIDTH", "32", "MODEL.POSE_TRANSFER.PAIRS.MODE", "all"])
    x = batch(16, 4, seed=3)
    m.train()
    start = float(m(x)["loss_verif"].detach())
    _step(m, x, steps=25)
    end = float(m(x)["loss_verif"].detach())
    assert end < 0.5 * start, (start, end)
