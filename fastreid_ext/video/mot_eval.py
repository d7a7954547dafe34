"""MOTChallenge results files and CLEAR-MOT / identity metrics with ``motmetrics`` (https://github.com/cheind/py-motmetrics).

* :class:`MotResultsWriter`: ``SEQ.txt`` in MOTChallenge format (``frame, id, left, top, width, height, conf, -1, -1,
  -1``, Milan et al., "MOT16: A benchmark for multi-object tracking", 2016). Each frame's lines are appended with one
  ``write()`` and flushed (and ``fsync``-ed) when the frame is complete, so after a crash the file holds exactly the
  frames completed before it; :func:`read_mot_results` drops a last line cut short (no newline).
* :func:`evaluate_mot`: MOTA, IDF1, ID switches, ... of a results file against ``gt/gt.txt`` with motmetrics'
  accumulator (IoU distance, a match needs IoU >= 0.5, the MOTChallenge 2D criterion) on the frames given, ground truth
  filtered as :func:`fastreid_ext.video.mot.read_mot_boxes` does (pedestrians, consider flag 1).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["MOT_METRICS", "MotResultsWriter", "evaluate_mot", "read_mot_results"]

#: motmetrics metric names reported by :func:`evaluate_mot`
MOT_METRICS = ("mota", "idf1", "num_switches", "motp", "precision", "recall", "idp", "idr", "num_false_positives",
               "num_misses", "num_objects", "num_predictions", "mostly_tracked", "num_frames")


class MotResultsWriter:
    """Appends one frame at a time to a MOTChallenge results file (module docstring)."""

    def __init__(self, path: str, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.fsync = fsync
        self.frames = 0
        self.last_frame: Optional[int] = None

    def write_frame(self, frame: int, rows: Iterable[Tuple[int, float, float, float, float, float]]) -> None:
        """``rows``: ``(track id, left, top, width, height, conf)`` of one completed frame."""
        data = "".join(f"{int(frame)},{int(i)},{l:.2f},{t:.2f},{w:.2f},{h:.2f},{c:.4f},-1,-1,-1\n"
                       for i, l, t, w, h, c in rows)
        if data:
            view = memoryview(data.encode())
            while view:  # os.write may write less than asked
                n = os.write(self.fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(self.fd)
        self.frames += 1
        self.last_frame = int(frame)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_mot_results(path: str) -> Dict[int, List[Tuple[int, float, float, float, float, float]]]:
    """``{frame: [(id, left, top, width, height, conf), ...]}`` of a MOTChallenge results file; a last line without
    its newline (a write cut short by a crash) is ignored."""
    text = Path(path).read_text()
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # incomplete last line
    out: Dict[int, list] = {}
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        v = line.split(",")
        if len(v) < 7:
            raise ValueError(f"{path}:{ln}: expected at least 7 comma-separated values, got {line!r}")
        out.setdefault(int(float(v[0])), []).append((int(float(v[1])), *map(float, v[2:7])))
    return out


def evaluate_mot(results: Dict[int, list], gt: Dict[int, list], frames: Sequence[int], name: str = "seq",
                 iou_threshold: float = 0.5):
    """motmetrics' accumulator over ``frames``: ``results`` as from :func:`read_mot_results`, ``gt`` as from
    :func:`fastreid_ext.video.mot.read_mot_boxes` (``Box`` objects). Returns the accumulator."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    for f in frames:
        g = gt.get(f, [])
        h = results.get(f, [])
        gb = np.array([[b.left, b.top, b.width, b.height] for b in g], float).reshape(-1, 4)
        hb = np.array([r[1:5] for r in h], float).reshape(-1, 4)
        d = mm.distances.iou_matrix(gb, hb, max_iou=1.0 - iou_threshold)
        acc.update([b.gt_id for b in g], [r[0] for r in h], d, frameid=int(f))
    return acc


def summarize(accs: Sequence, names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{name: {metric: value}}`` for every accumulator plus ``OVERALL`` (motmetrics' ``compute_many``)."""
    import motmetrics as mm

    mh = mm.metrics.create()
    df = mh.compute_many(list(accs), names=list(names), metrics=list(MOT_METRICS), generate_overall=len(accs) > 1)
    out = {}
    for row in df.index:
        out["OVERALL" if row == "OVERALL" else str(row)] = {k: float(df.loc[row, k]) for k in MOT_METRICS}
    if len(accs) == 1:
        out["OVERALL"] = dict(out[str(names[0])])
    return out
