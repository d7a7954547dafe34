"""SynthPed: determinism, the Market-1501 layout contract, exact keypoints and masks, viewpoints,
domains, idempotence and interrupted runs, misalignment, preview and CLI."""
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from fastreid_ext.data.synthped import (COCO_KEYPOINT_NAMES, DOMAINS, FLIP_PAIRS, DatasetParameterMismatch,
                                        generate_dataset, make_preview, render_person, sample_identity)
from fastreid_ext.data.synthped import generate as gen

NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_00\.jpg$")
SPLITS = ("bounding_box_train", "bounding_box_test", "query")


@pytest.fixture(scope="module")
def tiny_a(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("sp"), "SynthPedA", preset="tiny", progress=False)


def _hashes(d: Path):
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _items(d, split):
    out = []
    for p in sorted((d / split).glob("*.jpg")):
        m = NAME.match(p.name)
        assert m, p.name
        out.append((p, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def _mask(d, rel):
    return cv2.imread(str(d / "masks" / (rel[:-4] + ".png")), cv2.IMREAD_UNCHANGED)


def test_deterministic_from_the_seed(tiny_a, tmp_path):
    again = generate_dataset(tmp_path / "a", "SynthPedA", preset="tiny", progress=False, workers=1)
    h1 = _hashes(tiny_a)
    assert len(h1) > 400 and _hashes(again) == h1  # same bytes, also with another number of processes
    other = generate_dataset(tmp_path / "b", "SynthPedA", preset="tiny", seed=5, progress=False)
    h2 = _hashes(other)
    jpgs = [k for k in h2 if k.endswith(".jpg")]
    assert sum(h1.get(k) != h2[k] for k in jpgs) > 0.9 * len(jpgs)
    assert json.loads((other / "meta.json").read_text())["seed"] == 5


def test_market_layout_contract(tiny_a):
    train, gallery, query = (_items(tiny_a, s) for s in SPLITS)
    meta = json.loads((tiny_a / "meta.json").read_text())
    assert meta["counts"]["bounding_box_train"] == len(train) and meta["counts"]["query"] == len(query)
    assert meta["counts"]["bounding_box_test"] == len(gallery) and meta["params"]["preset"] == "tiny"
    tr_ids = {i[1] for i in train}
    te_ids = {i[1] for i in gallery + query} - {0}
    assert len(tr_ids) == 16 and len(te_ids) == 12 and not tr_ids & te_ids and 0 not in tr_ids
    assert {i[1] for i in query} == te_ids
    assert min(tr_ids | te_ids) == 1
    frames = [i[3] for i in train + gallery + query]
    assert len(frames) == len(set(frames))
    assert all(1 <= i[2] <= DOMAINS["SynthPedA"].num_cameras for i in train + gallery + query)
    assert any(i[1] == 0 for i in gallery)  # distractors
    assert len(Counter((p, c) for _, p, c, _ in query)) == len(query)  # one query per (id, camera)
    for _, pid, cam, _ in query:  # every query has a gallery match in another camera
        assert any(g[1] == pid and g[2] != cam for g in gallery), (pid, cam)
    for pid in te_ids | tr_ids:
        assert len({c for _, p, c, _ in train + gallery + query if p == pid}) >= 2
    per_id = Counter(p for _, p, _, _ in train + gallery + query if p)
    assert 7 <= min(per_id.values()) and max(per_id.values()) <= 9
    kps = json.loads((tiny_a / "keypoints.json").read_text())
    assert kps["format"] == "coco17" and kps["keypoint_names"] == list(COCO_KEYPOINT_NAMES)
    all_rel = {f"{s}/{p.name}" for s in SPLITS for p in (tiny_a / s).glob("*.jpg")}
    assert set(kps["images"]) == all_rel
    for rel in sorted(all_rel):
        img = cv2.imread(str(tiny_a / rel))
        m = _mask(tiny_a, rel)
        assert img.shape == (128, 64, 3) and m.shape == img.shape[:2] and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}
        k = np.asarray(kps["images"][rel])
        assert k.shape == (17, 3) and set(np.unique(k[:, 2])) <= {0.0, 1.0}
    assert not list(tiny_a.parent.glob(".SynthPedA*"))  # no temporary folders left


def test_keypoints_are_on_the_mask_and_masks_plausible(tiny_a):
    kps = json.loads((tiny_a / "keypoints.json").read_text())["images"]
    on_mask = n_vis = 0
    fractions = []
    for rel, k in kps.items():
        k = np.asarray(k)
        m = _mask(tiny_a, rel) > 0
        h, w = m.shape
        if not NAME.match(rel.split("/")[1]).group(1) == "0000":  # distractors may be bad crops
            fractions.append(m.mean())
            assert 0.04 < m.mean() < 0.6, rel  # a person, neither empty nor the whole crop
            assert (k[:, 2] > 0).sum() >= 6, rel
        vis = k[:, 2] > 0
        assert ((k[vis, 0] >= 0) & (k[vis, 0] <= w - 1) & (k[vis, 1] >= 0) & (k[vis, 1] <= h - 1)).all(), rel
        for x, y, _ in k[vis]:
            y0, x0 = int(round(y)), int(round(x))
            on_mask += m[max(0, y0 - 1):y0 + 2, max(0, x0 - 1):x0 + 2].any()
        n_vis += vis.sum()
    assert n_vis > 0 and on_mask / n_vis > 0.97
    assert 0.12 < np.mean(fractions) < 0.4


@pytest.mark.parametrize("view,sign", [("front", 1), ("back", -1)])
def test_left_and_right_are_anatomical(view, sign):
    for s in range(6):
        ident = sample_identity(np.random.default_rng(s), "SynthPedA")
        img, k, m = render_person(ident, 1 + s % 6, np.random.default_rng(s), view=view, occlusion=False)
        assert img.shape == (128, 64, 3) and img.dtype == np.uint8 and k.shape == (17, 3) and k.dtype == np.float32
        # front view: the person's left shoulder/hip/eye appears on the image right (larger x)
        for a, b in ((5, 6), (11, 12), (1, 2)):
            assert sign * (k[a, 0] - k[b, 0]) > 0, (view, s, COCO_KEYPOINT_NAMES[a])
        assert k[0, 1] < k[5, 1] < k[11, 1] < k[13, 1] < k[15, 1]  # head above shoulders above hips ...


def test_side_views_narrow_the_shoulders():
    ident = sample_identity(np.random.default_rng(1), "SynthPedA")
    width = {}
    for view in ("front", "left", "right"):
        ws = [abs(render_person(ident, 1, np.random.default_rng(s), view=view, occlusion=False)[1][5, 0] -
                  render_person(ident, 1, np.random.default_rng(s), view=view, occlusion=False)[1][6, 0])
              for s in range(4)]
        width[view] = np.mean(ws)
    assert width["left"] < 0.6 * width["front"] and width["right"] < 0.6 * width["front"]


def test_occluder_hides_keypoints_and_mask():
    ident = sample_identity(np.random.default_rng(2), "SynthPedB")
    n_hidden = 0
    for s in range(12):
        rng = np.random.default_rng(100 + s)
        _, k, m = render_person(ident, 1, rng, domain="SynthPedB", occlusion=False)
        _, k2, m2 = render_person(ident, 1, np.random.default_rng(100 + s), domain="SynthPedB", occlusion=True)
        assert np.allclose(k[:, :2], k2[:, :2])  # same person and pose, only the occluder differs
        assert (m2 > 0).sum() <= (m > 0).sum() and not ((m2 > 0) & (m == 0)).any()
        n_hidden += int(((k[:, 2] > 0) & (k2[:, 2] == 0)).sum())
    assert n_hidden > 10


def test_identities_share_attributes_but_are_distinct():
    people = gen._sample_identities(DOMAINS["SynthPedA"], 1001, 250)
    keys = [p.key() for p in people]
    assert len(set(keys)) == len(keys)
    uppers = Counter(p.upper_name for p in people)
    assert uppers.most_common(1)[0][1] > 25 and len(uppers) <= 13  # a small shared palette
    # near-twins: many pairs differ in a single attribute
    twins = sum(sum(a != b for a, b in zip(keys[i], keys[j])) == 1 for i in range(250) for j in range(i))
    assert twins > 50


def test_domains_differ_in_background_statistics(tiny_a, tmp_path):
    def bg_stats(d):
        """(mean saturation, mean brightness) of the background pixels (outside the masks)."""
        vals = []
        for p in sorted((d / "bounding_box_train").glob("*.jpg"))[:40]:
            hsv = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2HSV).astype(np.float32)
            m = _mask(d, f"bounding_box_train/{p.name}") > 0
            vals.append(hsv[~m][:, 1:].mean(0))
        return np.mean(vals, 0)

    small = dict(preset="tiny", num_train_ids=5, num_test_ids=2, progress=False)
    (sat_a, val_a) = bg_stats(tiny_a)
    (sat_b, val_b), (sat_c, val_c) = (bg_stats(generate_dataset(tmp_path, x, **small))
                                      for x in ("SynthPedB", "SynthPedC"))
    assert sat_b > sat_a + 30  # colourful outdoor scenes vs greyish indoor ones
    assert val_c < val_a - 60  # night
    assert [DOMAINS[x].num_cameras for x in ("SynthPedA", "SynthPedB", "SynthPedC")] == [6, 4, 3]
    assert all(FLIP_PAIRS[i] == (2 * i + 1, 2 * i + 2) for i in range(8))


def test_idempotent_and_parameter_mismatch(tiny_a):
    before = (tiny_a / "meta.json").stat().st_mtime_ns
    assert generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", progress=False) == tiny_a
    assert (tiny_a / "meta.json").stat().st_mtime_ns == before
    with pytest.raises(DatasetParameterMismatch, match="other parameters.*seed"):
        generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", seed=9, progress=False)
    with pytest.raises(FileExistsError, match="num_train_ids"):
        generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", num_train_ids=3, progress=False)
    with pytest.raises(ValueError, match="vertical_misalign"):
        generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", vertical_misalign=0.7, progress=False)
    assert (tiny_a / "meta.json").stat().st_mtime_ns == before


def test_interrupted_generation_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gen._render_job

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gen, "_render_job", boom)
    small = dict(preset="tiny", num_train_ids=4, num_test_ids=2, progress=False, workers=1)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, "SynthPedB", **small)
    assert calls["n"] == 21
    assert not (tmp_path / "SynthPedB").exists() and not list(tmp_path.glob(".SynthPedB*"))
    monkeypatch.setattr(gen, "_render_job", real)
    d = generate_dataset(tmp_path, "SynthPedB", **small)
    assert (d / "meta.json").is_file()
    # overwrite=True replaces a dataset of other parameters
    d2 = generate_dataset(tmp_path, "SynthPedB", **dict(small, num_test_ids=3), overwrite=True)
    assert json.loads((d2 / "meta.json").read_text())["params"]["num_test_ids"] == 3
    assert len(list(tmp_path.iterdir())) == 1


def test_vertical_misalignment_moves_people(tmp_path):
    def nose_y(misalign):
        d = generate_dataset(tmp_path / str(misalign), "SynthPedA", preset="tiny", num_train_ids=8, num_test_ids=2,
                             vertical_misalign=misalign, progress=False)
        k = json.loads((d / "keypoints.json").read_text())["images"]
        return np.array([v[0][1] for r, v in k.items() if r.startswith("bounding_box_train")])

    assert nose_y(0.3).std() > 2 * nose_y(0.0).std()


def test_preview_and_cli(tiny_a, tmp_path):
    out = make_preview(tiny_a.parent, tmp_path / "p.png", domains="SynthPedA", num_ids=3, max_cols=4)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 3 * 128 and img.shape[1] >= 6 * 64
    from fastreid_ext.data.synthped.cli import main as make_synthetic_main

    make_synthetic_main(["--domain", "SynthPedB", "SynthPedC", "--preview-only", "--preview", str(tmp_path / "q.png"),
                         "--preview-ids", "2", "--preview-colors", "64"])
    q = cv2.imread(str(tmp_path / "q.png"))
    assert q is not None and q.shape[0] > 4 * 128
    make_synthetic_main(["--domain", "SynthPedC", "--root", str(tmp_path / "ds"), "--preset", "tiny", "--num-train-ids",
                         "3", "--num-test-ids", "2", "--no-progress"])
    assert (tmp_path / "ds" / "SynthPedC" / "meta.json").is_file()
