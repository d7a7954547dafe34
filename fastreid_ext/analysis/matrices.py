"""Condition matrices of several model variants over a controlled-conditions image set, streamed.

Images are read in batches in (person, condition, shot) order; every variant embeds the batch; a person's features
are kept only until the person's last image has been embedded, then turned into its matrix
(:func:`~fastreid_ext.analysis.stats.person_matrix`) and added to the running mean / spread. Memory therefore
grows with the batch and one person's images, not with the number of images of a factor.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from .layout import FactorImages, ImageSet
from .stats import ImpostorAccumulator, MatrixAccumulator, person_matrix

logger = logging.getLogger(__name__)

__all__ = ["SampleSource", "compute_matrices", "write_results", "MissingAnnotation"]


class MissingAnnotation(LookupError):
    """A mask / keypoints / orientation a variant needs is not available for an image."""


class SampleSource:
    """Reads images and what the variants need: masks per backend, keypoints (flip=keypoints) and the known
    orientation of the condition (flip=known)."""

    def __init__(self, image_set: ImageSet, masks: Sequence[str] = (), keypoints: bool = False,
                 mask_source: Optional[str] = None, mask_checkpoint: Optional[str] = None,
                 pose_backend: Optional[str] = None):
        from ..data.annotations import AnnotationIndex

        self.root = Path(image_set.root)
        self.index = AnnotationIndex(mask_roots=[str(self.root / "masks")])
        self.masks = sorted(set(m for m in masks if m != "none"))
        self.backends = {}
        for m in self.masks:
            if m == "exact":
                continue
            from ..segmentation.backends import build_segmenter

            if m == "import":
                if not mask_source:
                    raise ValueError("mask=import needs --mask-source DIR (a folder of PNG / NPY masks)")
                self.backends[m] = build_segmenter("import", source=mask_source, image_root=str(self.root))
            elif m == "torchvision":
                if not mask_checkpoint:
                    raise ValueError("mask=torchvision needs --mask-checkpoint (COCO Mask R-CNN weights; nothing is "
                                     "downloaded)")
                self.backends[m] = build_segmenter("torchvision", checkpoint=mask_checkpoint)
            else:
                self.backends[m] = build_segmenter(m)
        self.keypoints = keypoints
        self.pose = None
        if keypoints and pose_backend:
            from ..pose.backends import build_backend

            self.pose = build_backend(pose_backend)

    def _exact_mask(self, path: Path) -> np.ndarray:
        m = self.index.mask(str(path))
        if m is None:
            raise MissingAnnotation(
                f"no exact mask for {path}: expected {self.root / 'masks' / path.relative_to(self.root).with_suffix('.png')}"
                f" (SynthPed's controlled sets ship them; tools/extract_masks.py makes them). Or use mask=mediapipe")
        return m

    def load(self, factor: FactorImages, paths: Sequence[Path], conditions: Sequence[str]) -> dict:
        imgs = [Image.open(p).convert("RGB") for p in paths]
        out = {"images": imgs, "masks": {}, "keypoints": None, "orientation": None}
        for m in self.masks:
            if m == "exact":
                out["masks"][m] = [self._exact_mask(p) for p in paths]
            else:
                arrs = [np.asarray(i) for i in imgs]
                pred = self.backends[m].predict(arrs, paths=[str(p) for p in paths]) if m == "import" else \
                    self.backends[m].predict(arrs)
                ms = []
                for p, a, k in zip(paths, arrs, pred):
                    if k is None:  # no person found: the whole crop (logged)
                        logger.warning("mask backend %s found no person in %s: using the whole crop", m, p)
                        k = np.ones(a.shape[:2], np.float32)
                    ms.append(np.where(np.asarray(k) >= 0.5, 255, 0).astype(np.uint8))
                out["masks"][m] = ms
        if self.keypoints:
            kps = [self.index.keypoints(str(p)) for p in paths]
            missing = [i for i, k in enumerate(kps) if k is None]
            if missing and self.pose is not None:
                pred = self.pose.predict([np.asarray(imgs[i])[..., ::-1].copy() for i in missing])
                for i, k in zip(missing, pred):
                    kps[i] = np.asarray(k, np.float32)
            elif missing:
                raise MissingAnnotation(
                    f"no keypoints for {paths[missing[0]]} (flip=keypoints): put a keypoints.json at {self.root} "
                    f"(tools/extract_keypoints.py), or give --pose-backend mediapipe, or use flip=known with a "
                    f"conditions.json that gives each condition's orientation_deg")
            out["keypoints"] = kps
        out["orientation"] = [factor.orientation.get(c) for c in conditions]
        return out


def _samples(loaded: dict, spec, factor: FactorImages, conditions: Sequence[str]) -> List[dict]:
    n = len(loaded["images"])
    if spec.flip == "known":
        bad = [c for c, o in zip(conditions, loaded["orientation"]) if o is None]
        if bad:
            raise MissingAnnotation(
                f"model {spec.name}: flip=known but condition {bad[0]!r} of factor {factor.name!r} has no known "
                f"orientation (conditions.json: factors.{factor.name}.params.{bad[0]}.orientation_deg); use "
                f"flip=keypoints")
    out = []
    for i in range(n):
        out.append({"image": loaded["images"][i],
                    "mask": loaded["masks"][spec.mask][i] if spec.mask != "none" else None,
                    "keypoints": loaded["keypoints"][i] if spec.flip == "keypoints" else None,
                    "orientation_deg": loaded["orientation"][i] if spec.flip == "known" else None})
    return out


@dataclass
class _Person:
    pid: str
    feats: Dict[str, Dict[int, list]]


def compute_matrices(image_set: ImageSet, embedders: Sequence, source: SampleSource,
                     factors: Optional[Sequence[str]] = None, batch_size: int = 64, progress: bool = True) -> dict:
    """``{factor: {"conditions", "params", "variants": {name: {"mean", "std", "n", "impostor", "flipped",
    "persons"}}}}`` (numpy arrays)."""
    from tqdm import tqdm

    results = {}
    for fname in (factors or list(image_set.factors)):
        fi = image_set.factors[fname]
        C = len(fi.conditions)
        items = [(pid, ci, p) for pid in fi.identities for ci, c in enumerate(fi.conditions)
                 for p in fi.images[pid].get(c, [])]
        accs = {e.name: MatrixAccumulator(C) for e in embedders}
        imps = {e.name: ImpostorAccumulator(C) for e in embedders}
        flipped = {e.name: np.zeros(C) for e in embedders}
        counts = np.zeros(C)
        person: Optional[_Person] = None

        def flush(p: Optional[_Person]):
            if p is None:
                return
            for name, by_c in p.feats.items():
                arrs = [np.stack(by_c[c]) if by_c.get(c) else None for c in range(C)]
                accs[name].add(person_matrix(arrs), p.pid)
                for c, a in enumerate(arrs):
                    if a is not None:
                        imps[name].add(c, a)

        with tqdm(total=len(items), desc=f"{fname} ({len(embedders)} model(s))", unit="img",
                  disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                conds = [fi.conditions[ci] for _, ci, _ in chunk]
                loaded = source.load(fi, [p for _, _, p in chunk], conds)
                feats = {}
                for e in embedders:
                    feats[e.name] = e.embed(_samples(loaded, e.spec, fi, conds))
                    for (_, ci, _), fl in zip(chunk, e.last_flips):
                        flipped[e.name][ci] += fl
                for j, (pid, ci, _) in enumerate(chunk):
                    if person is None or pid != person.pid:
                        flush(person)
                        person = _Person(pid, {e.name: {} for e in embedders})
                    counts[ci] += 1
                    for e in embedders:
                        person.feats[e.name].setdefault(ci, []).append(feats[e.name][j])
                bar.update(len(chunk))
        flush(person)
        results[fname] = {
            "conditions": list(fi.conditions), "params": fi.params, "images": int(len(items)),
            "persons": len(fi.identities),
            "variants": {e.name: {"mean": accs[e.name].mean(), "std": accs[e.name].std(), "n": accs[e.name].count,
                                  "impostor": imps[e.name].mean(),
                                  "flipped": flipped[e.name] / np.maximum(counts, 1)} for e in embedders}}
    return results


def _write_matrix(path: Path, conditions: Sequence[str], m: np.ndarray, fmt: str = "{:.4f}") -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["condition"] + list(conditions))
        for c, row in zip(conditions, m):
            w.writerow([c] + ["" if np.isnan(v) else fmt.format(v) for v in row])


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()] if x.ndim else _jsonable(x.item())
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, float) and np.isnan(x):
        return None
    return x


def summary_rows(results: dict) -> List[dict]:
    """One row per (factor, variant): mean within (diagonal), mean between (off-diagonal), the lowest between,
    different persons (mean over conditions), and the mean within minus between (how much a condition change
    costs the same person)."""
    rows = []
    for fname, r in results.items():
        for name, v in r["variants"].items():
            m = v["mean"]
            C = len(m)
            off = m[~np.eye(C, dtype=bool)]
            rows.append({"factor": fname, "model": name, "within": float(np.nanmean(np.diag(m))),
                         "between": float(np.nanmean(off)), "min_between": float(np.nanmin(off)),
                         "different_persons": float(np.nanmean(v["impostor"])),
                         "drop": float(np.nanmean(np.diag(m)) - np.nanmean(off)),
                         "flipped": float(np.mean(v["flipped"]))})
    return rows


def write_results(results: dict, out_dir, run_info: Optional[dict] = None) -> Path:
    """CSV matrices (``<factor>/<model>_{mean,std,n}.csv``), ``<factor>/<model>_impostor.csv``, ``summary.csv``
    (:func:`summary_rows`) and ``summary.json`` (everything, plus ``run_info``) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for fname, r in results.items():
        d = out / fname
        d.mkdir(exist_ok=True)
        for name, v in r["variants"].items():
            _write_matrix(d / f"{name}_mean.csv", r["conditions"], v["mean"])
            _write_matrix(d / f"{name}_std.csv", r["conditions"], v["std"])
            _write_matrix(d / f"{name}_n.csv", r["conditions"], v["n"].astype(float), "{:.0f}")
            with open(d / f"{name}_impostor.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["condition", "different_persons_mean", "flipped_fraction"])
                for c, a, b in zip(r["conditions"], v["impostor"], v["flipped"]):
                    w.writerow([c, "" if np.isnan(a) else f"{a:.4f}", f"{b:.3f}"])
    rows = summary_rows(results)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["factor"])
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    with open(out / "summary.json", "w") as f:
        json.dump(_jsonable({"run": run_info or {}, "results": results, "summary": rows}), f, indent=1)
    return out
