"""Per-image keypoints and person masks, independent of any dataset (no FastReID import).

Formats (what ``tools/make_synthetic.py`` writes and the extraction tools produce):

* keypoints: a JSON file ``{"format": "coco17", "keypoint_names": [...], "images": {REL: [[x, y, score]
  * 17]}}`` where ``REL`` is the image path relative to the folder holding the JSON file (forward
  slashes). ``x, y`` are pixel-index coordinates of the stored image (pixel centres at integers), score
  in [0, 1] (0: not visible / not detected).
* masks: a folder ``masks/`` beside that JSON file (or any root) holding ``REL`` with a ``.png``
  extension, single channel, 0 = background, 255 = person.

:class:`AnnotationIndex` finds the annotations of an image path: explicit files/roots first, otherwise the
nearest ``keypoints.json`` / ``masks`` in the image's folder or its parents (the dataset root).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

# the COCO-17 definitions live in one place; re-exported here for the annotation file format
from ..functional.keypoints import (COCO17_FLIP_PAIRS, COCO17_NAMES, NUM_KEYPOINTS,  # noqa: F401
                                    flip_permutation)

KEYPOINTS_FILENAME = "keypoints.json"
MASKS_DIRNAME = "masks"


class AnnotationError(LookupError):
    """An image has no keypoints/mask where they are required."""


def load_keypoint_file(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read a keypoint JSON file; returns {relative path: float32 array (K, 3)}."""
    path = Path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise AnnotationError(f"cannot read keypoint file {path}: {e}") from e
    images = data.get("images") if isinstance(data, dict) else None
    if images is None:
        raise AnnotationError(f"{path} is not a fastreid_ext keypoint file (no 'images' mapping)")
    out = {}
    for rel, kps in images.items():
        arr = np.asarray(kps, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise AnnotationError(f"{path}: keypoints of {rel} have shape {arr.shape}, expected (K, 3)")
        out[rel.replace(os.sep, "/")] = arr
    bad = [rel for rel, arr in out.items() if not np.isfinite(arr).all()]
    if bad:  # a NaN keypoint makes a NaN heatmap loss far from here: name the data now
        raise AnnotationError(f"{path}: {len(bad)} image(s) have NaN/inf keypoint values, e.g. "
                              f"{', '.join(bad[:5])}; re-extract them (tools/extract_keypoints.py) or set undetected "
                              f"keypoints to score 0 with finite x, y")
    return out


def save_keypoint_file(path: str | os.PathLike, keypoints: Dict[str, np.ndarray],
                       names: Sequence[str] = COCO17_NAMES, extra: Optional[dict] = None) -> None:
    """Write a keypoint JSON file atomically (temporary file + rename)."""
    path = Path(path)
    data = {"format": "coco17" if len(names) == NUM_KEYPOINTS else "custom", "keypoint_names": list(names),
            "images": {k: np.round(np.asarray(v, dtype=np.float64), 3).tolist()
                       for k, v in sorted(keypoints.items())}}
    if extra:
        data.update(extra)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask PNG as uint8 {0, 255} HxW."""
    from PIL import Image

    with Image.open(path) as im:
        m = np.asarray(im.convert("L"))
    return np.where(m >= 128, 255, 0).astype(np.uint8)


class AnnotationIndex:
    """Finds keypoints and masks for image paths.

    Args:
        keypoint_files: explicit keypoint JSON files; their keys are relative to the file's folder.
        mask_roots: explicit mask roots; an image ``D/REL`` maps to ``ROOT/REL.png`` where ``D`` is the
            image's folder or one of its parents (the image folder first, up to three levels: ``D`` may be the
            dataset root, or the folder holding several dataset folders when ``ROOT`` mirrors them as
            ``ROOT/<dataset folder>/REL.png``). Roots inside one of those folders are tried first, nearest
            folder first, so that datasets with the same relative file names never take each other's masks.
        search: look for ``keypoints.json`` / ``masks/`` in the image's folder and its parents.
        mask_search: look for ``masks/`` folders beside the images (default: only without explicit
            ``mask_roots``; explicit roots replace the dataset's own masks: an image they lack has no mask, it
            does not silently get the dataset's ``masks/`` one).
    """

    def __init__(self, keypoint_files: Iterable[str] = (), mask_roots: Iterable[str] = (),
                 search: bool = True, mask_search: Optional[bool] = None):
        self._by_abs: Dict[str, np.ndarray] = {}
        self._loaded_dirs: Dict[str, bool] = {}
        self.mask_roots = [Path(r) for r in mask_roots]
        self._resolved_roots = [r.resolve() for r in self.mask_roots]
        self.search = search
        self.mask_search = bool(search and (not self.mask_roots if mask_search is None else mask_search))
        for f in keypoint_files:
            self._add_file(Path(f))

    # -- keypoints -----------------------------------------------------------------------------
    def _add_file(self, f: Path) -> None:
        base = f.resolve().parent
        for rel, kps in load_keypoint_file(f).items():
            self._by_abs[str((base / rel).resolve())] = kps
        self._loaded_dirs[str(base)] = True

    def _search_dirs(self, img: Path):
        d = img.parent
        for _ in range(4):  # image folder, dataset root, and two more levels at most
            yield d
            if d.parent == d:
                break
            d = d.parent

    def keypoints(self, img_path: str) -> Optional[np.ndarray]:
        img = Path(img_path).resolve()
        key = str(img)
        if key not in self._by_abs and self.search:
            for d in self._search_dirs(img):
                if str(d) in self._loaded_dirs:
                    continue
                f = d / KEYPOINTS_FILENAME
                self._loaded_dirs[str(d)] = f.is_file()
                if f.is_file():
                    self._add_file(f)
                if key in self._by_abs:
                    break
        kps = self._by_abs.get(key)
        return None if kps is None else kps.copy()

    # -- masks -----------------------------------------------------------------------------------
    def mask_path(self, img_path: str) -> Optional[Path]:
        img = Path(img_path).resolve()
        levels = [(d, img.relative_to(d).with_suffix(".png")) for d in self._search_dirs(img)]
        # first the roots inside the image's own folders, nearest folder first: they belong to its dataset (two
        # datasets with the same relative file names, each with its root beside or inside it, never swap masks)
        candidates = [root / rel for d, rel in levels for root, resolved in zip(self.mask_roots, self._resolved_roots)
                      if d in resolved.parents]
        for d, rel in levels:
            for root in self.mask_roots:
                candidates.append(root / rel)
            if self.mask_search:
                candidates.append(d / MASKS_DIRNAME / rel)
        for c in candidates:
            if c.is_file():
                return c
        return None

    def mask(self, img_path: str) -> Optional[np.ndarray]:
        p = self.mask_path(img_path)
        return None if p is None else read_mask(p)

    def coverage(self, img_paths: Iterable[str], what: str = "keypoints") -> Tuple[int, int, list]:
        """(with ``what`` -- ``"keypoints"`` or ``"masks"`` --, total, first few missing paths) over ``img_paths``
        (fastreid_ext/data/checks.py checks the images a run will read with it before training)."""
        if what not in ("keypoints", "masks"):
            raise ValueError(f"coverage of 'keypoints' or 'masks', not {what!r}")
        found = self.keypoints if what == "keypoints" else self.mask_path
        n = have = 0
        missing = []
        for p in img_paths:
            n += 1
            if found(p) is not None:
                have += 1
            elif len(missing) < 5:
                missing.append(p)
        return have, n, missing
