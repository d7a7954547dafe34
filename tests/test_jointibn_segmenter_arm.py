"""Issue 18: the jointibn comparison's arms with segmenter (mediapipe) masks. The runner plans them with the
segmenter's mask root and ON_MISSING empty under a hash of their own; it extracts the masks once, beside the
datasets, without touching SynthPed's exact masks/; the annotation index gives each dataset's image its own
segmenter mask when several datasets share file names, and no fall-back to the exact mask."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastreid_ext.data.annotations import AnnotationIndex
from fastreid_ext.experiments import runner
from fastreid_ext.experiments.comparisons import get_comparison

ROOT = Path(__file__).resolve().parents[1]
REL = "bounding_box_train/0001_c1s1_000001_00.jpg"  # the same relative name in every domain (as SynthPed's)
MP_ARMS = ["MNv2 joint + bg removal (mediapipe masks)", "MNv2 single + bg removal (mediapipe masks)"]


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode="L").save(path)


def _image(path, h=64, w=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.setattr(runner, "ROOT", ROOT)


def _argv_value(argv, key):
    return argv[len(argv) - 1 - argv[::-1].index(key) + 1] if key in argv else None


@pytest.mark.parametrize("budget", ["default", "smoke"])
def test_mediapipe_arms_plan_mask_roots_and_own_hashes(at_root, tmp_path, monkeypatch, budget):
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "ds"))
    comp = get_comparison("jointibn")
    p = runner.plan(comp, [0], tmp_path / "exp", budget=budget,
                    arms=MP_ARMS + ["MNv2 joint + bg removal", "MNv2 single + bg removal"])
    by = {t.stage.name: t for t in p["stages"].values()}
    # the folder holding SynthPedA/B/C: the datasets root itself, or synthped/tiny/ for the smoke budget's preset
    parent = tmp_path / "ds" if budget == "default" else tmp_path / "ds" / "synthped" / "tiny"
    for mp, exact, cfg in (("joint_bg_mp", "joint_bg", "joint_mnv2.yml"), ("single_bg_mp", "single_bg",
                                                                         "single_mnv2.yml")):
        a, b = by[mp].argv, by[exact].argv
        assert a[2] == b[2] == f"projects/JointIBN/configs/SynthPed/{cfg}"
        assert json.loads(_argv_value(a, "DATASETS.ANNOTATIONS.MASK_ROOTS")) == [str(parent / "masks_mediapipe")]
        assert _argv_value(a, "DATASETS.ANNOTATIONS.ON_MISSING") == "empty"
        assert "DATASETS.ANNOTATIONS.MASK_ROOTS" not in b and "DATASETS.ANNOTATIONS.ON_MISSING" not in b
        assert by[mp].key != by[exact].key and by[mp].out_dir != by[exact].out_dir
        # same budget: apart from the mask source (and where the run writes), the commands are the same
        strip = {"DATASETS.ANNOTATIONS.MASK_ROOTS", "DATASETS.ANNOTATIONS.ON_MISSING", "OUTPUT_DIR"}

        def pairs(argv):
            rest = argv[3:]
            return [(k, v) for k, v in zip(rest[::2], rest[1::2]) if k not in strip]

        assert pairs(a) == pairs(b)
        assert by[mp].stage.masks == "mediapipe" and "segmenter_masks" in by[mp].stage.measure
    assert by["joint_bg_mp"].key != by["single_bg_mp"].key
    # the mask root is not in the hash: another datasets location is the same run
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "elsewhere"))
    p2 = runner.plan(comp, [0], tmp_path / "exp", budget=budget, arms=MP_ARMS)
    assert {t.key for t in p2["stages"].values()} == {by["joint_bg_mp"].key, by["single_bg_mp"].key}


def test_masks_stage_needs_synthped(at_root, tmp_path):
    cfg = runner._stage_cfg("projects/JointIBN/configs/SynthPed/joint_mnv2.yml",
                            ["DATASETS.NAMES", '("Market1501",)', "DATASETS.TESTS", '("DukeMTMC",)'])
    with pytest.raises(ValueError, match="SynthPed datasets only"):
        runner.segmenter_mask_roots(cfg, "mediapipe")


def _two_domains(parent):
    """SynthPedA and SynthPedC under ``parent`` with one image of the same relative name each, exact masks in
    their masks/, and mediapipe-like masks in parent/masks_mediapipe/<domain>/ that differ between the two."""
    exact = np.zeros((64, 32), np.uint8)
    exact[:, :16] = 255
    mp = {"SynthPedA": np.zeros((64, 32), np.uint8), "SynthPedC": np.zeros((64, 32), np.uint8)}
    mp["SynthPedA"][:32] = 255
    mp["SynthPedC"][32:] = 255
    for dom in ("SynthPedA", "SynthPedC"):
        _image(parent / dom / REL)
        _png(parent / dom / "masks" / REL.replace(".jpg", ".png"), exact)
        _png(parent / "masks_mediapipe" / dom / REL.replace(".jpg", ".png"), mp[dom])
    return exact, mp


def test_annotation_index_gives_each_domain_its_segmenter_mask(tmp_path):
    exact, mp = _two_domains(tmp_path)
    idx = AnnotationIndex(mask_roots=[str(tmp_path / "masks_mediapipe")])
    for dom in ("SynthPedA", "SynthPedC"):
        assert np.array_equal(idx.mask(str(tmp_path / dom / REL)), mp[dom])
    # an image the segmenter found no person in has no mask (ON_MISSING decides), not the exact one
    os.remove(tmp_path / "masks_mediapipe" / "SynthPedC" / REL.replace(".jpg", ".png"))
    assert idx.mask_path(str(tmp_path / "SynthPedC" / REL)) is None
    # without MASK_ROOTS: the dataset's own (exact) masks, found by search
    assert np.array_equal(AnnotationIndex().mask(str(tmp_path / "SynthPedC" / REL)), exact)


def test_annotation_index_two_mask_roots(tmp_path):
    """Two roots (datasets in two folders, e.g. two SynthPed presets): each image gets the mask of its own."""
    _, mp1 = _two_domains(tmp_path / "p1")
    _, mp2 = _two_domains(tmp_path / "p2")
    mp2["SynthPedA"] = 255 - mp2["SynthPedA"]  # p2's masks differ from p1's
    _png(tmp_path / "p2" / "masks_mediapipe" / "SynthPedA" / REL.replace(".jpg", ".png"), mp2["SynthPedA"])
    idx = AnnotationIndex(mask_roots=[str(tmp_path / p / "masks_mediapipe") for p in ("p1", "p2")])
    assert np.array_equal(idx.mask(str(tmp_path / "p1" / "SynthPedA" / REL)), mp1["SynthPedA"])
    assert np.array_equal(idx.mask(str(tmp_path / "p1" / "SynthPedC" / REL)), mp1["SynthPedC"])
    assert np.array_equal(idx.mask(str(tmp_path / "p2" / "SynthPedA" / REL)), mp2["SynthPedA"])


class _FakeSegmenter:
    """A backend: the top half of every image is the person, except in images named *_000002_00.jpg (none)."""

    name = "fake"
    default_batch_size = 2
    calls = []

    def signature(self):
        return {"backend": "fake"}

    def predict(self, images, paths=None):
        type(self).calls.extend(paths)
        out = []
        for img, p in zip(images, paths):
            m = np.zeros(img.shape[:2], np.float32)
            m[: img.shape[0] // 2] = 1.0
            out.append(None if p.endswith("_000002_00.jpg") else m)
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_prepare_writes_separate_root_once_and_resumes(tmp_path, monkeypatch):
    from fastreid_ext.segmentation import backends

    monkeypatch.setitem(backends.BACKENDS, "fake", _FakeSegmenter)
    _FakeSegmenter.calls = []
    ds = tmp_path / "SynthPedA"
    exact = np.zeros((64, 32), np.uint8)
    exact[:, :16] = 255  # left half; the fake's top half: IoU = 512 / 1536
    names = [f"query/0001_c1s1_00000{i}_00.jpg" for i in (1, 2, 3)] + ["bounding_box_test/0002_c2s1_000004_00.jpg"]
    for n in names:
        _image(ds / n)
        _png(ds / "masks" / n.replace(".jpg", ".png"), exact)
    before = _digest(ds)
    info = runner.prepare_segmenter_masks(str(ds), "fake")
    out = tmp_path / "masks_fake" / "SynthPedA"
    assert info["masks"] == str(out)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == sorted(n.replace(".jpg", ".png") for n in names if "_000002_" not in n)
    top = np.zeros((64, 32), np.uint8)
    top[:32] = 255
    assert np.array_equal(np.asarray(Image.open(out / "query/0001_c1s1_000001_00.png")), top)
    assert _digest(ds) == before  # the exact masks (and the images) untouched
    assert info["images"] == 4 and info["no_person"] == 1
    assert info["no_person_fraction"] == pytest.approx(0.25)
    assert info["iou_exact"] == pytest.approx(512 / 1536)
    assert json.loads((out / "_done.json").read_text())["no_person"] == 1
    # done once: a second call reads _done.json, the segmenter is not asked again
    n_calls = len(_FakeSegmenter.calls)
    assert runner.prepare_segmenter_masks(str(ds), "fake") == info
    assert len(_FakeSegmenter.calls) == n_calls
    # interrupted (no _done.json): a rerun computes only what is missing
    (out / "_done.json").unlink()
    (out / "query/0001_c1s1_000003_00.png").unlink()
    _FakeSegmenter.calls = []
    runner.prepare_segmenter_masks(str(ds), "fake")
    assert sorted(Path(p).name for p in _FakeSegmenter.calls) == ["0001_c1s1_000002_00.jpg", "0001_c1s1_000003_00.jpg"]



def test_prepare_only_the_splits_a_run_reads(tmp_path, monkeypatch):
    """A training set's masks cover its train folder only, a test set's its query + gallery; each part has its own
    done marker, and an unknown part is refused."""
    from fastreid_ext.segmentation import backends

    monkeypatch.setitem(backends.BACKENDS, "fake", _FakeSegmenter)
    ds = tmp_path / "SynthPedC"
    names = ["bounding_box_train/0003_c1s1_000005_00.jpg", "query/0001_c1s1_000001_00.jpg",
             "bounding_box_test/0002_c2s1_000004_00.jpg"]
    for n in names:
        _image(ds / n)
        _png(ds / "masks" / n.replace(".jpg", ".png"), np.full((64, 32), 255, np.uint8))
    out = tmp_path / "masks_fake" / "SynthPedC"
    _FakeSegmenter.calls = []
    info = runner.prepare_segmenter_masks(str(ds), "fake", "train")
    assert [Path(p).name for p in _FakeSegmenter.calls] == ["0003_c1s1_000005_00.jpg"]
    assert info["images"] == 1 and info["part"] == "train" and (out / "_done_train.json").is_file()
    _FakeSegmenter.calls = []
    info = runner.prepare_segmenter_masks(str(ds), "fake", "test")
    assert sorted(Path(p).name for p in _FakeSegmenter.calls) == ["0001_c1s1_000001_00.jpg", "0002_c2s1_000004_00.jpg"]
    assert info["images"] == 2 and not (out / "_done.json").exists()
    with pytest.raises(ValueError, match="part"):
        runner.prepare_segmenter_masks(str(ds), "fake", "val")

def test_mediapipe_on_three_synthped_images(tmp_path):
    """The real segmenter on three SynthPed images (~1 s): masks in the separate root, exact masks untouched, the
    masks overlap the exact ones."""
    pytest.importorskip("mediapipe")
    from fastreid_ext.data.synthped import generate_dataset

    src = generate_dataset(tmp_path / "gen", domain="SynthPedB", seed=0, num_train_ids=1, num_test_ids=1,
                           preset="tiny", progress=False, workers=1)
    ds = tmp_path / "ds" / "SynthPedB"
    picked = sorted(Path(src).glob("query/*.jpg"))[:2] + sorted(Path(src).glob("bounding_box_test/*.jpg"))[:1]
    assert len(picked) == 3
    for p in picked:
        rel = p.relative_to(src)
        (ds / rel.parent).mkdir(parents=True, exist_ok=True)
        (ds / rel).write_bytes(p.read_bytes())
        m = Path(src) / "masks" / rel.with_suffix(".png")
        (ds / "masks" / rel.parent).mkdir(parents=True, exist_ok=True)
        (ds / "masks" / rel.with_suffix(".png")).write_bytes(m.read_bytes())
    before = _digest(ds)
    info = runner.prepare_segmenter_masks(str(ds), "mediapipe")
    assert _digest(ds) == before
    out = tmp_path / "ds" / "masks_mediapipe" / "SynthPedB"
    assert len(list(out.rglob("*.png"))) + info["no_person"] == 3
    assert json.loads((out / "_backend.json").read_text())["backend"] == "mediapipe"
    if info["no_person"] < 3:
        assert info["iou_exact"] > 0.3


class _ExactButSome:
    """A backend answering SynthPed's exact mask, except no person in images whose frame number is odd."""

    name = "exactish"
    default_batch_size = 4

    def signature(self):
        return {"backend": "exactish"}

    def predict(self, images, paths=None):
        out = []
        for p in map(Path, paths):
            if int(p.stem.split("_")[2]) % 2:
                out.append(None)
            else:
                m = np.asarray(Image.open(p.parent.parent / "masks" / p.parent.name / (p.stem + ".png")))
                out.append((m > 0).astype(np.float32))
        return out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_prepare_and_measure_joint_run(at_root, tmp_path, monkeypatch):
    """Joint A + C training, B test: the runner generates the datasets, extracts the backend's masks of the three
    into one root, and the run's config finds them (measurement segmenter_masks through the loader's index)."""
    from fastreid_ext.experiments.comparisons import Comparison, Stage, Arm
    from fastreid_ext.joint_ibn.measures import segmenter_masks
    from fastreid_ext.segmentation import backends

    monkeypatch.setitem(backends.BACKENDS, "exactish", _ExactButSome)
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path / "ds"))
    small = ("DATASETS.SYNTHPED.PRESET", "tiny", "DATASETS.SYNTHPED.NUM_TRAIN_IDS", "1",
             "DATASETS.SYNTHPED.NUM_TEST_IDS", "1", "DATASETS.SYNTHPED.SEED", "0")
    comp = Comparison(name="ji_mp_test", description="", metrics=[], arms=[Arm("x", ("s",))],
                      stages={"s": Stage("s", "projects/JointIBN/configs/SynthPed/joint_mnv2.yml", small,
                                         masks="exactish")})
    (task,) = runner.plan(comp, [0], tmp_path / "exp")["stages"].values()
    runner.prepare_datasets([task], workers=1)
    parent = tmp_path / "ds" / "synthped" / "tiny-tr1-te1-seed0"
    assert sorted(p.name for p in (parent / "masks_exactish").iterdir()) == ["SynthPedA", "SynthPedB", "SynthPedC"]
    for dom, part in (("SynthPedA", "train"), ("SynthPedB", "test"), ("SynthPedC", "train")):
        assert (parent / "masks_exactish" / dom / f"_done_{part}.json").is_file()
    # only the splits the run reads: the train sets' train folders, the test set's query + gallery
    assert not list((parent / "masks_exactish" / "SynthPedA").glob("query/*.png"))
    assert not list((parent / "masks_exactish" / "SynthPedB").glob("bounding_box_train/*.png"))
    cfg = runner._stage_cfg(task.stage.config, task.argv[3:])
    assert list(cfg.DATASETS.ANNOTATIONS.MASK_ROOTS) == [str(parent / "masks_exactish")]
    res = segmenter_masks(cfg, "unused")

    def odd(files):
        return sum(int(p.stem.split("_")[2]) % 2 for p in files) / len(files)

    test_imgs = list((parent / "SynthPedB").glob("query/*.jpg")) + list((parent / "SynthPedB").glob(
        "bounding_box_test/*.jpg"))
    train_imgs = [p for d in ("SynthPedA", "SynthPedC") for p in (parent / d).glob("bounding_box_train/*.jpg")]
    assert res["masks/SynthPedB/IoU"] == pytest.approx(1.0) and res["masks/train/IoU"] == pytest.approx(1.0)
    assert res["masks/SynthPedB/no_person"] == pytest.approx(odd(test_imgs))
    assert res["masks/train/no_person"] == pytest.approx(odd(train_imgs))
    assert 0 < odd(train_imgs) < 1
