"""SynthPed: determinism, the Market-1501 layout contract, exact keypoints and masks, domains, safety."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastreid_ext.data.synthped import DOMAINS, generate_dataset, render_person, sample_identity
from fastreid_ext.data.synthped import generate as gen

NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_00\.jpg$")


@pytest.fixture(scope="module")
def tiny_a(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("sp"), "SynthPedA", preset="tiny", progress=False)


def _hashes(d: Path):
    return {str(p.relative_to(d)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_deterministic_from_the_seed(tiny_a, tmp_path):
    again = generate_dataset(tmp_path / "a", "SynthPedA", preset="tiny", progress=False, workers=1)
    assert _hashes(again) == _hashes(tiny_a)  # same bytes, also with another number of workers
    other = generate_dataset(tmp_path / "b", "SynthPedA", preset="tiny", seed=5, progress=False)
    h1, h2 = _hashes(tiny_a), _hashes(other)
    assert sum(h1.get(k) != v for k, v in h2.items()) > 0.9 * len(h2)


def _items(d, split):
    out = []
    for p in sorted((d / split).glob("*.jpg")):
        m = NAME.match(p.name)
        assert m, p.name
        out.append((p, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def test_market_layout_contract(tiny_a):
    train, gallery, query = (_items(tiny_a, s) for s in ("bounding_box_train", "bounding_box_test", "query"))
    meta = json.loads((tiny_a / "meta.json").read_text())
    assert meta["counts"]["bounding_box_train"] == len(train) and meta["counts"]["query"] == len(query)
    tr_ids = {i[1] for i in train}
    te_ids = {i[1] for i in gallery + query} - {0}
    assert len(tr_ids) == 16 and len(te_ids) == 12 and not tr_ids & te_ids
    frames = [i[3] for i in train + gallery + query]
    assert len(frames) == len(set(frames))
    assert any(i[1] == 0 for i in gallery)  # distractors
    for _, pid, cam, _ in query:  # every query has a gallery match in another camera
        assert any(g[1] == pid and g[2] != cam for g in gallery), (pid, cam)
    for pid in te_ids:
        assert len({c for _, p, c, _ in gallery + query if p == pid}) >= 2
    kps = json.loads((tiny_a / "keypoints.json").read_text())
    assert kps["format"] == "coco17" and len(kps["keypoint_names"]) == 17
    all_rel = {f"{s}/{p.name}" for s in ("bounding_box_train", "bounding_box_test", "query")
               for p in (tiny_a / s).glob("*.jpg")}
    assert set(kps["images"]) == all_rel
    for rel in list(all_rel)[:40]:
        img = Image.open(tiny_a / rel)
        m = np.asarray(Image.open((tiny_a / "masks" / rel).with_suffix(".png")))
        assert m.shape == (img.size[1], img.size[0]) and set(np.unique(m)) <= {0, 255}
        assert np.asarray(kps["images"][rel]).shape == (17, 3)


def test_keypoints_are_exact_and_on_the_mask(tiny_a):
    kps = json.loads((tiny_a / "keypoints.json").read_text())["images"]
    on_mask = n_vis = 0
    for rel, k in kps.items():
        k = np.asarray(k)
        m = np.asarray(Image.open((tiny_a / "masks" / rel).with_suffix(".png"))) > 0
        h, w = m.shape
        assert 0.05 < m.mean() < 0.7, rel  # a person, not empty, not the whole crop
        vis = k[:, 2] > 0
        assert ((k[vis, 0] >= 0) & (k[vis, 0] <= w - 1) & (k[vis, 1] >= 0) & (k[vis, 1] <= h - 1)).all()
        for x, y, _ in k[vis]:
            y0, x0 = int(round(y)), int(round(x))
            on_mask += m[max(0, y0 - 1):y0 + 2, max(0, x0 - 1):x0 + 2].any()
        n_vis += vis.sum()
    assert n_vis > 0 and on_mask / n_vis > 0.95


@pytest.mark.parametrize("view,sign", [("front", 1), ("back", -1)])
def test_left_and_right_are_anatomical(view, sign):
    ident = sample_identity(np.random.default_rng(3), "SynthPedA")
    for s in range(5):
        _, k, _ = render_person(ident, 1, np.random.default_rng(s), view=view, occlusion=False)
        # front view: the person's left shoulder appears on the image right (larger x)
        assert sign * (k[5, 0] - k[6, 0]) > 0 and sign * (k[11, 0] - k[12, 0]) > 0


def test_domains_differ_in_background_statistics(tmp_path):
    import cv2

    def bg_stats(domain):
        """(mean saturation, mean brightness) of the background pixels (outside the masks)."""
        d = generate_dataset(tmp_path, domain, preset="tiny", num_train_ids=6, num_test_ids=3, progress=False)
        vals = []
        for p in sorted((d / "bounding_box_train").glob("*.jpg"))[:30]:
            hsv = cv2.cvtColor(np.asarray(Image.open(p).convert("RGB")), cv2.COLOR_RGB2HSV).astype(np.float32)
            m = np.asarray(Image.open(d / "masks" / "bounding_box_train" / p.with_suffix(".png").name)) > 0
            vals.append(hsv[~m][:, 1:].mean(0))
        return np.mean(vals, 0)

    (sat_a, val_a), (sat_b, val_b), (sat_c, val_c) = (bg_stats(x) for x in ("SynthPedA", "SynthPedB", "SynthPedC"))
    assert sat_b > sat_a + 30  # colourful outdoor scenes vs greyish indoor ones
    assert val_c < val_a - 60  # night
    assert set(DOMAINS) >= {"SynthPedA", "SynthPedB", "SynthPedC"}


def test_idempotent_and_parameter_mismatch(tiny_a):
    before = (tiny_a / "meta.json").stat().st_mtime_ns
    assert generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", progress=False) == tiny_a
    assert (tiny_a / "meta.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="other parameters.*seed"):
        generate_dataset(tiny_a.parent, "SynthPedA", preset="tiny", seed=9, progress=False)


def test_interrupted_generation_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = gen._render_job

    def boom(args):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(gen, "_render_job", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, "SynthPedB", preset="tiny", progress=False, workers=1)
    assert not (tmp_path / "SynthPedB").exists() and not list(tmp_path.glob(".SynthPedB*"))
    monkeypatch.setattr(gen, "_render_job", real)
    d = generate_dataset(tmp_path, "SynthPedB", preset="tiny", progress=False, workers=1)
    assert (d / "meta.json").is_file()


def test_vertical_misalignment_moves_people(tmp_path):
    def head_y(misalign):
        d = generate_dataset(tmp_path / str(misalign), "SynthPedA", preset="tiny", num_train_ids=8, num_test_ids=2,
                             vertical_misalign=misalign, progress=False)
        k = json.loads((d / "keypoints.json").read_text())["images"]
        return np.array([v[0][1] for r, v in k.items() if r.startswith("bounding_box_train")])

    assert head_y(0.3).std() > 2 * head_y(0.0).std()
