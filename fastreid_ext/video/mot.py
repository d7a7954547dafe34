"""MOTChallenge sequences: frames and person boxes (``gt/gt.txt`` or ``det/det.txt``).

Layout of a sequence folder (MOT16/17/20)::

    SEQ/seqinfo.ini          [Sequence] name, imDir (img1), frameRate, seqLength, imWidth, imHeight, imExt
    SEQ/img1/000001.jpg ...
    SEQ/gt/gt.txt            frame, id, left, top, width, height, conf(=consider flag), class, visibility
    SEQ/det/det.txt          frame, -1, left, top, width, height, score, -1, -1, -1

Boxes are 1-based MOT pixels as written; we use them as ``(left, top, width, height)`` floats. In
``gt.txt`` the 7th column is a 0/1 "consider" flag and class 1 is a walking pedestrian; only those
are kept by default (``classes=(1,)``, ``only_considered=True``), the usual MOT evaluation subset.
"""
from __future__ import annotations

import configparser
import glob
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Box:
    frame: int
    left: float
    top: float
    width: float
    height: float
    gt_id: int = -1  # -1: unknown (detections)
    score: float = 1.0
    cls: int = -1
    visibility: float = -1.0

    def clipped(self, img_w: int, img_h: int):
        """Integer crop ``(x0, y0, x1, y1)`` inside the image, or ``None`` if (almost) empty."""
        x0 = int(max(0, np.floor(self.left)))
        y0 = int(max(0, np.floor(self.top)))
        x1 = int(min(img_w, np.ceil(self.left + self.width)))
        y1 = int(min(img_h, np.ceil(self.top + self.height)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return None
        return x0, y0, x1, y1


@dataclass
class MotSequence:
    name: str
    root: Path
    frames: List[Path]          # sorted image files
    frame_ids: List[int]        # MOT frame numbers (from the file names)
    frame_rate: float = 30.0

    def __len__(self):
        return len(self.frames)


def read_seqinfo(seq_dir: str | os.PathLike) -> Dict[str, str]:
    f = Path(seq_dir) / "seqinfo.ini"
    if not f.is_file():
        return {}
    cp = configparser.ConfigParser()
    cp.read(f)
    return dict(cp["Sequence"]) if "Sequence" in cp else {}


def load_sequence(seq_dir: str | os.PathLike, max_frames: int = 0) -> MotSequence:
    """Frames of a MOT sequence folder (``imDir``/``imExt`` from seqinfo.ini, default ``img1``/.jpg);
    frames present on disk only (mini sequences hold a prefix of the frames)."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {seq_dir}")
    info = read_seqinfo(seq_dir)
    if not info:
        logger.warning("%s has no seqinfo.ini [Sequence] section (MOTChallenge layout): assuming frames img1/*.jpg "
                       "at 30 frames/s", seq_dir)
    im_dir = seq_dir / info.get("imdir", "img1")
    ext = info.get("imext", ".jpg")
    if not im_dir.is_dir():
        raise FileNotFoundError(f"no frame folder {im_dir} (a MOTChallenge sequence has img1/ and seqinfo.ini)")
    files = sorted(glob.glob(str(im_dir / f"*{ext}")), key=lambda p: int(Path(p).stem) if Path(p).stem.isdigit() else p)
    if not files:
        raise FileNotFoundError(f"no *{ext} frames in {im_dir}")
    ids = [int(Path(p).stem) if Path(p).stem.isdigit() else i + 1 for i, p in enumerate(files)]
    if all(Path(p).stem.isdigit() for p in files):
        # a gap in the numbering is a missing frame: list it in the order it belongs, so that it is reported when
        # its turn comes (frames before it are processed and written first)
        width = len(Path(files[0]).stem)
        present = set(ids)
        missing = [i for i in range(ids[0], ids[-1] + 1) if i not in present]
        if missing:
            logger.warning("%s: %d frame(s) missing from %s, first %s", seq_dir, len(missing), im_dir,
                           f"{missing[0]:0{width}d}{ext}")
            ids = list(range(ids[0], ids[-1] + 1))
            files = [str(im_dir / f"{i:0{width}d}{ext}") for i in ids]
    if max_frames:
        files, ids = files[:max_frames], ids[:max_frames]
    return MotSequence(name=info.get("name", seq_dir.name), root=seq_dir, frames=[Path(p) for p in files],
                     frame_ids=ids, frame_rate=float(info.get("framerate", 30)))


def read_mot_boxes(path: str | os.PathLike, kind: Optional[str] = None, classes: Optional[Sequence[int]] = (1,),
                   only_considered: bool = True, min_visibility: float = 0.0, min_score: float = -np.inf
                   ) -> Dict[int, List[Box]]:
    """``{frame: [Box, ...]}`` from a MOT ``gt.txt`` (``kind="gt"``) or ``det.txt`` (``kind="det"``;
    default: guessed from the file name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"box file not found: {path}")
    kind = kind or ("gt" if path.name.startswith("gt") else "det")
    out: Dict[int, List[Box]] = {}
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            v = [x.strip() for x in line.split(",")]
            if len(v) < 6:
                raise ValueError(f"{path}:{ln}: expected at least 6 comma-separated values, got {line!r}")
            frame, tid = int(float(v[0])), int(float(v[1]))
            l, t, w, h = map(float, v[2:6])
            conf = float(v[6]) if len(v) > 6 else 1.0
            cls = int(float(v[7])) if len(v) > 7 else -1
            vis = float(v[8]) if len(v) > 8 else -1.0
            if kind == "gt":
                if only_considered and conf == 0:
                    continue
                if classes is not None and cls not in classes:
                    continue
                if vis >= 0 and vis < min_visibility:
                    continue
                box = Box(frame, l, t, w, h, gt_id=tid, score=1.0, cls=cls, visibility=vis)
            else:
                if conf < min_score:
                    continue
                box = Box(frame, l, t, w, h, gt_id=-1 if tid < 0 else tid, score=conf, cls=cls, visibility=vis)
            out.setdefault(frame, []).append(box)
    return out


def find_box_file(seq_dir: str | os.PathLike, source: str = "gt") -> Path:
    """``SEQ/gt/gt.txt`` or ``SEQ/det/det.txt``."""
    seq_dir = Path(seq_dir)
    f = seq_dir / source / f"{source}.txt"
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found (boxes: --boxes gt | det | a file | --detector module:function)")
    return f
