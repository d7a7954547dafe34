"""Our configs under FastReID's own, unmodified ``DefaultTrainer`` (what a FastReID checkout's tools/train_net.py
builds) after ``import fastreid_ext``: every meta-architecture of ours trains a few iterations with the keypoints /
masks its config asks for; a method that needs its own trainer (MMT) fails at start, saying what to change."""
import os

import pytest
import torch

import fastreid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.NUM_INSTANCE", "4", "TEST.IMS_PER_BATCH", "64", "MODEL.BACKBONE.DEPTH", "18x",
        "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.MAX_EPOCH", "1",
        "SOLVER.WARMUP_ITERS", "1", "TEST.EVAL_PERIOD", "100", "SOLVER.CHECKPOINT_PERIOD", "100"]

CONFIGS = {
    "Baseline": "configs/SynthPed/bagtricks_R18.yml",
    "HPLF": "projects/HPLF/configs/SynthPed/hplf_R18.yml",
    "JointIBN": "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml",
    "RBNet": "projects/RBNet/configs/SynthPed/rbnet_R18.yml",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(path, out, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, path))
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(out)] + list(opts))
    return cfg


class _StopAfter(Exception):
    pass


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_fastreid_default_trainer_trains_our_meta_architecture(arch, datasets_root, tmp_path):
    from fastreid.engine import DefaultTrainer
    from fastreid.engine.hooks import HookBase

    cfg = _cfg(CONFIGS[arch], tmp_path)
    assert cfg.MODEL.META_ARCHITECTURE == arch
    trainer = DefaultTrainer(cfg)
    assert type(trainer) is DefaultTrainer
    batch = next(iter(trainer.data_loader))
    a = cfg.DATASETS.ANNOTATIONS
    assert ("keypoints" in batch) == a.LOAD_KEYPOINTS and ("masks" in batch) == a.LOAD_MASKS

    losses = []

    class Record(HookBase):
        def after_step(self):
            losses.append(float(self.trainer.storage.history("total_loss").latest()))
            if len(losses) == 3:
                raise _StopAfter  # a few iterations are enough: the model trains under FastReID's loop

    trainer.register_hooks([Record()])
    w0 = {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
    trainer.resume_or_load(resume=False)
    with pytest.raises(_StopAfter):
        trainer.train()
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    moved = [k for k, v in trainer.model.state_dict().items() if k in w0 and not torch.equal(w0[k], v)]
    assert any(k.startswith("backbone.") for k in moved)


def test_fastreid_default_trainer_refuses_mmt_at_start_with_what_to_change(datasets_root, tmp_path):
    from fastreid.engine import DefaultTrainer

    cfg = _cfg("projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml", tmp_path)
    with pytest.raises(RuntimeError, match="build_trainer"):
        DefaultTrainer(cfg)


def test_fastreid_configs_without_our_keys_keep_fastreids_loader(datasets_root):
    """A plain FastReID config (FastReID's get_cfg, none of our keys) goes through FastReID's own builder."""
    from fastreid.config import get_cfg
    from fastreid.data import build_reid_train_loader
    from fastreid.data.common import CommDataset

    cfg = get_cfg()
    cfg.merge_from_list(["DATASETS.NAMES", '("SynthPedA",)', "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN",
                         "[64, 32]", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_INSTANCE", "4",
                         "DATALOADER.SAMPLER_TRAIN", "NaiveIdentitySampler"])
    loader = build_reid_train_loader(cfg)
    assert isinstance(loader.dataset, CommDataset)
