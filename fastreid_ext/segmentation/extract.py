"""Write person masks for a folder of images in the layout of :mod:`fastreid_ext.data.annotations`
(``<root>/masks/<rel>.png``, single channel, 0 = background, 255 = person), with resume.

Each mask is written on its own, atomically (temporary file + ``os.replace``), as soon as it is
computed: a crash loses at most the image in flight, and a rerun skips every mask already on disk
(``overwrite=False``). Images where the backend finds no person get *no* mask file; they are listed in
``<out>/_no_person.txt`` (rewritten at the end of each run) and retried by the next run. What training
does with them is the loader's ``DATASETS.ANNOTATIONS.ON_MISSING``: ``error`` (default: a clear error
naming the image) or ``empty`` (logged, the image is used unmasked).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..data.annotations import MASKS_DIRNAME
from .backends import MaskBackend

logger = logging.getLogger(__name__)

NO_PERSON_FILE = "_no_person.txt"
SIGNATURE_FILE = "_backend.json"


class ResumeError(RuntimeError):
    """The mask folder was written by another backend: refused (masks of two models never mix)."""


@dataclass
class ExtractStats:
    written: int = 0
    skipped: int = 0
    no_person: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)  #: images that could not be read: no mask, warned
    seconds: float = 0.0
    masked_copy: Optional["MaskedCopyStats"] = None  # set by the command line's --write-masked

    def __str__(self):
        return (f"{self.written} masks written, {self.skipped} already there (skipped), "
                f"{len(self.no_person)} images without a person, {len(self.unreadable)} unreadable (skipped), "
                f"{self.seconds:.1f} s")


def mask_path_for(image: Path, image_root: Path, out_root: Path) -> Path:
    """``out_root / <image relative to image_root>.png`` (the annotation layout)."""
    rel = Path(os.path.relpath(Path(image).resolve(), Path(image_root).resolve()))
    if rel.parts and rel.parts[0] == "..":
        raise ValueError(f"{image} is not under the image root {image_root}")
    return Path(out_root) / rel.with_suffix(".png")


def write_mask_atomic(path: Path, mask: np.ndarray, threshold: float = 0.5) -> None:
    """Binarise (``>= threshold``) and write a 0/255 PNG via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.where(np.asarray(mask, dtype=np.float32) >= threshold, 255, 0).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(m, mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise RuntimeError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def _check_signature(out_root: Path, backend: MaskBackend, overwrite: bool) -> None:
    f = out_root / SIGNATURE_FILE
    sig = backend.signature()
    if f.is_file() and not overwrite:
        try:
            old = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old is not None and old != sig:
            # two models' masks never mix in one folder, and the recorded backend stays the one that wrote them
            raise ResumeError(f"{out_root} holds masks written by {old}, not by {sig}: rerun with the same backend "
                              f"options to resume, pass --overwrite to recompute every mask with this one, or "
                              f"choose another --out")
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(sig, sort_keys=True))
    os.replace(tmp, f)


def extract_masks(images: Iterable[str | os.PathLike], image_root: str | os.PathLike, backend: MaskBackend,
                  out_root: Optional[str | os.PathLike] = None, overwrite: bool = False, threshold: float = 0.5,
                  batch_size: Optional[int] = None, progress: bool = True, limit: int = 0) -> ExtractStats:
    """Compute and write the masks of ``images`` (see the module docstring).

    Args:
        images: image files under ``image_root``.
        image_root: the dataset root; masks go to ``out_root/<rel>.png`` (default ``image_root/masks``).
        backend: a :class:`~fastreid_ext.segmentation.backends.MaskBackend`.
        overwrite: recompute masks that exist.
        threshold: binarisation threshold of the backend's soft mask.
        batch_size: images per backend call (default: the backend's).
        progress: tqdm progress bar.
        limit: stop after computing this many new masks (0: all); for tests and dry runs.
    """
    t0 = time.perf_counter()
    image_root = Path(image_root)
    out_root = Path(out_root) if out_root else image_root / MASKS_DIRNAME
    _check_signature(out_root, backend, overwrite)
    images = [Path(p) for p in images]
    todo, stats = [], ExtractStats()
    for p in images:
        mp = mask_path_for(p, image_root, out_root)
        if not overwrite and mp.is_file():
            stats.skipped += 1
        else:
            todo.append((p, mp))
    if limit:
        todo = todo[:limit]
    bs = int(batch_size or backend.default_batch_size or 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"masks ({backend.name})", unit="img", dynamic_ncols=True)
    try:
        for i in range(0, len(todo), bs):
            chunk, imgs = [], []
            for p, mp in todo[i:i + bs]:
                try:
                    imgs.append(_read_rgb(p))
                    chunk.append((p, mp))
                except RuntimeError as e:  # as keypoint extraction does: skip it, say so, go on
                    stats.unreadable.append(str(p))
                    logger.warning("%s: skipped (no mask written)", e)
            masks = backend.predict(imgs, [str(p) for p, _ in chunk]) if chunk else []
            for (p, mp), img, m in zip(chunk, imgs, masks):
                if m is None:
                    stats.no_person.append(str(p))
                    logger.debug("no person found in %s: no mask written", p)
                    continue
                if m.shape != img.shape[:2]:
                    raise ValueError(f"backend {backend.name} returned a {m.shape} mask for a {img.shape[:2]} "
                                     f"image ({p})")
                write_mask_atomic(mp, m, threshold)
                stats.written += 1
            if bar is not None:
                bar.update(len(todo[i:i + bs]))
                bar.set_postfix(written=stats.written, no_person=len(stats.no_person))
    finally:
        if bar is not None:
            bar.close()
        listing = out_root / NO_PERSON_FILE
        if stats.no_person:
            tmp = listing.with_suffix(".tmp")
            tmp.write_text("\n".join(os.path.relpath(p, image_root) for p in stats.no_person) + "\n")
            os.replace(tmp, listing)
        elif listing.exists() and not limit:
            listing.unlink()
        stats.seconds = time.perf_counter() - t0
    if stats.unreadable:
        logger.warning("%d images could not be read and have no mask, e.g. %s", len(stats.unreadable),
                       ", ".join(stats.unreadable[:5]))
    if stats.no_person:
        logger.warning("%d images without a person (listed in %s); training uses "
                       "DATASETS.ANNOTATIONS.ON_MISSING for them", len(stats.no_person), out_root / NO_PERSON_FILE)
    return stats


@dataclass
class MaskedCopyStats:
    """What :func:`write_masked_dataset` did: background-removed images ``written``, images copied ``unmasked``
    (no mask: no person found; ``on_missing="copy"``), images ``skipped`` (already in the copy), other files
    ``copied``, JSON files whose paths were ``rewritten`` to the copy."""
    written: int = 0
    unmasked: List[str] = field(default_factory=list)
    skipped: int = 0
    copied: int = 0
    rewritten: int = 0

    def __str__(self):
        return (f"{self.written} background-removed images written, {len(self.unmasked)} copied unmasked (no "
                f"mask), {self.skipped} already there, {self.copied} other files copied ({self.rewritten} JSON "
                f"files with paths moved to the copy)")


def write_masked_copies(images: Iterable[str | os.PathLike], image_root: str | os.PathLike, out_dir: str | os.PathLike,
                        mask_root: Optional[str | os.PathLike] = None, fill: str = "zero",
                        pixel_mean: Sequence[float] = (0.485 * 255, 0.456 * 255, 0.406 * 255),
                        blur_kernel: int = 21, on_missing: str = "copy", progress: bool = True,
                        stats: Optional[MaskedCopyStats] = None) -> int:
    """Write background-removed copies of ``images`` to ``out_dir/<rel>`` (same file names), so that a
    plain FastReID (without fastreid_ext's mask path) trains on masked crops: point its dataset root at
    ``out_dir``. An image without a mask (the segmenter found no person): ``on_missing="copy"`` (default) writes
    it unmasked, counts it (``stats.unmasked``) and logs one warning at the end, so every split file that names it
    stays valid; ``"error"`` raises ``FileNotFoundError`` at the first one. Returns the images written."""
    import torch

    from ..functional.background import remove_background

    if on_missing not in ("copy", "error"):
        raise ValueError(f"on_missing must be 'copy' or 'error', got {on_missing!r}")
    stats = stats if stats is not None else MaskedCopyStats()
    image_root, out_dir = Path(image_root), Path(out_dir)
    mask_root = Path(mask_root) if mask_root else image_root / MASKS_DIRNAME
    images = [Path(p) for p in images]
    it = images
    if progress:
        from tqdm import tqdm

        it = tqdm(images, desc="masked copies", unit="img", dynamic_ncols=True)
    n = 0
    for p in it:
        rel = Path(os.path.relpath(p.resolve(), image_root.resolve()))
        dst = out_dir / rel
        if dst.is_file():
            stats.skipped += 1
            continue
        mp = mask_root / rel.with_suffix(".png")
        img = _read_rgb(p)
        if mp.is_file():
            with Image.open(mp) as im:
                m = (np.asarray(im.convert("L")) >= 128).astype(np.float32)
            x = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32))[None]
            y = remove_background(x, torch.from_numpy(m)[None, None], fill, pixel_mean, blur_kernel)
            img = y[0].round().clamp(0, 255).byte().numpy().transpose(1, 2, 0)
            stats.written += 1
        elif on_missing == "error":
            raise FileNotFoundError(f"no mask for {p} (expected {mp}); run tools/extract_masks.py first, or use "
                                    f"--on-missing copy (the default) to copy such images unmasked")
        else:
            stats.unmasked.append(str(p))
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp{dst.suffix}")
        Image.fromarray(img).save(tmp, quality=95) if dst.suffix.lower() in (".jpg", ".jpeg") \
            else Image.fromarray(img).save(tmp)
        os.replace(tmp, dst)
        n += 1
    if stats.unmasked:
        logger.warning("%d of %d images have no mask (no person found) and were copied unmasked to %s, e.g. %s",
                       len(stats.unmasked), len(images), out_dir, stats.unmasked[0])
    return n


def _moved_paths(obj, src: str, dst: str):
    """``obj`` (parsed JSON) with every string that names a path under ``src`` (absolute, or relative to the
    current folder) renamed to the same path under ``dst`` (absolute); ``(new obj, number of strings changed)``."""
    if isinstance(obj, str):
        if obj and (os.sep in obj or "/" in obj):
            full = os.path.abspath(obj)
            if full == src or full.startswith(src + os.sep):
                return dst + full[len(src):], 1
        return obj, 0
    if isinstance(obj, list):
        pairs = [_moved_paths(v, src, dst) for v in obj]
        return [v for v, _ in pairs], sum(c for _, c in pairs)
    if isinstance(obj, dict):
        pairs = {k: _moved_paths(v, src, dst) for k, v in obj.items()}
        return {k: v for k, (v, _) in pairs.items()}, sum(c for _, c in pairs.values())
    return obj, 0


def copy_other_files(image_root: str | os.PathLike, out_dir: str | os.PathLike,
                     mask_root: Optional[str | os.PathLike] = None,
                     stats: Optional[MaskedCopyStats] = None) -> int:
    """Copy every file under ``image_root`` that is not an image (split files, lists, ``.mat``, ...) to
    ``out_dir/<rel>`` and recreate every folder (empty ones too), so that ``out_dir`` is a complete dataset folder
    next to the masked copies of the images. JSON files that name paths under ``image_root`` (FastReID's CUHK03
    split files hold each image's full path) get those paths moved to ``out_dir``, so FastReID reads the masked
    copies, not the originals. Mask folders (``masks/`` and ``mask_root``) are skipped; files already in
    ``out_dir`` are kept. Returns the number of files copied."""
    import json
    import shutil

    from ..utils.extraction import IMAGE_EXTENSIONS

    stats = stats if stats is not None else MaskedCopyStats()
    image_root, out_dir = Path(image_root).resolve(), Path(out_dir)
    src, dst_root = str(image_root), os.path.abspath(out_dir)
    skip = {(Path(mask_root) if mask_root else image_root / MASKS_DIRNAME).resolve()}
    copied = 0
    for dirpath, dirnames, files in os.walk(image_root):
        dirnames[:] = sorted(d for d in dirnames
                             if d != MASKS_DIRNAME and (Path(dirpath) / d).resolve() not in skip)
        (out_dir / Path(dirpath).relative_to(image_root)).mkdir(parents=True, exist_ok=True)
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            src_file = Path(dirpath) / f
            dst = out_dir / src_file.relative_to(image_root)
            if dst.exists():
                continue
            moved = 0
            if f.lower().endswith(".json"):
                try:
                    data, moved = _moved_paths(json.loads(src_file.read_text()), src, dst_root)
                except (UnicodeDecodeError, ValueError):
                    moved = 0
                if moved:
                    tmp = dst.with_name(f".{dst.name}.tmp")
                    tmp.write_text(json.dumps(data))
                    os.replace(tmp, dst)
                    stats.rewritten += 1
            if not moved:
                shutil.copy2(src_file, dst)
            copied += 1
    stats.copied += copied
    return copied


def write_masked_dataset(images: Iterable[str | os.PathLike], image_root: str | os.PathLike,
                         out_dir: str | os.PathLike, mask_root: Optional[str | os.PathLike] = None,
                         fill: str = "zero", on_missing: str = "copy", progress: bool = True) -> MaskedCopyStats:
    """A background-removed copy of a whole dataset folder for a plain FastReID: the masked ``images``
    (:func:`write_masked_copies`; images without a mask copied unmasked and counted, or an error with
    ``on_missing="error"``) plus every other file and folder of ``image_root`` (:func:`copy_other_files`, JSON
    paths moved to the copy). Returns the :class:`MaskedCopyStats`."""
    stats = MaskedCopyStats()
    write_masked_copies(images, image_root, out_dir, mask_root, fill=fill, on_missing=on_missing,
                        progress=progress, stats=stats)
    copy_other_files(image_root, out_dir, mask_root, stats=stats)
    return stats
