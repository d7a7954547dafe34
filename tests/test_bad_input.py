"""Bad input wherever a user hands us data (issue 17): empty test splits, unreadable / grayscale / RGBA / tiny images,
missing or misshapen keypoints and masks, checkpoints that are not weights-only, ``--resume`` after a NaN stop.

Each check is exercised where a run meets it (building the trainer, the test loader, the command line) on a copy
of the tiny SynthPed domain A (64x32 inputs); the tests check the messages."""
import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fastreid_ext.compat import TRUST_CHECKPOINTS_ENV, UntrustedCheckpointError, trusted_torch_load
from fastreid_ext.data import build as data_build
from fastreid_ext.data.annotations import AnnotationError
from fastreid_ext.data.checks import DataCheckError, check_images
from fastreid_ext.engine import build_trainer, reliability
from tests.test_reliability import CFG, TINY, _poison, finite, last, load, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def own_copy(datasets_root, tmp_path, monkeypatch):
    """A private FASTREID_DATASETS holding a copy of the tiny SynthPedA (the tests break files in it); returns the
    copy's domain folder."""
    data_build.build_dataset("SynthPedA", tiny_cfg(tmp_path / "gen"))  # created once per session in datasets_root
    src = os.path.join(str(datasets_root), "synthped", "tiny", "SynthPedA")
    root = tmp_path / "datasets"
    dst = root / "synthped" / "tiny" / "SynthPedA"
    shutil.copytree(src, dst)
    monkeypatch.setenv("FASTREID_DATASETS", str(root))
    return dst


def jpgs(folder):
    return sorted(str(p) for p in folder.glob("*.jpg"))


# --------------------------------------------------------------------------------------------------------------
# 1. the images and splits a run reads
# --------------------------------------------------------------------------------------------------------------
def test_empty_query_or_gallery_is_named_before_training(own_copy, tmp_path):
    """An empty query split stops the trainer at its construction (was: a division by zero in the evaluation after
    the whole training); an empty gallery stops the test loader of --eval-only, naming dataset, split, folder."""
    for p in jpgs(own_copy / "query"):
        os.remove(p)
    with pytest.raises(DataCheckError, match="test dataset SynthPedA: the query split is empty") as e:
        build_trainer(tiny_cfg(tmp_path / "run"))
    assert str(own_copy / "query") in str(e.value) and "DATASETS.TESTS" in str(e.value)
    gallery = jpgs(own_copy / "bounding_box_test")
    shutil.copy(gallery[0], own_copy / "query")
    for p in gallery:
        os.remove(p)
    with pytest.raises(DataCheckError, match="test dataset SynthPedA: the gallery split is empty"):
        data_build.build_test_loader(tiny_cfg(tmp_path / "run"), "SynthPedA")


def test_unreadable_images_are_counted_and_named_before_training(own_copy, tmp_path):
    """Zero-byte and non-image files in the training set stop the trainer at its construction (was: an error in a
    loader worker in the middle of an epoch), with the count, the kinds and the first paths."""
    train = jpgs(own_copy / "bounding_box_train")
    for p in train[:3]:
        open(p, "wb").close()  # an interrupted copy
    with open(train[3], "wb") as f:
        f.write(b"<html>not found</html>")  # a download error page saved as .jpg
    with pytest.raises(DataCheckError) as e:
        build_trainer(tiny_cfg(tmp_path / "run"))
    msg = str(e.value)
    assert f"training set ('SynthPedA',): 4 of {len(train)} image(s) cannot be read" in msg
    assert "3 zero-byte file, 1 not a readable image" in msg
    assert all(p in msg for p in train[:4]) and "Replace or delete them" in msg
    # tools/train_net.py: exit 1 with the message, no traceback
    from fastreid_ext.engine import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["--config-file", CFG, *TINY, "OUTPUT_DIR", str(tmp_path / "cli")])
    assert str(e.value.code).startswith("error: training set ('SynthPedA',): 4 of")


def test_grayscale_and_rgba_images_load_as_rgb(tmp_path, caplog):
    """FastReID's read_image converts every image to 3-channel RGB: grayscale replicated, RGBA's alpha dropped
    (colours kept); the check logs how many images are not RGB."""
    from fastreid_ext.data.common import AnnotatedDataset, read_image_checked
    from fastreid_ext.data.transforms import build_joint_transforms

    gray = np.arange(64 * 32, dtype=np.uint8).reshape(64, 32)
    rgba = np.zeros((64, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 0  # fully transparent
    paths = [str(tmp_path / "gray.png"), str(tmp_path / "gray.jpg"), str(tmp_path / "rgba.png")]
    Image.fromarray(gray, "L").save(paths[0])
    Image.fromarray(gray, "L").save(paths[1], quality=100)
    Image.fromarray(rgba, "RGBA").save(paths[2])
    for p in paths:
        img = np.asarray(read_image_checked(p))
        assert img.shape == (64, 32, 3), p
    assert (np.asarray(read_image_checked(paths[0])) == gray[..., None]).all()
    assert (np.asarray(read_image_checked(paths[2])) == [200, 100, 50]).all()
    with caplog.at_level(logging.INFO, logger="fastreid_ext"):
        check_images(paths, "test images")
    assert "3 image(s) are not RGB (2 L, 1 RGBA): FastReID's read_image converts them to 3-channel RGB" in caplog.text
    ds = AnnotatedDataset([(p, 0, 0) for p in paths], build_joint_transforms(tiny_cfg(tmp_path / "c"), False),
                          relabel=False)
    assert all(ds[i]["images"].shape == (3, 64, 32) for i in range(3))


def test_tiny_images_are_a_warning_with_their_count(tmp_path, caplog):
    """1x1 / 2x3 crops are resized to the input size like any image (no error: checked below), so they are
    a logged warning with the count and the first paths, not a refusal."""
    from fastreid_ext.data.common import AnnotatedDataset
    from fastreid_ext.data.transforms import build_joint_transforms

    sizes = [(1, 1), (2, 3), (32, 64), (3, 40)]
    paths = []
    for w, h in sizes:
        paths.append(str(tmp_path / f"{w}x{h}.png"))
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(paths[-1])
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        check_images(paths, "training set ('X',)")
    assert "training set ('X',): 3 of 4 image(s) have a side under 4 pixels" in caplog.text
    assert f"{paths[0]} (1x1)" in caplog.text and f"{paths[1]} (2x3)" in caplog.text and "32x64" not in caplog.text
    ds = AnnotatedDataset([(p, 0, 0) for p in paths], build_joint_transforms(tiny_cfg(tmp_path / "c"), True),
                          relabel=False)
    assert ds[0]["images"].shape == (3, 64, 32)


# --------------------------------------------------------------------------------------------------------------
# 2. keypoints and masks the run will read
# --------------------------------------------------------------------------------------------------------------
def test_missing_or_misshapen_annotations_are_refused_before_training(own_copy, tmp_path, caplog):
    kp_file = own_copy / "keypoints.json"
    data = json.load(open(kp_file))
    train = [k for k in sorted(data["images"]) if k.startswith("bounding_box_train/")]
    for k in train[:3]:
        del data["images"][k]
    json.dump(data, open(kp_file, "w"))
    kp = ["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True"]
    with pytest.raises(AnnotationError) as e:
        build_trainer(tiny_cfg(tmp_path / "run", *kp))
    msg = str(e.value)
    assert f"training set ('SynthPedA',): 3 of {len(train)} image(s) have no keypoints" in msg
    assert str(own_copy / train[0]) in msg and "tools/extract_keypoints.py" in msg and "ON_MISSING" in msg
    # ON_MISSING empty: the count is logged, the run starts
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        build_trainer(tiny_cfg(tmp_path / "run2", *kp, "DATASETS.ANNOTATIONS.ON_MISSING", "empty"))
    assert "3 of" in caplog.text and "using empty targets" in caplog.text
    # keypoints of another skeleton (16 points) name the image
    data["images"][train[0]] = [[1.0, 2.0, 0.5]] * 16
    json.dump(data, open(kp_file, "w"))
    with pytest.raises(AnnotationError, match=r"the keypoints of .*%s have shape \(16, 3\), expected \(17, 3\)"
                       % train[0].split("/")[1]):
        build_trainer(tiny_cfg(tmp_path / "run3", *kp, "DATASETS.ANNOTATIONS.ON_MISSING", "empty"))

    # masks: a missing one and one of the wrong size
    mk = ["DATASETS.ANNOTATIONS.LOAD_MASKS", "True"]
    masks = sorted((own_copy / "masks" / "bounding_box_train").glob("*.png"))
    os.remove(masks[0])
    with pytest.raises(AnnotationError, match="1 of [0-9]+ image.s. have no masks.*tools/extract_masks.py"):
        build_trainer(tiny_cfg(tmp_path / "run4", *mk))
    Image.new("L", (5, 7)).save(masks[0])
    with pytest.raises(AnnotationError, match=f"mask {masks[0]} is 5x7 but its image .* is 64x128"):
        build_trainer(tiny_cfg(tmp_path / "run5", *mk))


def test_test_time_keypoints_are_demanded_only_where_used(own_copy, tmp_path):
    """Keypoints missing for the query/gallery images: a model that trains on keypoints starts (its inference does
    not use them); with the flip canonicalisation from keypoints (used at test time) it is refused before
    training, naming the test set."""
    kp_file = own_copy / "keypoints.json"
    data = json.load(open(kp_file))
    data["images"] = {k: v for k, v in data["images"].items() if k.startswith("bounding_box_train/")}
    json.dump(data, open(kp_file, "w"))
    kp = ["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True"]
    build_trainer(tiny_cfg(tmp_path / "run", *kp))
    with pytest.raises(AnnotationError, match="test dataset SynthPedA .query . gallery.: [0-9]+ of [0-9]+ image.s. "
                                              "have no keypoints"):
        build_trainer(tiny_cfg(tmp_path / "run2", *kp, "INPUT.FLIP_CANON.ENABLED", "True",
                               "INPUT.FLIP_CANON.SOURCE", "keypoints", "INPUT.FLIP.ENABLED", "False"))


# --------------------------------------------------------------------------------------------------------------
# 3. checkpoints that are not weights-only; 4. --resume after a NaN stop
# --------------------------------------------------------------------------------------------------------------
MARKER = []


class Arbitrary:
    """A pickled class whose unpickling runs code (appends to MARKER): what a malicious checkpoint does."""

    def __setstate__(self, state):
        MARKER.append(state)
        self.__dict__.update(state)


def test_checkpoint_with_an_arbitrary_class_is_refused_unless_trusted(datasets_root, tmp_path, monkeypatch, caplog):
    from fastreid_ext.engine import cli

    path = tmp_path / "evil.pth"
    ok = tiny_cfg(tmp_path / "w")
    model = build_trainer(ok).model
    obj = Arbitrary()
    obj.__dict__["ran"] = True
    torch.save({"model": model.state_dict(), "extra": obj}, path)
    monkeypatch.delenv(TRUST_CHECKPOINTS_ENV, raising=False)
    MARKER.clear()
    with pytest.raises(UntrustedCheckpointError) as e:
        trusted_torch_load(str(path))
    msg = str(e.value)
    assert f"refusing to load {path}" in msg and "tests.test_bad_input.Arbitrary" in msg
    assert f"{TRUST_CHECKPOINTS_ENV}=1" in msg and not MARKER  # no code of the file ran
    # the user trusts the file
    monkeypatch.setenv(TRUST_CHECKPOINTS_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        ck = trusted_torch_load(str(path))
    assert MARKER == [{"ran": True}] and isinstance(ck["extra"], Arbitrary)
    assert f"fully unpickled (weights_only=False) because {TRUST_CHECKPOINTS_ENV}=1" in caplog.text
    # numpy arrays / scalars (FastReID model-zoo files): loaded without the opt-in, the allowed globals named
    monkeypatch.delenv(TRUST_CHECKPOINTS_ENV)
    caplog.clear()
    torch.save({"model": model.state_dict(), "meta": np.arange(3), "best": np.float64(0.5)}, path)
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        ck = trusted_torch_load(str(path))
    assert ck["meta"].tolist() == [0, 1, 2] and ck["best"] == 0.5
    assert "numpy.core.multiarray._reconstruct" in caplog.text or "numpy._core.multiarray._reconstruct" in caplog.text
    # through the command line (--eval-only MODEL.WEIGHTS): exit 1 with the message, no traceback, no code ran
    torch.save({"model": model.state_dict(), "extra": obj}, path)
    MARKER.clear()
    with pytest.raises(SystemExit) as e:
        cli.main(["--eval-only", "--config-file", CFG, *TINY, "OUTPUT_DIR", str(tmp_path / "eval"),
                  "MODEL.WEIGHTS", str(path)])
    assert f"refusing to load {path}" in str(e.value.code) and not MARKER


def test_resume_after_a_nan_stop_continues_from_the_last_good_checkpoint(datasets_root, tmp_path, monkeypatch,
                                                                         caplog):
    """After a NaN loss stopped the run (test_reliability.py::test_non_finite_training_stops_and_keeps_last_good_
    checkpoint), --resume continues from model_0000.pth (finite) and finishes; a checkpoint with NaN weights that
    last_checkpoint names is refused by --resume (--eval-only: test_final_checkpoint_before_evaluation_and_resume_
    edge_cases). Our checkpoints, written by training, load weights-only without the opt-in and without a
    warning."""
    monkeypatch.delenv(TRUST_CHECKPOINTS_ENV, raising=False)
    out = tmp_path / "run"
    t = build_trainer(tiny_cfg(out))
    t.resume_or_load(resume=False)
    _poison(t, when=2, what="loss")
    t.test = lambda *a, **k: None
    with pytest.raises(reliability.NonFiniteLossError):
        t.train()
    assert last(out) == "model_0000.pth"
    good = load(out / "model_0000.pth")
    with caplog.at_level(logging.WARNING, logger="fastreid_ext"):
        assert trusted_torch_load(str(out / "model_0000.pth")).keys() == good.keys()
    assert "weights-only" not in caplog.text and "refusing" not in caplog.text

    t2 = build_trainer(tiny_cfg(out))
    t2.resume_or_load(resume=True)
    assert t2.start_epoch == 1
    state = t2.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in good["model"].items())
    t2.test = lambda *a, **k: {}
    t2.train()
    assert last(out) == "model_final.pth" and finite(load(out / "model_final.pth")["model"])

    # a NaN checkpoint (written by an earlier version) named by last_checkpoint: refused, the way out named
    bad = load(out / "model_final.pth")
    bad["model"]["heads.bottleneck.0.weight"][0] = float("nan")
    torch.save(bad, out / "model_0001.pth")
    (out / "last_checkpoint").write_text("model_0001.pth")
    with pytest.raises(reliability.ConfigError, match="--resume: .*model_0001.pth holds NaN/inf weights "
                                                      r"\(heads.bottleneck.0.weight\).*last_checkpoint"):
        build_trainer(tiny_cfg(out)).resume_or_load(resume=True)
