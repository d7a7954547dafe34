"""Keypoints and masks survive FastReID-style augmentation; annotation lookup; clear errors on bad input."""
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

import fastreid_ext
from fastreid_ext.data import transforms as JT
from fastreid_ext.data.annotations import (COCO17_FLIP_PAIRS, AnnotationError, AnnotationIndex,
                                           save_keypoint_file)
from fastreid_ext.data.common import AnnotatedDataset

H, W = 128, 64


def _scene(seed=0):
    """An image with a distinct colour dot at each keypoint and a mask covering a body-like blob."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[20:110, 16:48] = 255
    kps = np.zeros((17, 3), np.float32)
    cells = rng.permutation(18)[:17]  # a 3 x 6 grid of well separated dot positions inside the mask
    for k, c in enumerate(cells):
        kps[k] = (22 + 9 * (c % 3), 28 + 15 * (c // 3), 1.0)
    # paint each keypoint as a 5x5 square whose red channel encodes its index
    for k in range(17):
        x, y = int(kps[k, 0]), int(kps[k, 1])
        img[y - 2:y + 3, x - 2:x + 3] = (10 * (k + 1), 255, 0)
    return Image.fromarray(img), kps, mask


def _check_consistent(sample, tol_red=15):
    img = np.asarray(sample["image"]) if isinstance(sample["image"], Image.Image) else \
        sample["image"].permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    kps = sample["keypoints"]
    mask = sample["mask"]
    checked = 0
    for k, (x, y, s) in enumerate(np.asarray(kps)):
        if s <= 0:
            continue
        xi, yi = int(round(x)), int(round(y))
        assert 0 <= xi < w and 0 <= yi < h
        if mask is not None:
            m = mask[yi, xi] if mask.ndim == 2 else mask[0, yi, xi]
            assert m > 0, f"keypoint {k} left the mask"
        r, g = img[yi, xi, 0], img[yi, xi, 1]
        if g > 200:  # the dot may be overpainted by a neighbour's dot; test the ones that are visible
            assert abs(float(r) - 10 * (k + 1)) <= tol_red, f"keypoint {k} lands on the dot of another"
            checked += 1
    return checked


def test_flip_mirrors_and_swaps_left_right():
    img, kps, mask = _scene()
    out = JT.hflip({"image": img, "keypoints": kps, "mask": mask})
    for a, b in COCO17_FLIP_PAIRS:
        assert out["keypoints"][a, 0] == W - 1 - kps[b, 0] and out["keypoints"][a, 1] == kps[b, 1]
    assert np.array_equal(out["mask"], mask[:, ::-1])
    # flipping twice is the identity
    back = JT.hflip(out)
    assert np.allclose(back["keypoints"], kps) and np.array_equal(back["mask"], mask)


@pytest.mark.parametrize("seed", range(6))
def test_random_crop_pad_resize_flip_keep_keypoints_on_their_dots_and_mask(seed):
    random.seed(seed)
    img, kps, mask = _scene(seed)
    t = JT.JointCompose([JT.JointResize((H, W)), JT.JointRandomResizedCrop((H, W), scale=(0.6, 1.0)),
                         JT.JointPadRandomCrop(8, (H, W)), JT.JointRandomHorizontalFlip(1.0)])
    out = t({"image": img, "keypoints": kps, "mask": mask})
    assert out["image"].size == (W, H) and out["mask"].shape == (H, W)
    # after a forced flip, the left shoulder keypoint sits on the dot painted for the right shoulder
    img_np = np.asarray(out["image"])
    x, y, s = out["keypoints"][5]
    if s > 0:
        assert abs(int(img_np[int(round(y)), int(round(x)), 0]) - 10 * 7) <= 15
    unflipped = dict(out, keypoints=out["keypoints"][JT.flip_permutation()])
    assert _check_consistent(unflipped) >= 3


def test_resize_scales_keypoints_and_mask():
    img, kps, mask = _scene()
    out = JT.JointResize((64, 32))({"image": img, "keypoints": kps, "mask": mask})
    assert np.allclose(out["keypoints"][:, 0], (kps[:, 0] + 0.5) * 0.5 - 0.5)
    assert out["mask"].shape == (64, 32) and set(np.unique(out["mask"])) <= {0, 255}


def test_keypoints_leaving_the_crop_get_zero_score():
    img, kps, mask = _scene()
    out = JT.crop_resize({"image": img, "keypoints": kps, "mask": mask}, (0, 0, 60, 64), (60, 64))
    outside = kps[:, 1] > 60
    assert (out["keypoints"][outside, 2] == 0).all() and (out["keypoints"][~outside, 2] == 1).all()


def test_build_joint_transforms_follows_fastreid_config_and_outputs_tensors():
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("configs/Base-SynthPed.yml")
    cfg.merge_from_list(["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "[64, 32]"])
    t = JT.build_joint_transforms(cfg, is_train=True)
    names = [type(x).__name__ for x in t.transforms]
    assert names[:4] == ["JointResize", "JointRandomResizedCrop", "JointPadRandomCrop", "JointRandomHorizontalFlip"]
    img, kps, mask = _scene()
    out = t({"image": img, "keypoints": kps, "mask": mask})
    assert out["image"].shape == (3, 64, 32) and out["image"].max() > 1.5  # FastReID's 0..255 scale
    assert out["mask"].shape == (1, 64, 32) and out["keypoints"].shape == (17, 3)
    cfg.INPUT.AFFINE.ENABLED = True
    with pytest.raises(NotImplementedError, match="keypoints and masks"):
        JT.build_joint_transforms(cfg, is_train=True)


def _write_dataset(tmp_path, n=3, with_mask=True):
    d = tmp_path / "ds"
    (d / "bounding_box_train").mkdir(parents=True)
    (d / "masks" / "bounding_box_train").mkdir(parents=True)
    items, kp = [], {}
    for i in range(n):
        img, kps, mask = _scene(i)
        rel = f"bounding_box_train/000{i + 1}_c1s1_00000{i}_00.jpg"
        img.save(d / rel, quality=95)
        if with_mask:
            Image.fromarray(mask).save(d / "masks" / rel.replace(".jpg", ".png"))
        kp[rel] = kps
        items.append((str(d / rel), f"ds_{i}", "ds_0"))
    save_keypoint_file(d / "keypoints.json", kp)
    return d, items


def test_annotation_index_finds_files_by_search_and_explicit_paths(tmp_path):
    d, items = _write_dataset(tmp_path)
    idx = AnnotationIndex()
    k = idx.keypoints(items[1][0])
    assert k.shape == (17, 3) and np.allclose(k, _scene(1)[1], atol=1e-3)
    assert idx.mask(items[1][0]).shape == (H, W)
    # explicit keypoint file somewhere else, relative keys resolved against its own folder
    other = tmp_path / "elsewhere.json"
    data = json.load(open(d / "keypoints.json"))
    data["images"] = {f"ds/{k}": v for k, v in data["images"].items()}
    json.dump(data, open(other, "w"))
    idx2 = AnnotationIndex(keypoint_files=[str(other)], search=False)
    assert np.allclose(idx2.keypoints(items[0][0]), idx.keypoints(items[0][0]))
    assert idx2.mask(items[0][0]) is None
    have, total, missing = idx2.coverage([i[0] for i in items] + [str(tmp_path / "nope.jpg")])
    assert (have, total) == (3, 4) and missing == [str(tmp_path / "nope.jpg")]


def test_annotated_dataset_outputs_and_missing_policy(tmp_path, caplog):
    d, items = _write_dataset(tmp_path, with_mask=False)
    t = JT.JointCompose([JT.JointResize((64, 32)), JT.JointToTensor()])
    ds = AnnotatedDataset(items, t, relabel=True, load_keypoints=True, load_masks=False)
    x = ds[0]
    assert x["images"].shape == (3, 64, 32) and x["keypoints"].shape == (17, 3) and "masks" not in x
    ds = AnnotatedDataset(items, t, load_keypoints=True, load_masks=True)
    with pytest.raises(AnnotationError, match="no mask for image .*0001_c1s1"):
        ds[0]
    ds = AnnotatedDataset(items, t, load_keypoints=True, load_masks=True, on_missing="empty")
    x = ds[0]
    assert "no mask for" in caplog.text and torch.all(x["masks"] == 1)
    # an image missing from the keypoint file
    (d / "bounding_box_train" / "0009_c1s1_000009_00.jpg").write_bytes(
        (d / "bounding_box_train" / "0001_c1s1_000000_00.jpg").read_bytes())
    ds = AnnotatedDataset(items + [(str(d / "bounding_box_train/0009_c1s1_000009_00.jpg"), "ds_9", "ds_0")], t,
                          load_keypoints=True)
    with pytest.raises(AnnotationError, match="0009_c1s1_000009_00.jpg"):
        ds[3]


def test_wrong_size_mask_is_an_error_naming_the_image(tmp_path):
    d, items = _write_dataset(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(d / "masks/bounding_box_train/0001_c1s1_000000_00.png")
    ds = AnnotatedDataset(items, JT.JointCompose([JT.JointToTensor()]), load_masks=True)
    with pytest.raises(AnnotationError, match="mask of .*0001_c1s1_000000_00.jpg is 10x10"):
        ds[0]


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = AnnotatedDataset([(str(bad), "x_1", "x_0")], JT.JointCompose([JT.JointToTensor()]))
    with pytest.raises(RuntimeError, match="cannot read image .*0001_c1s1_000001_00.jpg"):
        ds[0]


def test_missing_dataset_folder_names_path_and_how_to_create(tmp_path, monkeypatch):
    from fastreid_ext.data import build_dataset

    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Market-1501|bounding_box_train|FASTREID_DATASETS"):
        build_dataset("Market1501")
    cfg = fastreid_ext.get_cfg()
    cfg.DATASETS.SYNTHPED.AUTO_CREATE = False
    with pytest.raises(FileNotFoundError, match="make_synthetic.py --domain SynthPedB"):
        build_dataset("SynthPedB", cfg)
    with pytest.raises(FileNotFoundError, match="make_synthetic.py --domain SynthPedB"):
        build_dataset("SynthPedB", auto_create=False)  # an explicit argument, no config
    with pytest.raises(KeyError, match="not registered.*SynthPedA"):
        build_dataset("NoSuchSet")


def test_mask_extraction_skips_unreadable_images_and_refuses_another_backend(tmp_path, caplog, capsys):
    """Issue 17: an unreadable image is skipped with a warning (was: a crash at the same file on every re-run);
    resuming into a mask folder of another backend is refused (was: masks of two models mixed, recorded backend
    overwritten); Ctrl-C ends with exit code 130 and a one-line message, no traceback."""
    import json as _json
    import logging as _logging

    from fastreid_ext.segmentation import cli as seg_cli
    from fastreid_ext.segmentation.backends import MaskBackend
    from fastreid_ext.segmentation.extract import SIGNATURE_FILE, ResumeError, extract_masks

    class Fake(MaskBackend):
        def __init__(self, name="fake", interrupt=False):
            self.name, self.interrupt = name, interrupt

        def predict(self, images, paths=None):
            if self.interrupt:
                raise KeyboardInterrupt
            return [np.ones(im.shape[:2], np.float32) for im in images]

    root = tmp_path / "ds"
    (root / "query").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (16, 32), (i * 40, 0, 0)).save(root / "query" / f"000{i}_c1s1_000001_00.jpg")
    (root / "query" / "0009_c1s1_000001_00.jpg").write_bytes(b"")  # zero bytes: unreadable
    images = sorted((root / "query").glob("*.jpg"))
    with caplog.at_level(_logging.WARNING):
        stats = extract_masks(images, root, Fake(), progress=False, batch_size=2)
    assert stats.written == 3 and stats.unreadable == [str(root / "query" / "0009_c1s1_000001_00.jpg")]
    assert "0009_c1s1_000001_00.jpg" in caplog.text and "skipped" in caplog.text
    sig = (root / "masks" / SIGNATURE_FILE).read_text()
    with pytest.raises(ResumeError, match="written by .*fake.*not by .*other.*--overwrite"):
        extract_masks(images, root, Fake("other"), progress=False)
    assert (root / "masks" / SIGNATURE_FILE).read_text() == sig  # the record is not overwritten
    assert _json.loads(sig)["backend"] == "fake"

    # the command line: another backend -> "error: ...", Ctrl-C -> exit 130 without traceback
    for backend, code, text in ((Fake("other"), "error:", "written by"), (Fake("fake", interrupt=True), 130, None)):
        seg_cli.build_backend = lambda args, r, b=backend: b
        (root / "query" / "0003_c1s1_000001_00.jpg").write_bytes((root / "query" / "0000_c1s1_000001_00.jpg")
                                                                   .read_bytes())
        try:
            with pytest.raises(SystemExit) as e:
                seg_cli.main(["--root", str(root), "--no-progress"])
        finally:
            import importlib

            importlib.reload(seg_cli)
        if code == 130:
            assert e.value.code == 130 and "interrupted" in capsys.readouterr().err
        else:
            assert str(e.value.code).startswith(code) and text in str(e.value.code)


def test_synthped_folder_made_with_other_options_is_refused(datasets_root, tmp_path, monkeypatch):
    """Issue 17: a SynthPed folder generated with the tiny preset where a config asks for the default preset (the
    default preset's folder) was used silently; meta.json is now compared with DATASETS.SYNTHPED."""
    import shutil

    from fastreid_ext.data import build_dataset

    cfg = fastreid_ext.get_cfg()
    cfg.DATASETS.SYNTHPED.PRESET = "tiny"
    tiny = build_dataset("SynthPedA", cfg)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    shutil.copytree(tiny.data_dir, tmp_path / "SynthPedA")  # where the default preset lives
    with pytest.raises(ValueError, match="generated with other parameters.*preset.*DATASETS.SYNTHPED"):
        build_dataset("SynthPedA", fastreid_ext.get_cfg())  # the default preset
    cfg2 = fastreid_ext.get_cfg()
    cfg2.DATASETS.SYNTHPED.PRESET = "tiny"
    monkeypatch.setenv("FASTREID_DATASETS", str(datasets_root))
    assert len(build_dataset("SynthPedA", cfg2).train) == len(tiny.train)  # the matching folder still loads


def test_nan_keypoints_and_missing_mask_root_are_named(tmp_path):
    """Issue 17: NaN keypoints gave a NaN heatmap loss without naming the data; MASK_ROOTS pointing to a missing
    folder fell back silently to the dataset's own masks."""
    from fastreid_ext.data.annotations import load_keypoint_file, save_keypoint_file
    from fastreid_ext.data.build import annotation_index

    kps = np.ones((17, 3), np.float32)
    bad = kps.copy()
    bad[3, 0] = np.nan
    f = tmp_path / "keypoints.json"
    save_keypoint_file(f, {"a/0001_c1s1_000001_00.jpg": kps, "a/0002_c1s1_000001_00.jpg": bad})
    with pytest.raises(AnnotationError, match="keypoints.json: 1 image.* NaN/inf .*0002_c1s1_000001_00.jpg"):
        load_keypoint_file(f)
    cfg = fastreid_ext.get_cfg()
    cfg.DATASETS.ANNOTATIONS.MASK_ROOTS = [str(tmp_path / "no_masks_here")]
    with pytest.raises(AnnotationError, match="MASK_ROOTS names folder.*no_masks_here"):
        annotation_index(cfg)
    cfg.DATASETS.ANNOTATIONS.MASK_ROOTS = [str(tmp_path)]
    assert annotation_index(cfg).mask_roots  # an existing folder is accepted
