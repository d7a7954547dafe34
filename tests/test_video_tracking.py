"""The video tool's detectors, tracking and MOT metrics (fastreid_ext.video.{detect,track,mot_eval,frames}): HOG finds
people on a real frame; motmetrics' IDF1 / MOTA / ID switches equal hand-computed values; DeepSORT on our embeddings
tracks MOT17 mini's ground-truth boxes with the hand-checked IDF1; the tool's outputs exist and parse; bad input
(missing / unreadable frame, no seqinfo.ini, boxes outside the frame) gives clear messages and a crash leaves the
results file consistent up to the last completed frame."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALDATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "realdata"))
MOT17 = os.path.join(REALDATA, "mot17_mini")
OSNET = os.path.join(REALDATA, "weights", "osnet_x0_25_market1501.pth")
needs_mot17 = pytest.mark.skipif(not os.path.isdir(MOT17), reason=f"real data absent: {MOT17} (MOT17 mini sequences)")
needs_osnet = pytest.mark.skipif(not os.path.isfile(OSNET), reason=f"real data absent: {OSNET} (torchreid OSNet weights)")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------ helpers
class ColourEmbedder:
    """A stand-in embedder: the crop's mean colour (L2-normalised); no model, the ``embed`` interface only."""

    size_hw = (64, 32)
    batch_size = 8

    def __init__(self, fail_at_call=None):
        self.calls = 0
        self.fail_at_call = fail_at_call

    def embed(self, crops, masks=None):
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise RuntimeError("simulated crash in the embedder")
        if not len(crops):
            return np.zeros((0, 3), np.float32)
        f = np.stack([np.asarray(c, np.float32).reshape(-1, 3).mean(0) + 1.0 for c in crops])
        return f / np.linalg.norm(f, axis=1, keepdims=True)


PEOPLE = {1: ((255, 40, 40), 20), 2: ((40, 40, 255), 100)}  # id: (RGB colour, start x)


def make_sequence(root, frames=5, seqinfo=True, size=(160, 120)):
    """A tiny MOTChallenge sequence: two coloured 'people' walking right, gt/gt.txt, seqinfo.ini."""
    w, h = size
    (root / "img1").mkdir(parents=True)
    (root / "gt").mkdir()
    gt = []
    for f in range(1, frames + 1):
        img = np.full((h, w, 3), 90, np.uint8)
        for pid, (rgb, x0) in PEOPLE.items():
            x = x0 + 3 * (f - 1)
            img[30:90, x:x + 20] = rgb
            gt.append(f"{f},{pid},{x + 1},31,20,60,1,1,1.0")
        cv2.imwrite(str(root / "img1" / f"{f:06d}.jpg"), img[:, :, ::-1])
    (root / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    if seqinfo:
        (root / "seqinfo.ini").write_text(f"[Sequence]\nname={root.name}\nimDir=img1\nframeRate=10\nseqLength={frames}\n"
                                          f"imWidth={w}\nimHeight={h}\nimExt=.jpg\n")
    return root


def tracker_factory(n_init=1):
    from fastreid_ext.video.track import DeepSortTracker

    return lambda: DeepSortTracker(n_init=n_init, max_cosine_distance=0.3)


# ------------------------------------------------------------------------------------------------ metrics
def test_motmetrics_idf1_mota_and_switches_equal_hand_computed_values():
    """Two people over 4 frames; the tracker switches person B to a new id after frame 2.
    By hand: IDTP = 4 (A) + 2 (B's best id covers 2 of its 4 boxes) = 6, IDF1 = 2 * 6 / (8 + 8) = 0.75;
    MOTA = 1 - (FN 0 + FP 0 + IDSW 1) / 8 = 0.875; one ID switch."""
    from fastreid_ext.video.mot import Box
    from fastreid_ext.video.mot_eval import evaluate_mot, summarize

    gt = {f: [Box(f, 0, 0, 10, 20, gt_id=1), Box(f, 100, 0, 10, 20, gt_id=2)] for f in range(1, 5)}
    res = {f: [(1, 0, 0, 10, 20, 1.0), (2 if f <= 2 else 3, 100, 0, 10, 20, 1.0)] for f in range(1, 5)}
    m = summarize([evaluate_mot(res, gt, range(1, 5))], ["tiny"])["tiny"]
    assert m["idf1"] == pytest.approx(0.75) and m["mota"] == pytest.approx(0.875) and m["num_switches"] == 1
    # a missed box and a false positive in frame 4: IDTP 5 of 8 gt / 8 results -> IDF1 = 10 / 16; MOTA = 1 - 3 / 8
    res[4] = [(1, 50, 50, 10, 20, 1.0), (3, 100, 0, 10, 20, 1.0)]
    m = summarize([evaluate_mot(res, gt, range(1, 5))], ["tiny"])["tiny"]
    assert m["idf1"] == pytest.approx(10 / 16) and m["mota"] == pytest.approx(1 - 3 / 8)


def test_results_file_reader_drops_a_line_cut_short(tmp_path):
    from fastreid_ext.video.mot_eval import MotResultsWriter, read_mot_results

    p = tmp_path / "r.txt"
    with MotResultsWriter(str(p)) as w:
        w.write_frame(1, [(1, 1.0, 2.0, 3.0, 4.0, 0.9)])
        w.write_frame(2, [])
        w.write_frame(3, [(1, 2.0, 2.0, 3.0, 4.0, 0.9), (2, 9.0, 2.0, 3.0, 4.0, 0.8)])
    with open(p, "a") as f:
        f.write("4,1,3.00,2.0")  # a crash in the middle of a write
    r = read_mot_results(str(p))
    assert sorted(r) == [1, 3] and len(r[3]) == 2


def test_box_filters():
    from fastreid_ext.video.detect import filter_boxes
    from fastreid_ext.video.mot import Box

    bs = [Box(1, 0, 0, 10, 50, score=0.9), Box(1, 0, 0, 30, 100, score=0.2), Box(1, 0, 0, 30, 120, score=0.8)]
    assert filter_boxes(bs, min_score=0.5, min_height=60) == [bs[2]]
    assert filter_boxes(bs, min_width=20) == bs[1:]


# ------------------------------------------------------------------------------------------------ detectors
@needs_mot17
def test_hog_detector_finds_people_on_a_real_frame():
    from fastreid_ext.video.detect import HogDetector
    from fastreid_ext.video.mot import read_mot_boxes
    from fastreid_ext.video.pipeline import iou_xywh

    seq = os.path.join(MOT17, "MOT17-04-FRCNN")
    frame = cv2.cvtColor(cv2.imread(os.path.join(seq, "img1", "000001.jpg")), cv2.COLOR_BGR2RGB)
    det = HogDetector(scale=1.1)(frame)
    assert det.ndim == 2 and det.shape[1] == 5 and len(det) > 0
    gt = np.array([[b.left, b.top, b.width, b.height] for b in read_mot_boxes(os.path.join(seq, "gt", "gt.txt"))[1]])
    found = (iou_xywh(det[:, :4], gt).max(0) >= 0.5).sum()
    assert found >= 10, f"HOG found {found} of {len(gt)} people"  # 20 of 42 on this machine


def test_torchvision_detector_from_a_checkpoint_with_random_weights(tmp_path):
    import torch
    import torchvision

    from fastreid_ext.video.detect import build_detector

    torch.manual_seed(0)
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    m = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, num_classes=91)
    torch.save({"model": m.state_dict()}, tmp_path / "det.pth")
    det = build_detector(f"torchvision:{name}", str(tmp_path / "det.pth"))
    out = det(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
    assert out.ndim == 2 and out.shape[1] == 5
    with pytest.raises(ValueError, match="needs --det-checkpoint"):
        build_detector(f"torchvision:{name}")
    with pytest.raises(ValueError, match="has no model 'no_such_net'"):
        build_detector("torchvision:no_such_net", str(tmp_path / "det.pth"))


def test_mmdet_detector_with_random_weights(tmp_path):
    from fastreid_ext.video.detect import mmdet_unavailable

    problem = mmdet_unavailable()  # mmcv-lite (no compiled operators) is found without importing mmdet (2 s)
    if problem:
        pytest.skip(problem)
    import glob

    import mmdet

    from fastreid_ext.video.detect import MMDetDetector

    cfgs = glob.glob(os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "yolox", "yolox_tiny*.py"))
    if not cfgs:
        pytest.skip("mmdet's packaged configs are absent")
    det = MMDetDetector(cfgs[0], None)
    out = det(np.zeros((240, 320, 3), np.uint8))
    assert out.ndim == 2 and out.shape[1] == 5


def test_mmdet_that_cannot_run_says_why_and_what_to_install(tmp_path):
    """mmcv-lite (installed here) has no compiled operators (mmcv._ext) that every mmdet detector imports: the user
    is told exactly that, what to install and what to use meanwhile -- through the tool too."""
    import importlib.util

    from fastreid_ext.video import cli
    from fastreid_ext.video.detect import MMDetDetector, mmdet_unavailable

    if importlib.util.find_spec("mmdet") is not None and importlib.util.find_spec("mmcv._ext") is not None:
        pytest.skip("the full mmcv (with mmcv._ext) is installed: mmdet's detectors can run here")
    cfg = tmp_path / "yolox_tiny.py"
    cfg.write_text("model = dict(type='YOLOX')\n")
    with pytest.raises(ImportError) as e:
        MMDetDetector(str(cfg), None)
    msg = str(e.value)
    assert msg == mmdet_unavailable()
    assert 'mim install "mmcv>=2.0.0rc4,<2.2.0"' in msg and "--detector hog" in msg, msg
    if importlib.util.find_spec("mmcv") is not None:  # mmcv-lite
        assert "has no compiled operators (mmcv._ext" in msg and "mmcv-lite" in msg, msg
    seq = make_sequence(tmp_path / "SYN-01", frames=1)
    with pytest.raises(SystemExit, match=r"mmdet.*(no compiled operators|not installed)"):
        cli.main(["--seq", str(seq), "--detector", "mmdet", "--det-config", str(cfg),
                  "--onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o")])


# ------------------------------------------------------------------------------------------------ tracking, tool
@needs_mot17
@needs_osnet
def test_tracking_mot17_gt_boxes_gives_the_hand_checked_idf1_and_outputs_parse(tmp_path, capsys):
    """MOT17-02 (4 frames, the same 22 pedestrians in each) with ground-truth boxes and OSNet x0.25 embeddings.
    With --n-init 2 every track is reported from its 2nd detection on, so by hand (no ID switch): 88 gt boxes,
    66 results, IDTP = 66, IDF1 = 2 * 66 / (88 + 66) = 6 / 7, MOTA = 1 - 22 / 88 = 0.75, 0 switches."""
    import motmetrics as mm

    from fastreid_ext.video import cli

    seq = os.path.join(MOT17, "MOT17-02-FRCNN")
    out = tmp_path / "out"
    res = cli.main(["--seq", seq, "--boxes", "gt", "--torchreid-weights", OSNET, "--track", "--n-init", "2",
                    "--out", str(out), "--video", str(out / "tracks.mp4"), "--draw", "all", "--threads", "1"])
    m = res.mot["MOT17-02-FRCNN"]
    assert m["idf1"] == pytest.approx(6 / 7) and m["mota"] == pytest.approx(0.75) and m["num_switches"] == 0
    assert int(m["num_objects"]) == 88 and int(m["num_predictions"]) == 66
    text = capsys.readouterr().out
    assert "| MOT17-02-FRCNN | 0.750 | 0.857 | 0 |" in text

    # the outputs exist and parse: MOTChallenge file (motmetrics' own reader), CSV/JSON, pictures, video
    mot_file = out / "mot" / "MOT17-02-FRCNN.txt"
    df = mm.io.loadtxt(str(mot_file), fmt="mot15-2D")
    assert len(df) == 66 and df.index.get_level_values(0).min() == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mot"]["MOT17-02-FRCNN"]["num_switches"] == 0 and summary["error"] is None
    assert len((out / "assignments.csv").read_text().splitlines()) == 1 + 88
    assert len(summary["pictures"]) == 4 and cv2.imread(str(out / summary["pictures"][0])) is not None
    cap = cv2.VideoCapture(str(out / "tracks.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    cap.release()


def test_tracking_a_synthetic_sequence_keeps_ids(tmp_path):
    from fastreid_ext.video.pipeline import run_sequences

    seq = make_sequence(tmp_path / "SYN-01")
    res = run_sequences([str(seq)], ColourEmbedder(), boxes="gt", tracker_factory=tracker_factory(),
                        out_dir=str(tmp_path / "out"), draw="none", warmup=False)
    m = res.mot["SYN-01"]
    assert m["idf1"] == 1.0 and m["mota"] == 1.0 and m["num_switches"] == 0
    assert {r["track_id"] for r in res.rows} == {1, 2}


def test_crash_mid_sequence_leaves_results_consistent_up_to_the_last_completed_frame(tmp_path):
    from fastreid_ext.video.mot_eval import read_mot_results
    from fastreid_ext.video.pipeline import run_sequences

    seq = make_sequence(tmp_path / "SYN-01")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"SYN-01: stopped at frame 4: RuntimeError: simulated crash.*holds frames "
                                           r"up to 3"):
        run_sequences([str(seq)], ColourEmbedder(fail_at_call=4), boxes="gt", tracker_factory=tracker_factory(),
                      out_dir=str(out), draw="none", warmup=False)
    r = read_mot_results(str(out / "mot" / "SYN-01.txt"))
    assert sorted(r) == [1, 2, 3] and all(len(v) == 2 for v in r.values())
    summary = json.loads((out / "summary.json").read_text())
    assert "stopped at frame 4" in summary["error"]


def test_missing_and_unreadable_frames_are_named(tmp_path):
    from fastreid_ext.video.mot_eval import read_mot_results
    from fastreid_ext.video.pipeline import run_sequences

    seq = make_sequence(tmp_path / "SYN-01")
    os.remove(seq / "img1" / "000003.jpg")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"frame .*000003\.jpg is missing \(sequence SYN-01\).*holds frames up to 2"):
        run_sequences([str(seq)], ColourEmbedder(), boxes="gt", tracker_factory=tracker_factory(),
                      out_dir=str(out), draw="none", warmup=False)
    assert sorted(read_mot_results(str(out / "mot" / "SYN-01.txt"))) == [1, 2]

    seq2 = make_sequence(tmp_path / "SYN-02")
    (seq2 / "img1" / "000002.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(RuntimeError, match=r"cannot decode frame .*000002\.jpg.*corrupt"):
        run_sequences([str(seq2)], ColourEmbedder(), boxes="gt", out_dir=str(tmp_path / "out2"), draw="none",
                      warmup=False)


def test_no_seqinfo_and_boxes_outside_the_frame_give_clear_messages(tmp_path, caplog):
    from fastreid_ext.video.mot import load_sequence
    from fastreid_ext.video.pipeline import run_sequences

    seq = make_sequence(tmp_path / "SYN-01", frames=3, seqinfo=False)
    with open(seq / "gt" / "gt.txt", "a") as f:
        f.write("1,7,500,500,20,60,1,1,1.0\n")   # entirely outside the 160 x 120 frame
        f.write("2,8,150,100,40,60,1,1,1.0\n")   # partly outside: clipped
    with caplog.at_level(logging.WARNING, logger="fastreid_ext.video"):
        res = run_sequences([str(seq)], ColourEmbedder(), boxes="gt", draw="none", warmup=False)
    text = caplog.text
    assert "has no seqinfo.ini" in text and "assuming frames img1/*.jpg" in text
    assert "1 box(es) lie outside the 160x120 frames" in text
    assert res.per_sequence["SYN-01"]["boxes_outside"] == 1
    assert any(r["gt_id"] == 8 for r in res.rows)  # the partly visible one is kept (clipped crop)
    with pytest.raises(FileNotFoundError, match="sequence folder not found"):
        load_sequence(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no frame folder .*img1"):
        load_sequence(tmp_path / "empty")


def test_detector_path_with_filters_and_tool_errors(tmp_path):
    """A user's detector (file.py:function) through the pipeline with the size filter; gt ids attached by IoU."""
    from fastreid_ext.video import cli
    from fastreid_ext.video.detect import build_detector
    from fastreid_ext.video.pipeline import run_sequences

    seq = make_sequence(tmp_path / "SYN-01", frames=2)
    det_file = tmp_path / "mydet.py"
    det_file.write_text("def detect(frame):\n"
                        "    return [(20, 30, 20, 60, 0.9), (100, 30, 20, 60, 0.8), (0, 0, 5, 5, 0.99)]\n")
    det = build_detector(f"{det_file}:detect")
    res = run_sequences([str(seq)], ColourEmbedder(), detector=det, min_height=10, draw="none", warmup=False)
    assert len(res.rows) == 4 and {r["gt_id"] for r in res.rows} == {1, 2}  # the 5 px box is filtered out
    with pytest.raises(SystemExit, match="ONNX file not found"):
        cli.main(["--seq", str(seq), "--onnx", str(tmp_path / "none.onnx")])
