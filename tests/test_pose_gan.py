"""Pose-guided generator stage (issue 13, FD-GAN style): E_P / G / D_i / D_p shapes, joint orders, target poses and
same-pose pairs, losses, the alternating G / D steps (each changes only its own side), save + resume of both
optimizers and schedules with identical next losses, the pose tool, bad input."""
import os

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext.functional.keypoints import (COCO17_NAMES, OPENPOSE18_NAMES, coco17_to_openpose18,
                                               convert_joint_order, openpose18_to_coco17)
from fastreid_ext.functional.pose_gan import (adversarial_loss, discriminator_loss, gan_label, reconstruction_l1,
                                              same_pose_l1)
from fastreid_ext.pose_transfer.gan_modules import (PoseDiscriminator, PoseEncoder, PoseGenerator,
                                                    bottleneck_size)
from fastreid_ext.pose_transfer.gan_sampling import pose_maps, sample_pose_targets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(ROOT, "projects/PoseTransfer/configs")
TINY_GAN = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
            "MODEL.BACKBONE.PRETRAIN", "False", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
            "MODEL.POSE_TRANSFER.GAN.EP.NGF", "8", "MODEL.POSE_TRANSFER.GAN.G.NGF", "8",
            "MODEL.POSE_TRANSFER.GAN.DP.NDF", "8", "MODEL.POSE_TRANSFER.GAN.POSE.SIGMA", "1.5",
            "TRANSFER.SOURCE_WEIGHTS", ""]
STAGE2 = "SynthPed-GAN/stage2_gan.yml"
STAGE3 = "SynthPed-GAN/stage3_joint.yml"

pytestmark = pytest.mark.usefixtures("one_thread")


def make_cfg(opts=(), config=STAGE2):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(CFG_DIR, config))
    cfg.merge_from_list(TINY_GAN + ["MODEL.HEADS.NUM_CLASSES", "4"] + list(opts))
    return cfg


def build(opts=(), config=STAGE2):
    from fastreid.modeling.meta_arch import build_model

    return build_model(make_cfg(opts, config))


def batch(n=8, k=4, size=(64, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 17, 2, generator=g) * torch.tensor([size[1] - 1, size[0] - 1])
    kp = torch.cat([xy, torch.ones(n, 17, 1)], -1)
    return {"images": torch.rand(n, 3, *size, generator=g) * 255, "targets": torch.arange(n) // k, "keypoints": kp}


# ---------------------------------------------------------------- components
@pytest.mark.parametrize("size", [(64, 32), (128, 64), (256, 128)])
@pytest.mark.parametrize("joints", [17, 18])
def test_component_shapes(size, joints):
    ep = PoseEncoder(joints, size, dim=128, ngf=4)
    g = PoseGenerator(512, 128, 256, size, ngf=4)
    dp = PoseDiscriminator(3 + joints, ndf=4)
    maps = torch.rand(2, joints, *size)
    pose = ep(maps)
    assert pose.shape == (2, 128)
    img = g(torch.randn(2, 512), pose, torch.randn(2, 256))
    assert img.shape == (2, 3, *size) and float(img.abs().max()) <= 1.0
    patches = dp(img, maps)
    assert patches.dim() == 4 and patches.shape[:2] == (2, 1) and patches.shape[-1] >= 1
    with pytest.raises(ValueError, match="GAN.POSE.JOINTS"):
        ep(torch.rand(2, joints + 1, *size))
    with pytest.raises(ValueError, match="noise input"):
        g(torch.randn(2, 512), pose, torch.randn(2, 100))


def test_connect_layers_follow_fd_gan_and_carry_the_pose_to_the_decoder():
    """GAN.G.CONNECT_LAYERS (FD-GAN's --connect-layers): decoder layer k reads E_P's map of its size; the input
    widths are FD-GAN's table (in units of ngf, bottleneck first: 0 -> 8 8 4 2 1, 5 -> 16 16 8 4 2), and with
    every layer connected the pose reaches the output through the skips even when E_P's 128-d vector is fixed."""
    size, ngf = (64, 32), 4
    ep = PoseEncoder(18, size, dim=128, ngf=ngf)
    fd_gan = {0: [8, 8, 4, 2, 1], 2: [16, 16, 4, 2, 1], 5: [16, 16, 8, 4, 2]}
    for c, widths in fd_gan.items():
        g = PoseGenerator(512, 128, 256, size, ngf=ngf, connect_layers=c, skip_channels=ep.channels)
        convs = [mod for mod in g.up if isinstance(mod, torch.nn.ConvTranspose2d)]
        assert [mod.in_channels // ngf for mod in convs] == widths, c
    g = PoseGenerator(512, 128, 256, size, ngf=ngf, connect_layers=5, skip_channels=ep.channels).eval()
    ep.eval()
    b = batch(2, 1, size)
    maps = pose_maps(b["keypoints"], size, "openpose18", "coco17", sigma=1.5)
    vec, skips = ep.forward_maps(maps)
    assert torch.equal(vec, ep(maps)) and [t.shape[-2:] for t in skips] == [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
    ident, z = torch.randn(1, 512).expand(2, -1), torch.randn(1, 256).expand(2, -1)
    with torch.no_grad():
        out = g(ident, vec[:1].expand(2, -1), z, skips)  # same identity, noise and pose vector: only skips differ
    assert float((out[0] - out[1]).abs().max()) > 1e-4
    with pytest.raises(ValueError, match="intermediate maps"):
        g(ident, vec, z)
    with pytest.raises(ValueError, match="GAN.G.CONNECT_LAYERS"):
        PoseGenerator(512, 128, 256, size, ngf=ngf, connect_layers=6)
    m = build(["MODEL.POSE_TRANSFER.GAN.G.CONNECT_LAYERS", "3"])
    assert m.generator.connect_layers == 3 and m.generate(torch.randn(2, 512), maps).shape == (2, 3, *size)


def test_sizes_must_divide_by_32_and_the_model_builds():
    with pytest.raises(ValueError, match=r"INPUT.SIZE_TRAIN \[100, 50\]"):
        bottleneck_size((100, 50))
    m = build()
    assert m.pose_encoder.joints == 18 and m.disc_pose.in_channels == 21  # OpenPose-18 by default (the paper)
    assert m.generator.id_dim == 512 and m.generator.noise_dim == 256 and m.pose_encoder.dim == 128
    m.train()
    b = batch()
    st = m.gan_forward(b, torch.Generator().manual_seed(0))
    assert st["fake"].shape == (8, 3, 64, 32) and st["target_maps"].shape == (8, 18, 64, 32)
    with torch.no_grad():
        assert m.disc_id(st["origin"], st["origin_target"]).shape == (8,)
    # stage II (E_I frozen): E_I is in neither optimizer and a generator step leaves it (and its BN statistics) as is
    from fastreid_ext.pose_transfer.gan_trainer import (build_discriminator_optimizer, build_generator_optimizer,
                                                        generator_step)

    cfg = make_cfg()
    opt_g, opt_d = build_generator_optimizer(cfg, m), build_discriminator_optimizer(cfg, m)
    enc = {id(p) for p in m.backbone.parameters()}
    assert not any(id(p) in enc for o in (opt_g, opt_d) for g in o.param_groups for p in g["params"])
    assert [g["name"] for g in opt_g.param_groups] == ["generator"]
    assert [g["lr"] for g in opt_d.param_groups] == [1e-3, 1e-5]  # D_p, D_i at FD-GAN's stage-II rates
    frozen = m.frozen_state()
    lg = generator_step(m, st, b, opt_g)
    assert "loss_verif" not in lg and not m.changed_frozen_tensors(frozen)
    # D_i starts as E_I (FD-GAN initialises it from the stage-I model)
    assert all(torch.equal(v, m.disc_id.encoder.state_dict()[k]) for k, v in m.backbone.state_dict().items())
    with pytest.raises(ValueError, match="VARIANT must be 'none'"):
        build(["MODEL.POSE_TRANSFER.VARIANT", "B"])


def test_gan_modules_and_losses_import_without_fastreid():
    import subprocess
    import sys

    code = ("import sys\n"
            "import fastreid_ext.pose_transfer.gan_modules, fastreid_ext.pose_transfer.gan_sampling, "
            "fastreid_ext.functional.pose_gan\n"
            "print('fastreid' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]


def test_configs_load_and_the_paper_size_builds():
    import glob

    files = sorted(glob.glob(os.path.join(CFG_DIR, "SynthPed-GAN", "*.yml")) +
                   glob.glob(os.path.join(CFG_DIR, "Market1501", "*gan*.yml")))
    assert len(files) == 6
    for f in files:
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(f)
        arch = "PoseTransfer" if os.path.basename(f) == "stage1_baseline.yml" else "PoseGAN"
        assert cfg.MODEL.META_ARCHITECTURE == arch, f
        if arch == "PoseGAN":
            g = cfg.MODEL.POSE_TRANSFER.GAN
            assert cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS and g.POSE.JOINTS == "openpose18", f
            assert (g.LOSS.RECON, g.LOSS.SAME_POSE) == (100.0, 10.0), f
            assert "Base-" in f or cfg.TRANSFER.SOURCE_WEIGHTS.endswith("model_final.pth"), f
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(CFG_DIR, "Market1501", "pretrain_gan_stage3_R18.yml"))
    g = cfg.MODEL.POSE_TRANSFER.GAN
    assert tuple(cfg.INPUT.SIZE_TRAIN) == (256, 128) and g.POSE.SIGMA == 5.0 and g.LOSS.VERIF == 10.0
    assert (cfg.SOLVER.BASE_LR, g.SOLVER.D_BASE_LR, g.SOLVER.ENCODER_LR_FACTOR) == (1e-5, 1e-4, 0.1)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", "4", "TRANSFER.SOURCE_WEIGHTS", "",
                         "MODEL.POSE_TRANSFER.GAN.EP.NGF", "4", "MODEL.POSE_TRANSFER.GAN.G.NGF", "4",
                         "MODEL.POSE_TRANSFER.GAN.DP.NDF", "4"])
    from fastreid.modeling.meta_arch import build_model

    m = build_model(cfg).eval()
    with torch.no_grad():
        ident = m.identity_features({"images": torch.rand(2, 3, 256, 128) * 255})
        fake = m.generate(ident, m.pose_maps(batch(2, 2, (256, 128))["keypoints"]))
    assert ident.shape == (2, 512) and fake.shape == (2, 3, 256, 128)


# ---------------------------------------------------------------- joint orders, pose maps, sampling
def test_joint_orders_convert_both_ways():
    kp = torch.rand(3, 17, 3)
    op = coco17_to_openpose18(kp)
    assert op.shape == (3, 18, 3)
    for i, n in enumerate(OPENPOSE18_NAMES):
        if n != "neck":
            assert torch.equal(op[:, i], kp[:, COCO17_NAMES.index(n)]), n
    ls, rs = COCO17_NAMES.index("left_shoulder"), COCO17_NAMES.index("right_shoulder")
    assert torch.allclose(op[:, 1, :2], (kp[:, ls, :2] + kp[:, rs, :2]) / 2)
    assert torch.equal(op[:, 1, 2], torch.minimum(kp[:, ls, 2], kp[:, rs, 2]))
    assert torch.equal(openpose18_to_coco17(op), kp)
    assert np.array_equal(coco17_to_openpose18(kp.numpy()), op.numpy())
    with pytest.raises(ValueError, match=r"MY\.KEY is 'coco17' \(17 joints\).*\(18 joints\)"):
        convert_joint_order(op, "coco17", "openpose18", key="MY.KEY")


def test_pose_maps_errors_name_the_keys():
    kp = batch()["keypoints"]
    maps = pose_maps(kp, (64, 32), "openpose18", "coco17", sigma=1.5)
    assert maps.shape == (8, 18, 64, 32) and float(maps.max()) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="GAN.POSE.INPUT_ORDER is 'coco17'"):
        pose_maps(coco17_to_openpose18(kp), (64, 32), "openpose18", "coco17")
    with pytest.raises(ValueError, match="LOAD_KEYPOINTS"):
        pose_maps(None, (64, 32))
    with pytest.raises(ValueError, match="GAN.POSE.JOINTS"):
        pose_maps(kp, (64, 32), "body25")
    m = build()
    b = batch()
    del b["keypoints"]
    with pytest.raises(ValueError, match="LOAD_KEYPOINTS"):
        m.gan_forward(b)


def test_target_poses_come_from_other_images_of_the_same_person():
    pids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3, 5])
    pt = sample_pose_targets(pids, torch.Generator().manual_seed(3))
    assert torch.equal(pids[pt.target], pids)
    # 4 images: pairs whose target is one of the other two; 3 images: a triple, target from inside it
    for i in range(8):
        assert pt.target[i] != i and pt.group[i] != pt.group[pt.target[i]]
    assert pt.target[13] == 13  # a person seen once reconstructs its own pose
    pairs = list(zip(pt.pair_i.tolist(), pt.pair_j.tolist()))
    assert len(pairs) == 2 + 2 + 1 + 3
    for i, j in pairs:
        assert pids[i] == pids[j] and pt.target[i] == pt.target[j] and pt.group[i] == pt.group[j]
    a = sample_pose_targets(pids, torch.Generator().manual_seed(7))
    b = sample_pose_targets(pids, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_losses():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert 0.7 <= gan_label(True, True, g) <= 1.0 and 0.0 <= gan_label(False, True, g) <= 0.3
    assert gan_label(True) == 1.0 and gan_label(False) == 0.0
    z = torch.zeros(4, 1, 3, 2)
    assert float(adversarial_loss(z, True)) == pytest.approx(np.log(2), abs=1e-6)
    big = torch.full((4,), 20.0)
    assert float(adversarial_loss(big, True)) < 1e-6 and float(adversarial_loss(big, False)) > 19
    d = discriminator_loss(big, -big, smooth=False)
    assert float(d) < 1e-6 and torch.isfinite(discriminator_loss(big, -big, smooth=True, generator=g))
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    assert float(reconstruction_l1(a, b)) == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_l1(a, b[:1])
    x = torch.stack([a[0], b[0], b[0]]).requires_grad_()
    assert float(same_pose_l1(x, torch.tensor([0, 1]), torch.tensor([1, 2]))) == pytest.approx(0.5)
    s = same_pose_l1(x, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    assert float(s) == 0.0 and s.requires_grad


# ---------------------------------------------------------------- alternating steps
def _snapshot(m):
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def _changed(m, snap):
    return {n for n, p in m.named_parameters() if not torch.equal(p.detach(), snap[n])}


def test_g_step_changes_only_generator_side_and_d_step_only_discriminators(config=STAGE3):
    from fastreid_ext.pose_transfer.gan_trainer import (build_discriminator_optimizer, build_generator_optimizer,
                                                        discriminator_step, generator_step)

    torch.manual_seed(0)
    cfg = make_cfg(["MODEL.POSE_TRANSFER.GAN.SOLVER.D_OPT", "Adam", "MODEL.POSE_TRANSFER.GAN.SOLVER.DI_LR_FACTOR",
                    "1.0"], config)
    from fastreid.modeling.meta_arch import build_model

    m = build_model(cfg)
    m.train()
    opt_g, opt_d = build_generator_optimizer(cfg, m), build_discriminator_optimizer(cfg, m)
    d_names = {n for n, _ in m.named_parameters() if n.startswith(("disc_id.", "disc_pose."))}
    b = batch()
    st = m.gan_forward(b, torch.Generator().manual_seed(1))
    snap = _snapshot(m)
    ld = discriminator_step(m, st, opt_d, torch.Generator().manual_seed(2))
    assert set(ld) == {"loss_d_id", "loss_d_pose"} and all(torch.isfinite(v) for v in ld.values())
    changed = _changed(m, snap)
    assert changed and changed <= d_names
    assert any(n.startswith("disc_id.") for n in changed) and any(n.startswith("disc_pose.") for n in changed)
    snap = _snapshot(m)
    lg = generator_step(m, st, b, opt_g)
    assert {"loss_g_adv_id", "loss_g_adv_pose", "loss_g_recon", "loss_g_same_pose"} <= set(lg)
    assert all(torch.isfinite(v) for v in lg.values())
    changed = _changed(m, snap)
    assert changed and not changed & d_names
    assert any(n.startswith("generator.") for n in changed) and any(n.startswith("pose_encoder.") for n in changed)
    assert all(p.requires_grad for n, p in m.named_parameters() if n in d_names)  # restored after the G step
    # joint fine-tuning (stage III): E_I trains on the generator side, with the verification loss
    assert any(n.startswith("backbone.") for n in changed) and "loss_verif" in lg


# ---------------------------------------------------------------- trainer: save, resume, alternation
# 3 iterations per epoch: FastReID's CommonMetricPrinter divides by zero when a (resumed) run writes twice before its
# IterationTimer has 3 iterations of history
TRAIN = ["DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_INSTANCE", "2",
         "SOLVER.ITERS_PER_EPOCH", "3",
         "SOLVER.MAX_EPOCH", "2", "SOLVER.STEPS", "[1]", "SOLVER.WARMUP_ITERS", "3", "SEED", "1",
         "TEST.IMS_PER_BATCH", "64", "MODEL.POSE_TRANSFER.GAN.G_PERIOD", "2", "MODEL.HEADS.NUM_CLASSES", "0",
         "MODEL.POSE_TRANSFER.GAN.LOSS.VERIF", "1.0", "DATALOADER.NUM_WORKERS", "0"]


class _Record:
    """A hook recording every iteration's losses (and raising at ``stop_at`` to simulate a crash)."""

    def __init__(self, stop_at=None):
        from fastreid.engine.train_loop import HookBase

        rec = self

        class H(HookBase):
            def before_step(self):
                if rec.stop_at is not None and self.trainer.iter == rec.stop_at:
                    raise KeyboardInterrupt("simulated interruption")

            def after_step(self):
                rec.losses[self.trainer.iter] = dict(self.trainer.last_losses)

        self.stop_at, self.losses, self.hook = stop_at, {}, H()


def _trainer(out, resume=False, rec=None, opts=()):
    from fastreid_ext.engine import build_trainer

    os.makedirs(out, exist_ok=True)
    cfg = make_cfg(TRAIN + ["OUTPUT_DIR", str(out)] + list(opts), STAGE3)
    t = build_trainer(cfg)
    if rec is not None:
        t.register_hooks([rec.hook])
    t.resume_or_load(resume=resume)
    return t


@pytest.fixture(scope="module")
def trained(datasets_root, tmp_path_factory):
    """One uninterrupted run (6 iterations, 2 epochs) and its losses."""
    out = tmp_path_factory.mktemp("pose_gan_full")
    rec = _Record()
    t = _trainer(out, rec=rec)
    t.train()
    return out, rec.losses, t


def test_trainer_alternates_and_checkpoints_every_optimizer(trained):
    from fastreid_ext.pose_transfer.gan_trainer import DiscriminatorLRScheduler, PoseGANTrainer

    out, losses, t = trained
    assert isinstance(t, PoseGANTrainer) and any(isinstance(h, DiscriminatorLRScheduler) for h in t._hooks)
    assert sorted(losses) == [0, 1, 2, 3, 4, 5]
    for it, l in losses.items():  # D every iteration, G every GAN.G_PERIOD = 2 iterations
        assert "loss_d_pose" in l and "loss_d_id" in l
        assert ("loss_g_recon" in l) == (it % 2 == 0), (it, l)
        assert all(np.isfinite(v) for v in l.values())
    ck = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    for key in ("model", "optimizer", "lr_sched", "warmup_sched", "optimizer_d", "d_lr_sched", "d_warmup_sched"):
        assert key in ck, key
    assert ck["optimizer_d"]["state"] and ck["optimizer"]["state"]
    assert {g["name"] for g in ck["optimizer"]["param_groups"]} == {"generator", "encoder"}
    assert any(k.startswith("generator.") for k in ck["model"]) and any(k.startswith("disc_id.") for k in ck["model"])


def test_resume_restores_both_optimizers_and_schedules_and_the_next_losses(trained, tmp_path):
    """A run stopped after epoch 0 (its output folder as the periodic checkpointer left it: model_0000.pth and
    last_checkpoint) resumes with every optimizer and schedule, the data stream and the D / G alternation in step:
    its losses equal the uninterrupted run's."""
    import shutil

    full_out, full, _ = trained
    out = tmp_path / "interrupted"
    out.mkdir()
    shutil.copy(full_out / "model_0000.pth", out / "model_0000.pth")
    (out / "last_checkpoint").write_text("model_0000.pth")
    saved = torch.load(out / "model_0000.pth", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0
    rec = _Record()
    t2 = _trainer(out, resume=True, rec=rec)
    assert t2.start_epoch == 1
    # every optimizer and scheduler state is the saved one
    for name, obj in (("optimizer", t2.optimizer), ("optimizer_d", t2.optimizer_d),
                      ("lr_sched", t2.scheduler["lr_sched"]), ("d_lr_sched", t2.scheduler_d["lr_sched"]),
                      ("warmup_sched", t2.scheduler["warmup_sched"]),
                      ("d_warmup_sched", t2.scheduler_d["warmup_sched"])):
        now, then = obj.state_dict(), saved[name]
        if "state" in then:
            assert now["state"].keys() == then["state"].keys(), name
            for k in then["state"]:
                for kk, v in then["state"][k].items():
                    assert torch.equal(torch.as_tensor(now["state"][k][kk]), torch.as_tensor(v)), (name, k, kk)
            assert [g["lr"] for g in now["param_groups"]] == [g["lr"] for g in then["param_groups"]], name
        else:
            assert now["last_epoch"] == then["last_epoch"], name
    t2.train()
    assert sorted(rec.losses) == [3, 4, 5]
    for it in (3, 4, 5):  # the same batches, noise, alternation and updates as the uninterrupted run
        assert rec.losses[it].keys() == full[it].keys()
        for k, v in full[it].items():
            assert rec.losses[it][k] == pytest.approx(v, rel=1e-5, abs=1e-6), (it, k)


def test_trainer_needs_keypoints(datasets_root, tmp_path):
    with pytest.raises(ValueError, match="LOAD_KEYPOINTS True"):
        _trainer(tmp_path, opts=["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "False"])


# ---------------------------------------------------------------- the pose tool
def test_pose_tool_grid_and_reconstruction(trained, tmp_path, capsys):
    from fastreid_ext.pose_transfer.generate import main

    out, _, _ = trained
    png = tmp_path / "grid.png"
    opts = TINY_GAN + ["DATASETS.SYNTHPED.PRESET", "tiny", "MODEL.HEADS.NUM_CLASSES", "16"]
    res = main(["--config-file", os.path.join(CFG_DIR, STAGE3), "--weights", str(out / "model_final.pth"),
                "--num-queries", "2", "--num-poses", "3", "--output", str(png), "--recon", "16", "--sensitivity", "4",
                *opts])
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 3 * 64 and img.shape[1] > 4 * 32 * 2
    r = res["recon"]
    assert r["images"] > 0 and 0 < r["own_pose"] < 2 and 0 < r["other_pose"] < 2
    # the references that ignore the pose: the per-pixel median is the best constant under L1, never above the mean
    assert "shuffled_pose" in r and r["constant_median"] <= r["constant_mean"] + 1e-6
    sens = res["sensitivity"]
    assert sens["images"] == 4 and all(0 < sens[k] < 2 for k in ("pose", "identity", "noise"))
    # E_I from another checkpoint (e.g. a part-1 transfer of it): the generator's E_I is that one
    from fastreid_ext.pose_transfer.generate import build_generator_model

    sd = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    other = {k: v * 1.5 if k.startswith("backbone.") and v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": other}, tmp_path / "other_encoder.pth")
    cfg = make_cfg(["DATASETS.SYNTHPED.PRESET", "tiny", "MODEL.HEADS.NUM_CLASSES", "16"], STAGE3)
    m = build_generator_model(cfg, str(out / "model_final.pth"), str(tmp_path / "other_encoder.pth"))
    assert all(torch.equal(v, other["backbone." + k]) for k, v in m.backbone.state_dict().items())
    assert torch.equal(m.generator.state_dict()["up.1.weight"], sd["generator.up.1.weight"]) and not m.training


def test_pose_tool_bad_inputs_name_the_file_or_key(trained, tmp_path):
    from fastreid_ext.data.annotations import AnnotationError
    from fastreid_ext.data.common import AnnotatedDataset
    from fastreid_ext.pose_transfer.generate import build_generator_model

    out, _, t = trained
    cfg = make_cfg(["DATASETS.SYNTHPED.PRESET", "tiny", "MODEL.HEADS.NUM_CLASSES", "16"], STAGE3)
    # a checkpoint without generator weights (a part-1 PoseTransfer / Baseline checkpoint)
    sd = {k: v for k, v in t.model.state_dict().items() if not k.startswith(("generator.", "pose_encoder.",
                                                                             "disc_"))}
    plain = tmp_path / "transfer_only.pth"
    torch.save({"model": sd}, plain)
    with pytest.raises(ValueError, match=r"--weights .*transfer_only\.pth has no pose_encoder\.\* tensors.*no "
                                         r"generator weights"):
        build_generator_model(cfg, str(plain))
    # a checkpoint trained with the other joint order
    cfg17 = make_cfg(["MODEL.POSE_TRANSFER.GAN.POSE.JOINTS", "coco17", "MODEL.HEADS.NUM_CLASSES", "16"], STAGE3)
    with pytest.raises(ValueError, match=r"model_final\.pth.*18 joint channels = openpose18.*GAN\.POSE\.JOINTS "
                                         r"'coco17'"):
        build_generator_model(cfg17, str(out / "model_final.pth"))
    # a config of another model
    cfg_pt = make_cfg(["MODEL.META_ARCHITECTURE", "PoseTransfer"], STAGE3)
    with pytest.raises(ValueError, match="MODEL.META_ARCHITECTURE"):
        build_generator_model(cfg_pt, str(out / "model_final.pth"))
    # a query image without keypoints: the error names the image
    import cv2

    img = tmp_path / "lonely" / "q.jpg"
    img.parent.mkdir()
    cv2.imwrite(str(img), np.zeros((64, 32, 3), np.uint8))
    ds = AnnotatedDataset([(str(img), 0, 0)], None, relabel=False, load_keypoints=True, on_missing="error")
    with pytest.raises(AnnotationError, match=r"no keypoints for image .*q\.jpg"):
        ds[0]
