"""Write a SynthPed domain in the Market-1501 layout with exact keypoints and masks (numpy + OpenCV).

``generate_dataset(root, domain)`` writes ``<root>/<domain>/``::

    bounding_box_train/PPPP_cCs1_FFFFFF_00.jpg   train ids (disjoint from test ids)
    bounding_box_test/...                         gallery: test ids (+ distractors with pid 0000)
    query/...                                     one image per (test id, camera)
    keypoints.json                                {"format": "coco17", "images": {REL: [[x, y, score]] * 17}}
    masks/<REL>.png                               person masks, 0/255
    meta.json                                     generation parameters and counts, written last

Every image has its own RNG derived from ``(seed, domain, pid, camera, index)``, so the output is
byte-identical for the same arguments whatever the number of worker processes.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

from .render import COCO_KEYPOINT_NAMES, DOMAINS, _domain, render_person, sample_identity, stable_hash

FORMAT_VERSION = 1

PRESETS = {
    # num_train_ids, num_test_ids, images per id (min, max), distractors as a fraction of the gallery
    "default": dict(num_train_ids=150, num_test_ids=100, images_per_id=(10, 14), distractor_frac=0.03),
    "tiny": dict(num_train_ids=16, num_test_ids=12, images_per_id=(8, 8), distractor_frac=0.05),
}


@dataclass(frozen=True)
class _Job:
    split: str        # bounding_box_train | bounding_box_test | query
    pid: int          # 0 = distractor
    cam: int          # 1-based
    index: int        # image index within the identity (or distractor number)
    frame: int        # unique frame number


def _rng(seed: int, domain: str, *ints) -> np.random.Generator:
    return np.random.default_rng([int(seed), stable_hash(domain), *[int(i) for i in ints]])


def _identity(seed, domain, pid):
    return sample_identity(_rng(seed, domain, pid, 10 ** 6), domain)


def _plan(domain: str, seed: int, num_train_ids: int, num_test_ids: int, images_per_id, distractor_frac):
    """Which image of which id goes to which split and camera (deterministic)."""
    spec = _domain(domain)
    ncam = spec.num_cameras
    jobs: List[_Job] = []
    frame = 0
    lo, hi = images_per_id
    for pid in range(1, num_train_ids + num_test_ids + 1):
        is_test = pid > num_train_ids
        r = _rng(seed, domain, pid, 0)
        n = int(r.integers(lo, hi + 1))
        # every camera used by a test id holds >= 2 images: one query, >= 1 gallery
        n_cam = int(r.integers(2, max(2, min(ncam, n // 2, 4)) + 1))
        cams = sorted(int(c) + 1 for c in r.choice(ncam, n_cam, replace=False))
        assign = [cams[i % n_cam] for i in range(n)]
        first_seen = set()
        for idx, cam in enumerate(assign):
            frame += 1
            if not is_test:
                split = "bounding_box_train"
            elif cam not in first_seen:
                split = "query"
                first_seen.add(cam)
            else:
                split = "bounding_box_test"
            jobs.append(_Job(split, pid, cam, idx, frame))
    n_gallery = sum(j.split == "bounding_box_test" for j in jobs)
    r = _rng(seed, domain, 0, 0)
    for k in range(int(round(distractor_frac * n_gallery))):
        frame += 1
        jobs.append(_Job("bounding_box_test", 0, int(r.integers(1, ncam + 1)), k, frame))
    return jobs


def rel_path(job: _Job) -> str:
    return f"{job.split}/{job.pid:04d}_c{job.cam}s1_{job.frame:06d}_00.jpg"


def _render_job(args) -> Tuple[str, bytes, list, bytes]:
    job, domain, seed, num_ids, height, width, misalign = args
    if job.pid == 0:  # a distractor: a person who is in no split
        ident = _identity(seed, domain, num_ids + 1 + job.index)
    else:
        ident = _identity(seed, domain, job.pid)
    rng = _rng(seed, domain, job.pid, job.cam, job.index, job.frame)
    img, kps, mask, info = render_person(ident, job.cam, rng, domain=domain, height=height, width=width,
                                         vertical_misalign=misalign, jpeg=False, return_info=True)
    ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(info["jpeg_quality"])])
    ok2, png = cv2.imencode(".png", mask)
    assert ok and ok2
    return rel_path(job), jpg.tobytes(), np.round(kps.astype(np.float64), 3).tolist(), png.tobytes()


def _params(domain, seed, num_train_ids, num_test_ids, preset, vertical_misalign, height, width) -> dict:
    p = dict(PRESETS[preset])
    if num_train_ids:
        p["num_train_ids"] = int(num_train_ids)
    if num_test_ids:
        p["num_test_ids"] = int(num_test_ids)
    return {"format_version": FORMAT_VERSION, "domain": domain,
            "seed": int(DOMAINS[domain].seed if seed is None else seed), "preset": preset,
            "num_train_ids": p["num_train_ids"], "num_test_ids": p["num_test_ids"],
            "images_per_id": list(p["images_per_id"]), "distractor_frac": p["distractor_frac"],
            "vertical_misalign": float(vertical_misalign), "height": int(height), "width": int(width)}


def generate_dataset(root, domain: str = "SynthPedA", seed: Optional[int] = None,
                     num_train_ids: Optional[int] = None, num_test_ids: Optional[int] = None,
                     preset: str = "default", vertical_misalign: float = 0.0, height: int = 128, width: int = 64,
                     progress: bool = True, overwrite: bool = False, workers: Optional[int] = None) -> Path:
    """Generate ``<root>/<domain>`` (idempotent; see the module docstring). Returns its path."""
    if domain not in DOMAINS:
        raise KeyError(f"unknown SynthPed domain {domain!r}; known: {sorted(DOMAINS)}")
    if preset not in PRESETS:
        raise KeyError(f"unknown SynthPed preset {preset!r}; known: {sorted(PRESETS)}")
    if not 0.0 <= vertical_misalign <= 0.5:
        raise ValueError(f"vertical_misalign must be in [0, 0.5], got {vertical_misalign}")
    params = _params(domain, seed, num_train_ids, num_test_ids, preset, vertical_misalign, height, width)
    out = Path(root) / domain
    meta_file = out / "meta.json"
    if meta_file.is_file():
        old = json.loads(meta_file.read_text())
        if {k: old.get(k) for k in params} == params:
            return out
        if not overwrite:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            raise FileExistsError(f"{out} holds a SynthPed generated with other parameters (existing, requested): "
                                  f"{diff}. Use another root, or overwrite=True (--overwrite).")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists but is not a complete SynthPed (no meta.json); remove it or "
                              f"use overwrite=True.")

    jobs = _plan(domain, params["seed"], params["num_train_ids"], params["num_test_ids"],
                 params["images_per_id"], params["distractor_frac"])
    tmp = Path(root) / f".{domain}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    for split in ("bounding_box_train", "bounding_box_test", "query"):
        (tmp / split).mkdir(parents=True)
        (tmp / "masks" / split).mkdir(parents=True)
    num_ids = params["num_train_ids"] + params["num_test_ids"]
    args = [(j, domain, params["seed"], num_ids, height, width, float(vertical_misalign)) for j in jobs]
    keypoints = {}
    try:
        workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(args), desc=f"SynthPed {domain}", unit="img")
        if workers > 1:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(workers) as pool:
                results = pool.imap(_render_job, args, chunksize=16)
                _write_all(tmp, results, keypoints, bar)
        else:
            _write_all(tmp, map(_render_job, args), keypoints, bar)
        if bar is not None:
            bar.close()
        data = {"format": "coco17", "keypoint_names": list(COCO_KEYPOINT_NAMES),
                "images": dict(sorted(keypoints.items()))}
        (tmp / "keypoints.json").write_text(json.dumps(data))
        counts = {s: sum(j.split == s for j in jobs) for s in ("bounding_box_train", "bounding_box_test", "query")}
        counts["distractors"] = sum(j.pid == 0 for j in jobs)
        meta = dict(params, counts=counts, description=DOMAINS[domain].description,
                    num_cameras=DOMAINS[domain].num_cameras)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_all(tmp: Path, results, keypoints: dict, bar) -> None:
    for rel, jpg, kps, png in results:
        (tmp / rel).write_bytes(jpg)
        (tmp / "masks" / rel).with_suffix(".png").write_bytes(png)
        keypoints[rel] = kps
        if bar is not None:
            bar.update(1)
