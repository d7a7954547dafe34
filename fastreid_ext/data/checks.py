"""Checks of the data a run will read, before training (or evaluation) starts, in the main process.

Without them, bad input surfaces far from its cause: an empty query or gallery split divides by zero in the
evaluation after the whole training; a zero-byte or corrupt image, a missing keypoint or mask file stops a loader
worker in the middle of an epoch.

Kept cheap for large datasets: one ``os.stat`` per image (missing and zero-byte files) and PIL's header parse
(``Image.open`` without ``load()``: format, size, mode; no pixel is decoded). A file whose header is valid but whose
pixel data is truncated passes here and still fails when it is read (with its path, ``read_image_checked``).

* unreadable images (missing, zero-byte, not an image): :class:`DataCheckError` with the count and the first paths;
* images that are not RGB (grayscale ``L``, ``RGBA``, palette ``P``, ...): accepted; FastReID's ``read_image``
  converts every image to 3-channel RGB (grayscale replicated, alpha dropped); the count is logged;
* tiny images (a side under :data:`TINY_SIDE` pixels): accepted with a logged warning and their count. The
  transforms resize every image to ``INPUT.SIZE_TRAIN`` / ``INPUT.SIZE_TEST``, so such a crop trains and evaluates
  without an error, but it carries (almost) no appearance: a detector's stray box, worth removing, not a reason to
  refuse a dataset of thousands;
* annotations (:func:`check_annotations`): with ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS`` / ``LOAD_MASKS`` and
  ``ON_MISSING error``, every image the loader will ask annotations for must have them, with the right shape.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .annotations import AnnotationError, AnnotationIndex

logger = logging.getLogger(__name__)

#: an image with a side shorter than this many pixels is "tiny" (logged warning, see the module docstring)
TINY_SIDE = 4
#: how many paths an error or warning names
SHOW = 5


class DataCheckError(ValueError):
    """The data a run would read is unusable (empty split, unreadable images): refused before training."""


@dataclass
class ImageScan:
    """What :func:`scan_images` found: ``total`` files, ``unreadable`` (path, reason), ``tiny`` (path, w, h),
    ``modes`` (PIL mode -> count)."""

    total: int = 0
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    tiny: List[Tuple[str, int, int]] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    sizes: Dict[str, Tuple[int, int]] = field(default_factory=dict)


def scan_images(paths: Iterable[str], tiny_side: int = TINY_SIDE) -> ImageScan:
    """``os.stat`` and PIL's header parse of every path (no pixel decoded): see :class:`ImageScan`."""
    from PIL import Image

    scan = ImageScan()
    for p in paths:
        scan.total += 1
        try:
            if os.stat(p).st_size == 0:
                scan.unreadable.append((p, "zero-byte file"))
                continue
            with Image.open(p) as im:  # lazy: reads the header only
                w, h = im.size
                mode = im.mode
        except FileNotFoundError:
            scan.unreadable.append((p, "missing"))
            continue
        except Exception as e:  # noqa: BLE001  (PIL raises UnidentifiedImageError, OSError, SyntaxError, ...)
            scan.unreadable.append((p, f"not a readable image ({type(e).__name__})"))
            continue
        scan.modes[mode] += 1
        scan.sizes[p] = (w, h)
        if min(w, h) < tiny_side:
            scan.tiny.append((p, w, h))
    return scan


def check_images(paths: Sequence[str], where: str, tiny_side: int = TINY_SIDE) -> ImageScan:
    """Refuse unreadable images (:class:`DataCheckError`: count, first paths, what to do); log the non-RGB and the
    tiny ones (see the module docstring). ``where`` names the data in messages (``"training set ('Market1501',)"``)."""
    scan = scan_images(paths, tiny_side)
    if scan.unreadable:
        kinds = Counter(reason.split(" (")[0] for _, reason in scan.unreadable)
        first = "; ".join(f"{p} ({reason})" for p, reason in scan.unreadable[:SHOW])
        raise DataCheckError(
            f"{where}: {len(scan.unreadable)} of {scan.total} image(s) cannot be read "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())}), e.g. {first}. Replace or delete them (a zero-byte "
            f"file is usually an interrupted copy or crop extraction), then start again.")
    other = {m: n for m, n in scan.modes.items() if m != "RGB"}
    if other:
        logger.info("%s: %d image(s) are not RGB (%s): FastReID's read_image converts them to 3-channel RGB "
                    "(grayscale replicated, alpha dropped)", where, sum(other.values()),
                    ", ".join(f"{n} {m}" for m, n in sorted(other.items())))
    if scan.tiny:
        logger.warning("%s: %d of %d image(s) have a side under %d pixels, e.g. %s; they are resized to the input "
                       "size like the others and carry almost no appearance: remove them if they are detector noise",
                       where, len(scan.tiny), scan.total, tiny_side,
                       ", ".join(f"{p} ({w}x{h})" for p, w, h in scan.tiny[:SHOW]))
    return scan


def check_test_splits(name: str, data) -> None:
    """Refuse a test dataset whose query or gallery split is empty, naming the dataset, the split and its folder
    (FastReID's evaluation would divide by zero after the whole training)."""
    for split, items, folder in (("query", data.query, getattr(data, "query_dir", None)),
                                 ("gallery", data.gallery, getattr(data, "gallery_dir", None))):
        if not items:
            where = f" ({os.path.abspath(folder)})" if folder else ""
            raise DataCheckError(
                f"test dataset {name}: the {split} split is empty{where}; evaluation needs query and gallery "
                f"images. Put the images there, or remove {name} from DATASETS.TESTS.")


def check_annotations(paths: Sequence[str], annotations: Optional[AnnotationIndex], load_keypoints: bool,
                      load_masks: bool, on_missing: str, where: str, num_keypoints: int = 17,
                      image_sizes: Optional[Dict[str, Tuple[int, int]]] = None) -> None:
    """What the loader will ask of ``annotations`` for ``paths``, checked now: with ``on_missing == "error"`` a
    missing keypoint entry / mask file raises :class:`AnnotationError` with the count, the first images and what to
    do (with ``"empty"`` the count is logged); keypoints not ``num_keypoints x 3`` and a mask whose size differs
    from its image's (``image_sizes``, from :func:`check_images`) raise naming the file."""
    if not (load_keypoints or load_masks):
        return
    if annotations is None:
        annotations = AnnotationIndex()
    for what, on in (("keypoints", load_keypoints), ("masks", load_masks)):
        if not on:
            continue
        have, total, missing = annotations.coverage(paths, what=what)
        if have == total:
            continue
        tool = "tools/extract_keypoints.py" if what == "keypoints" else "tools/extract_masks.py"
        key = "KEYPOINTS_FILES" if what == "keypoints" else "MASK_ROOTS"
        text = (f"{where}: {total - have} of {total} image(s) have no {what}, e.g. {', '.join(missing[:SHOW])}")
        if on_missing == "error":
            raise AnnotationError(
                f"{text}. Create them with {tool} (or tools/make_synthetic.py for SynthPed), point "
                f"DATASETS.ANNOTATIONS.{key} at them, set DATASETS.ANNOTATIONS.ON_MISSING empty to use empty targets "
                f"for those images, or turn DATASETS.ANNOTATIONS.LOAD_{what.upper()} off.")
        logger.warning("%s: %s (DATASETS.ANNOTATIONS.ON_MISSING empty)", text,
                       "using empty targets for them (keypoint scores 0)" if what == "keypoints"
                       else "those images are used unmasked (full masks)")
    for p in paths:
        if load_keypoints:
            kps = annotations.keypoints(p)
            if kps is not None and tuple(kps.shape) != (num_keypoints, 3):
                raise AnnotationError(f"{where}: the keypoints of {p} have shape {tuple(kps.shape)}, expected "
                                      f"({num_keypoints}, 3) (COCO-17 x, y, score); re-extract them "
                                      f"(tools/extract_keypoints.py)")
        if load_masks:
            mp = annotations.mask_path(p)
            if mp is not None:
                _check_mask_header(mp, p, (image_sizes or {}).get(p), where)


def _check_mask_header(mask_path, img_path: str, img_size: Optional[Tuple[int, int]], where: str) -> None:
    from PIL import Image

    try:
        with Image.open(mask_path) as m:
            size, bands = m.size, len(m.getbands())
    except Exception as e:  # noqa: BLE001
        raise AnnotationError(f"{where}: mask {mask_path} of {img_path} cannot be read ({type(e).__name__}); "
                              f"re-extract it (tools/extract_masks.py)") from e
    if bands != 1:
        logger.debug("mask %s has %d bands: read as grayscale", mask_path, bands)
    if img_size is not None and size != img_size:
        raise AnnotationError(f"{where}: mask {mask_path} is {size[0]}x{size[1]} but its image {img_path} is "
                              f"{img_size[0]}x{img_size[1]}; re-extract it (tools/extract_masks.py)")
