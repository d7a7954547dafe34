"""SynthPed dataset writer (Market-1501 layout + keypoints.json + masks/ + meta.json) and preview."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from .render import (COCO_KEYPOINT_NAMES, FLIP_PAIRS, DomainSpec, Identity, _domain,
                     draw_keypoints, render_sample, sample_identity, sample_similar_identity, stable_hash)

__all__ = ["generate_dataset", "make_preview", "PRESETS", "FORMAT_VERSION", "DatasetParameterMismatch",
           "IMAGE_NAME_RE", "plan_dataset"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
# keys a legacy (format 1, flat) meta.json must match to be accepted as is
_LEGACY_KEYS = ("domain", "seed", "preset", "num_train_ids", "num_test_ids", "vertical_misalign", "height", "width")
PRESETS = {
    "tiny": {"num_train_ids": 16, "num_test_ids": 12, "images_per_id": (7, 9), "max_cams_per_id": 4},
    "default": {"num_train_ids": 150, "num_test_ids": 100, "images_per_id": (10, 14), "max_cams_per_id": 5},
}
DISTRACTOR_FRACTION = 0.04  # of the gallery size
TWIN_FRACTION = 0.7  # people drawn as near-twins of an earlier one
IMAGE_NAME_RE = re.compile(r"^(\d{4})_c(\d+)s(\d)_(\d{6})_00\.jpg$")
SPLITS = ("bounding_box_train", "bounding_box_test", "query")

# seed streams (SeedSequence entropy: [seed, domain hash, stream, ...])
_S_IDENTITY, _S_IMAGE, _S_DISTRACTOR_ID, _S_PLAN = 1, 2, 3, 4


class DatasetParameterMismatch(FileExistsError):
    """The dataset folder holds a SynthPed dataset generated with other parameters."""


@dataclass(frozen=True)
class _Job:
    relpath: str
    split: str
    pid: int
    cam: int
    index: int            # per (pid, cam) image index (per camera for distractors)
    identity: Identity
    bad_crop: bool = False


def _rng(seed: int, domain: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_hash(domain), *map(int, keys)]))


def _resolve(domain, seed, num_train_ids, num_test_ids, preset, vertical_misalign, height, width) -> dict:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    spec = _domain(domain)
    p = PRESETS[preset]
    vm = float(vertical_misalign)
    if not 0.0 <= vm <= 0.5:
        raise ValueError(f"vertical_misalign must be in [0, 0.5], got {vm}")
    ntr = int(p["num_train_ids"] if num_train_ids is None else num_train_ids)
    nte = int(p["num_test_ids"] if num_test_ids is None else num_test_ids)
    if ntr < 1 or nte < 1 or ntr + nte > 9999:
        raise ValueError(f"need 1 <= num_train_ids, num_test_ids and a total <= 9999 (got {ntr}, {nte})")
    if int(height) < 32 or int(width) < 16:
        raise ValueError(f"image size too small: {height}x{width}")
    return {"format_version": FORMAT_VERSION, "domain": spec.name, "seed": int(spec.seed if seed is None else seed),
            "preset": preset, "num_train_ids": ntr, "num_test_ids": nte,
            "images_per_id": list(p["images_per_id"]), "max_cams_per_id": int(p["max_cams_per_id"]),
            "vertical_misalign": vm, "height": int(height), "width": int(width)}


def _sample_identities(spec: DomainSpec, seed: int, n: int) -> list:
    """n distinct people (no two with identical discrete attributes); about half of them are
    near-twins of an earlier person (differing in one or two attribute groups only)."""
    out, keys = [], set()
    for pid in range(1, n + 1):
        for attempt in range(200):
            r = _rng(seed, spec.name, _S_IDENTITY, pid, attempt)
            if out and r.random() < TWIN_FRACTION:
                ident = sample_similar_identity(r, out[int(r.integers(len(out)))], spec)
            else:
                ident = sample_identity(r, spec)
            if ident.key() not in keys:
                break
        keys.add(ident.key())
        out.append(ident)
    return out


def plan_dataset(params: dict) -> list:
    """The list of images to render (deterministic from the parameters)."""
    spec = _domain(params["domain"])
    seed = params["seed"]
    ncam = spec.num_cameras
    ntr, nte = params["num_train_ids"], params["num_test_ids"]
    lo, hi = params["images_per_id"]
    people = _sample_identities(spec, seed, ntr + nte)
    prng = _rng(seed, spec.name, _S_PLAN)
    jobs = []
    frame = [0]

    def name(pid, cam):
        frame[0] += 1
        return f"{pid:04d}_c{cam}s1_{frame[0]:06d}_00.jpg"

    for pid in range(1, ntr + nte + 1):
        is_train = pid <= ntr
        k = int(prng.integers(2, min(ncam, params["max_cams_per_id"]) + 1))
        cams = sorted(int(c) + 1 for c in prng.choice(ncam, size=k, replace=False))
        n = max(k, int(prng.integers(lo, hi + 1)))
        counts = np.ones(k, int) + prng.multinomial(n - k, prng.dirichlet(np.full(k, 2.0)))
        query_cams = set()
        if not is_train:  # a proper subset of the id's cameras gets one query image each
            nq = int(prng.integers(1, k))
            query_cams = {int(c) for c in prng.choice(cams, size=nq, replace=False)}
        for cam, cnt in zip(cams, counts):
            for i in range(int(cnt)):
                split = "bounding_box_train" if is_train else (
                    "query" if (cam in query_cams and i == 0) else "bounding_box_test")
                jobs.append(_Job(f"{split}/{name(pid, cam)}", split, pid, cam, i, people[pid - 1]))
    n_gallery = sum(j.split == "bounding_box_test" for j in jobs)
    n_dis = max(2, int(round(DISTRACTOR_FRACTION * n_gallery)))
    per_cam = {}
    for i in range(n_dis):
        cam = int(prng.integers(1, ncam + 1))
        idx = per_cam.get(cam, 0)
        per_cam[cam] = idx + 1
        ident = sample_identity(_rng(seed, spec.name, _S_DISTRACTOR_ID, i), spec)
        jobs.append(_Job(f"bounding_box_test/{name(0, cam)}", "bounding_box_test", 0, cam, idx, ident,
                         bad_crop=bool(prng.random() < 0.5)))
    return jobs


def _render_job(job: _Job, params: dict, out_dir: str):
    """Render one planned image and write its JPEG and mask; returns (relpath, keypoints, info)."""
    spec = _domain(params["domain"])
    rng = _rng(params["seed"], spec.name, _S_IMAGE, job.pid, job.cam, job.index)
    r = render_sample(job.identity, spec.camera(job.cam), rng, params["height"], params["width"],
                      vertical_misalign=params["vertical_misalign"], bad_crop=job.bad_crop)
    ok, jpg = cv2.imencode(".jpg", r.image, [cv2.IMWRITE_JPEG_QUALITY, r.jpeg_quality])
    ok2, png = cv2.imencode(".png", r.mask, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not (ok and ok2):
        raise RuntimeError(f"encoding failed for {job.relpath}")
    with open(os.path.join(out_dir, job.relpath), "wb") as f:
        f.write(jpg.tobytes())
    with open(os.path.join(out_dir, "masks", job.relpath[:-4] + ".png"), "wb") as f:
        f.write(png.tobytes())
    kps = [[round(float(x), 3), round(float(y), 3), float(v)] for x, y, v in r.keypoints]
    return job.relpath, kps, r.info


def _read_meta(path: Path) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _dump(obj, path: Path, **kw):
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, **kw)
        f.write("\n")


def generate_dataset(root, domain: str = "SynthPedA", seed: Optional[int] = None,
                     num_train_ids: Optional[int] = None, num_test_ids: Optional[int] = None,
                     preset: str = "default", vertical_misalign: float = 0.0, height: int = 128, width: int = 64,
                     progress: bool = True, overwrite: bool = False, workers: Optional[int] = None) -> Path:
    """Write the SynthPed domain ``domain`` into ``<root>/<domain>/`` and return that path.

    Idempotent: an existing dataset with the same parameters is returned as is; one with other
    parameters raises :class:`DatasetParameterMismatch` unless ``overwrite=True`` (which also
    forces a regeneration of a matching one).  The dataset is written into a temporary sibling folder
    and renamed at the end, ``meta.json`` last, so an interrupted run leaves nothing that looks
    complete.  ``workers`` (default: up to 2 processes for large runs) does not change the output.
    """
    params = _resolve(domain, seed, num_train_ids, num_test_ids, preset, vertical_misalign, height, width)
    spec = _domain(domain)
    root = Path(root)
    final = root / spec.name
    meta_path = final / "meta.json"
    if meta_path.exists():
        meta = _read_meta(meta_path)
        old = (meta or {}).get("params")
        if old is None and meta is not None and meta.get("format_version") == 1:
            old = meta  # written by the first generator version (flat meta.json)
            if all(meta.get(k) == params[k] for k in _LEGACY_KEYS) and not overwrite:
                logger.warning("%s was written by an older SynthPed generator (format 1); using it as is "
                               "(overwrite=True regenerates it)", final)
                return final
        if old == params and not overwrite:
            return final
        if not overwrite:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v} if isinstance(old, dict) \
                else "unreadable meta.json"
            raise DatasetParameterMismatch(
                f"{final} already holds a SynthPed dataset generated with other parameters "
                f"(existing vs requested: {diff}); pass overwrite=True (--overwrite) to regenerate it, "
                f"or use another root.")
    elif final.exists() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{final} exists, is not empty and has no meta.json; pass overwrite=True to replace it")

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root))
    try:
        for sp in SPLITS:
            (tmp / sp).mkdir()
            (tmp / "masks" / sp).mkdir(parents=True)
        jobs = plan_dataset(params)
        keypoints, infos = _render_all(jobs, params, str(tmp), progress, workers)
        _dump({"format": "coco17", "keypoint_names": list(COCO_KEYPOINT_NAMES),
               "flip_pairs": [list(p) for p in FLIP_PAIRS], "images": keypoints}, tmp / "keypoints.json", separators=(",", ":"))
        idents = {}
        for j in jobs:
            if j.pid:
                idents.setdefault(f"{j.pid:04d}", j.identity.describe())
        _dump({"identities": idents, "images": infos}, tmp / "attributes.json", separators=(",", ":"))
        count = {sp: sum(j.split == sp for j in jobs) for sp in SPLITS}
        meta = {
            "generator": "fastreid_ext.data.synthped", "format_version": FORMAT_VERSION, "domain": spec.name,
            "seed": params["seed"], "params": params,
            "counts": dict(count, train_ids=params["num_train_ids"], test_ids=params["num_test_ids"],
                           distractors=sum(j.pid == 0 for j in jobs), images=len(jobs),
                           cameras=spec.num_cameras),
            "domain_spec": asdict(spec),
            "files": {"keypoints": "keypoints.json", "masks": "masks/", "attributes": "attributes.json"},
            "naming": "PPPP_cCsS_FFFFFF_00.jpg (pid 0000: distractors in bounding_box_test)",
        }
        _dump(meta, tmp / "meta.json", indent=1)
        # swap into place
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{spec.name}.old-", dir=root))
            os.rename(final, trash / "old")
            os.rename(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same dataset first
                other = _read_meta(meta_path)
                if other is not None and other.get("params") == params:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return final
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _render_all(jobs, params, out_dir, progress, num_workers):
    from tqdm import tqdm

    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1) if len(jobs) >= 150 else 1
    fn = partial(_render_job, params=params, out_dir=out_dir)
    keypoints, infos = {}, {}
    bar = tqdm(total=len(jobs), desc=f"SynthPed {params['domain']}", disable=not progress, unit="img")
    try:
        if num_workers <= 1:
            results = map(fn, jobs)
            pool = None
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            pool = ctx.Pool(num_workers)
            results = pool.imap(fn, jobs, chunksize=16)
        try:
            for rel, kps, info in results:
                keypoints[rel] = kps
                infos[rel] = info
                bar.update(1)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        bar.close()
    return keypoints, infos


# --------------------------------------------------------------------------------------------
# preview
# --------------------------------------------------------------------------------------------
def _label(tile_w, text, h=11):
    strip = np.full((h, tile_w, 3), 255, np.uint8)
    cv2.putText(strip, text, (1, h - 3), cv2.FONT_HERSHEY_PLAIN, 0.62, (40, 40, 40), 1, cv2.LINE_AA)
    return strip


def _overlay(img, kps, mask):
    k = draw_keypoints(img, kps)
    m = img.copy()
    col = np.zeros_like(img)
    col[:] = (60, 200, 60)
    sel = mask > 0
    m[sel] = (0.45 * img[sel] + 0.55 * col[sel]).astype(np.uint8)
    cnts, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(m, cnts, -1, (0, 255, 255), 1)
    return k, m


def _rows_from_dataset(ddir: Path, num_ids: int, max_cols: int):
    kp = json.load(open(ddir / "keypoints.json"))["images"]
    att = _read_meta(ddir / "attributes.json") or {"images": {}}
    by_pid = {}
    for rel in sorted(kp):
        m = IMAGE_NAME_RE.match(rel.split("/")[-1])
        if m is None or m.group(1) == "0000":
            continue
        by_pid.setdefault(m.group(1), {}).setdefault(int(m.group(2)), rel)
    pids = sorted(by_pid, key=lambda p: (-len(by_pid[p]), p))[:num_ids]
    rows = []
    for p in sorted(pids):
        items = []
        for cam, rel in sorted(by_pid[p].items())[:max_cols]:
            img = cv2.imread(str(ddir / rel))
            mask = cv2.imread(str(ddir / "masks" / (rel[:-4] + ".png")), cv2.IMREAD_GRAYSCALE)
            view = att["images"].get(rel, {}).get("view", "")
            items.append((img, np.asarray(kp[rel], np.float32), mask, f"{p} c{cam} {view[:2]}"))
        rows.append(items)
    return rows


def _rows_rendered(domain: str, seed: Optional[int], num_ids: int, max_cols: int, vm: float, H: int, W: int):
    spec = _domain(domain)
    seed = spec.seed if seed is None else int(seed)
    pool = _sample_identities(spec, seed, max(num_ids, 40))

    def dist(a, b):
        return sum(x != y for x, y in zip(pool[a].key(), pool[b].key()))
    # the first person, their closest look-alike (the hard case), then people as different as possible
    chosen = [0]
    if num_ids > 1:
        chosen.append(min(range(1, len(pool)), key=lambda j: (dist(0, j), j)))
    while len(chosen) < num_ids:
        chosen.append(max((j for j in range(len(pool)) if j not in chosen),
                          key=lambda j: (min(dist(j, c) for c in chosen), -j)))
    rows = []
    for i in chosen:
        ident = pool[i]
        items = []
        for cam in range(1, min(spec.num_cameras, max_cols) + 1):
            r = render_sample(ident, spec.camera(cam), _rng(seed, spec.name, _S_IMAGE, i + 1, cam, 0), H, W,
                              vertical_misalign=vm)
            ok, buf = cv2.imencode(".jpg", r.image, [cv2.IMWRITE_JPEG_QUALITY, r.jpeg_quality])
            items.append((cv2.imdecode(buf, cv2.IMREAD_COLOR), r.keypoints, r.mask, f"{i + 1:04d} c{cam} {r.view[:2]}"))
        rows.append(items)
    return rows


def make_preview(root_or_none, out_png, domains: Union[str, Sequence[str]] = "SynthPedA", num_ids: int = 4,
                 max_cols: int = 6, seed: Optional[int] = None, vertical_misalign: float = 0.0, height: int = 128,
                 width: int = 64, zoom: float = 1.0, colors: Optional[int] = None) -> Path:
    """Grid picture: a row per identity, columns = the same id in different cameras (label: pid,
    camera, view: fr/ba/le/ri), then a panel with the first image's keypoints and mask overlay.

    ``root_or_none``: a dataset root holding ``<domain>/`` (or a domain folder itself) to read
    generated images from; ``None`` renders samples on the fly.  Several domains are stacked.
    ``colors``: quantise the PNG to that many colours (smaller file)."""
    domains = [domains] if isinstance(domains, str) else list(domains)
    blocks = []
    gap = 6
    for dom in domains:
        if root_or_none is None:
            rows = _rows_rendered(dom, seed, num_ids, max_cols, vertical_misalign, height, width)
        else:
            r = Path(root_or_none)
            ddir = r if (r / "meta.json").exists() and not (r / dom / "meta.json").exists() else r / dom
            if not (ddir / "keypoints.json").exists():
                raise FileNotFoundError(f"no SynthPed dataset at {ddir}")
            rows = _rows_from_dataset(ddir, num_ids, max_cols)
        if not rows:
            continue
        h, w = rows[0][0][0].shape[:2]
        ncols = max(len(r) for r in rows)
        lines = []
        for items in rows:
            tiles = []
            for img, kps, mask, text in items:
                tiles.append(np.concatenate([_label(w, text), img], 0))
            while len(tiles) < ncols:
                tiles.append(np.full((h + 11, w, 3), 255, np.uint8))
            img, kps, mask, text = items[0]
            k, m = _overlay(img, kps, mask)
            tiles.append(np.full((h + 11, gap, 3), 255, np.uint8))
            tiles.append(np.concatenate([_label(w, "keypoints"), k], 0))
            tiles.append(np.concatenate([_label(w, "mask"), m], 0))
            lines.append(np.concatenate(tiles, 1))
        body = np.concatenate(lines, 0)
        title = np.full((14, body.shape[1], 3), 255, np.uint8)
        cv2.putText(title, f"{dom}: {_domain(dom).num_cameras} cameras", (2, 11),
                    cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
        blocks.append(np.concatenate([title, body, np.full((4, body.shape[1], 3), 255, np.uint8)], 0))
    if not blocks:
        raise ValueError("nothing to preview")
    wmax = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, wmax - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    grid = np.concatenate(blocks, 0)
    if zoom != 1.0:
        grid = cv2.resize(grid, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if colors:
        from PIL import Image

        pil = Image.fromarray(grid[..., ::-1]).quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT,
                                                         dither=Image.Dither.NONE)
        pil.save(out, optimize=True)
    else:
        cv2.imwrite(str(out), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out
