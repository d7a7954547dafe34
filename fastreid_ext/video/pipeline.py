"""Detect-then-re-id over frames: boxes (MOT gt/det files or a detector callable) -> crops -> optional
background removal (mediapipe) -> embeddings -> identity assignment against a gallery -> CSV/JSON
results, annotated pictures and timings (frames/s, crops/s)."""
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

from .gallery import IdentityGallery, identity_accuracy
from .mot import Box, MotSequence, find_box_file, load_sequence, read_mot_boxes

logger = logging.getLogger(__name__)

CSV_FIELDS = ["sequence", "frame", "left", "top", "width", "height", "score", "gt_id", "assigned_id", "distance"]


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


def draw_frame(frame_bgr: np.ndarray, rows: List[dict], path: Path, scale: float = 0.5) -> None:
    """Boxes coloured by assigned id, labelled ``id`` (and ``gt`` when known); written to ``path``."""
    import cv2

    img = frame_bgr.copy()
    t = max(2, int(round(3 * img.shape[0] / 1080)))
    for r in rows:
        c = id_color(int(r["assigned_id"]))
        x0, y0 = int(r["left"]), int(r["top"])
        x1, y1 = int(r["left"] + r["width"]), int(r["top"] + r["height"])
        cv2.rectangle(img, (x0, y0), (x1, y1), c, t)
        label = f"{r['assigned_id']}" + (f" gt{r['gt_id']}" if r["gt_id"] >= 0 else "")
        fs = 0.5 * img.shape[0] / 540
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, max(1, t // 2))
        cv2.rectangle(img, (x0, max(0, y0 - th - 6)), (x0 + tw + 4, y0), c, -1)
        cv2.putText(img, label, (x0 + 2, max(th, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), max(1, t // 2),
                    cv2.LINE_AA)
    if scale != 1.0:
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


@dataclass
class Timing:
    frames: int = 0
    crops: int = 0
    read: float = 0.0
    detect: float = 0.0
    crop: float = 0.0
    segment: float = 0.0
    embed: float = 0.0
    match: float = 0.0

    @property
    def total(self) -> float:
        return self.read + self.detect + self.crop + self.segment + self.embed + self.match

    def as_dict(self) -> Dict[str, float]:
        d = {k: getattr(self, k) for k in ("frames", "crops", "read", "detect", "crop", "segment", "embed", "match")}
        d["total_s"] = self.total
        d["fps"] = self.frames / self.total if self.total > 0 else float("nan")
        d["crops_per_s_embed"] = self.crops / self.embed if self.embed > 0 else float("nan")
        d["crops_per_s_end_to_end"] = self.crops / self.total if self.total > 0 else float("nan")
        return d


@dataclass
class RunResult:
    rows: List[dict] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    metrics: Dict[str, float] = field(default_factory=dict)
    per_sequence: Dict[str, dict] = field(default_factory=dict)
    pictures: List[str] = field(default_factory=list)


def run_sequences(seq_dirs: Sequence[str], embedder, boxes: str = "gt", detector: Optional[Callable] = None,
                  segmenter=None, threshold: float = 0.35, gallery_update: str = "first",
                  shared_gallery: bool = False, max_frames: int = 0, min_visibility: float = 0.0,
                  min_score: float = -np.inf, out_dir: Optional[str] = None, draw: str = "last",
                  draw_scale: float = 0.5, warmup: bool = True) -> RunResult:
    """Run detect-then-re-id over MOT sequences.

    Args:
        seq_dirs: MOTChallenge sequence folders.
        embedder: :class:`~fastreid_ext.video.embed.ReidEmbedder`.
        boxes: ``gt`` | ``det`` | a path to a MOT box file (single sequence) -- ignored with ``detector``.
        detector: callable frame -> boxes (see :func:`load_detector`); gt ids are attached by IoU when the
            sequence has ``gt/gt.txt``.
        segmenter: a mask backend (e.g. :class:`~fastreid_ext.segmentation.MediaPipeSegmenter`) for
            background removal of each crop, or None.
        threshold: cosine-distance threshold of :class:`IdentityGallery`.
        shared_gallery: one gallery for all sequences (cross-camera matching); default one per sequence.
        draw: ``last`` | ``all`` | ``none``: annotated pictures written to ``out_dir``.
        warmup: embed one dummy batch first so that one-off start-up costs are not timed.
    """
    import cv2

    res = RunResult()
    if warmup:
        h, w = embedder.size_hw
        embedder.embed([np.zeros((h, w, 3), np.uint8)] * min(4, embedder.batch_size))
    out = Path(out_dir) if out_dir else None
    gallery = IdentityGallery(threshold, gallery_update)
    id_offset = 0
    for seq_dir in seq_dirs:
        seq: MotSequence = load_sequence(seq_dir, max_frames)
        if not shared_gallery:
            id_offset += len(gallery)
            gallery = IdentityGallery(threshold, gallery_update)
        gt_boxes = None
        if detector is not None or boxes == "det":
            gt_file = Path(seq.root) / "gt" / "gt.txt"
            gt_boxes = read_mot_boxes(gt_file, "gt", min_visibility=min_visibility) if gt_file.is_file() else None
        if detector is None:
            box_file = find_box_file(seq.root, boxes) if boxes in ("gt", "det") else Path(boxes)
            all_boxes = read_mot_boxes(box_file, min_visibility=min_visibility, min_score=min_score)
        seq_rows: List[dict] = []
        seq_t = Timing()
        for k, (fpath, fid) in enumerate(zip(seq.frames, seq.frame_ids)):
            t0 = time.perf_counter()
            frame_bgr = cv2.imread(str(fpath), cv2.IMREAD_COLOR)
            if frame_bgr is None:
                raise RuntimeError(f"cannot read frame {fpath}")
            frame = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
            t1 = time.perf_counter()
            if detector is not None:
                fboxes = boxes_from_detector(detector, frame, fid)
            else:
                fboxes = [Box(**vars(b)) for b in all_boxes.get(fid, [])]
            if gt_boxes is not None:
                attach_gt_ids(fboxes, gt_boxes.get(fid, []))
            t2 = time.perf_counter()
            crops, kept = [], []
            H, W = frame.shape[:2]
            for b in fboxes:
                c = b.clipped(W, H)
                if c is None:
                    continue
                x0, y0, x1, y1 = c
                crops.append(frame[y0:y1, x0:x1])
                kept.append(b)
            t3 = time.perf_counter()
            masks = segmenter.predict(crops) if (segmenter is not None and crops) else None
            t4 = time.perf_counter()
            feats = embedder.embed(crops, masks)
            t5 = time.perf_counter()
            ids, dist = gallery.assign(feats) if len(crops) else (np.zeros(0, np.int64), np.zeros(0))
            t6 = time.perf_counter()
            seq_t.frames += 1
            seq_t.crops += len(crops)
            seq_t.read += t1 - t0
            seq_t.detect += t2 - t1
            seq_t.crop += t3 - t2
            seq_t.segment += t4 - t3
            seq_t.embed += t5 - t4
            seq_t.match += t6 - t5
            rows = []
            for b, i, d in zip(kept, ids, dist):
                rows.append({"sequence": seq.name, "frame": fid, "left": round(b.left, 2), "top": round(b.top, 2),
                             "width": round(b.width, 2), "height": round(b.height, 2), "score": round(b.score, 4),
                             "gt_id": int(b.gt_id), "assigned_id": int(i) + (0 if shared_gallery else id_offset),
                             "distance": None if np.isnan(d) else round(float(d), 4)})
            seq_rows.extend(rows)
            if out is not None and (draw == "all" or (draw == "last" and k == len(seq.frames) - 1)):
                p = out / f"{seq.name}_{fid:06d}.jpg"
                draw_frame(frame_bgr, rows, p, draw_scale)
                res.pictures.append(str(p))
        labelled = [r for r in seq_rows if r["gt_id"] >= 0]
        m = identity_accuracy([r["gt_id"] for r in labelled], [r["assigned_id"] for r in labelled])
        res.per_sequence[seq.name] = {"metrics": m, "timing": seq_t.as_dict()}
        res.rows.extend(seq_rows)
        for k in ("frames", "crops", "read", "detect", "crop", "segment", "embed", "match"):
            setattr(res.timing, k, getattr(res.timing, k) + getattr(seq_t, k))
    labelled = [r for r in res.rows if r["gt_id"] >= 0]
    res.metrics = identity_accuracy([(r["sequence"], r["gt_id"]) for r in labelled],
                                    [r["assigned_id"] for r in labelled])
    if out is not None:
        write_results(res, out)
    return res


def write_results(res: RunResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "assignments.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in res.rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})
    summary = {"metrics": res.metrics, "timing": res.timing.as_dict(), "per_sequence": res.per_sequence,
               "pictures": [os.path.basename(p) for p in res.pictures]}
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    with open(out / "assignments.json", "w") as f:
        json.dump(res.rows, f)
