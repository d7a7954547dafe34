"""SynthPed's controlled-conditions mode varies exactly the requested factor (checked from the recorded parameters,
and the record is complete: it re-renders the stored pixels); letterbox keeps the aspect ratio and pads with the
configured value; flip canonicalisation flips exactly the people facing the chosen way (known orientation and
keypoints agree on SynthPed), as FastReID input keys for training and test."""
import json

import numpy as np
import pytest
from PIL import Image

from fastreid_ext.data.synthped.controlled import (FACTORS, SETTINGS, STANDARD, condition_params,
                                                   generate_controlled, render_record)
from fastreid_ext.data.transforms import (JointFlipCanonical, JointLetterbox, facing_score, flip_decision,
                                          letterbox_geometry)


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    root = tmp_path_factory.mktemp("controlled") / "set"
    generate_controlled(root, num_ids=1, shots=2, seed=3, progress=False, workers=1)
    return root, json.loads((root / "conditions.json").read_text())


def test_layout_and_files(controlled):
    root, cond = controlled
    assert list(cond["factors"]) == list(FACTORS)  # the paper's order
    kps = json.loads((root / "keypoints.json").read_text())["images"]
    n = 0
    for f, spec in FACTORS.items():
        assert cond["factors"][f]["conditions"] == list(spec.labels)
        for lab in spec.labels:
            for shot in (1, 2):
                rel = f"{f}/{lab}/0001_{shot}.png"
                assert (root / rel).is_file() and (root / "masks" / rel).is_file() and rel in kps, rel
                assert rel in cond["images"]
                n += 1
    assert len(cond["images"]) == n == 2 * sum(len(s.labels) for s in FACTORS.values())


def test_generator_varies_exactly_the_requested_factor(controlled):
    root, cond = controlled
    assert cond["standard"] == STANDARD and cond["settings"] == SETTINGS  # one settings dict for every image
    jitters = {}
    for rel, rec in cond["images"].items():
        spec = FACTORS[rec["factor"]]
        p = rec["params"]
        assert set(p) == set(STANDARD)
        changed = {k for k in STANDARD if p[k] != STANDARD[k]}
        allowed = {spec.key} | {k for k, _ in spec.fixed}
        assert changed <= allowed, (rel, changed)
        assert p == condition_params(rec["factor"], spec.values[spec.labels.index(rec["condition"])])
        for k, v in spec.fixed:  # the series' fixed parameters hold in every condition of it
            assert p[k] == v
        # the same pose jitter for a person's shot in every condition of every factor
        jitters.setdefault((rec["id"], rec["shot"]), []).append(rec["jitter"])
        # only camera height tilts the camera; only distance and height change the slant geometry
        if rec["factor"] != "camera_height":
            assert rec["derived"]["pitch_deg"] == 0.0
    for shots in jitters.values():
        assert all(j == shots[0] for j in shots)
    assert len({json.dumps(v[0], sort_keys=True) for v in jitters.values()}) == 2  # shots differ from each other
    # within one factor the conditions differ in the factor's key alone
    for f, spec in FACTORS.items():
        ps = [cond["factors"][f]["params"][lab] for lab in spec.labels]
        keys = {k for a in ps for b in ps for k in a if a[k] != b[k]}
        assert keys == {spec.key}, (f, keys)
    # the consequences the paper describes: distance costs resolution, camera height tilts the view
    h = [cond["images"][f"distance/{lab}/0001_1.png"]["info"]["person_px"] for lab in FACTORS["distance"].labels]
    assert all(a > b for a, b in zip(h, h[1:])) and h[0] > 4 * h[-1]
    pitch = [cond["images"][f"camera_height/{lab}/0001_1.png"]["derived"]["pitch_deg"]
             for lab in FACTORS["camera_height"].labels]
    assert pitch[0] == 0.0 and 0 < pitch[1] < pitch[2]


def test_record_is_complete(controlled):
    root, cond = controlled
    for rel in ("distance/10m/0001_2.png", "orientation_backpack/225deg/0001_1.png", "background/monitor/0001_1.png",
                "camera_height/232cm/0001_2.png", "clothing/other_top/0001_1.png"):
        img, kp, mask, _ = render_record(cond["images"][rel], cond["seed"], cond["domain"], cond["settings"])
        stored = np.asarray(Image.open(root / rel))[..., ::-1]
        assert np.array_equal(img, stored), rel
        assert np.array_equal(mask, np.asarray(Image.open(root / "masks" / rel))), rel


def test_generation_is_idempotent_and_refuses_other_arguments(controlled, tmp_path):
    root, _ = controlled
    assert generate_controlled(root, num_ids=1, shots=2, seed=3, progress=False) == root
    with pytest.raises(FileExistsError, match="other arguments"):
        generate_controlled(root, num_ids=2, shots=2, seed=3, progress=False)
    with pytest.raises(KeyError, match="unknown factor"):
        generate_controlled(tmp_path / "x", factors=["weather"], progress=False)


# ------------------------------------------------------------------------------------------ letterbox
@pytest.mark.parametrize("w,h", [(30, 90), (100, 40), (64, 128), (17, 200)])
def test_letterbox_keeps_aspect_and_pads_with_the_configured_value(w, h):
    rng = np.random.default_rng(w * h)
    img = Image.fromarray(rng.integers(0, 40, (h, w, 3), dtype=np.uint8))  # dark: never equal to the pad value
    mask = np.full((h, w), 255, np.uint8)
    kps = np.array([[0.0, 0.0, 1.0], [w - 1.0, h - 1.0, 1.0], [(w - 1) / 2, (h - 1) / 2, 1.0]], np.float32)
    out = JointLetterbox((128, 64), pad_value=(128, 100, 7))({"image": img, "mask": mask, "keypoints": kps})
    o = np.asarray(out["image"])
    assert o.shape == (128, 64, 3)
    nw, nh, left, top = letterbox_geometry(w, h, 64, 128)
    assert abs(nw / nh - w / h) <= max(1 / nh, 1 / nw) * (w / h + 1)  # aspect kept up to the rounding
    assert nw == 64 or nh == 128  # one side fills the box
    pad = np.ones((128, 64), bool)
    pad[top:top + nh, left:left + nw] = False
    assert (o[pad] == (128, 100, 7)).all()
    assert (o[~pad].max(-1) < 100).all()  # the image inside, no pad colour
    assert (out["mask"][pad] == 0).all() and (out["mask"][~pad] == 255).all()
    k = out["keypoints"]
    assert np.allclose(k[2, :2], [left + (nw - 1) / 2, top + (nh - 1) / 2], atol=1e-4)
    assert np.allclose(k[0, :2], [left + 0.5 * nw / w - 0.5, top + 0.5 * nh / h - 0.5], atol=1e-4)


def test_letterbox_and_flip_are_input_config_keys(controlled):
    import fastreid_ext
    from fastreid_ext.data.transforms import build_joint_transforms

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["INPUT.LETTERBOX.ENABLED", "True", "INPUT.LETTERBOX.PAD_VALUE", "[1, 2, 3]",
                         "INPUT.SIZE_TRAIN", "[128, 64]", "INPUT.SIZE_TEST", "[128, 64]"])
    for train in (True, False):
        names = [type(t).__name__ for t in build_joint_transforms(cfg, train).transforms]
        assert "JointLetterbox" in names and "JointResize" not in names
    cfg.merge_from_list(["INPUT.FLIP_CANON.ENABLED", "True"])
    with pytest.raises(ValueError, match="LOAD_KEYPOINTS"):
        build_joint_transforms(cfg, False)
    cfg.merge_from_list(["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True", "INPUT.FLIP.ENABLED", "True"])
    with pytest.raises(ValueError, match="INPUT.FLIP.ENABLED False"):
        build_joint_transforms(cfg, True)  # random flips would undo it
    cfg.merge_from_list(["INPUT.FLIP.ENABLED", "False"])
    for train in (True, False):
        ts = build_joint_transforms(cfg, train).transforms
        assert type(ts[0]).__name__ == "JointFlipCanonical"  # first, before any geometric transform


# ------------------------------------------------------------------------------------------ flip canonicalisation
def _orientation_items(root, cond):
    for f in ("orientation", "orientation_backpack"):
        for rel, rec in cond["images"].items():
            if rec["factor"] == f:
                yield rel, rec["params"]["orientation_deg"]


@pytest.mark.parametrize("keep", ["right", "left"])
def test_flip_canonicalisation_flips_exactly_the_people_facing_the_chosen_way(controlled, keep):
    root, cond = controlled
    kps = json.loads((root / "keypoints.json").read_text())["images"]
    flip_known = JointFlipCanonical(keep, source="orientation")
    flip_kps = JointFlipCanonical(keep, source="keypoints")
    seen = set()
    for rel, orient in _orientation_items(root, cond):
        should = (180 < orient < 360) if keep == "right" else (0 < orient < 180)
        img = Image.open(root / rel).convert("RGB")
        k = np.asarray(kps[rel], np.float32)
        a = flip_known({"image": img, "keypoints": k, "mask": None, "orientation_deg": orient})
        b = flip_kps({"image": img, "keypoints": k, "mask": None})
        assert a["canonical_flip"] == should and b["canonical_flip"] == should, (rel, orient)
        mirrored = np.asarray(img)[:, ::-1]
        assert np.array_equal(np.asarray(a["image"]), mirrored if should else np.asarray(img))
        if should:  # now facing the kept way
            assert a["orientation_deg"] == (360 - orient) % 360
            s = facing_score(a["keypoints"])
            assert (s > 0.35) if keep == "right" else (s < -0.35)
        seen.add((orient, should))
    assert {o for o, s in seen if s} == ({225.0, 270.0, 315.0} if keep == "right" else {45.0, 90.0, 135.0})
    assert (0.0, False) in seen and (180.0, False) in seen  # facing the camera / away: never flipped


def test_flip_decision_errors():
    with pytest.raises(ValueError, match="KEEP"):
        flip_decision(90, keep="up")
    with pytest.raises(ValueError, match="no orientation_deg"):
        flip_decision(None, np.zeros((17, 3)), source="orientation")
    with pytest.raises(ValueError, match="keypoints"):
        flip_decision(None, None)
    assert facing_score(np.zeros((17, 3))) == 0.0  # nothing visible: undetermined, no flip
