"""Detect-then-re-id over frames: boxes (MOT gt/det files or a detector, :mod:`.detect`) -> confidence / size
filters -> crops -> optional background removal (mediapipe) -> embeddings (all crops of a frame in one batch) ->
identity assignment against a gallery (cross-camera matching) and per-sequence tracking (:mod:`.track`, DeepSORT on
our embeddings + motion) -> CSV/JSON results, MOTChallenge results files and motmetrics scores (:mod:`.mot_eval`),
annotated pictures / video and timings (frames/s, crops/s). Frames are decoded in a background thread
(:mod:`.frames`) while the previous one is processed."""
from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .detect import filter_boxes
from .frames import FrameError, PrefetchReader
from .gallery import IdentityGallery, identity_accuracy
from .mot import Box, MotSequence, find_box_file, load_sequence, read_mot_boxes

logger = logging.getLogger(__name__)

CSV_FIELDS = ["sequence", "frame", "left", "top", "width", "height", "score", "gt_id", "assigned_id", "distance",
              "track_id"]


def load_detector(spec: str) -> Callable:
    """``module:function`` or ``path/to/file.py:function``. The function takes an RGB uint8 frame
    ``(H, W, 3)`` and returns boxes ``(left, top, width, height[, score])`` in pixels."""
    if ":" not in spec:
        raise ValueError(f"detector must be 'module:function' or 'file.py:function', got {spec!r}")
    mod_name, fn_name = spec.rsplit(":", 1)
    if mod_name.endswith(".py") or os.path.sep in mod_name:
        path = Path(mod_name)
        if not path.is_file():
            raise FileNotFoundError(f"detector file not found: {path}")
        s = importlib.util.spec_from_file_location(f"_reid_video_detector_{path.stem}", path)
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        mod = importlib.import_module(mod_name)
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise AttributeError(f"{mod_name} has no callable {fn_name!r}")
    return fn


def boxes_from_detector(fn: Callable, frame_rgb: np.ndarray, frame_id: int) -> List[Box]:
    out = []
    for b in fn(frame_rgb):
        b = [float(v) for v in b]
        if len(b) < 4:
            raise ValueError(f"detector returned {b}: expected (left, top, width, height[, score])")
        out.append(Box(frame_id, b[0], b[1], b[2], b[3], score=b[4] if len(b) > 4 else 1.0))
    return out


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes (N, 4) and (M, 4) in (left, top, width, height)."""
    ax1, ay1, bx1, by1 = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    ax2, ay2, bx2, by2 = ax1 + a[:, 2], ay1 + a[:, 3], bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(ax1[:, None], bx1[None]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(ay1[:, None], by1[None]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def attach_gt_ids(dets: List[Box], gts: List[Box], min_iou: float = 0.5) -> None:
    """Give detections the id of the ground-truth box they overlap most (greedy, IoU >= ``min_iou``)."""
    if not dets or not gts:
        return
    m = iou_xywh(np.array([[d.left, d.top, d.width, d.height] for d in dets]),
                 np.array([[g.left, g.top, g.width, g.height] for g in gts]))
    used = set()
    for flat in np.argsort(-m, axis=None, kind="stable"):
        i, j = divmod(int(flat), m.shape[1])
        if m[i, j] < min_iou:
            break
        if dets[i].gt_id >= 0 or j in used:
            continue
        dets[i].gt_id = gts[j].gt_id
        used.add(j)


def id_color(i: int):
    """A distinct BGR colour per identity (golden-ratio hue steps)."""
    import colorsys

    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_frame(frame_bgr: np.ndarray, rows: List[dict], path: Optional[Path], scale: float = 0.5):
    """Boxes coloured by track id (``T<id>``) or else assigned id, labelled with it (and ``gt`` when known); written
    to ``path`` (None: only returned)."""
    import cv2

    img = frame_bgr.copy()
    t = max(2, int(round(3 * img.shape[0] / 1080)))
    for r in rows:
        tracked = int(r.get("track_id", -1)) >= 0
        c = id_color(int(r["track_id"] if tracked else r["assigned_id"]))
        x0, y0 = int(r["left"]), int(r["top"])
        x1, y1 = int(r["left"] + r["width"]), int(r["top"] + r["height"])
        cv2.rectangle(img, (x0, y0), (x1, y1), c, t)
        label = (f"T{r['track_id']}" if tracked else f"{r['assigned_id']}") + \
            (f" gt{r['gt_id']}" if r["gt_id"] >= 0 else "")
        fs = 0.5 * img.shape[0] / 540
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, max(1, t // 2))
        cv2.rectangle(img, (x0, max(0, y0 - th - 6)), (x0 + tw + 4, y0), c, -1)
        cv2.putText(img, label, (x0 + 2, max(th, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), max(1, t // 2),
                    cv2.LINE_AA)
    if scale != 1.0:
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return img


@dataclass
class Timing:
    frames: int = 0
    crops: int = 0
    read: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    segment: float = 0.0
    #: crops resized to the network's input (part of embedding; timed apart when the embedder has ``preprocess``)
    resize: float = 0.0
    #: the network on the resized crops
    embed: float = 0.0
    match: float = 0.0
    track: float = 0.0
    #: busy time of the decoding thread (overlapped with the rest; ``read`` is the main thread's wait for a frame)
    decode_thread: float = 0.0

    FIELDS = ("frames", "crops", "read", "detect", "crop", "segment", "resize", "embed", "match", "track",
              "decode_thread")

    @property
    def total(self) -> float:
        return self.read + self.detect + self.crop + self.segment + self.resize + self.embed + self.match + self.track

    def as_dict(self) -> Dict[str, float]:
        d = {k: getattr(self, k) for k in self.FIELDS}
        d["total_s"] = self.total
        d["fps"] = self.frames / self.total if self.total > 0 else float("nan")
        d["crops_per_s_embed"] = self.crops / (self.resize + self.embed) if self.embed > 0 else float("nan")
        d["crops_per_s_end_to_end"] = self.crops / self.total if self.total > 0 else float("nan")
        return d


@dataclass
class RunResult:
    rows: List[dict] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    metrics: Dict[str, float] = field(default_factory=dict)
    per_sequence: Dict[str, dict] = field(default_factory=dict)
    pictures: List[str] = field(default_factory=list)
    #: motmetrics per sequence and ``OVERALL`` (tracking with ground truth)
    mot: Dict[str, Dict[str, float]] = field(default_factory=dict)
    #: MOTChallenge results file per sequence (tracking)
    mot_files: Dict[str, str] = field(default_factory=dict)
    video: Optional[str] = None
    #: why a run stopped early (the outputs then hold what was completed)
    error: Optional[str] = None


def run_sequences(seq_dirs: Sequence[str], embedder, boxes: str = "gt", detector: Optional[Callable] = None,
                  segmenter=None, threshold: float = 0.35, gallery_update: str = "first",
                  shared_gallery: bool = False, max_frames: int = 0, min_visibility: float = 0.0,
                  min_score: float = -np.inf, out_dir: Optional[str] = None, draw: str = "last",
                  draw_scale: float = 0.5, warmup: bool = True, min_height: float = 0.0, min_width: float = 0.0,
                  tracker_factory: Optional[Callable] = None, prefetch: int = 2, video: Optional[str] = None,
                  video_fps: float = 0.0, fsync: bool = True) -> RunResult:
    """Run detect-then-re-id over MOT sequences.

    Args:
        seq_dirs: MOTChallenge sequence folders.
        embedder: :class:`~fastreid_ext.video.embed.ReidEmbedder` or
            :class:`~fastreid_ext.deploy.ort_embedder.OrtEmbedder` (``embed(crops, masks)``); every crop of a frame goes
            to one ``embed`` call.
        boxes: ``gt`` | ``det`` | a path to a MOT box file (single sequence) -- ignored with ``detector``.
        detector: callable frame -> boxes (:mod:`fastreid_ext.video.detect`, or see :func:`load_detector`); gt ids
            are attached by IoU when the sequence has ``gt/gt.txt``.
        segmenter: a mask backend (e.g. :class:`~fastreid_ext.segmentation.MediaPipeSegmenter`) for
            background removal of each crop, or None.
        threshold: cosine-distance threshold of :class:`IdentityGallery`.
        shared_gallery: one gallery for all sequences (cross-camera matching); default one per sequence.
        min_score / min_height / min_width: confidence and size filters (det files and detectors: score; all boxes:
            size in pixels).
        tracker_factory: ``() -> tracker`` (e.g. :class:`fastreid_ext.video.track.DeepSortTracker`), one per sequence;
            with ``out_dir`` its MOTChallenge results go to ``out_dir/mot/SEQ.txt`` frame by frame, and sequences with
            ``gt/gt.txt`` are scored with motmetrics (``RunResult.mot``).
        prefetch: frames decoded ahead in a background thread (0: decode inline).
        draw: ``last`` | ``all`` | ``none``: annotated pictures written to ``out_dir``.
        video: an annotated video file (``.mp4``/``.avi``; all sequences one after the other) or None.
        fsync: ``fsync`` the results file after every frame (crash consistency on power loss too).
        warmup: embed one dummy batch first so that one-off start-up costs are not timed.
    """
    import cv2

    res = RunResult()
    split_embed = callable(getattr(embedder, "preprocess", None)) and callable(getattr(embedder, "embed_tensor", None))
    if warmup:
        h, w = embedder.size_hw
        embedder.embed([np.zeros((h, w, 3), np.uint8)] * min(4, embedder.batch_size))
    out = Path(out_dir) if out_dir else None
    gallery = IdentityGallery(threshold, gallery_update)
    id_offset = 0
    sink = None
    accs, acc_names = [], []
    try:
        for seq_dir in seq_dirs:
            seq: MotSequence = load_sequence(seq_dir, max_frames)
            if not shared_gallery:
                id_offset += len(gallery)
                gallery = IdentityGallery(threshold, gallery_update)
            gt_file = Path(seq.root) / "gt" / "gt.txt"
            gt_boxes = None
            if detector is not None or boxes == "det" or tracker_factory is not None:
                gt_boxes = read_mot_boxes(gt_file, "gt", min_visibility=min_visibility) if gt_file.is_file() else None
            if detector is None:
                box_file = find_box_file(seq.root, boxes) if boxes in ("gt", "det") else Path(boxes)
                all_boxes = read_mot_boxes(box_file, min_visibility=min_visibility, min_score=min_score)
            tracker = tracker_factory() if tracker_factory is not None else None
            writer = None
            if tracker is not None and out is not None:
                from .mot_eval import MotResultsWriter

                writer = MotResultsWriter(str(out / "mot" / f"{seq.name}.txt"), fsync=fsync)
                res.mot_files[seq.name] = str(writer.path)
            seq_rows: List[dict] = []
            seq_t = Timing()
            outside = 0
            reader = PrefetchReader(seq.frames, seq.name, depth=prefetch)
            done_frames: List[int] = []
            fid = None
            try:
                t0 = time.perf_counter()
                for k, frame_bgr in reader:
                    fid = seq.frame_ids[k]
                    if isinstance(frame_bgr, FrameError):
                        raise frame_bgr
                    frame = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
                    t1 = time.perf_counter()
                    if detector is not None:
                        fboxes = boxes_from_detector(detector, frame, fid)
                    else:
                        fboxes = [Box(**vars(b)) for b in all_boxes.get(fid, [])]
                    fboxes = filter_boxes(fboxes, min_score, min_height, min_width)
                    if gt_boxes is not None and (detector is not None or boxes != "gt"):
                        attach_gt_ids(fboxes, gt_boxes.get(fid, []))
                    t2 = time.perf_counter()
                    crops, kept = [], []
                    H, W = frame.shape[:2]
                    for b in fboxes:
                        c = b.clipped(W, H)
                        if c is None:
                            outside += 1
                            continue
                        x0, y0, x1, y1 = c
                        crops.append(frame[y0:y1, x0:x1])
                        kept.append(b)
                    t3 = time.perf_counter()
                    masks = segmenter.predict(crops) if (segmenter is not None and crops) else None
                    t4 = time.perf_counter()
                    if crops and split_embed:  # resizing timed apart from the network
                        x, m = embedder.preprocess(crops, masks)
                        t4r = time.perf_counter()
                        feats = embedder.embed_tensor(x, m).numpy()
                    else:
                        t4r = t4
                        feats = embedder.embed(crops, masks)
                    t5 = time.perf_counter()
                    ids, dist = gallery.assign(feats) if len(crops) else (np.zeros(0, np.int64), np.zeros(0))
                    t6 = time.perf_counter()
                    track_ids = np.full(len(kept), -1, np.int64)
                    if tracker is not None:
                        # the tracker sees the boxes clipped to the frame, as the crops were
                        clipped = np.array([[c0, c1, c2 - c0, c3 - c1] for c0, c1, c2, c3 in
                                            (b.clipped(W, H) for b in kept)], np.float32).reshape(-1, 4)
                        track_ids = tracker.update(clipped, np.array([b.score for b in kept], np.float32), feats)
                    t7 = time.perf_counter()
                    seq_t.frames += 1
                    seq_t.crops += len(crops)
                    seq_t.read += t1 - t0
                    seq_t.detect += t2 - t1
                    seq_t.crop += t3 - t2
                    seq_t.segment += t4 - t3
                    seq_t.resize += t4r - t4
                    seq_t.embed += t5 - t4r
                    seq_t.match += t6 - t5
                    seq_t.track += t7 - t6
                    rows = []
                    for b, i, d, tid in zip(kept, ids, dist, track_ids):
                        rows.append({"sequence": seq.name, "frame": fid, "left": round(b.left, 2),
                                     "top": round(b.top, 2), "width": round(b.width, 2),
                                     "height": round(b.height, 2), "score": round(b.score, 4), "gt_id": int(b.gt_id),
                                     "assigned_id": int(i) + (0 if shared_gallery else id_offset),
                                     "distance": None if np.isnan(d) else round(float(d), 4), "track_id": int(tid)})
                    if writer is not None:  # the frame is complete: append it to the results file
                        writer.write_frame(fid, [(r["track_id"], r["left"], r["top"], r["width"], r["height"],
                                                  r["score"]) for r in rows if r["track_id"] >= 0])
                    done_frames.append(fid)
                    seq_rows.extend(rows)
                    want_pic = out is not None and (draw == "all" or (draw == "last" and k == len(seq.frames) - 1))
                    if want_pic or video:
                        p = out / f"{seq.name}_{fid:06d}.jpg" if want_pic else None
                        img = draw_frame(frame_bgr, rows, p, draw_scale)
                        if p is not None:
                            res.pictures.append(str(p))
                        if video:
                            sink = sink or _VideoSink(video, video_fps or seq.frame_rate)
                            sink.write(img)
                    t0 = time.perf_counter()
            except BaseException as e:
                last = done_frames[-1] if done_frames else None
                where = f"{writer.path} holds frames up to {last}" if writer is not None and last is not None else \
                    (f"{writer.path} is empty" if writer is not None else "no results file")
                res.rows.extend(seq_rows)
                res.error = f"{seq.name}: stopped at frame {fid}: {type(e).__name__}: {e}"
                if out is not None:
                    write_results(res, out)
                if isinstance(e, (FrameError, ValueError, RuntimeError, OSError)):
                    raise RuntimeError(f"{res.error} ({where})") from e
                raise
            finally:
                reader.close()
                seq_t.decode_thread = reader.decode_s
                if writer is not None:
                    writer.close()
            if outside:
                logger.warning("%s: %d box(es) lie outside the %dx%d frames (or are under 2 px inside): skipped",
                               seq.name, outside, W, H)
            labelled = [r for r in seq_rows if r["gt_id"] >= 0]
            m = identity_accuracy([r["gt_id"] for r in labelled], [r["assigned_id"] for r in labelled])
            res.per_sequence[seq.name] = {"metrics": m, "timing": seq_t.as_dict(), "boxes_outside": outside}
            if tracker is not None and gt_boxes is not None:
                from .mot_eval import evaluate_mot, read_mot_results

                tracked = read_mot_results(writer.path) if writer is not None else _results_of(seq_rows)
                accs.append(evaluate_mot(tracked, gt_boxes, done_frames, seq.name))
                acc_names.append(seq.name)
            res.rows.extend(seq_rows)
            for k in Timing.FIELDS:
                setattr(res.timing, k, getattr(res.timing, k) + getattr(seq_t, k))
    finally:
        if sink is not None:
            sink.close()
            res.video = sink.path
    labelled = [r for r in res.rows if r["gt_id"] >= 0]
    res.metrics = identity_accuracy([(r["sequence"], r["gt_id"]) for r in labelled],
                                    [r["assigned_id"] for r in labelled])
    if accs:
        from .mot_eval import summarize

        res.mot = summarize(accs, acc_names)
    if out is not None:
        write_results(res, out)
    return res


def _results_of(rows: List[dict]) -> Dict[int, list]:
    out: Dict[int, list] = {}
    for r in rows:
        if r["track_id"] >= 0:
            out.setdefault(r["frame"], []).append((r["track_id"], r["left"], r["top"], r["width"], r["height"],
                                                   r["score"]))
    return out


class _VideoSink:
    """Annotated frames into a video file (OpenCV's ``VideoWriter``: ``mp4v`` for .mp4, ``MJPG`` otherwise)."""

    def __init__(self, path: str, fps: float):
        self.path = str(path)
        self.fps = float(fps) or 30.0
        self.writer = None

    def write(self, img: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.lower().endswith(".mp4") else "MJPG"))
            self.size = (img.shape[1], img.shape[0])
            self.writer = cv2.VideoWriter(self.path, fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"OpenCV cannot write the video {self.path} (try .avi)")
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.writer.write(img)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def write_results(res: RunResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "assignments.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in res.rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})
    summary = {"metrics": res.metrics, "timing": res.timing.as_dict(), "per_sequence": res.per_sequence,
               "pictures": [os.path.basename(p) for p in res.pictures], "mot": res.mot,
               "mot_files": {k: os.path.relpath(v, out) for k, v in res.mot_files.items()},
               "video": res.video, "error": res.error}
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    with open(out / "assignments.json", "w") as f:
        json.dump(res.rows, f)
