"""The condition-matrix tool (``fastreid_ext.analysis``, ``tools/similarity_matrix.py``): within / between means and
their spread equal a brute-force computation on random features whatever the batch size (streaming), bad layouts,
single conditions, fewer than two shots and models without an average-pooled embedding give clear errors, and the
command line writes CSV / PNG / JSON for several model variants (masking, flip canonicalisation, GAP) side by side."""
import csv
import itertools
import json
import os
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fastreid_ext.analysis.layout import LayoutError, scan_image_set
from fastreid_ext.analysis.stats import ImpostorAccumulator, MatrixAccumulator, normalize, person_matrix

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R18 = os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml")


def _feature(img) -> np.ndarray:
    """A random feature determined by the image's pixels."""
    a = np.asarray(img)
    return np.random.default_rng(zlib.crc32(a.tobytes())).normal(size=8)


class FakeEmbedder:
    """Random features per image (what the streaming must not mix up)."""

    def __init__(self, name):
        from fastreid_ext.analysis.embed import VariantSpec

        self.name = name
        self.spec = VariantSpec(name=name, config="unused.yml")
        self.last_flips = []

    def embed(self, samples):
        self.last_flips = [False] * len(samples)
        return normalize(np.stack([_feature(s["image"]) for s in samples]))


def _write(path, rng, size=(12, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def random_set(tmp_path):
    """Factor ``a``: 3 conditions, persons with 2-4 shots, one person without condition c3; factor ``b``: 2."""
    rng = np.random.default_rng(0)
    shots = {("a", "p1"): {"c1": 2, "c2": 3, "c3": 2}, ("a", "p2"): {"c1": 4, "c2": 2, "c3": 3},
             ("a", "p3"): {"c1": 2, "c2": 2}, ("b", "p1"): {"x10": 3, "x2": 2}, ("b", "p2"): {"x10": 2, "x2": 2}}
    for (f, p), by_c in shots.items():
        for c, n in by_c.items():
            for s in range(1, n + 1):
                _write(tmp_path / f / c / f"{p}_{s}.png", rng)
    (tmp_path / "masks").mkdir()  # reserved: not a factor
    return tmp_path


def brute_force(root, factor, conditions):
    """Per person: mean over shot pairs, then mean / sample std over persons; different persons per condition."""
    feats = {}
    for p in sorted((root / factor).glob("*/*.png")):
        pid = p.name.split("_")[0]
        feats.setdefault(pid, {}).setdefault(p.parent.name, []).append(normalize(_feature(Image.open(p).convert("RGB"))[None])[0])
    C = len(conditions)
    per = {}
    for pid, by_c in feats.items():
        m = np.full((C, C), np.nan)
        for i, a in enumerate(conditions):
            for j, b in enumerate(conditions):
                if a not in by_c or b not in by_c:
                    continue
                if i == j:
                    pairs = [float(x @ y) for x, y in itertools.combinations(by_c[a], 2)]
                else:
                    pairs = [float(x @ y) for x in by_c[a] for y in by_c[b]]
                m[i, j] = np.mean(pairs)
        per[pid] = m
    stack = np.stack(list(per.values()))
    mean = np.nanmean(stack, 0)
    n = (~np.isnan(stack)).sum(0)
    std = np.array([[np.std(stack[~np.isnan(stack[:, i, j]), i, j], ddof=1) if n[i, j] >= 2 else np.nan
                     for j in range(C)] for i in range(C)])
    imp = []
    for c in conditions:
        pairs = [float(x @ y) for (p, a), (q, b) in itertools.permutations(feats.items(), 2) if c in a and c in b
                 for x in a[c] for y in b[c]]
        imp.append(np.mean(pairs) if pairs else np.nan)
    return mean, std, n, np.array(imp)


def test_stats_equal_brute_force_whatever_the_batch(random_set):
    from fastreid_ext.analysis.matrices import SampleSource, compute_matrices

    s = scan_image_set(random_set)
    assert list(s.factors) == ["a", "b"]
    assert s.factors["b"].conditions == ["x2", "x10"]  # natural order without conditions.json
    emb = [FakeEmbedder("m1"), FakeEmbedder("m2")]
    runs = [compute_matrices(s, emb, SampleSource(s), batch_size=bs, progress=False) for bs in (1, 3, 64)]
    for f in ("a", "b"):
        mean, std, n, imp = brute_force(random_set, f, s.factors[f].conditions)
        for r in runs:
            for name in ("m1", "m2"):
                v = r[f]["variants"][name]
                assert np.allclose(v["mean"], mean, atol=1e-12, equal_nan=True)
                assert np.allclose(v["std"], std, atol=1e-12, equal_nan=True)
                assert np.array_equal(v["n"], n)
                assert np.allclose(v["impostor"], imp, atol=1e-12, equal_nan=True)
    assert runs[0]["a"]["variants"]["m1"]["n"][2, 2] == 2  # p3 has no c3: two persons there


def test_person_matrix_and_accumulators_small_cases():
    f = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]), None]
    m = person_matrix(f)
    assert m[0, 0] == 0.0 and m[1, 1] == 1.0 and m[0, 1] == m[1, 0] == 0.5 and np.isnan(m[2]).all()
    acc = MatrixAccumulator(3)
    acc.add(m)
    acc.add(np.where(np.isnan(m), np.nan, 1.0))
    assert acc.mean()[0, 1] == 0.75 and np.isnan(acc.mean()[2, 2])
    assert acc.std()[0, 1] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    imp = ImpostorAccumulator(1)
    imp.add(0, np.array([[1.0, 0.0]]))
    imp.add(0, np.array([[0.0, 1.0], [1.0, 0.0]]))
    assert imp.mean()[0] == pytest.approx(0.5)  # pairs (a, b1) = 0 and (a, b2) = 1


# ------------------------------------------------------------------------------------------ bad input
def test_layout_errors_show_the_expected_layout(tmp_path):
    rng = np.random.default_rng(1)
    with pytest.raises(LayoutError, match="not a folder"):
        scan_image_set(tmp_path / "missing")
    _write(tmp_path / "flat" / "0001_1.png", rng)
    with pytest.raises(LayoutError, match=r"no factor folders.*<factor>/<condition>/<id>_<shot>.*found: 0001_1.png"):
        scan_image_set(tmp_path / "flat")
    _write(tmp_path / "files" / "dist" / "0001_1.png", rng)
    _write(tmp_path / "files" / "dist" / "4m" / "0001_1.png", rng)
    with pytest.raises(LayoutError, match="holds files directly"):
        scan_image_set(tmp_path / "files")
    for s in (1, 2):
        _write(tmp_path / "single" / "dist" / "4m" / f"0001_{s}.png", rng)
    with pytest.raises(LayoutError, match=r"factor 'dist' has 1 condition folder\(s\) \(4m\).*at least two"):
        scan_image_set(tmp_path / "single")
    for c, n in (("2m", 2), ("4m", 1)):
        for s in range(1, n + 1):
            _write(tmp_path / "shots" / "dist" / c / f"0007_{s}.png", rng)
    for c in ("2m", "4m"):
        for s in (1, 2):
            _write(tmp_path / "shots" / "dist" / c / f"0008_{s}.png", rng)
    with pytest.raises(LayoutError, match=r"person 0007 has fewer than 2 shots in 4m \(1\)"):
        scan_image_set(tmp_path / "shots")
    ok = scan_image_set(tmp_path / "shots", skip_incomplete=True)
    assert ok.factors["dist"].identities == ["0008"] and "0007" in ok.skipped[0]
    _write(tmp_path / "names" / "dist" / "2m" / "bad_name_1.png", rng)
    _write(tmp_path / "names" / "dist" / "4m" / "0001_1.png", rng)
    with pytest.raises(LayoutError, match="<id>_<shot>"):
        scan_image_set(tmp_path / "names")
    with pytest.raises(LayoutError, match=r"factor\(s\) \['weather'\] not found"):
        scan_image_set(tmp_path / "shots", ["weather"])


def _tiny_model(pooled_vector=False):
    import fastreid_ext
    from fastreid.modeling import build_model

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(R18)
    cfg.merge_from_list(["MODEL.HEADS.NUM_CLASSES", "2"])
    model = build_model(cfg)
    if pooled_vector:  # a backbone that already pools (like the torchreid bridge's OUTPUT embedding)
        model.backbone = torch.nn.Sequential(model.backbone, torch.nn.AdaptiveAvgPool2d(1))
    return model.eval()


def test_models_without_an_average_pooled_embedding_are_refused():
    from fastreid_ext.analysis.embed import NoAveragePooledEmbedding, gap_features

    x = torch.rand(2, 3, 64, 32) * 255
    with torch.no_grad():
        f = gap_features(_tiny_model(), x)
    assert f.shape == (2, 512)
    with pytest.raises(NoAveragePooledEmbedding, match="already returns a vector.*feature=model"):
        with torch.no_grad():
            gap_features(_tiny_model(pooled_vector=True), x)
    with pytest.raises(NoAveragePooledEmbedding, match="not a FastReID Baseline-like model"):
        gap_features(torch.nn.Linear(3, 3), x)


def test_variant_options_are_checked():
    from fastreid_ext.analysis.embed import VariantSpec, parse_variant

    d = VariantSpec(name="")
    v = parse_variant(["m", "a.yml", "w.pth", "mask=exact", "flip=known"], d)
    assert (v.config, v.weights, v.mask, v.flip, v.letterbox) == ("a.yml", "w.pth", "exact", "known", "on")
    with pytest.raises(ValueError, match="mask='sam'"):
        parse_variant(["m", "a.yml", "mask=sam"], d)
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        parse_variant(["m", "a.yml", "colour=red"], d)
    with pytest.raises(ValueError, match="NAME CONFIG"):
        parse_variant(["m"], d)


# ------------------------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def controlled_small(tmp_path_factory):
    from fastreid_ext.data.synthped.controlled import generate_controlled

    root = tmp_path_factory.mktemp("cm") / "set"
    return generate_controlled(root, num_ids=2, shots=2, seed=5, factors=["background", "orientation"],
                               progress=False, workers=1)


def test_command_line_writes_matrices_for_every_variant(controlled_small, tmp_path, capsys):
    from fastreid_ext.analysis.cli import main
    from fastreid_ext.analysis.embed import VariantEmbedder, VariantSpec

    torch.manual_seed(0)
    w = str(tmp_path / "r18.pth")  # one (untrained) model for every variant
    torch.save({"model": _tiny_model().state_dict()}, w)
    out = tmp_path / "out"
    argv = ["--data", str(controlled_small), "--out", str(out), "--size", "64", "32", "--no-progress",
            "--batch-size", "7", "--model", "plain", R18, w, "--model", "masked", R18, w, "mask=exact",
            "--model", "flipped", R18, w, "flip=known", "--model", "kp", R18, w, "flip=keypoints",
            "--model", "gap", R18, w, "feature=gap"]
    res = main(argv)
    printed = capsys.readouterr().out
    assert "| background | masked |" in printed
    for f in ("background", "orientation"):
        assert (out / f"{f}.png").is_file()
        for name in ("plain", "masked", "flipped", "kp", "gap"):
            for kind in ("mean", "std", "n", "impostor"):
                assert (out / f / f"{name}_{kind}.csv").is_file()
    assert (out / "overview.png").is_file() and (out / "summary.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["orientation"]["conditions"][:2] == ["0deg", "45deg"]
    rows = list(csv.reader(open(out / "orientation" / "flipped_impostor.csv")))
    flipped = {r[0]: float(r[2]) for r in rows[1:]}
    assert {c for c, v in flipped.items() if v == 1.0} == {"225deg", "270deg", "315deg"}
    assert all(v in (0.0, 1.0) for v in flipped.values())
    o = res["orientation"]["variants"]
    assert np.allclose(o["flipped"]["mean"], o["kp"]["mean"])  # keypoints decide as the known orientation does
    b = res["background"]["variants"]
    assert not np.allclose(b["plain"]["mean"], b["masked"]["mean"])
    # the plain variant's matrix by brute force with the same model
    emb = VariantEmbedder(VariantSpec(name="plain", config=R18, weights=w, size=(64, 32)))
    s = scan_image_set(controlled_small)
    fi = s.factors["background"]
    per = []
    for pid in fi.identities:
        feats = [emb.embed([{"image": Image.open(p).convert("RGB")} for p in fi.images[pid][c]])
                 for c in fi.conditions]
        per.append(person_matrix(feats))
    assert np.allclose(np.mean(per, 0), b["plain"]["mean"], atol=1e-5)
