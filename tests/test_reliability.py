"""Training reliability (issue 17): multi-process CPU training, atomic checkpoints, NaN/inf stops, the final
checkpoint before the final evaluation, Ctrl-C, --resume / --eval-only edge cases, test-time keypoints.

Tiny SynthPed runs (64x32, 2 iterations per epoch); the tests check messages and the state on disk."""
import json
import logging
import os

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext.engine import build_trainer
from fastreid_ext.engine import reliability

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = "configs/SynthPed/bagtricks_R18.yml"
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2", "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "2",
        "TEST.IMS_PER_BATCH", "64", "SOLVER.LOG_PERIOD", "100", "TEST.EVAL_INIT", "False",
        # 2 epochs of 2 iterations, a checkpoint after each epoch, one evaluation at the end
        "SOLVER.MAX_EPOCH", "2", "SOLVER.ITERS_PER_EPOCH", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
        "TEST.EVAL_PERIOD", "2", "SOLVER.STEPS", "[1]", "SEED", "0"]


def tiny_cfg(out_dir, *opts, config=CFG):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out_dir)] + list(opts))
    os.makedirs(out_dir, exist_ok=True)
    return cfg


def last(out) -> str:
    return open(os.path.join(out, "last_checkpoint")).read().strip()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def finite(state) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


# --------------------------------------------------------------------------------------------------------------
# 1. two CPU processes (gloo) train the Baseline end to end
# --------------------------------------------------------------------------------------------------------------
def test_every_meta_architecture_trains_in_two_gloo_processes(datasets_root, tmp_path, monkeypatch):
    """FastReID's launch with 2 CPU processes (gloo; FastReID's DefaultTrainer used to hand device_ids=[0] to
    DistributedDataParallel for a CPU model: ValueError), every meta-architecture of ours in turn in ONE launch
    (tests/helpers_ddp_archs.py: 64x32, 2 iterations, one evaluation): finite losses, the two processes end with
    the same parameters and the same non-BatchNorm buffers (MMT's mean nets, MoCo's queue), MMT's pseudo labels
    clustered once and broadcast, MoCo's queue filled with the keys of both processes, checkpoints written by rank 0
    only, an evaluation result on rank 0.

    Then the 2-process run against the 1-process run (same seed, same total batch: 2 x 8 vs 1 x 16 images) for
    Baseline and MoCoV2 under helpers_ddp_archs.EXACT (GroupNorm, TrainingSampler, no random augmentation, no
    triplet loss; the comment there says why the regular configs legitimately differ). Under those options the two
    runs compute the same thing up to the order of floating-point sums, so the check is tight: the same initial
    model, the same logged losses (1e-4), backbone features of a fixed batch of 16 query images after training
    within 1e-3 of how far training moved them (measured: 0 for Baseline, 3e-6 for MoCoV2), the same mAP (0.5
    points: features this close can only swap near-ties). Broken DDP fails it (measured gap / moved): both
    processes reading the same images (0.80 Baseline, 0.87 MoCoV2), gradients summed instead of averaged (7.8e-3
    Baseline under Adam, 0.80 MoCoV2 under SGD), MoCo's queue without the other process's keys (0.19, and its
    pointer at 32).
    Baseline stands for the supervised meta-architectures (Angular, HPLF, RBNet, JointIBN, PoseTransfer: the same
    loop, sampler, all-reduced ID loss), MoCoV2 for state updated inside the forward pass (momentum encoder, queue
    of keys gathered from every process); MMT's cross-process state is its broadcast pseudo labels, checked above.
    """
    import torch as _torch
    from fastreid.engine import launch
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.data.build import build_dataset
    from tests import helpers_ddp_archs as H

    # generate the tiny sets here, not in two processes at once
    for d in ("SynthPedA", "SynthPedB", "SynthPedC"):
        build_dataset(d, tiny_cfg(tmp_path / "gen"))
    src = fastreid_ext.get_cfg()
    src.merge_from_file(CFG)
    src.merge_from_list(TINY[:8] + ["MODEL.HEADS.NUM_CLASSES", "24"])
    ck = []
    for seed in (1, 2):  # stand-ins for MMT's two source models
        _torch.manual_seed(seed)
        ck.append(str(tmp_path / f"src{seed}.pth"))
        _torch.save({"model": build_model(src).state_dict()}, ck[-1])
    specs = H.specs(ck)
    exact = H.exact_specs(specs)
    names = [s[0] for s in exact]
    # one intra-op thread in each spawned process (2 processes x 2 OpenMP threads on 2 shared cores spin-wait)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    launch(H.train_all, 2, dist_url="auto", args=(str(tmp_path / "ddp"), specs + exact, None, names))
    for name, _, _ in specs + exact:
        out = tmp_path / "ddp" / f"{name}_w2"
        r0, r1 = (json.load(open(out / f"rank{r}.json")) for r in (0, 1))
        assert r0["world"] == r1["world"] == 2, name
        assert r0["finite"] and r0["losses"] > 0, name
        assert r0["params"] == r1["params"], f"{name}: the processes' parameters differ"
        assert r0["buffers"] == r1["buffers"], f"{name}: the processes' buffers differ ({r0['buffer_names']})"
        assert r0["labels"] == r1["labels"], f"{name}: pseudo labels differ between processes"
        assert r0["saves"] and not r1["saves"], name  # rank 0 writes checkpoints, rank 1 does not
        assert (out / "model_final.pth").is_file() and not [f for f in os.listdir(out) if f.endswith(".tmp")]
        assert finite(load(out / "model_final.pth")["model"]), name
        assert "mAP" in r0["results"] and np.isfinite(r0["results"]["mAP"]), name
    mmt = json.load(open(tmp_path / "ddp" / "MMT_w2" / "rank0.json"))
    assert mmt["labels"] is not None and len(set(mmt["labels"])) > 1
    # MoCo: 2 epochs x 2 iterations x 16 keys (8 per process) into a queue of 48; 32 if each process kept its own
    moco = json.load(open(tmp_path / "ddp" / "MoCoV2_w2" / "rank0.json"))
    assert moco["queue_ptr"] == (2 * 2 * 16) % 48

    # the same runs in this one process
    H.train_all(str(tmp_path / "one"), exact, None, names)
    for name in names:
        one, two = (_torch.load(tmp_path / d / f"{name}_w{w}" / "probe.pt") for d, w in (("one", 1), ("ddp", 2)))
        assert _torch.equal(one["before"], two["before"]), f"{name}: another initial model in the 2-process run"
        np.testing.assert_allclose(two["total_loss"], one["total_loss"], atol=1e-4, err_msg=name)
        moved = float((one["after"] - one["before"]).norm())
        assert moved > 1e-2 * float(one["before"].norm()), f"{name}: training did not move the features"
        gap = float((two["after"] - one["after"]).norm())
        assert gap < 1e-3 * moved, f"{name}: 2-process features {gap:.3g} away from 1-process ones (moved {moved:.3g})"
        r_one, r_two = (json.load(open(tmp_path / d / f"{name}_w{w}" / "rank0.json")) for d, w in (("one", 1),
                                                                                                   ("ddp", 2)))
        assert abs(r_two["results"]["mAP"] - r_one["results"]["mAP"]) < 0.5, name
        assert r_two["queue_ptr"] == r_one["queue_ptr"], name


# --------------------------------------------------------------------------------------------------------------
# 2. crash safety
# --------------------------------------------------------------------------------------------------------------
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(datasets_root, tmp_path, monkeypatch, caplog):
    """A write interrupted half way (the process dies inside torch.save) leaves model_*.pth and last_checkpoint as
    they were; a truncated file named by last_checkpoint (written by an old, non-atomic writer) is skipped on
    --resume for the newest readable checkpoint."""
    out = tmp_path / "run"
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "1")
    t = build_trainer(cfg)
    t.resume_or_load(resume=False)
    t.checkpointer.save("model_0000", epoch=0)
    good = (out / "model_0000.pth").read_bytes()

    real_save = torch.save

    def killed_mid_write(obj, f, *a, **k):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt  # stands for the kill: nothing after this line runs

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        t.checkpointer.save("model_0000", epoch=0)  # overwrite: the old file must survive
    with pytest.raises(KeyboardInterrupt):
        t.checkpointer.save("model_final", epoch=0)  # a new name: no partial file, last_checkpoint unchanged
    monkeypatch.setattr(torch, "save", real_save)
    assert (out / "model_0000.pth").read_bytes() == good and last(out) == "model_0000.pth"
    assert not (out / "model_final.pth").exists()
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert finite(load(out / "model_0000.pth")["model"])

    # an old in-place writer killed mid-write: a truncated file that last_checkpoint names
    (out / "model_0001.pth").write_bytes(good[: len(good) // 3])
    (out / "last_checkpoint").write_text("model_0001.pth")
    t2 = build_trainer(tiny_cfg(out, "SOLVER.MAX_EPOCH", "1"))
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        t2.resume_or_load(resume=True)
    assert "model_0001.pth, which cannot be read" in caplog.text and "model_0000.pth" in caplog.text
    assert t2.start_epoch == 1


def _poison(trainer, when, what):
    """Make the training step at iteration >= ``when`` produce ``what`` ("loss": NaN loss_cls, "weights": set a
    weight to NaN after the optimizer step with a finite loss)."""
    inner = trainer._trainer
    model = inner.model
    forward = model.forward

    def poisoned(batched_inputs):
        out = forward(batched_inputs)
        if model.training and trainer.iter >= when and what == "loss":
            out["loss_cls"] = out["loss_cls"] * float("nan")
        return out

    model.forward = poisoned
    if what == "weights":
        from fastreid.engine.train_loop import HookBase

        class InfWeight(HookBase):  # after the optimizer step of iteration `when`
            def after_step(self):
                if trainer.iter == when:
                    with torch.no_grad():
                        model.heads.bottleneck[0].weight[0] = float("inf")

        trainer.register_hooks([InfWeight()])


@pytest.mark.parametrize("what", ["loss", "weights"])
def test_non_finite_training_stops_and_keeps_last_good_checkpoint(datasets_root, tmp_path, what):
    out = tmp_path / "run"
    t = build_trainer(tiny_cfg(out))
    t.resume_or_load(resume=False)
    # after model_0000.pth was written: a NaN loss at iteration 2 (the first of epoch 1), or an inf weight after
    # the step of iteration 3 (the last one: the loss stays finite, the weights are caught before the checkpoint)
    _poison(t, when=2 if what == "loss" else 3, what=what)
    tested = []
    t.test = lambda *a, **k: tested.append(1)
    err = reliability.NonFiniteLossError if what == "loss" else reliability.NonFiniteWeightsError
    with pytest.raises(err) as e:
        t.train()
    msg = str(e.value)
    if what == "loss":
        assert "loss_cls = nan" in msg and "iteration 2" in msg
    else:
        assert "heads.bottleneck.0.weight" in msg and "after iteration 4" in msg
    assert "model_0000.pth" in msg and "SOLVER.BASE_LR" in msg
    assert last(out) == "model_0000.pth"  # no checkpoint of the broken model
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000.pth"]
    assert finite(load(out / "model_0000.pth")["model"])
    assert not tested  # the broken model was not evaluated


def test_adam_with_a_huge_learning_rate_stops_on_the_exploding_loss(datasets_root, tmp_path):
    """Adam with SOLVER.BASE_LR 1e6: the loss stays finite (~1e14) but grows by orders of magnitude; the run stops
    before the optimizer step naming the term, its start value and the iteration; no checkpoint of the garbage
    model is written (issue 17: was exit 0 with garbage checkpoints)."""
    out = tmp_path / "run"
    t = build_trainer(tiny_cfg(out, "SOLVER.OPT", "Adam", "SOLVER.BASE_LR", "1e6"))
    t.resume_or_load(resume=False)
    tested = []
    t.test = lambda *a, **k: tested.append(1)
    with pytest.raises(reliability.LossDivergenceError) as e:
        t.train()
    msg = str(e.value)
    assert "grew more than 10000-fold at iteration" in msg and "was " in msg and "SOLVER.BASE_LR (now 1e+06)" in msg
    assert not [f for f in os.listdir(out) if f.endswith(".pth")] and not tested
    # the guard alone: a term 10^4 times its start (at least 1.0) stops, a falling or small one does not
    g = reliability.DivergenceGuard()
    g({"loss_cls": torch.tensor(5.0), "loss_triplet": torch.tensor(0.01)}, 0)
    g({"loss_cls": torch.tensor(0.1), "loss_triplet": torch.tensor(9000.0)}, 1)
    with pytest.raises(reliability.LossDivergenceError, match="loss_cls = 6e\\+04 .was 5 at the start. .*iteration 2"):
        g({"loss_cls": torch.tensor(6e4), "loss_triplet": torch.tensor(1.0)}, 2)


def test_ctrl_c_in_last_epoch_does_not_evaluate(datasets_root, tmp_path, caplog):
    out = tmp_path / "run"
    t = build_trainer(tiny_cfg(out))
    t.resume_or_load(resume=False)
    forward = t._trainer.model.forward

    def interrupted(batched_inputs):
        if t.iter == 3:  # the last iteration of the last epoch
            raise KeyboardInterrupt
        return forward(batched_inputs)

    t._trainer.model.forward = interrupted
    tested = []
    t.test = lambda *a, **k: tested.append(1)
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"), pytest.raises(KeyboardInterrupt):
        t.train()
    assert not tested
    assert "Training stopped at iteration 3 of 4" in caplog.text and "not evaluated" in caplog.text
    assert last(out) == "model_0000.pth" and not (out / "model_final.pth").exists()


# --------------------------------------------------------------------------------------------------------------
# 2-3. the final checkpoint before the final evaluation; --resume / --eval-only / re-run edge cases
# --------------------------------------------------------------------------------------------------------------
def test_final_checkpoint_before_evaluation_and_resume_edge_cases(datasets_root, tmp_path, caplog):
    from fastreid_ext.engine import cli

    out = tmp_path / "run"
    t = build_trainer(tiny_cfg(out))
    t.resume_or_load(resume=False)

    def broken_evaluation(*a, **k):
        raise RuntimeError("evaluation failed")

    t.test = broken_evaluation
    with pytest.raises(RuntimeError, match="evaluation failed"):
        t.train()
    # the evaluation failed, the trained model is on disk
    assert last(out) == "model_final.pth" and load(out / "model_final.pth")["epoch"] == 1

    # --resume of the finished run: nothing to train, its model is evaluated (was: AttributeError)
    t2 = build_trainer(tiny_cfg(out))
    t2.resume_or_load(resume=True)
    assert t2.start_epoch == 2
    res = t2.train()
    assert 0.0 <= res["mAP"] <= 100.0

    # --resume with a new SOLVER.BASE_LR: said clearly
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        build_trainer(tiny_cfg(out, "SOLVER.BASE_LR", "0.01")).resume_or_load(resume=True)
    assert "not those of this config (SOLVER.BASE_LR 0.01" in caplog.text and "0.00035" in caplog.text

    # --resume into an OUTPUT_DIR of another model: a clear error (was: a bare ValueError from the optimizer)
    with pytest.raises(reliability.CheckpointMismatchError, match="not a checkpoint of this model") as e:
        build_trainer(tiny_cfg(out, "MODEL.BACKBONE.WITH_IBN", "True")).resume_or_load(resume=True)
    assert "choose a new OUTPUT_DIR" in str(e.value)

    # MODEL.WEIGHTS of another class count to start a training: what fits is loaded, the rest reported
    caplog.clear()
    t3 = build_trainer(tiny_cfg(tmp_path / "ft", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                                "MODEL.HEADS.NUM_CLASSES", "7"))
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        t3.resume_or_load(resume=False)
    assert "loaded what fits, skipped the rest" in caplog.text and "heads.weight" in caplog.text
    sd = load(out / "model_final.pth")["model"]
    assert torch.equal(t3.model.backbone.conv1.weight, sd["backbone.conv1.weight"])

    # tools/train_net.py: re-running without --resume would overwrite model_final.pth: refused, the flags named
    base = ["--config-file", CFG, *TINY]
    before = (out / "model_final.pth").read_bytes()
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["OUTPUT_DIR", str(out)])
    assert "--resume" in str(e.value.code) and "--overwrite" in str(e.value.code)
    assert (out / "model_final.pth").read_bytes() == before

    # --eval-only without MODEL.WEIGHTS, or with weights of another architecture: a clear error, exit code 1
    ev = ["--eval-only", *base, "OUTPUT_DIR", str(tmp_path / "eval")]
    with pytest.raises(SystemExit) as e:
        cli.main(ev)
    assert "needs trained weights: pass MODEL.WEIGHTS" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        cli.main(ev + ["MODEL.WEIGHTS", str(out / "model_final.pth"), "MODEL.BACKBONE.WITH_IBN", "True"])
    assert "does not fit the configured model" in str(e.value.code) and "not in the checkpoint" in str(e.value.code)
    # ... or with NaN weights (a diverged run of an earlier version)
    ck = load(out / "model_final.pth")
    ck["model"]["heads.bottleneck.0.weight"][0] = float("nan")
    torch.save(ck, tmp_path / "nan.pth")
    with pytest.raises(SystemExit) as e:
        cli.main(ev + ["MODEL.WEIGHTS", str(tmp_path / "nan.pth")])
    assert "holds NaN/inf weights (heads.bottleneck.0.weight)" in str(e.value.code)


# --------------------------------------------------------------------------------------------------------------
# 4. keypoints for the training images only
# --------------------------------------------------------------------------------------------------------------
def test_evaluation_does_not_demand_keypoints_nothing_uses(datasets_root, tmp_path):
    """RBNet trains on keypoints, its inference does not use them: keypoints made for the training images only
    are enough (the evaluation used to fail on the first query image)."""
    from fastreid_ext.data import build as data_build
    from fastreid_ext.data.annotations import AnnotationError, load_keypoint_file, save_keypoint_file
    from fastreid_ext.engine import Trainer

    cfg = tiny_cfg(tmp_path / "run")
    ds = data_build.build_dataset("SynthPedA", cfg)
    root = os.path.dirname(os.path.dirname(ds.train[0][0]))
    train_only = {k: v for k, v in load_keypoint_file(os.path.join(root, "keypoints.json")).items()
                  if k.startswith("bounding_box_train/")}
    kp_file = os.path.join(root, f"keypoints_train_only_{os.getpid()}.json")
    save_keypoint_file(kp_file, train_only)
    try:
        cfg = tiny_cfg(tmp_path / "run", "DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True",
                       "DATASETS.ANNOTATIONS.KEYPOINTS_FILES", f"['{kp_file}']")
        assert "keypoints" in data_build.build_train_set(cfg)[0]
        loader, num_query = Trainer.build_test_loader(cfg, "SynthPedA")
        batch = next(iter(loader))
        assert num_query > 0 and "keypoints" not in batch
        # the test images really have none: a loader that asks for them is refused when it is built
        with pytest.raises(AnnotationError, match="test dataset SynthPedA .query . gallery.: [0-9]+ of [0-9]+ "
                                                  "image.s. have no keypoints"):
            data_build.build_test_loader(cfg, "SynthPedA", keypoints=True)
        # the flip canonicalisation from keypoints does use them at test time
        cfg.INPUT.FLIP_CANON.ENABLED = True
        assert data_build.keypoints_used_at_test(cfg)
        cfg.INPUT.FLIP_CANON.SOURCE = "orientation"
        assert not data_build.keypoints_used_at_test(cfg)
    finally:
        os.remove(kp_file)


# --------------------------------------------------------------------------------------------------------------
# 5. SIGKILL mid-epoch, --resume: the same final weights as an uninterrupted run
# --------------------------------------------------------------------------------------------------------------
def test_resume_after_sigkill_gives_the_weights_of_an_uninterrupted_run(datasets_root, tmp_path):
    """The killed run (a forked copy of this process that SIGKILLs itself before the step of iteration 3, in the
    middle of epoch 1, after model_0000.pth) resumes from model_0000.pth: the checkpoint holds model, optimizer,
    schedulers and the random states, and the seeded sampler is fast-forwarded past the 2 batches of epoch 0, so
    the resumed run sees the same batches and augmentations as the uninterrupted one: equal weights, bit for bit
    (one process, NUM_WORKERS 0, one CPU thread, same seed)."""
    import signal

    ref = build_trainer(tiny_cfg(tmp_path / "ref"))
    ref.resume_or_load(resume=False)
    ref.train()

    out = tmp_path / "killed"
    cfg = tiny_cfg(out)
    pid = os.fork()
    if pid == 0:  # the child: train until iteration 3, then die as `kill -9` would leave it
        try:
            t = build_trainer(cfg)
            t.resume_or_load(resume=False)
            forward = t._trainer.model.forward

            def killed(batched_inputs):
                if t.iter == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
                return forward(batched_inputs)

            t._trainer.model.forward = killed
            t.train()
        finally:
            os._exit(3)  # never reached when the kill came
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert last(out) == "model_0000.pth" and not (out / "model_final.pth").exists()

    t = build_trainer(tiny_cfg(out))
    t.resume_or_load(resume=True)
    assert t.start_epoch == 1
    t.train()
    a, b = load(tmp_path / "ref" / "model_final.pth"), load(out / "model_final.pth")
    assert a["model"].keys() == b["model"].keys()
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not differ, differ
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()


@pytest.mark.parametrize("opts,match", [
    (["MODEL.BACKBONE.DEPTH", "19x"], "MODEL.BACKBONE.DEPTH '19x' is not a depth build_resnet_backbone knows"),
    (["MODEL.META_ARCHITECTURE", "NoSuchArch"], "MODEL.META_ARCHITECTURE 'NoSuchArch' is not registered; .*HPLF"),
    (["MODEL.BACKBONE.NAME", "build_nothing"], "MODEL.BACKBONE.NAME 'build_nothing' is not registered"),
    (["MODEL.HEADS.NAME", "NoHead"], "MODEL.HEADS.NAME 'NoHead' is not registered"),
    (["SOLVER.SCHED", "CosineAnnealingLR", "SOLVER.MAX_EPOCH", "1"], "CosineAnnealingLR needs at least one epoch"),
])
def test_bad_model_and_solver_options_are_named_before_training(opts, match, datasets_root, tmp_path):
    """Issue 17: BACKBONE.DEPTH 19x (was: a bare KeyError), unknown registry names, and a cosine schedule without an
    epoch after warm-up (was: ZeroDivisionError at the end of the first epoch) fail at start, naming the key."""
    with pytest.raises(reliability.ConfigError, match=match):
        build_trainer(tiny_cfg(tmp_path / "run", *opts))
