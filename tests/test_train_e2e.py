"""Train + evaluate FastReID's Baseline on a tiny SynthPed with our Trainer on CPU; resume; config errors."""
import json
import os

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext.engine import build_trainer

TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2", "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "5",
        "TEST.IMS_PER_BATCH", "64", "SOLVER.LOG_PERIOD", "2"]


def tiny_cfg(out_dir, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("configs/SynthPed/bagtricks_R18.yml")
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out_dir)] + list(opts))
    return cfg


def _losses(out_dir):
    rows = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    return [r["total_loss"] for r in rows if "total_loss" in r]


def test_train_eval_end_to_end_and_resume(datasets_root, tmp_path):
    out = tmp_path / "run"
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "4", "SOLVER.STEPS", "[3]", "SOLVER.CHECKPOINT_PERIOD", "2",
                   "TEST.EVAL_PERIOD", "4", "TEST.EVAL_INIT", "True")
    os.makedirs(out, exist_ok=True)
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    init = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    results = trainer.train()
    moved = [k for k, v in trainer.model.state_dict().items() if v.is_floating_point() and not torch.equal(init[k], v)]
    assert any("backbone.conv1" in k for k in moved) and any("heads" in k for k in moved)  # weights really train
    # the trained model beats the untrained one on the same split (TEST.EVAL_INIT: evaluated before training)
    assert results["mAP"] > trainer.init_results["mAP"] + 1.0, (trainer.init_results["mAP"], results["mAP"])
    assert os.path.isfile(out / "model_final.pth") and os.path.isfile(out / "model_0001.pth")
    assert os.path.isfile(datasets_root / "synthped" / "tiny" / "SynthPedA" / "meta.json")
    losses = _losses(out)
    assert len(losses) >= 10 and np.mean(losses[-3:]) < np.mean(losses[:3])  # the baseline learns

    # resume: a new trainer picks up the last checkpoint, epoch counter and weights
    cfg2 = tiny_cfg(out, "SOLVER.MAX_EPOCH", "5", "SOLVER.STEPS", "[3]", "SOLVER.CHECKPOINT_PERIOD", "2",
                    "TEST.EVAL_PERIOD", "5")
    t2 = build_trainer(cfg2)
    t2.resume_or_load(resume=True)
    assert t2.start_epoch == 4
    sd1 = torch.load(out / "model_final.pth", weights_only=False)["model"]
    sd2 = t2.model.state_dict()
    assert all(torch.equal(sd1[k].cpu(), sd2[k].cpu()) for k in sd1)
    res2 = t2.train()
    assert res2["mAP"] > trainer.init_results["mAP"] + 1.0, (trainer.init_results["mAP"], res2["mAP"])  # still trained


def test_eval_only_from_checkpoint_via_train_net(datasets_root, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    cfg = tiny_cfg(out, "SOLVER.MAX_EPOCH", "1", "TEST.EVAL_PERIOD", "1")
    os.makedirs(out, exist_ok=True)
    t = build_trainer(cfg)
    t.resume_or_load(resume=False)
    t.train()
    env = dict(os.environ, FASTREID_DATASETS=str(datasets_root))
    cmd = [sys.executable, "tools/train_net.py", "--config-file", "configs/SynthPed/bagtricks_R18.yml",
           "--eval-only", *TINY, "OUTPUT_DIR", str(tmp_path / "eval"), "MODEL.WEIGHTS", str(out / "model_final.pth")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Rank-1" in r.stdout + r.stderr and "mAP" in r.stdout + r.stderr
    # fastreid_ext's own loggers reach the console like FastReID's (here: the CPU malloc setting)
    assert "fastreid_ext.utils.malloc" in r.stdout + r.stderr


def test_unknown_config_key_is_reported_by_yacs(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(f"_BASE_: {os.path.abspath('configs/Base-SynthPed.yml')}\nMODEL:\n  NO_SUCH_KEY: 1\n")
    cfg = fastreid_ext.get_cfg()
    with pytest.raises(KeyError, match="NO_SUCH_KEY"):
        cfg.merge_from_file(str(bad))


def test_every_shipped_config_loads():
    import glob

    files = glob.glob("configs/**/*.yml", recursive=True) + glob.glob("projects/**/*.yml", recursive=True)
    assert files
    for f in files:
        if os.path.basename(f).startswith("Base-"):
            continue
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(f)
        assert cfg.MODEL.META_ARCHITECTURE


def test_every_config_path_named_in_a_readme_exists_and_loads():
    """Users copy config paths from the READMEs: each one named there must exist and load."""
    import glob
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readmes = [os.path.join(root, "README.md")] + glob.glob(os.path.join(root, "projects", "*", "README.md")) \
        + glob.glob(os.path.join(root, "docs", "*.md"))
    named = set()
    for md in readmes:
        for m in re.finditer(r"(?<![A-Za-z0-9_/.-])((?:projects|configs)/[A-Za-z0-9_./-]+?\.yml)",
                             open(md, encoding="utf-8").read()):
            path = m.group(1)
            # ours only: configs/<one of our folders or files>, projects/<Method>/... (docs also quote mmpose's)
            if path.startswith("configs/") and path.split("/")[1] not in os.listdir(os.path.join(root, "configs")):
                continue
            named.add(path)
    assert len(named) >= 10, sorted(named)
    missing = sorted(p for p in named if not os.path.isfile(os.path.join(root, p)))
    assert not missing, f"config paths named in a README that do not exist: {missing}"
    for p in sorted(named):
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(os.path.join(root, p))
        assert cfg.MODEL.META_ARCHITECTURE, p
