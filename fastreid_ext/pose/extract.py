"""Resumable keypoint extraction over a dataset folder, coverage check and comparison.

:func:`extract_keypoints` runs a backend (:mod:`fastreid_ext.pose.backends`) on every image of a
dataset folder (recursively) and writes the fastreid_ext keypoint file (``keypoints.json`` at the
dataset root by default, keys relative to the file's folder; format in
:mod:`fastreid_ext.data.annotations`).

Resuming: results are appended batch by batch to ``<output stem>.partial.jsonl`` beside the output
(first line: a header with the backend's signature, then one ``{"image": REL, "keypoints": [[x, y, s]
* 17]}`` per line, flushed and fsynced after every batch). A crash or Ctrl-C loses at most the batch in
flight; a rerun of the same command skips every image already in the partial file (and, unless
``overwrite``, those already in an existing output written by the same backend), then writes the output
atomically and deletes the partial file.

:func:`check_coverage` reports which images of a dataset a keypoint file lacks (the training side raises
for missing keypoints); :func:`compare_keypoints` measures predicted against reference keypoints.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..data.annotations import KEYPOINTS_FILENAME, load_keypoint_file, save_keypoint_file
from ..functional.keypoints import COCO17_NAMES, flip_permutation
from ..utils.extraction import IMAGE_EXTENSIONS, list_images

logger = logging.getLogger(__name__)

__all__ = ["ResumeError", "IMAGE_EXTENSIONS", "list_images", "partial_path", "extract_keypoints", "ExtractResult",
           "check_coverage", "CoverageReport", "compare_keypoints", "read_partial"]

PARTIAL_VERSION = 1


class ResumeError(RuntimeError):
    """A partial file that cannot be resumed with this backend (other backend / options, no header)."""


def _rel(path: Path, base: Path) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def partial_path(output: str | os.PathLike) -> Path:
    """``keypoints.json`` -> ``keypoints.partial.jsonl`` (same folder)."""
    output = Path(output)
    return output.with_name(output.stem + ".partial.jsonl")


def read_partial(path: str | os.PathLike) -> Tuple[Optional[dict], Dict[str, np.ndarray]]:
    """(header, {REL: (17, 3)}) of a partial file. Lines cut by a crash (invalid JSON) are skipped."""
    path = Path(path)
    header, done = None, {}
    if not path.is_file():
        return header, done
    bad = 0
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if i == 0 and "header" in rec:
                header = rec["header"]
                continue
            kps = np.asarray(rec.get("keypoints", ()), dtype=np.float32)
            if "image" in rec and kps.shape == (len(COCO17_NAMES), 3):
                done[rec["image"]] = kps
            else:
                bad += 1
    if bad:
        logger.warning("%s: skipped %d unreadable line(s) (cut by an interruption); those images are "
                       "extracted again", path, bad)
    return header, done


@dataclass
class ExtractResult:
    output: Path
    num_images: int           #: images of the dataset
    num_computed: int         #: images run through the backend in this call
    num_reused: int           #: images taken from the partial file / the existing output
    undetected: List[str]     #: images with all-zero scores (no person found)
    unreadable: List[str]     #: images that could not be read (not in the output)
    seconds: float            #: wall time of the backend part of this call

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(self.num_computed, 1)


def _read_image(path: Path):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return img if img is not None and img.size else None


def extract_keypoints(root: str | os.PathLike, backend, output: Optional[str | os.PathLike] = None, *,
                      subdirs: Optional[Sequence[str]] = None, batch_size: Optional[int] = None,
                      overwrite: bool = False, progress: bool = True,
                      images: Optional[Iterable[str | os.PathLike]] = None) -> ExtractResult:
    """Extract keypoints of every image under ``root`` with ``backend`` and write ``output``.

    Args:
        root: dataset folder (searched recursively, see :func:`list_images`).
        backend: a :class:`~fastreid_ext.pose.backends.KeypointBackend`.
        output: keypoint file, default ``root/keypoints.json``; keys are relative to its folder.
        subdirs: only these subfolders of ``root`` (e.g. ``bounding_box_train query bounding_box_test``).
        batch_size: images per backend call and per flush of the partial file.
        overwrite: ignore (and delete) an existing partial file and output; recompute everything.
        progress: tqdm progress bar.
        images: explicit image paths instead of listing ``root``.
    """
    from tqdm import tqdm

    root = Path(root)
    output = Path(output) if output is not None else root / KEYPOINTS_FILENAME
    output.parent.mkdir(parents=True, exist_ok=True)
    base = output.resolve().parent
    paths = [Path(p) for p in images] if images is not None else list_images(root, subdirs)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}"
                                f"{' in ' + ', '.join(subdirs) if subdirs else ''}")
    rels = [_rel(p.resolve(), base) for p in paths]
    batch_size = int(batch_size or getattr(backend, "default_batch_size", 16))
    signature = backend.signature()
    part = partial_path(output)

    if overwrite:
        part.unlink(missing_ok=True)
    header, done = read_partial(part)
    if header is not None and header.get("signature") != signature:
        raise ResumeError(
            f"{part} was written by {header.get('signature')}, not by {signature}. Rerun with the same "
            "backend options to resume, or pass --overwrite (overwrite=True) to start again.")
    if part.is_file() and header is None:
        if done:
            raise ResumeError(f"{part} has no header line; delete it or pass --overwrite")
        part.unlink()  # only a header cut by a crash: start the file again
    reused_from_output = 0
    if not overwrite and output.is_file():
        try:
            with open(output) as f:
                meta = json.load(f).get("extractor")
        except (OSError, ValueError, AttributeError):
            meta = None
        if meta != signature:
            raise FileExistsError(
                f"{output} exists and was not written by {signature} (its extractor: {meta}); it may hold "
                "exact or imported keypoints. Pass --overwrite (overwrite=True) to replace it or choose "
                "another --output.")
        old = load_keypoint_file(output)
        for rel in rels:
            if rel not in done and rel in old:
                done[rel] = old[rel]
                reused_from_output += 1
    todo = [(p, r) for p, r in zip(paths, rels) if r not in done]
    wanted = set(rels)
    num_reused = sum(1 for r in rels if r in done)
    if num_reused:
        logger.info("Resuming: %d of %d images already done (%d from %s, %d from %s)", num_reused, len(rels),
                    num_reused - reused_from_output, part.name, reused_from_output, output.name)

    unreadable: List[str] = []
    t_backend = 0.0
    if todo:
        new_file = not part.is_file() or part.stat().st_size == 0
        with open(part, "a") as f:
            if new_file:
                f.write(json.dumps({"header": {"version": PARTIAL_VERSION, "signature": signature,
                                               "output": output.name}}) + "\n")
            elif not _ends_with_newline(part):
                f.write("\n")  # a line cut by a crash must not swallow the next record
            f.flush()
            bar = tqdm(total=len(rels), initial=num_reused, disable=not progress, unit="img",
                       desc=f"keypoints ({signature['backend']})", dynamic_ncols=True)
            try:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start:start + batch_size]
                    imgs, names = [], []
                    for p, r in chunk:
                        img = _read_image(p)
                        if img is None:
                            unreadable.append(r)
                            logger.warning("cannot read %s: skipped", p)
                        else:
                            imgs.append(img)
                            names.append(r)
                    t0 = time.perf_counter()
                    preds = backend.predict(imgs) if imgs else []
                    t_backend += time.perf_counter() - t0
                    if len(preds) != len(names):
                        raise RuntimeError(f"backend returned {len(preds)} results for {len(names)} images")
                    lines = []
                    for r, kps in zip(names, preds):
                        kps = np.asarray(kps, dtype=np.float32).reshape(len(COCO17_NAMES), 3)
                        done[r] = kps
                        lines.append(json.dumps({"image": r, "keypoints": np.round(kps.astype(np.float64), 3)
                                                 .tolist()}))
                    if lines:
                        f.write("\n".join(lines) + "\n")
                        f.flush()
                        os.fsync(f.fileno())
                    bar.update(len(chunk))
            finally:
                bar.close()
    final = {r: done[r] for r in rels if r in done}
    undetected = sorted(r for r, k in final.items() if not np.any(k[:, 2] > 0))
    extra = {"extractor": signature, "num_undetected": len(undetected)}
    save_keypoint_file(output, final, extra=extra)
    part.unlink(missing_ok=True)
    stale = sum(1 for r in done if r not in wanted)
    if stale:
        logger.info("%d entries of the partial file are not images of this dataset any more: dropped", stale)
    if undetected:
        logger.warning("%d of %d images have no detected person (all scores 0), e.g. %s", len(undetected),
                       len(final), ", ".join(undetected[:5]))
    if unreadable:
        logger.warning("%d images could not be read and have no keypoints, e.g. %s", len(unreadable),
                       ", ".join(unreadable[:5]))
    res = ExtractResult(output, len(rels), len(todo) - len(unreadable), num_reused, undetected, unreadable,
                        t_backend)
    logger.info("Wrote %s: %d images (%d computed in %.1f s, %.1f ms/image; %d reused; %d undetected)",
                output, len(final), res.num_computed, t_backend, res.ms_per_image, num_reused, len(undetected))
    return res


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# ----------------------------------------------------------------------------------------------------
# coverage check
# ----------------------------------------------------------------------------------------------------
@dataclass
class CoverageReport:
    keypoint_file: Path
    num_images: int
    missing: List[str]                       #: dataset images without keypoints (relative to the file)
    extra: List[str]                         #: entries that are no image of the dataset
    undetected: List[str]                    #: covered images whose scores are all 0
    bad_shape: List[str] = field(default_factory=list)   #: entries that are not (17, 3)
    out_of_bounds: List[str] = field(default_factory=list)  #: scored points outside the image (check_bounds)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad_shape

    @property
    def num_covered(self) -> int:
        return self.num_images - len(self.missing)

    def summary(self, max_list: int = 20) -> str:
        pct = 100.0 * self.num_covered / max(self.num_images, 1)
        lines = [f"{self.keypoint_file}: {self.num_covered}/{self.num_images} images covered ({pct:.2f} %), "
                 f"{len(self.missing)} missing, {len(self.undetected)} with no detected person (all scores 0), "
                 f"{len(self.extra)} entries for images not in the dataset"]

        def listing(title, names):
            if names:
                lines.append(f"{title} ({len(names)}):")
                lines.extend(f"  {n}" for n in names[:max_list])
                if len(names) > max_list:
                    lines.append(f"  ... and {len(names) - max_list} more")
        listing("images without keypoints", self.missing)
        listing("entries not of shape (17, 3)", self.bad_shape)
        listing("entries with scored points outside their image", self.out_of_bounds)
        lines.append("OK: every image has keypoints" if self.ok else
                     "NOT OK: training with DATASETS.ANNOTATIONS.LOAD_KEYPOINTS raises on the missing images")
        return "\n".join(lines)


def check_coverage(root: str | os.PathLike, keypoint_file: Optional[str | os.PathLike] = None, *,
                   subdirs: Optional[Sequence[str]] = None, check_bounds: bool = False) -> CoverageReport:
    """Which images under ``root`` (see :func:`list_images`) have no entry in ``keypoint_file``
    (default ``root/keypoints.json``)."""
    root = Path(root)
    kfile = Path(keypoint_file) if keypoint_file is not None else root / KEYPOINTS_FILENAME
    if not kfile.is_file():
        raise FileNotFoundError(f"keypoint file {kfile} does not exist")
    kps = load_keypoint_file(kfile)
    base = kfile.resolve().parent
    paths = list_images(root, subdirs)
    rels = {_rel(p.resolve(), base): p for p in paths}
    missing = sorted(r for r in rels if r not in kps)
    extra = sorted(r for r in kps if r not in rels)
    covered = [r for r in rels if r in kps]
    bad_shape = sorted(r for r in covered if kps[r].shape != (len(COCO17_NAMES), 3))
    undetected = sorted(r for r in covered if not np.any(kps[r][:, 2] > 0))
    oob = []
    if check_bounds:
        from PIL import Image

        for r in covered:
            with Image.open(rels[r]) as im:
                w, h = im.size
            k = kps[r]
            s = k[:, 2] > 0
            if np.any(s & ((k[:, 0] < -0.5) | (k[:, 0] > w - 0.5) | (k[:, 1] < -0.5) | (k[:, 1] > h - 0.5))):
                oob.append(r)
    return CoverageReport(kfile, len(rels), missing, extra, undetected, bad_shape, sorted(oob))


# ----------------------------------------------------------------------------------------------------
# comparison with reference keypoints
# ----------------------------------------------------------------------------------------------------
def compare_keypoints(pred: Dict[str, np.ndarray], ref: Dict[str, np.ndarray], *,
                      image_heights: Optional[Dict[str, float]] = None, thresholds=(0.05, 0.1, 0.2),
                      min_score: float = 0.0) -> Dict:
    """PCK-style agreement of ``pred`` with ``ref`` (both {name: (17, 3)}) over the names in both.

    A reference point counts when its score is > 0; a prediction is "near" when its score is
    > ``min_score`` and it lies within ``t * H`` pixels of the reference (``H``: image height from
    ``image_heights``, else the reference skeleton's height). Returns detection rate (images with any
    score > 0), ``pck@t`` over all reference points (undetected images count as misses), ``pck_det@t`` over
    the detected images only, per-keypoint ``pck@0.1``, the median error in units of ``H``, and
    ``lr_swapped_rate``: the fraction of detected images whose prediction fits the reference better with
    left and right exchanged (a model that takes back views for front views), with
    ``pck_det_any_lr@0.1`` the PCK of the detected images when such a swap is forgiven.
    """
    names = sorted(set(pred) & set(ref))
    if not names:
        raise ValueError("no image in common between the predicted and the reference keypoints")
    t = np.asarray(thresholds, dtype=np.float64)
    hits = np.zeros(len(t))
    hits_det = np.zeros(len(t))
    n_ref = n_ref_det = 0
    per_kp_hit = np.zeros(len(COCO17_NAMES))
    per_kp_n = np.zeros(len(COCO17_NAMES))
    errs = []
    detected = swapped = 0
    hits_any_lr = 0
    perm = flip_permutation(len(COCO17_NAMES))
    for name in names:
        p, r = np.asarray(pred[name], np.float64), np.asarray(ref[name], np.float64)
        vis = r[:, 2] > 0
        if not vis.any():
            continue
        if image_heights and name in image_heights:
            h = float(image_heights[name])
        else:
            h = float(np.ptp(r[vis, 1])) or 1.0
        det = bool(np.any(p[:, 2] > 0))
        detected += det
        d = np.linalg.norm(p[:, :2] - r[:, :2], axis=1) / h
        ok = (p[:, 2] > min_score)[:, None] & (d[:, None] <= t[None, :]) & vis[:, None]
        hits += ok.sum(0)
        n_ref += int(vis.sum())
        per_kp_n += vis
        per_kp_hit += (p[:, 2] > min_score) & (d <= 0.1) & vis
        if det:
            hits_det += ok.sum(0)
            n_ref_det += int(vis.sum())
            errs.extend(d[vis].tolist())
            d_sw = np.linalg.norm(p[perm, :2] - r[:, :2], axis=1) / h
            is_swapped = float(np.sum(d_sw[vis])) < float(np.sum(d[vis]))
            swapped += is_swapped
            d_best = d_sw if is_swapped else d
            hits_any_lr += int(np.sum((p[perm if is_swapped else slice(None), 2] > min_score) & (d_best <= 0.1)
                                      & vis))
    out = {"images": len(names), "detected": detected, "detection_rate": detected / len(names),
           "reference_points": n_ref, "median_error": float(np.median(errs)) if errs else float("nan"),
           "lr_swapped_rate": swapped / max(detected, 1),
           "pck_det_any_lr@0.1": hits_any_lr / max(n_ref_det, 1)}
    for i, th in enumerate(t):
        out[f"pck@{th:g}"] = float(hits[i] / max(n_ref, 1))
        out[f"pck_det@{th:g}"] = float(hits_det[i] / max(n_ref_det, 1))
    out["per_keypoint_pck@0.1"] = {n: float(per_kp_hit[k] / per_kp_n[k]) if per_kp_n[k] else float("nan")
                                   for k, n in enumerate(COCO17_NAMES)}
    return out
