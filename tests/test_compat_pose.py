"""The mmpose top-down stack (mmpose 1.3 + mmcv-lite 2.1 + mmdet 3.3) on CPU through
``fastreid_ext.compat_mmcv`` (see docs/pose_install.md)."""
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
COMPAT_FILE = REPO / "fastreid_ext" / "compat_mmcv.py"
HRNET_CFG = "configs/body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"


def _missing(*mods):
    return [m for m in mods if importlib.util.find_spec(m) is None]


def _require(*mods):
    missing = _missing(*mods)
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (see docs/pose_install.md)")


def _load_compat():
    """``fastreid_ext.compat_mmcv``. The module is standalone (stdlib only at import time); if the package
    ``__init__`` (which imports FastReID and every plugin) cannot be imported in this checkout, load the
    file itself so these tests still check the pose stack."""
    try:
        return importlib.import_module("fastreid_ext.compat_mmcv")
    except ImportError:
        name = "_fastreid_ext_compat_mmcv_standalone"
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, COMPAT_FILE)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        return sys.modules[name]


@pytest.fixture(scope="module")
def compat():
    _require("mmcv", "mmengine")
    mod = _load_compat()
    mod.apply_pose_compat()
    return mod


@pytest.fixture(scope="module")
def mmpose_apis(compat):
    _require("mmpose")
    if _missing("mmdet"):
        pytest.skip("mmdet not installed: mmpose's RTMO head imports mmdet.utils "
                    "(pip install -c constraints.txt --no-deps mmdet==3.3.0, see docs/pose_install.md)")
    return importlib.import_module("mmpose.apis")


@pytest.fixture(scope="module")
def hrnet(mmpose_apis):
    import mmpose

    cfg = Path(mmpose.__file__).parent / ".mim" / HRNET_CFG
    if not cfg.is_file():
        pytest.skip(f"this mmpose does not ship {HRNET_CFG}")
    return mmpose_apis.init_model(str(cfg), None, device="cpu")


def test_import_is_cheap_and_does_not_import_the_pose_stack():
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("cm", {str(COMPAT_FILE)!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        heavy = [m for m in ("torch", "mmcv", "mmengine", "mmpose", "mmdet", "numpy") if m in sys.modules]
        assert not heavy, heavy
        assert callable(mod.apply_pose_compat) and callable(mod.install_mmcv_ops_standin)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_hrnet_topdown_inference_on_cpu(hrnet, mmpose_apis):
    import torch

    assert next(hrnet.parameters()).device == torch.device("cpu")
    img = (np.random.RandomState(0).rand(256, 128, 3) * 255).astype(np.uint8)
    bboxes = np.array([[8.0, 16.0, 120.0, 240.0]], dtype=np.float32)
    results = mmpose_apis.inference_topdown(hrnet, img, bboxes)
    assert len(results) == 1
    pred = results[0].pred_instances
    assert pred.keypoints.shape == (1, 17, 2)
    assert pred.keypoint_scores.shape == (1, 17)
    assert np.isfinite(pred.keypoints).all() and np.isfinite(pred.keypoint_scores).all()


def test_real_ops_raise_a_clear_import_error(compat):
    import mmcv

    ops = importlib.import_module("mmcv.ops")
    if not compat.is_standin(ops):
        pytest.skip("a full, compiled mmcv is installed: no stand-in to check")
    import torch
    from mmcv.ops.nms import batched_nms  # submodules import too, and (as in the real mmcv) do not
    from mmcv.ops import DeformConv2d, RoIAlign, nms  # shadow the op of the same name: ops.nms is the op

    assert mmcv.ops is ops and compat.is_standin(RoIAlign) and compat.is_standin(nms)
    assert isinstance(sys.modules["mmcv.ops.nms"], type(ops)) and ops.nms is nms
    assert not isinstance(torch.nn.Conv2d(1, 1, 1), DeformConv2d)  # isinstance checks stay usable

    class MyDeformConv(DeformConv2d, torch.nn.Module):  # subclassing at import time works ...
        pass

    uses = {
        "nms": lambda: nms(torch.zeros(1, 4), torch.zeros(1), 0.5),
        "RoIAlign": lambda: RoIAlign((7, 7)),
        "DeformConv2d": lambda: MyDeformConv(),  # ... instantiating the subclass does not
        "nms.batched_nms": lambda: batched_nms(torch.zeros(1, 4), torch.zeros(1), torch.zeros(1), {}),
        "roi_align": lambda: ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2, 2)),
    }
    for name, use in uses.items():
        with pytest.raises(ImportError) as info:
            use()
        msg = str(info.value)
        assert f"mmcv.ops.{name} needs the compiled mmcv" in msg
        assert "torch >= 2.5" in msg and "mmcv-lite" in msg


def test_apply_twice_applies_nothing_the_second_time(compat):
    compat.apply_pose_compat()  # may be empty already: the fixture (or fastreid_ext's import hook) ran it
    assert compat.apply_pose_compat() == []
    assert compat.install_mmcv_ops_standin() is False
    ops = sys.modules.get("mmcv.ops") or importlib.import_module("mmcv.ops")
    if compat.is_standin(ops):
        assert "mmcv_ops_standin" in compat.APPLIED
        assert sum(bool(getattr(f, compat.STANDIN_MARK, False)) for f in sys.meta_path) == 1
    assert set(compat.APPLIED) <= set(compat.patch_reasons())
    assert all(compat.patch_reasons().values()), "every patch documents its reason"


def test_guard_leaves_a_full_mmcv_alone(tmp_path):
    """With an ``mmcv.ops`` that imports for real the stand-in is not installed."""
    pkg = tmp_path / "mmcv"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '2.1.0'\n")
    (pkg / "ops" / "__init__.py").write_text("def nms(*a):\n    return 'real'\n")
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("cm", {str(COMPAT_FILE)!r})
        cm = importlib.util.module_from_spec(spec); spec.loader.exec_module(cm)
        assert cm.install_mmcv_ops_standin() is False
        import mmcv.ops
        assert not cm.is_standin(mmcv.ops) and mmcv.ops.nms() == "real"
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


def test_mmengine_package_utils_work_without_pkg_resources(compat):
    import mmengine.utils

    path = Path(mmengine.utils.get_installed_path("mmengine"))
    assert (path / "__init__.py").is_file()
    assert mmengine.utils.is_installed("mmengine")


def test_mmengine_loads_checkpoints_with_numpy_meta(compat, tmp_path):
    import torch
    from mmengine.runner import load_checkpoint

    model = torch.nn.Linear(3, 2)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {k: torch.ones_like(v) for k, v in model.state_dict().items()},
                "meta": {"dataset_meta": {"sigmas": np.full(17, 0.05)}}}, ckpt)
    out = load_checkpoint(model, str(ckpt), map_location="cpu")
    assert torch.equal(model.weight.detach(), torch.ones(2, 3))
    assert isinstance(out["meta"]["dataset_meta"]["sigmas"], np.ndarray)


def test_msra_heatmap_encode_argmax(compat):
    _require("mmpose")
    from mmpose.codecs import MSRAHeatmap

    codec = MSRAHeatmap(input_size=(64, 128), heatmap_size=(32, 64), sigma=2)
    # (x, y) in the 64x128 (w x h) input; the heatmap is 2x smaller
    keypoints = np.array([[[20.0, 50.0], [40.0, 100.0], [6.0, 10.0]]], dtype=np.float32)
    visible = np.ones((1, 3), dtype=np.float32)
    enc = codec.encode(keypoints, visible)
    heatmaps = enc["heatmaps"]
    assert heatmaps.shape == (3, 64, 32)  # (K, H, W)
    np.testing.assert_array_equal(enc["keypoint_weights"], np.ones((1, 3)))
    for k, (x, y) in enumerate(keypoints[0]):
        row, col = np.unravel_index(np.argmax(heatmaps[k]), heatmaps[k].shape)
        assert (col, row) == (int(x / 2), int(y / 2))
        assert heatmaps[k].max() == pytest.approx(1.0)
    decoded, scores = codec.decode(heatmaps)
    np.testing.assert_allclose(decoded[0], keypoints[0], atol=2.0)
