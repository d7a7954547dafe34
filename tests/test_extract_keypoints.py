"""Keypoint targets (issue 3): tools/extract_keypoints.py and fastreid_ext.pose.

Backends run for real (mmpose HRNet with random weights, mediapipe BlazePose); the resume tests use a
cheap fake backend so that they test the bookkeeping, not a model."""
import importlib.util
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastreid_ext.data.annotations import COCO17_NAMES, AnnotationIndex, load_keypoint_file, save_keypoint_file
from fastreid_ext.pose import (BLAZEPOSE_TO_COCO17, OPENPOSE18_TO_COCO17, KeypointBackend, check_coverage,
                               compare_keypoints, extract_keypoints, import_keypoints, partial_path)
from fastreid_ext.pose import cli
from fastreid_ext.pose.extract import read_partial

REPO = Path(__file__).resolve().parents[1]
MARKET = (REPO / ".." / "shared" / "realdata" / "market_samples").resolve()


def _require(*mods):
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (bash tools/install.sh)")


def _market_images():
    files = sorted(MARKET.glob("*.jpg")) if MARKET.is_dir() else []
    if not files:
        pytest.skip(f"real Market-1501 crops not found at {MARKET} (../shared/realdata/market_samples is "
                    "research-only data that is not part of the repository)")
    return files


def _make_dataset(root: Path, layout=None):
    """Tiny Market-like folder of random 64x32 JPEGs; returns the relative paths."""
    layout = layout or {"bounding_box_train": 5, "query": 2, "bounding_box_test": 3}
    rng = np.random.RandomState(0)
    rels = []
    for j, (sub, n) in enumerate(layout.items()):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rel = f"{sub}/{i + 1:04d}_c{j + 1}s1_{i:06d}_00.jpg"
            cv2.imwrite(str(root / rel), (rng.rand(64, 32, 3) * 255).astype(np.uint8))
            rels.append(rel)
    return sorted(rels)


class CountingBackend(KeypointBackend):
    """Deterministic fake: keypoint k of an image at (k, mean intensity); raises after ``fail_after``
    images (``exc``) to simulate a crash or Ctrl-C."""

    name = "fake"

    def __init__(self, fail_after=None, exc=KeyboardInterrupt):
        self.seen = []
        self.fail_after, self.exc = fail_after, exc

    def predict(self, images):
        out = []
        for img in images:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise self.exc("simulated interruption")
            self.seen.append(float(img.mean()))
            k = np.zeros((17, 3), np.float32)
            k[:, 0] = np.arange(17)
            k[:, 1] = float(img.mean()) % img.shape[0]
            k[:, 2] = 1.0
            out.append(k)
        return out


def _check_file(path, expected_rels):
    data = json.loads(Path(path).read_text())
    assert data["format"] == "coco17" and data["keypoint_names"] == list(COCO17_NAMES)
    kps = load_keypoint_file(path)
    assert sorted(kps) == sorted(expected_rels)
    for k in kps.values():
        assert k.shape == (17, 3) and np.isfinite(k).all()
        assert (k[:, 2] >= 0).all() and (k[:, 2] <= 1).all()
    return data, kps


# ----------------------------------------------------------------------------------------------------
# resumable extraction
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_resume_after_interruption(tmp_path, exc):
    rels = _make_dataset(tmp_path)
    crash = CountingBackend(fail_after=6, exc=exc)
    with pytest.raises(exc):
        extract_keypoints(tmp_path, crash, batch_size=3, progress=False)
    assert not (tmp_path / "keypoints.json").exists()
    header, done = read_partial(partial_path(tmp_path / "keypoints.json"))
    assert header["signature"] == {"backend": "fake"}
    assert sorted(done) == rels[:6]  # two full batches flushed, the third lost with the crash
    # a hard kill in the middle of a line: the cut line is ignored and not glued to the next record
    with open(partial_path(tmp_path / "keypoints.json"), "a") as f:
        f.write('{"image": "bounding_box_train/0005_c1s1_00')

    again = CountingBackend()
    res = extract_keypoints(tmp_path, again, batch_size=3, progress=False)
    assert len(again.seen) == len(rels) - 6, "images done before the interruption were recomputed"
    assert res.num_reused == 6 and res.num_computed == len(rels) - 6
    _, kps = _check_file(tmp_path / "keypoints.json", rels)
    assert not partial_path(tmp_path / "keypoints.json").exists()
    found = AnnotationIndex().keypoints(str(tmp_path / rels[0]))  # found at the dataset root by search
    np.testing.assert_array_equal(found, kps[rels[0]])
    ref = CountingBackend()
    for rel in rels:  # every entry equals a fresh computation
        expect = ref.predict([cv2.imread(str(tmp_path / rel))])[0]
        np.testing.assert_allclose(kps[rel], expect, atol=1e-3)

    # a third run with everything done computes nothing; a new image is the only one computed
    third = CountingBackend()
    extract_keypoints(tmp_path, third, batch_size=3, progress=False)
    assert third.seen == []
    cv2.imwrite(str(tmp_path / "query" / "0099_c2s1_000001_00.jpg"), np.full((64, 32, 3), 7, np.uint8))
    fourth = CountingBackend()
    extract_keypoints(tmp_path, fourth, batch_size=3, progress=False)
    assert len(fourth.seen) == 1
    assert len(load_keypoint_file(tmp_path / "keypoints.json")) == len(rels) + 1


def test_cli_interrupt_resume_and_guards(tmp_path, monkeypatch, capsys):
    rels = _make_dataset(tmp_path, {"query": 4, "bounding_box_test": 4})
    out = tmp_path / "kp" / "keypoints.json"  # keys relative to the output's folder
    backend = CountingBackend(fail_after=4)
    monkeypatch.setattr("fastreid_ext.pose.backends.build_backend", lambda name, **kw: backend)
    argv = [str(tmp_path), "--backend", "mediapipe", "--output", str(out), "--batch-size", "2", "--no-progress"]
    assert cli.main(argv) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    backend = CountingBackend()
    assert cli.main(argv) == 0
    assert len(backend.seen) == 4
    _check_file(out, [f"../{r}" for r in rels])
    # the data side reads it: keys relative to the file's folder resolve to the images
    index = AnnotationIndex(keypoint_files=[str(out)], search=False)
    assert all(index.keypoints(str(tmp_path / r)) is not None for r in rels)
    assert cli.main([str(tmp_path), "--check", "-o", str(out)]) == 0
    # keypoints written by something else (SynthPed's exact ones, an import) are never clobbered
    save_keypoint_file(tmp_path / "keypoints.json", {})
    with pytest.raises(FileExistsError):
        extract_keypoints(tmp_path, CountingBackend(), progress=False)
    # a partial file of another backend is not mixed in
    part = partial_path(tmp_path / "other.json")
    part.write_text(json.dumps({"header": {"version": 1, "signature": {"backend": "mmpose"}}}) + "\n")
    with pytest.raises(RuntimeError, match="overwrite"):
        extract_keypoints(tmp_path, CountingBackend(), tmp_path / "other.json", progress=False)
    monkeypatch.setattr("fastreid_ext.pose.backends.build_backend", lambda name, **kw: CountingBackend())
    assert cli.main([str(tmp_path), "--backend", "mediapipe", "-o", str(tmp_path / "other.json")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    extract_keypoints(tmp_path, CountingBackend(), tmp_path / "other.json", progress=False, overwrite=True)


def test_mask_folder_and_subdirs_are_respected(tmp_path):
    rels = _make_dataset(tmp_path, {"bounding_box_train": 2, "query": 1, "gt_bbox": 2})
    (tmp_path / "masks" / "query").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "masks" / "query" / "x.png"), np.zeros((4, 4), np.uint8))
    extract_keypoints(tmp_path, CountingBackend(), subdirs=["bounding_box_train", "query"], progress=False)
    _check_file(tmp_path / "keypoints.json", [r for r in rels if not r.startswith("gt_bbox")])


# ----------------------------------------------------------------------------------------------------
# coverage check
# ----------------------------------------------------------------------------------------------------
def test_check_reports_missing_images(tmp_path, capsys):
    rels = _make_dataset(tmp_path)
    missing = [rels[1], rels[7]]
    kps = {r: np.ones((17, 3), np.float32) for r in rels if r not in missing}
    kps["bounding_box_train/not_an_image_here.jpg"] = np.ones((17, 3), np.float32)
    kps[rels[0]] = np.zeros((17, 3), np.float32)  # covered, but nothing detected
    save_keypoint_file(tmp_path / "keypoints.json", kps)
    report = check_coverage(tmp_path)
    assert not report.ok and report.num_images == len(rels) and report.num_covered == len(rels) - 2
    assert report.missing == sorted(missing)
    assert report.extra == ["bounding_box_train/not_an_image_here.jpg"]
    assert report.undetected == [rels[0]]
    assert cli.main([str(tmp_path), "--check", "--missing-list", str(tmp_path / "missing.txt")]) == 1
    text = capsys.readouterr().out
    assert all(m in text for m in missing) and "NOT OK" in text
    assert (tmp_path / "missing.txt").read_text().split() == sorted(missing)
    # restricted to the subfolders that are covered
    sub = check_coverage(tmp_path, subdirs=["bounding_box_test"])
    assert sub.missing == [m for m in missing if m.startswith("bounding_box_test")]


# ----------------------------------------------------------------------------------------------------
# import: COCO json and OpenPose
# ----------------------------------------------------------------------------------------------------
def test_import_coco_json(tmp_path):
    rels = _make_dataset(tmp_path, {"query": 2, "bounding_box_test": 2})
    kp_a = np.stack([np.arange(17) * 2.0, np.arange(17) + 10.0, np.tile([2, 1, 0], 6)[:17]], 1)
    kp_b = np.stack([np.arange(17) + 0.5, np.full(17, 3.0), np.full(17, 2.0)], 1)
    kp_small = np.stack([np.zeros(17), np.zeros(17), np.r_[np.full(3, 2.0), np.zeros(14)]], 1)
    coco = {
        "images": [{"id": 1, "file_name": Path(rels[0]).name}, {"id": 2, "file_name": rels[2]},
                   {"id": 3, "file_name": "somewhere_else.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 20], "area": 200,
             "keypoints": kp_a.ravel().tolist(), "num_keypoints": 12},
            {"id": 11, "image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
             "keypoints": kp_small.ravel().tolist()},  # a second person with fewer points: ignored
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [0, 0, 30, 60], "area": 1800,
             "keypoints": kp_b.ravel().tolist()},
            {"id": 13, "image_id": 3, "category_id": 1, "keypoints": kp_b.ravel().tolist()},
        ],
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES)}],
    }
    src = tmp_path / "coco.json"
    src.write_text(json.dumps(coco))
    res = import_keypoints(tmp_path, src, occluded_score=0.0)
    assert res.format == "coco" and res.matched == 2
    assert res.missing == [rels[1], rels[3]] and res.unmatched == ["somewhere_else.jpg"]
    kps = load_keypoint_file(tmp_path / "keypoints.json")
    assert sorted(kps) == [rels[0], rels[2]]
    np.testing.assert_allclose(kps[rels[0]][:, :2], kp_a[:, :2])
    v = kp_a[:, 2]
    np.testing.assert_array_equal(kps[rels[0]][:, 2], np.where(v == 2, 1.0, 0.0))  # v=1 -> 0, v=0 -> 0
    np.testing.assert_allclose(kps[rels[2]], np.c_[kp_b[:, :2], np.ones(17)])
    res = import_keypoints(tmp_path, src, overwrite=True, occluded_score=0.5)
    np.testing.assert_array_equal(load_keypoint_file(tmp_path / "keypoints.json")[rels[0]][:, 2],
                                  np.where(v == 2, 1.0, np.where(v == 1, 0.5, 0.0)))
    with pytest.raises(FileExistsError):
        import_keypoints(tmp_path, src)


def _openpose18(seed):
    """54 numbers: OpenPose point i at (100 * seed + i, 200 + i) with confidence (i + 1) / 20."""
    i = np.arange(18, dtype=np.float64)
    return np.stack([100 * seed + i, 200 + i, (i + 1) / 20], 1).ravel().tolist()


def test_import_openpose18(tmp_path, capsys):
    rels = _make_dataset(tmp_path, {"query": 2, "bounding_box_test": 2})
    # the index map written out by hand from the two orders (not derived from the module's table)
    expected = [0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10]
    assert list(OPENPOSE18_TO_COCO17) == expected
    # (a) a folder of OpenPose per-image outputs, <stem>_keypoints.json, mirroring the dataset
    op = tmp_path / "openpose_out"
    for n, rel in enumerate(rels[:3]):
        f = op / (os.path.splitext(rel)[0] + "_keypoints.json")
        f.parent.mkdir(parents=True, exist_ok=True)
        people = [{"pose_keypoints_2d": [0.0] * 54}, {"pose_keypoints_2d": _openpose18(n + 1)}]
        f.write_text(json.dumps({"version": 1.3, "people": people}))
    (op / "query" / "stray_frame_keypoints.json").write_text(json.dumps({"people": []}))
    res = import_keypoints(tmp_path, op, tmp_path / "op.json")
    assert res.format == "openpose" and res.matched == 3
    assert res.missing == [rels[3]] and res.unmatched == ["query/stray_frame"]
    kps = load_keypoint_file(tmp_path / "op.json")
    for n, rel in enumerate(rels[:3]):
        got = kps[rel]
        for k, src in enumerate(expected):
            assert got[k, 0] == pytest.approx(100 * (n + 1) + src) and got[k, 1] == pytest.approx(200 + src)
            assert got[k, 2] == pytest.approx((src + 1) / 20, abs=1e-3)
        assert 1 not in expected  # the neck is dropped
    # (b) one JSON mapping name -> 54 numbers (bare file names, absolute paths, triples)
    mapping = {Path(rels[0]).name: _openpose18(7),
               str((tmp_path / rels[1]).resolve()): np.asarray(_openpose18(8)).reshape(18, 3).tolist(),
               "unknown.jpg": _openpose18(9)}
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    assert cli.main([str(tmp_path), "--backend", "import", "--source", str(tmp_path / "map.json"),
                     "-o", str(tmp_path / "map_kp.json")]) == 0
    text = capsys.readouterr().out
    assert "unknown.jpg" in text and rels[2] in text and rels[3] in text  # reported, not covered
    kps = load_keypoint_file(tmp_path / "map_kp.json")
    assert sorted(kps) == sorted(rels[:2])
    np.testing.assert_allclose(kps[rels[0]][:, 0], 700 + np.asarray(expected))
    np.testing.assert_allclose(kps[rels[1]][:, 1], 200 + np.asarray(expected))


def test_import_reports_ambiguous_names(tmp_path):
    _make_dataset(tmp_path, {"query": 1, "bounding_box_test": 1})
    (tmp_path / "bounding_box_test" / "0001_c1s1_000000_00.jpg").write_bytes(
        (tmp_path / "query" / "0001_c1s1_000000_00.jpg").read_bytes())
    (tmp_path / "m.json").write_text(json.dumps({"0001_c1s1_000000_00.jpg": _openpose18(1),
                                                 "query/0001_c1s1_000000_00.jpg": _openpose18(2)}))
    res = import_keypoints(tmp_path, tmp_path / "m.json")
    assert list(res.ambiguous) == ["0001_c1s1_000000_00.jpg"] and res.matched == 1
    assert load_keypoint_file(tmp_path / "keypoints.json")["query/0001_c1s1_000000_00.jpg"][0, 0] == 200


# ----------------------------------------------------------------------------------------------------
# real backends
# ----------------------------------------------------------------------------------------------------
def test_mmpose_hrnet_random_weights_writes_a_valid_file(tmp_path, caplog, monkeypatch):
    _require("mmpose", "mmengine", "mmcv", "mmdet")
    import logging

    for name in ("fastreid_ext", "fastreid_ext.pose", "fastreid_ext.pose.backends"):
        # an earlier in-process train_net run (FastReID's setup_logger) may have stopped propagation
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    from fastreid_ext.pose import MMPoseBackend

    rels = _make_dataset(tmp_path, {"query": 1, "bounding_box_test": 1})
    cv2.imwrite(str(tmp_path / "query" / "big_crop.png"), np.full((256, 128, 3), 90, np.uint8))
    rels = sorted(rels + ["query/big_crop.png"])
    with caplog.at_level("WARNING"):
        backend = MMPoseBackend(checkpoint=None, flip_test=False)  # HRNet-w32 config shipped with mmpose
    assert "RANDOM WEIGHTS" in caplog.text and "MEANINGLESS" in caplog.text
    assert "hrnet-w48" in backend.config and "coco-256x192" in backend.config
    res = extract_keypoints(tmp_path, backend, batch_size=2, progress=False)  # batches of 2 and 1
    assert res.num_computed == 3
    data, kps = _check_file(tmp_path / "keypoints.json", rels)
    assert data["extractor"]["backend"] == "mmpose" and data["extractor"]["checkpoint"] is None
    h, w = 256, 128
    for rel, k in kps.items():  # points with a score lie in their image
        hh, ww = (h, w) if rel.endswith(".png") else (64, 32)
        s = k[:, 2] > 0
        assert ((k[s, 0] >= -0.5) & (k[s, 0] <= ww - 0.5) & (k[s, 1] >= -0.5) & (k[s, 1] <= hh - 0.5)).all()


@pytest.fixture(scope="module")
def mediapipe_backend():
    _require("mediapipe")
    from fastreid_ext.pose import MediaPipeBackend

    backend = MediaPipeBackend()
    yield backend
    backend.close()


def test_blazepose_index_map():
    # nose, eye centres (2: left eye, 5: right eye), ears 7/8, shoulders 11/12 ... ankles 27/28
    assert BLAZEPOSE_TO_COCO17 == (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
    if importlib.util.find_spec("mediapipe") is not None:
        from mediapipe.python.solutions.pose import PoseLandmark

        for coco_name, b in zip(COCO17_NAMES, BLAZEPOSE_TO_COCO17):
            assert PoseLandmark(b).name.lower() == coco_name


def test_mediapipe_on_real_market_crops(tmp_path, mediapipe_backend):
    files = _market_images()
    out = tmp_path / "market_kp.json"  # read in place; only the keypoint file is written (elsewhere)
    res = extract_keypoints(MARKET, mediapipe_backend, out, progress=False)
    _, kps = _check_file(out, [os.path.relpath(f, tmp_path).replace(os.sep, "/") for f in files])
    detected = {r: k for r, k in kps.items() if k[:, 2].max() > 0}
    print(f"\nmediapipe on {len(files)} real Market crops: {len(detected)} detected, "
          f"{res.ms_per_image:.0f} ms/image, attempts {mediapipe_backend.attempt_counts}")
    assert len(detected) >= 0.7 * len(files), f"BlazePose found only {len(detected)}/{len(files)} people"
    plausible = 0
    for rel, k in detected.items():
        s = k[:, 2] > 0
        assert ((k[s, 0] >= -0.5) & (k[s, 0] <= 63.5) & (k[s, 1] >= -0.5) & (k[s, 1] <= 127.5)).all()
        y = k[:, 1]
        nose, sho, hip, knee = y[0], y[5:7].mean(), y[11:13].mean(), y[13:15].mean()
        plausible += bool(nose < sho < hip < knee and k[:, 2].mean() > 0.3)
    # Market people are upright: head above shoulders above hips above knees
    assert plausible >= 0.8 * len(detected), f"only {plausible}/{len(detected)} anatomically plausible"


def test_mediapipe_on_synthped_vs_exact_keypoints(tmp_path, mediapipe_backend):
    """SynthPed ships exact keypoints: measure BlazePose against them. SynthPed people are cartoon-like,
    so BlazePose misses many; the thresholds are far below what was measured (docs/keypoints.md) and
    only say 'a plausible fraction of the points is near the truth'."""
    try:
        from fastreid_ext.data.synthped.render import render_person, sample_identity
    except ImportError as e:
        pytest.skip(f"SynthPed renderer not importable: {e}")
    rng = np.random.default_rng(123)
    gt = {}
    for dom in ("SynthPedA", "SynthPedB", "SynthPedC"):
        for i in range(6):
            img, kp, _ = render_person(sample_identity(rng, dom), 1 + i % 3, rng, domain=dom)
            rel = f"{dom}/{i:04d}.jpg"
            (tmp_path / dom).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / rel), img)
            gt[rel] = kp
    save_keypoint_file(tmp_path / "exact.json", gt)
    extract_keypoints(tmp_path, mediapipe_backend, tmp_path / "mp.json", progress=False)
    pred = load_keypoint_file(tmp_path / "mp.json")
    stats = compare_keypoints(pred, gt, image_heights={r: 128 for r in gt})
    print(f"\nmediapipe on {len(gt)} SynthPed images: detection {stats['detection_rate']:.2f}, "
          f"PCK@0.1H {stats['pck@0.1']:.2f} (all points), {stats['pck_det@0.1']:.2f} (detected images), "
          f"median error {stats['median_error']:.3f} H")
    assert stats["detection_rate"] >= 0.3
    assert stats["pck_det@0.2"] >= 0.5  # where BlazePose finds the person, most points are near the truth
