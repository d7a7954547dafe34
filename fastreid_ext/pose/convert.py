"""Import existing keypoint files (COCO json, OpenPose) into the fastreid_ext keypoint format.

Sources (``fmt``, detected by :func:`detect_format` when ``"auto"``):

* ``coco``: a COCO keypoint json (``images`` with ``id``/``file_name``, ``annotations`` with ``image_id``
  and ``keypoints`` = [x, y, v] * 17). Coordinates are taken as they are (crops: the person box is
  irrelevant). Visibility flags ``v``: 2 -> score 1, 1 (labelled, not visible) -> ``occluded_score``
  (default 0, "not visible" in our format), 0 -> 0. If the third values are not all in {0, 1, 2} they
  are taken as confidences (clipped to [0, 1]). Several annotations for one image: the one with the most
  labelled points (then the largest area) is kept.
* ``openpose``: OpenPose COCO-18 output, the neck dropped and reordered to COCO-17
  (:data:`OPENPOSE18_TO_COCO17`); BODY_25 output (75 numbers) is accepted too
  (:data:`BODY25_TO_COCO17`). Either a folder of per-image files ``<image stem>_keypoints.json`` (as
  ``openpose --write_json`` writes them; ``{"people": [{"pose_keypoints_2d": [...]}]}``, the person with
  the largest total confidence is kept), one such file, or one JSON mapping image name -> 54 numbers (or
  18 [x, y, c] triples, or a ``{"people": ...}`` dict).
* ``fastreid``: another fastreid_ext keypoint file (re-keyed to this dataset).

Names are matched to the dataset's images by relative path, else by the longest matching path suffix
(absolute paths work), extensions and OpenPose's ``_keypoints`` suffix ignored; a name matching several
images (same file name in two folders) is reported as ambiguous and not used.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.annotations import KEYPOINTS_FILENAME, load_keypoint_file, save_keypoint_file
from ..functional.keypoints import COCO17_NAMES
from .extract import IMAGE_EXTENSIONS, _rel, list_images

logger = logging.getLogger(__name__)

__all__ = ["OPENPOSE18_NAMES", "OPENPOSE18_TO_COCO17", "BODY25_TO_COCO17", "openpose_to_coco17",
           "load_coco_keypoints", "load_openpose_keypoints", "detect_format", "load_source",
           "match_to_dataset", "import_keypoints", "ImportResult"]

#: OpenPose COCO-18 order
OPENPOSE18_NAMES = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
                    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear")
#: COCO-17 index -> OpenPose-18 index (the neck, 1, is dropped)
OPENPOSE18_TO_COCO17 = tuple(OPENPOSE18_NAMES.index(n) for n in COCO17_NAMES)
# = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
#: COCO-17 index -> OpenPose BODY_25 index (BODY_25: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm,
#: 8 mid-hip, 9-11 right leg, 12-14 left leg, 15/16 right/left eye, 17/18 right/left ear, 19-24 feet)
BODY25_TO_COCO17 = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)

_K = len(COCO17_NAMES)


def openpose_to_coco17(values) -> np.ndarray:
    """OpenPose keypoints (54 numbers / (18, 3) for COCO-18, 75 / (25, 3) for BODY_25) -> (17, 3)."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size == 54:
        idx = OPENPOSE18_TO_COCO17
    elif arr.size == 75:
        idx = BODY25_TO_COCO17
    else:
        raise ValueError(f"OpenPose keypoints must have 54 (COCO-18) or 75 (BODY_25) numbers, got {arr.size}")
    kps = arr.reshape(-1, 3)[list(idx)].copy()
    kps[:, 2] = np.clip(np.nan_to_num(kps[:, 2]), 0.0, 1.0)
    return kps


def _best_person(people: Sequence[dict]) -> Optional[np.ndarray]:
    best, best_c = None, -1.0
    for person in people:
        vals = person.get("pose_keypoints_2d") or person.get("pose_keypoints")
        if not vals:
            continue
        kps = openpose_to_coco17(vals)
        c = float(kps[:, 2].sum())
        if c > best_c:
            best, best_c = kps, c
    return best


def _strip_openpose_name(name: str) -> str:
    if name.endswith(".json"):
        name = name[:-5]
    if name.endswith("_keypoints"):
        name = name[:-len("_keypoints")]
    return name


def load_openpose_keypoints(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """{name: (17, 3)} from an OpenPose folder / per-image file / name mapping (see module doc). Frames
    with nobody in them give all-zero scores."""
    path = Path(path)
    out: Dict[str, np.ndarray] = {}
    if path.is_dir():
        for f in sorted(path.rglob("*.json")):
            with open(f) as fh:
                data = json.load(fh)
            kps = _best_person(data.get("people", [])) if isinstance(data, dict) else None
            out[_strip_openpose_name(_rel(f, path))] = kps if kps is not None else np.zeros((_K, 3), np.float32)
        return out
    with open(path) as fh:
        data = json.load(fh)
    if isinstance(data, dict) and "people" in data:
        kps = _best_person(data["people"])
        return {_strip_openpose_name(path.name): kps if kps is not None else np.zeros((_K, 3), np.float32)}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an OpenPose mapping name -> keypoints, got {type(data).__name__}")
    for name, vals in data.items():
        if isinstance(vals, dict):
            kps = _best_person(vals.get("people", []))
            out[name] = kps if kps is not None else np.zeros((_K, 3), np.float32)
        elif vals is None or len(vals) == 0:
            out[name] = np.zeros((_K, 3), np.float32)
        else:
            out[name] = openpose_to_coco17(vals)
    return out


def load_coco_keypoints(path: str | os.PathLike, occluded_score: float = 0.0) -> Dict[str, np.ndarray]:
    """{file_name: (17, 3)} from a COCO keypoint json (see module doc)."""
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise ValueError(f"{path} is not a COCO keypoint json (needs 'images' and 'annotations'); a COCO "
                         "results list has no file names: add the 'images' of its ground-truth file")
    names = {img["id"]: img["file_name"] for img in data["images"]}
    person_ids = {c["id"] for c in data.get("categories", []) if c.get("name") == "person"}
    best: Dict[int, Tuple[Tuple[int, float], np.ndarray]] = {}
    for ann in data["annotations"]:
        if person_ids and ann.get("category_id") not in person_ids:
            continue
        vals = ann.get("keypoints")
        if not vals or len(vals) != 3 * _K:
            continue
        arr = np.asarray(vals, dtype=np.float32).reshape(_K, 3)
        rank = (int(np.sum(arr[:, 2] > 0)), float(ann.get("area", 0.0) or 0.0))
        cur = best.get(ann["image_id"])
        if cur is None or rank > cur[0]:
            best[ann["image_id"]] = (rank, arr)
    if not best:
        return {}
    third = np.concatenate([a[:, 2] for _, a in best.values()])
    flags = bool(np.all(np.isin(third, (0.0, 1.0, 2.0))))
    out = {}
    for image_id, (_, arr) in best.items():
        if image_id not in names:
            logger.warning("%s: annotation for unknown image id %s ignored", path, image_id)
            continue
        kps = arr.copy()
        if flags:
            v = arr[:, 2]
            kps[:, 2] = np.where(v == 2, 1.0, np.where(v == 1, float(occluded_score), 0.0))
        else:
            kps[:, 2] = np.clip(arr[:, 2], 0.0, 1.0)
        out[names[image_id]] = kps.astype(np.float32)
    for image_id, name in names.items():  # images without a person annotation: nothing detected
        if image_id not in best:
            out.setdefault(name, np.zeros((_K, 3), np.float32))
    return out


def detect_format(path: str | os.PathLike) -> str:
    """``coco`` | ``openpose`` | ``fastreid`` for a source path."""
    path = Path(path)
    if path.is_dir():
        return "openpose"
    with open(path) as fh:
        data = json.load(fh)
    if isinstance(data, dict):
        if "annotations" in data and "images" in data:
            return "coco"
        if isinstance(data.get("images"), dict) and "keypoint_names" in data:
            return "fastreid"
        return "openpose"
    raise ValueError(f"cannot tell the format of {path}; pass --source-format")


def load_source(path: str | os.PathLike, fmt: str = "auto", occluded_score: float = 0.0) -> Tuple[str, Dict[str, np.ndarray]]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "coco":
        return fmt, load_coco_keypoints(path, occluded_score=occluded_score)
    if fmt == "openpose":
        return fmt, load_openpose_keypoints(path)
    if fmt == "fastreid":
        return fmt, load_keypoint_file(path)
    raise ValueError(f"unknown keypoint source format {fmt!r} (coco | openpose | fastreid | auto)")


def _noext(name: str) -> str:
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS or ext.lower() == ".json" else name


def match_to_dataset(source: Dict[str, np.ndarray], dataset_rels: Sequence[str]):
    """Map source names to dataset images (relative paths, forward slashes).

    Returns ``(matched {dataset rel: (17, 3)}, unmatched source names, ambiguous {source name: [rels]},
    duplicates [source names whose image was already matched by another name])``."""
    exact = set(dataset_rels)
    by_suffix: Dict[str, List[str]] = {}  # every path suffix of every image, without extension
    for rel in dataset_rels:
        parts = _noext(rel).split("/")
        for i in range(len(parts)):
            by_suffix.setdefault("/".join(parts[i:]), []).append(rel)
    matched: Dict[str, np.ndarray] = {}
    unmatched: List[str] = []
    ambiguous: Dict[str, List[str]] = {}
    duplicates: List[str] = []
    for name, kps in source.items():
        norm = _strip_openpose_name(name.replace("\\", "/")) if name.endswith(".json") else name.replace("\\", "/")
        while norm.startswith("./"):
            norm = norm[2:]
        hit: Optional[List[str]] = [norm] if norm in exact else None
        if hit is None:
            parts = [p for p in _noext(norm).split("/") if p]
            for i in range(len(parts)):  # longest suffix first
                cand = by_suffix.get("/".join(parts[i:]))
                if cand:
                    hit = cand
                    break
        if not hit:
            unmatched.append(name)
        elif len(hit) > 1:
            ambiguous[name] = sorted(hit)
        elif hit[0] in matched:
            duplicates.append(name)
        else:
            matched[hit[0]] = np.asarray(kps, dtype=np.float32)
    return matched, unmatched, ambiguous, duplicates


@dataclass
class ImportResult:
    output: Path
    format: str
    num_images: int
    num_source: int
    matched: int
    missing: List[str]                  #: dataset images the source does not cover
    unmatched: List[str]                #: source names matching no dataset image
    ambiguous: Dict[str, List[str]]     #: source names matching several images (not used)
    duplicates: List[str]

    def summary(self, max_list: int = 20) -> str:
        lines = [f"imported {self.matched}/{self.num_images} images from {self.num_source} {self.format} "
                 f"entries into {self.output}; {len(self.missing)} images not covered, {len(self.unmatched)} "
                 f"source entries match no image, {len(self.ambiguous)} ambiguous, {len(self.duplicates)} duplicates"]
        for title, names in (("images not covered", self.missing), ("source entries matching no image",
                                                                    self.unmatched),
                             ("ambiguous source entries", [f"{k} -> {v}" for k, v in self.ambiguous.items()])):
            if names:
                lines.append(f"{title} ({len(names)}):")
                lines.extend(f"  {n}" for n in names[:max_list])
                if len(names) > max_list:
                    lines.append(f"  ... and {len(names) - max_list} more")
        return "\n".join(lines)


def import_keypoints(root: str | os.PathLike, source: str | os.PathLike, output: Optional[str | os.PathLike] = None,
                     *, fmt: str = "auto", subdirs: Optional[Sequence[str]] = None, overwrite: bool = False,
                     occluded_score: float = 0.0) -> ImportResult:
    """Convert ``source`` to a fastreid_ext keypoint file for the images under ``root`` (written
    atomically to ``output``, default ``root/keypoints.json``). Only images of the dataset are written;
    what is not covered is reported (and logged)."""
    root = Path(root)
    output = Path(output) if output is not None else root / KEYPOINTS_FILENAME
    if output.is_file() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite (overwrite=True) or another --output")
    fmt, src = load_source(source, fmt, occluded_score=occluded_score)
    paths = list_images(root, subdirs)
    root_rels = [_rel(p.resolve(), root.resolve()) for p in paths]
    base = output.resolve().parent
    key_of = {r: _rel(p.resolve(), base) for r, p in zip(root_rels, paths)}
    matched, unmatched, ambiguous, duplicates = match_to_dataset(src, root_rels)
    missing = sorted(r for r in root_rels if r not in matched)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_keypoint_file(output, {key_of[r]: k for r, k in matched.items()},
                       extra={"extractor": {"backend": "import", "format": fmt, "source": os.path.basename(
                           os.path.normpath(str(source)))}})
    res = ImportResult(output, fmt, len(root_rels), len(src), len(matched), missing, sorted(unmatched),
                       ambiguous, duplicates)
    if missing or unmatched or ambiguous:
        logger.warning(res.summary(max_list=5))
    else:
        logger.info(res.summary())
    return res
