"""MoCo v2 (``fastreid_ext.moco``): InfoNCE, the momentum and queue updates are exact; the model's step updates its
key encoder and queue exactly; its InfoNCE loss falls on a tiny set when trained with FastReID's loop; the
MoCo-format checkpoint loader maps every backbone key of a checkpoint written by our own MoCo (and reports what it
skips), and bad checkpoints / configs give clear errors."""
import copy
import logging
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastreid_ext
from fastreid_ext.moco.functional import (enqueue_, info_nce_logits, info_nce_loss, momentum_update_,
                                          shuffle_permutation)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOCO_CFG = "projects/ConditionAnalysis/configs/SynthPed/moco_R18.yml"
MOCO_MNV2_CFG = "projects/ConditionAnalysis/configs/SynthPed/moco_mnv2.yml"
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
        "TEST.IMS_PER_BATCH", "64", "MODEL.MOCO.QUEUE_SIZE", "48", "SEED", "0",
        "MODEL.MOCO.MOMENTUM", "0.99", "MODEL.MOCO.TEMPERATURE", "0.2", "SOLVER.LOG_PERIOD", "5"]


def tiny_cfg(*opts, config=MOCO_CFG):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(TINY + list(opts))
    return cfg


# ------------------------------------------------------------------------------------------ pure functions
def test_info_nce_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(8, 11, generator=g, dtype=torch.float64), dim=0)
    tau = 0.07
    logits = info_nce_logits(q, k, queue, tau)
    assert logits.shape == (5, 12)
    losses = []
    for i in range(5):
        pos = math.exp(float(q[i] @ k[i]) / tau)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / tau) for j in range(11))
        losses.append(-math.log(pos / (pos + neg)))
        assert abs(float(logits[i, 0]) - float(q[i] @ k[i]) / tau) < 1e-12
    assert abs(float(info_nce_loss(q, k, queue, tau)) - np.mean(losses)) < 1e-10
    with pytest.raises(ValueError):
        info_nce_logits(q, k[:3], queue, tau)


def test_momentum_update_is_exact():
    g = torch.Generator().manual_seed(1)
    # multiples of 1/8 and m = 0.75: every product and sum is exact in binary floating point
    t = [torch.randint(-64, 64, (3, 4), generator=g).double() / 8, torch.randint(-64, 64, (7,), generator=g).double() / 8]
    s = [torch.randint(-64, 64, (3, 4), generator=g).double() / 8, torch.randint(-64, 64, (7,), generator=g).double() / 8]
    want = [0.75 * a + 0.25 * b for a, b in zip(t, s)]
    momentum_update_(t, s, 0.75)
    for a, w in zip(t, want):
        assert torch.equal(a, w)
    q = [torch.ones(2)]
    momentum_update_(q, [torch.zeros(2)], 0.0)  # m = 0: the key encoder becomes the query encoder
    assert torch.equal(q[0], torch.zeros(2))


def test_queue_update_is_exact_and_wraps():
    queue = torch.zeros(3, 10)
    keys = torch.arange(12.0).view(4, 3)  # 4 keys of dim 3
    ptr = enqueue_(queue, 8, keys)
    assert ptr == 2
    for j, col in enumerate([8, 9, 0, 1]):
        assert torch.equal(queue[:, col], keys[j])
    assert torch.equal(queue[:, 2:8], torch.zeros(3, 6))  # untouched
    ptr = enqueue_(queue, ptr, keys[:2] + 100)
    assert ptr == 4 and torch.equal(queue[:, 2], keys[0] + 100) and torch.equal(queue[:, 3], keys[1] + 100)
    big = torch.arange(36.0).view(12, 3)  # more keys than the queue holds: the last K, in order
    ptr = enqueue_(queue, 4, big)
    assert ptr == (4 + 12) % 10
    order = [(4 + 2 + i) % 10 for i in range(10)]
    for j, col in enumerate(order):
        assert torch.equal(queue[:, col], big[2 + j])


def test_shuffle_permutation_inverts():
    perm, inv = shuffle_permutation(17, torch.Generator().manual_seed(3))
    x = torch.randn(17, 2)
    assert torch.equal(x[perm][inv], x)
    assert sorted(perm.tolist()) == list(range(17))


# ------------------------------------------------------------------------------------------ the model
def test_registered_name_and_fastreid_moco_untouched():
    fastreid_ext.register()
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
    from fastreid.modeling.meta_arch.moco import MoCo

    from fastreid_ext.moco import MoCoV2

    assert META_ARCH_REGISTRY.get("MoCo") is MoCo  # FastReID's (memory-bank CosFace), not ours
    assert META_ARCH_REGISTRY.get("MoCoV2") is MoCoV2


def test_model_step_updates_key_encoder_and_queue_exactly():
    from fastreid.modeling import build_model

    cfg = tiny_cfg()
    model = build_model(cfg)
    model.train()
    assert all(not p.requires_grad for p in model.key_parameters())
    for q, k in zip(model.query_parameters(), model.key_parameters()):
        assert torch.equal(q, k)  # the key encoder starts as a copy
    with torch.no_grad():  # make the encoders differ so that the momentum update is visible
        for k in model.key_parameters():
            k.add_(0.01)
    before_k = [k.detach().clone() for k in model.key_parameters()]
    before_q = [q.detach().clone() for q in model.query_parameters()]
    old_queue = model.queue.clone()
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.rand(6, 3, 64, 32, generator=g) * 255, "images_2": torch.rand(6, 3, 64, 32, generator=g) * 255,
             "targets": torch.zeros(6, dtype=torch.long)}
    out = model.branch_outputs(batch)
    m = model.momentum
    for k, k0, q0 in zip(model.key_parameters(), before_k, before_q):
        assert torch.allclose(k, m * k0 + (1 - m) * q0, rtol=0, atol=1e-7)
    keys = out.context["k"]
    assert torch.allclose(model.queue[:, :6], keys.T) and int(model.queue_ptr) == 6
    assert torch.equal(model.queue[:, 6:], old_queue[:, 6:])
    logits = out.heads["plain"]["cls_outputs"]
    assert logits.shape == (6, 1 + model.queue.shape[1])
    # no key in the queue yet: its random initial columns are left out (MODEL.MOCO.MASK_EMPTY_QUEUE)
    ref = info_nce_logits(out.context["q"], keys, old_queue, model.temperature)
    assert torch.allclose(logits[:, 0], ref[:, 0], atol=1e-5) and torch.isinf(logits[:, 1:]).all()
    # second step: the 6 keys of the first step are the negatives, computed before this step's keys go in
    queue1 = model.queue.clone()
    out2 = model.branch_outputs(batch)
    ref2 = info_nce_logits(out2.context["q"], out2.context["k"], queue1, model.temperature)
    l2 = out2.heads["plain"]["cls_outputs"]
    assert torch.allclose(l2[:, :7], ref2[:, :7], atol=1e-5) and torch.isinf(l2[:, 7:]).all()
    assert int(model.queue_ptr) == 12 and int(model.queue_filled) == 12
    model.mask_empty_queue = False  # MoCo's reference behaviour: the random initial vectors are negatives too
    queue2 = model.queue.clone()
    out3 = model.branch_outputs(batch)
    assert torch.allclose(out3.heads["plain"]["cls_outputs"],
                          info_nce_logits(out3.context["q"], out3.context["k"], queue2, model.temperature), atol=1e-5)
    losses = model(batch)
    assert set(losses) == {"loss_infonce"} and torch.isfinite(losses["loss_infonce"])
    model.eval()
    with torch.no_grad():
        f = model({"images": batch["images"]})
    assert f.shape == (6, cfg.MODEL.BACKBONE.FEAT_DIM)  # the GAP feature
    maps = model.backbone(model.preprocess_image(batch))
    assert torch.allclose(f, maps.mean(dim=(2, 3)), atol=1e-6)


def test_every_trainable_parameter_gets_a_gradient_and_queue_starts_equal_in_every_process():
    """What DistributedDataParallel needs (FastReID wraps the model without find_unused_parameters, so a trainable
    parameter without a gradient stops the second iteration): the trainable parameters are exactly the query
    backbone and projection head, and one training step's loss reaches every one of them (FastReID's 1-class head
    used to be trainable and never ran). The initial queue does not depend on the process's seed (SEED + rank;
    DDP does not broadcast buffers). The 2-process run itself: tests/test_reliability.py."""
    from fastreid.modeling import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    torch.manual_seed(1)  # another process's seed
    other = build_model(tiny_cfg())
    assert torch.equal(model.queue, other.queue)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"backbone.{n}" for n, _ in model.backbone.named_parameters()} | \
        {f"projector.{n}" for n, _ in model.projector.named_parameters()}
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.rand(6, 3, 64, 32, generator=g) * 255,
             "images_2": torch.rand(6, 3, 64, 32, generator=g) * 255, "targets": torch.zeros(6, dtype=torch.long)}
    for _ in range(2):  # the second step has real negatives in the queue
        model.zero_grad(set_to_none=True)
        sum(model(batch).values()).backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not no_grad, f"trainable parameters without a gradient: {no_grad}"


def test_config_errors():
    from fastreid.modeling import build_model

    with pytest.raises(ValueError, match="without labels"):
        build_model(tiny_cfg("MODEL.LOSSES.NAME", '("CrossEntropyLoss",)'))
    model = build_model(tiny_cfg())
    model.train()
    with pytest.raises(KeyError, match="images_2"):
        model({"images": torch.rand(2, 3, 64, 32) * 255, "targets": torch.zeros(2, dtype=torch.long)})


def _fixed_views(cfg, n=32, seed=0):
    """Two fixed augmentations of the first ``n`` training crops."""
    import random

    from fastreid_ext.moco.data import build_moco_train_set

    ds = build_moco_train_set(cfg)
    random.seed(seed)
    torch.manual_seed(seed)
    items = [ds[i] for i in range(0, len(ds), max(1, len(ds) // n))][:n]
    return torch.stack([it["images"] for it in items]), torch.stack([it["images_2"] for it in items])


@torch.no_grad()
def _batch_infonce(model, v1, v2, tau=0.2):
    """In-set InfoNCE with the query encoder on both views: each image's other view against every other image."""
    model.eval()
    z1 = F.normalize(model.projector(model.backbone(model.preprocess_image(v1)).mean(dim=(2, 3))), dim=1)
    z2 = F.normalize(model.projector(model.backbone(model.preprocess_image(v2)).mean(dim=(2, 3))), dim=1)
    logits = z1 @ z2.T / tau
    return float(F.cross_entropy(logits, torch.arange(len(v1))))


@pytest.fixture(scope="module")
def trained_moco(datasets_root, tmp_path_factory):
    from fastreid_ext.engine import build_trainer
    from fastreid_ext.moco.trainer import MoCoTrainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: set up before the function-scoped one_thread fixture
    out = tmp_path_factory.mktemp("moco")
    # 30 steps from scratch on ~130 crops: mild views (MoCo v2's crops / colour changes at 64x32 need far more steps)
    cfg = tiny_cfg("OUTPUT_DIR", str(out), "SOLVER.MAX_EPOCH", "3", "SOLVER.ITERS_PER_EPOCH", "10",
                   "SOLVER.BASE_LR", "0.01", "MODEL.MOCO.AUG.CROP_SCALE", "[0.8, 1.0]", "MODEL.MOCO.AUG.CJ_PROB", "0.0",
                   "MODEL.MOCO.AUG.GRAY_PROB", "0.0", "MODEL.MOCO.AUG.BLUR_PROB", "0.0",
                   "TEST.EVAL_PERIOD", "3", "SOLVER.CHECKPOINT_PERIOD", "3")
    trainer = build_trainer(cfg)
    assert type(trainer) is MoCoTrainer
    batch = next(iter(trainer.data_loader))
    assert batch["images"].shape == batch["images_2"].shape == (16, 3, 64, 32)
    assert not torch.equal(batch["images"], batch["images_2"])  # two augmentations
    assert int(batch["targets"].abs().sum()) == 0  # labels ignored: the positive is class 0
    v1, v2 = _fixed_views(trainer.cfg)
    initial = copy.deepcopy(trainer.model)
    trainer.resume_or_load(resume=False)
    try:
        results = trainer.train()
    finally:
        torch.set_num_threads(threads)
    return {"cfg": trainer.cfg, "model": trainer.model, "initial": initial, "views": (v1, v2), "results": results,
            "out": out}


def test_moco_loss_falls_on_a_tiny_set(trained_moco, capsys):
    import json

    v1, v2 = trained_moco["views"]
    before = _batch_infonce(trained_moco["initial"], v1, v2)
    after = _batch_infonce(trained_moco["model"], v1, v2)
    rows = [json.loads(line) for line in open(trained_moco["out"] / "metrics.json")]
    logged = [r["total_loss"] for r in rows if "total_loss" in r]  # the only loss: InfoNCE
    with capsys.disabled():
        print(f"\n[MoCo tiny] in-set InfoNCE {before:.3f} -> {after:.3f} (chance {math.log(len(v1)):.3f}); "
              f"logged {logged[0]:.3f} -> {logged[-1]:.3f}; R1 {trained_moco['results']['Rank-1']:.1f}")
    # the encoder learned (measured: 3.32 -> 1.45 in 30 steps). Not only "it fell": with the learning rate at 0 the
    # BN statistics alone, updated by the 30 training batches, bring it to 2.54, so the margin sits between the two
    assert after < 0.6 * before, (before, after)
    assert all(math.isfinite(v) for v in logged)


# ------------------------------------------------------------------------------------------ checkpoint loader
def _resnet_backbone_cfg(cfg, path):
    c = cfg.clone()
    c.defrost()
    c.MODEL.META_ARCHITECTURE = "Baseline"
    c.MODEL.BACKBONE.NAME = "build_moco_resnet_backbone"
    c.MODEL.BACKBONE.PRETRAIN = True
    c.MODEL.BACKBONE.PRETRAIN_PATH = str(path)
    c.MODEL.HEADS.NUM_CLASSES = 1
    return c


def test_checkpoint_loader_maps_every_backbone_key(trained_moco, tmp_path, caplog):
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    from fastreid_ext.moco.checkpoint import export_moco_checkpoint, load_moco_checkpoint, read_state_dict

    # our training's own checkpoint (FastReID format) -> a fresh MoCoV2 -> MoCo's format
    final = trained_moco["out"] / "model_final.pth"
    assert final.is_file()
    moco = build_model(trained_moco["cfg"])
    Checkpointer(moco).load(str(final))
    path = export_moco_checkpoint(moco, tmp_path / "moco_r18.pth.tar", arch="resnet18")
    state = read_state_dict(path)
    assert any(k.startswith("module.encoder_q.layer1.") for k in state)

    from fastreid_ext.moco.checkpoint import build_moco_resnet_backbone

    bb = build_moco_resnet_backbone(_resnet_backbone_cfg(trained_moco["cfg"], path))
    report = load_moco_checkpoint(bb, path)
    assert report.prefix == "module.encoder_q."
    assert set(report.loaded) == set(bb.state_dict())  # every backbone key, num_batches_tracked included
    assert report.missing == []
    assert sorted(report.skipped) == ["key encoder", "projection head", "queue"]
    assert len(report.skipped["projection head"]) == 4  # fc.0 / fc.2 weight + bias
    assert len(report.skipped["key encoder"]) == len(moco.backbone_k.state_dict()) + 4
    for k, v in moco.backbone.state_dict().items():
        assert torch.equal(bb.state_dict()[k], v), k
    # a Baseline on that backbone embeds exactly like our MoCo model (GAP of the same backbone)
    base = build_model(_resnet_backbone_cfg(trained_moco["cfg"], path))
    base.eval()
    moco.eval()
    x = torch.rand(4, 3, 64, 32) * 255
    with torch.no_grad():
        gap = base.backbone(base.preprocess_image(x)).mean(dim=(2, 3))
        assert torch.allclose(gap, moco({"images": x}), atol=1e-6)
    # unexpected keys are reported (and logged as a warning), not silently dropped
    bad = dict(state)
    bad["module.encoder_q.extra_block.weight"] = torch.zeros(3)
    bad["module.something_else"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="fastreid_ext.moco.checkpoint"):
        r = load_moco_checkpoint(bb, {"state_dict": bad})
    assert sorted(r.skipped["unexpected"]) == ["module.encoder_q.extra_block.weight", "module.something_else"]
    assert "skipped 2 unexpected key(s)" in caplog.text


def test_checkpoint_loader_errors(tmp_path):
    fastreid_ext.register()
    from fastreid_ext.moco.checkpoint import MoCoCheckpointError, load_moco_checkpoint

    cfg = tiny_cfg()
    from fastreid.modeling.backbones import build_backbone

    bb = build_backbone(cfg)
    good = {f"module.encoder_q.{k}": v.clone() for k, v in bb.state_dict().items()}
    missing = dict(good)
    missing.pop("module.encoder_q.layer4.1.conv2.weight")
    with pytest.raises(MoCoCheckpointError, match="layer4.1.conv2.weight"):
        load_moco_checkpoint(bb, missing)
    wrong = dict(good)
    wrong["module.encoder_q.conv1.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(MoCoCheckpointError, match="shape mismatch for module.encoder_q.conv1.weight"):
        load_moco_checkpoint(bb, wrong)
    with pytest.raises(MoCoCheckpointError, match="no backbone key"):
        load_moco_checkpoint(bb, {"totally.different": torch.zeros(1)})
    with pytest.raises(FileNotFoundError):
        load_moco_checkpoint(bb, str(tmp_path / "nope.pth"))
    r = load_moco_checkpoint(bb, {"state_dict": {k[len("module.encoder_q."):]: v for k, v in good.items()}})
    assert r.prefix == "" and r.missing == []  # a plain backbone state dict works too
