"""Trainer-level keys (``SEED``, ``SOLVER.ITERS_PER_EPOCH``), ``build_trainer`` and the config passed down to the
datasets and loaders (no process-wide settings)."""
import os

import pytest
import torch
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset
from fastreid.engine.train_loop import HookBase

import fastreid_ext
from fastreid_ext.data import build as data_build
from fastreid_ext.engine import Trainer, build_trainer, seed_from_config, trainer_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "INPUT.PADDING.SIZE", "2", "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "2",
        "TEST.IMS_PER_BATCH", "64", "SOLVER.LOG_PERIOD", "1", "MODEL.BACKBONE.DEPTH", "18x",
        "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False"]


def tiny_cfg(*opts, config="configs/SynthPed/bagtricks_R18.yml"):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(TINY + list(opts))
    return cfg


class _StepsPerEpoch(HookBase):
    def __init__(self):
        self.counts = []

    def before_epoch(self):
        self.counts.append(0)

    def after_step(self):
        self.counts[-1] += 1


def _train(out_dir, seed):
    # random erasing and flips on: the augmentations draw random numbers too
    cfg = tiny_cfg("OUTPUT_DIR", str(out_dir), "SEED", str(seed), "SOLVER.MAX_EPOCH", "2",
                   "SOLVER.ITERS_PER_EPOCH", "3", "SOLVER.STEPS", "[1]", "TEST.EVAL_PERIOD", "2",
                   "SOLVER.CHECKPOINT_PERIOD", "2", "INPUT.REA.ENABLED", "True")
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1000 + seed)  # whatever the process state before, SEED decides
    trainer = build_trainer(cfg)
    assert type(trainer) is Trainer
    steps = _StepsPerEpoch()
    trainer.register_hooks([steps])
    trainer.resume_or_load(resume=False)
    trainer.train()
    return trainer, steps.counts


def test_same_seed_same_weights_and_fixed_epoch_length(datasets_root, tmp_path):
    a, steps = _train(tmp_path / "a", seed=3)
    b, _ = _train(tmp_path / "b", seed=3)
    c, _ = _train(tmp_path / "c", seed=4)
    # SOLVER.ITERS_PER_EPOCH: 3 iterations per epoch (FastReID's len(train set) // 16 would be 8), LR steps
    # counted in these epochs (x0.1 after epoch 1)
    assert len(a.data_loader.dataset) // 16 == 8
    assert a.iters_per_epoch == 3 and a.max_iter == 6 and steps == [3, 3] and a.iter == 6
    assert a.optimizer.param_groups[0]["lr"] == pytest.approx(a.cfg.SOLVER.BASE_LR * a.cfg.SOLVER.GAMMA)
    sa, sb, sc = (t.model.state_dict() for t in (a, b, c))
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same config + seed: identical final weights
    assert not torch.equal(sa["backbone.conv1.weight"], sc["backbone.conv1.weight"])  # another seed: others


def test_epoch_length_defaults_to_fastreid(datasets_root):
    from fastreid_ext.engine import epoch_length

    cfg = tiny_cfg()
    assert epoch_length(cfg, 7) == 7 and epoch_length(cfg, 0) == 1
    cfg.SOLVER.ITERS_PER_EPOCH = 5
    assert epoch_length(cfg, 7) == 5


def test_seed_reaches_the_sampler_and_loader_workers(datasets_root):
    cfg = tiny_cfg("SEED", "5", "DATALOADER.NUM_WORKERS", "1", "INPUT.REA.ENABLED", "True")
    train_set = data_build.build_train_set(cfg)
    batches = []
    for _ in range(2):
        torch.manual_seed(len(batches))  # overwritten by the seed
        seed_from_config(cfg)
        loader = data_build.build_train_loader(cfg, train_set)
        assert loader.batch_sampler.sampler._seed == 5
        batches.append(next(iter(loader)))  # augmented in a worker process
    assert batches[0]["img_paths"] == batches[1]["img_paths"]
    assert torch.equal(batches[0]["images"], batches[1]["images"])
    assert data_build.build_train_sampler(cfg, train_set, seed=9)._seed == 9
    cfg.SEED = -1
    assert data_build.sampler_seed(cfg) is None  # FastReID's shared random seed


def test_build_trainer_picks_the_method_trainer():
    from fastreid_ext.mmt.hooks import MMTTrainer

    mmt = tiny_cfg(config="projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml")
    assert trainer_class(mmt) is MMTTrainer
    assert trainer_class(tiny_cfg()) is Trainer
    with pytest.raises(TypeError, match="build_trainer"):
        Trainer(mmt)  # no silent class swap: the plain Trainer refuses a method with its own trainer
    assert mmt.SOLVER.ITERS_PER_EPOCH == 25 and "ITERS_PER_EPOCH" not in mmt.UDA


if "KwargsProbe" not in DATASET_REGISTRY._obj_map:
    @DATASET_REGISTRY.register()
    class KwargsProbe(ImageDataset):
        """Records its constructor arguments (a dataset without ``kwargs_from_config``)."""
        received = []

        def __init__(self, root="datasets", **kwargs):
            KwargsProbe.received.append(dict(kwargs))
            item = [("x.jpg", 0, 0)]
            super().__init__(item, item, item)


def test_synthped_options_come_from_the_config(datasets_root):
    big = tiny_cfg()
    small = tiny_cfg("DATASETS.SYNTHPED.NUM_TRAIN_IDS", "3", "DATASETS.SYNTHPED.NUM_TEST_IDS", "2")
    d1 = data_build.build_dataset("SynthPedA", big)
    d2 = data_build.build_dataset("SynthPedA", small)
    d3 = data_build.build_dataset("SynthPedA", big)  # nothing of `small` left behind in the process
    assert d1.data_dir != d2.data_dir and d1.data_dir == d3.data_dir
    assert len({p for _, p, _ in d2.train}) == 3 and len({p for _, p, _ in d1.train}) == 16
    assert len(d3.train) == len(d1.train)
    assert d2.options["num_train_ids"] == 3 and d3.options["num_train_ids"] is None
    assert len(data_build.build_train_set(small)) == len(d2.train)
    # a dataset without kwargs_from_config gets only the explicit arguments
    DATASET_REGISTRY.get("KwargsProbe").received.clear()
    data_build.build_dataset("KwargsProbe", small, combineall=False)
    assert DATASET_REGISTRY.get("KwargsProbe").received == [{"combineall": False}]


def test_loader_class_follows_model_device(datasets_root):
    from fastreid.data.data_utils import DataLoaderX

    cfg = tiny_cfg()
    loader, num_query = data_build.build_test_loader(cfg, "SynthPedA")
    assert type(loader) is torch.utils.data.DataLoader and num_query > 0
    assert not data_build.uses_cuda_loader(cfg)
    cfg.MODEL.DEVICE = "cuda"
    assert data_build.uses_cuda_loader(cfg) == torch.cuda.is_available()
    if torch.cuda.is_available():
        assert isinstance(data_build.build_test_loader(cfg, "SynthPedA")[0], DataLoaderX)


@pytest.mark.parametrize("opts,match", [
    (["SOLVER.IMS_PER_BATCH", "15"], "multiple of DATALOADER.NUM_INSTANCE"),
    (["SOLVER.IMS_PER_BATCH", "30"], "use SOLVER.IMS_PER_BATCH 28 or 32"),
    (["SOLVER.IMS_PER_BATCH", "4000"], "larger than the training set"),
    (["SOLVER.IMS_PER_BATCH", "100", "DATALOADER.NUM_INSTANCE", "1"], "identities per batch"),
])
def test_sampler_constraints_are_checked_before_training(opts, match, datasets_root):
    """Settings FastReID's identity samplers cannot serve (they would spin forever) fail at once, saying what to
    change."""
    from fastreid_ext.data.build import build_train_loader

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "DATASETS.SYNTHPED.PRESET", "tiny", "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.SIZE_TRAIN", "[64, 32]"] + opts)
    with pytest.raises(ValueError, match=match):
        build_train_loader(cfg)
