"""Each compatibility patch: it is applied where needed, it fixes what it says, and it is a no-op twice."""
import collections
import collections.abc
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext import compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_every_patch_has_a_reason_and_apply_is_idempotent():
    assert len(compat.PATCHES) >= 10
    for name, (stage, reason, fn) in compat.PATCHES.items():
        assert stage in ("early", "fastreid", "pose") and len(reason) > 20, name
    assert compat.apply() == []  # everything needed was applied at import; nothing twice
    assert "| `cpu_data_loader` |" in compat.patch_table()


def test_patches_applied_in_a_fresh_process_on_this_stack():
    out = _fresh_python("""
        import fastreid_ext
        import fastreid  # the FastReID-stage patches run on FastReID's first import
        print(",".join(fastreid_ext.compat.APPLIED))
    """)
    applied = out.strip().splitlines()[-1].split(",")
    # on Python 3.11 / torch 2.x / numpy 1.26 all of these are needed
    for name in ("optimizer_not_contiguous", "collections_abc_aliases", "torch_six", "numpy_aliases", "cpu_data_loader", "amp_on_cpu",
                 "cython_evaluator", "torch_load_weights_only", "jaccard_on_cpu", "launch_on_cpu",
                 "preprocess_not_in_place", "targets_to_device"):
        assert name in applied


def test_python_torch_numpy_removals():
    assert collections.Mapping is collections.abc.Mapping
    import torch._six

    assert torch._six.string_classes == (str, bytes)
    assert np.bool is bool and np.int is int
    from fastreid.data.build import fast_batch_collator

    batch = fast_batch_collator([{"a": torch.ones(2), "p": "x", "i": 1}, {"a": torch.zeros(2), "p": "y", "i": 2}])
    assert batch["p"] == ["x", "y"] and batch["a"].shape == (2, 2) and batch["i"].tolist() == [1, 2]


def test_numpy_alias_guard_is_noop_when_present(monkeypatch):
    monkeypatch.setattr(np, "bool", bool, raising=False)
    assert compat.PATCHES["numpy_aliases"][2]() is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="the patch acts only without CUDA")
def test_fastreid_own_loader_is_plain_without_cuda():
    import fastreid.data.build as build
    from torch.utils.data import DataLoader

    loader = build.DataLoaderX(0, dataset=[{"images": torch.ones(3)}] * 4, batch_size=2)
    assert type(loader) is DataLoader and loader.pin_memory is False
    assert len(list(loader)) == 2


def test_compat_holds_no_device_setting():
    # the device comes from cfg.MODEL.DEVICE where loaders are built, not from a process-wide setting
    assert not any(hasattr(compat, n) for n in ("set_device", "uses_cpu", "_DEVICE"))


class _TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return {"loss": (self.w * batch["x"]).pow(2).mean()}


def test_amp_falls_back_to_fp32_on_cpu_with_warning(caplog):
    from fastreid.engine import defaults
    from fastreid.utils.events import EventStorage

    model = _TinyModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = iter([{"x": torch.ones(4)}] * 10)
    with caplog.at_level(logging.WARNING):
        trainer = defaults.AMPTrainer(model, loader, opt, None)
    assert "AMP needs CUDA" in caplog.text
    trainer.iter = 0
    with EventStorage(0):
        trainer.run_step()  # the unpatched AMPTrainer asserts torch.cuda.is_available() here
    assert model.w.item() < 1.0


def test_cython_evaluator_never_exits_or_compiles():
    import fastreid.evaluation.rank as fr_rank
    import fastreid.evaluation.rank_cylib as rank_cylib
    from fastreid.evaluation import ReidEvaluator

    with pytest.raises(RuntimeError, match="cython_build"):
        rank_cylib.compile_helper()
    cfg = fastreid_ext.get_cfg()
    ReidEvaluator(cfg, num_query=2)  # would run `make` in site-packages and sys.exit on failure
    assert getattr(fr_rank.evaluate_rank, "__fastreid_ext_patched__", False)
    dist = np.array([[0.1, 0.5, 0.9], [0.2, 0.1, 0.4]], np.float32)
    cmc, aps, inps = fr_rank.evaluate_rank(dist, np.array([1, 2]), np.array([1, 2, 3]), np.array([0, 0]),
                                           np.array([1, 1, 1]), max_rank=3)
    assert cmc[0] == 1.0 and np.allclose(aps, 1.0)


def test_checkpoints_with_numpy_load(tmp_path, caplog):
    from fastreid.utils.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "extra": np.arange(3), "epoch": 4}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what torch >= 2.6 does by default
    with caplog.at_level(logging.WARNING):
        ckpt = Checkpointer(torch.nn.Linear(2, 2)).load(str(path))
    assert "not a weights-only checkpoint" in caplog.text and ckpt["epoch"] == 4
    # a plain weights checkpoint goes through the safe loader without a warning
    torch.save({"model": model.state_dict()}, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Checkpointer(torch.nn.Linear(2, 2)).load(str(path))
    assert "not a weights-only" not in caplog.text


def test_jaccard_distance_runs_on_cpu():
    from fastreid.utils.compute_dist import compute_jaccard_distance

    feats = torch.nn.functional.normalize(torch.randn(40, 8), dim=1)
    d = compute_jaccard_distance(feats, k1=5, k2=2)  # default search_option=0 calls .cuda()
    assert d.shape == (40, 40) and np.isfinite(d).all()


def test_preprocess_image_does_not_modify_the_batch():
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                         "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "3"])
    from fastreid.modeling import build_model

    model = build_model(cfg)
    imgs = torch.full((2, 3, 64, 32), 200.0)
    out = model.preprocess_image({"images": imgs})
    assert torch.equal(imgs, torch.full((2, 3, 64, 32), 200.0))
    assert torch.allclose(out[0, 0, 0, 0], (200.0 - model.pixel_mean[0, 0, 0, 0]) / model.pixel_std[0, 0, 0, 0])


def test_pose_patches_wait_for_mmpose_import():
    pytest.importorskip("mmcv", reason="pose extra (mmcv-lite) not installed")
    out = _fresh_python("""
        import sys, fastreid_ext
        assert "mmcv" not in sys.modules and "pose_stack" not in fastreid_ext.compat.APPLIED
        import mmpose.apis  # triggers the pose patches
        print(",".join(fastreid_ext.compat.APPLIED))
    """)
    assert "pose_stack" in out


def test_default_trainer_optimizer_really_updates_weights():
    from fastreid.engine import DefaultTrainer
    from fastreid.utils.events import EventStorage

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
                         "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "4"])
    model = DefaultTrainer.build_model(cfg)
    optimizer, _ = DefaultTrainer.build_optimizer(cfg, model)
    before = model.backbone.conv1.weight.detach().clone()
    with EventStorage(0):
        for _ in range(2):  # zero_grad (set_to_none) then a step, as SimpleTrainer does
            loss = sum(model({"images": torch.rand(8, 3, 64, 32) * 255, "targets": torch.arange(8) % 4}).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert not torch.equal(before, model.backbone.conv1.weight)


def test_pure_parts_import_without_fastreid_and_registrations_follow():
    """``fastreid_ext.functional`` and the SynthPed generator import without FastReID; importing FastReID afterwards
    still gets every patch and registration (first registry look-up), whatever was imported first."""
    out = _fresh_python("""
        import sys
        import fastreid_ext.functional.jaccard, fastreid_ext.functional.clustering
        import fastreid_ext.data.synthped.generate
        print("fastreid imported:", "fastreid" in sys.modules)
        from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
        from fastreid.data.datasets import DATASET_REGISTRY
        print(META_ARCH_REGISTRY.get("RBNet").__module__, DATASET_REGISTRY.get("SynthPedA").__name__)
        import fastreid_ext
        print("optimizer_not_contiguous" in fastreid_ext.compat.APPLIED, fastreid_ext.get_cfg().MODEL.MMT.ALPHA)
    """)
    lines = out.strip().splitlines()
    assert "fastreid imported: False" in lines
    assert "fastreid_ext.rbnet.meta_arch SynthPedA" in lines
    assert lines[-1] == "True 0.999"


def test_fastreid_datasets_read_ids_from_the_file_name_only(tmp_path):
    """compat dataset_names_on_basename: a root path holding a pattern like `2_c1` made FastReID's Market1501 read
    every image as id 2, camera 1; a file name off the convention gave AttributeError naming no file."""
    from PIL import Image

    from fastreid.data.datasets.market1501 import Market1501

    root = tmp_path / "exp2_c1"
    d = root / "Market-1501-v15.09.15"
    for sub, name in (("bounding_box_train", "0005_c3s1_000001_00.jpg"), ("query", "0007_c4s1_000001_00.jpg"),
                      ("bounding_box_test", "0007_c2s1_000002_00.jpg")):
        (d / sub).mkdir(parents=True)
        Image.new("RGB", (8, 16)).save(d / sub / name)
    ds = Market1501(root=str(root))
    assert [(p, c) for _, p, c in ds.train] == [("market1501_5", "market1501_2")]
    assert [(p, c) for _, p, c in ds.query] == [(7, 3)]
    Image.new("RGB", (8, 16)).save(d / "query" / "snapshot.jpg")
    with pytest.raises(ValueError, match="snapshot.jpg does not follow the dataset's convention"):
        Market1501(root=str(root)).query  # FastReID reads a split when it is first used
