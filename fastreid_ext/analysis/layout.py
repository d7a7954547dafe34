"""The folder layout of a controlled-conditions image set (no FastReID import).

::

    ROOT/<factor>/<condition>/<id>_<shot>.<png|jpg|jpeg|bmp>

e.g. ``distance/6m/0003_2.png``: person ``0003``, shot ``2``, taken under condition ``6m`` of the factor
``distance``. SynthPed's controlled mode (:mod:`fastreid_ext.data.synthped.controlled`) writes it; photographs
sorted into the same folders work as well. Optional files at ROOT: ``masks/`` (person masks in the same layout,
``.png``), ``keypoints.json`` (:mod:`fastreid_ext.data.annotations`) and ``conditions.json`` (``{"factors":
{factor: {"conditions": [ordered names], "params": {condition: {"orientation_deg": ...}}}}}``: the display order
of the conditions and, for flip canonicalisation, a known orientation). Without ``conditions.json`` conditions
are sorted naturally (``2m`` before ``10m``). Folders named ``masks`` or starting with ``.`` or ``_`` are not
factors.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

__all__ = ["LayoutError", "FactorImages", "ImageSet", "scan_image_set", "natural_key", "EXPECTED_LAYOUT",
           "IMAGE_EXTS"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
NAME_RE = re.compile(r"^(?P<id>[^_]+)_(?P<shot>[^_]+)\.(?:png|jpe?g|bmp)$", re.IGNORECASE)
RESERVED = ("masks",)
EXPECTED_LAYOUT = ("ROOT/<factor>/<condition>/<id>_<shot>.png (or .jpg), e.g. distance/6m/0003_2.png: one folder per "
                   "factor, one sub-folder per condition (at least two), at least two shots per person and condition")


class LayoutError(ValueError):
    """The folder is not in the expected layout (the message shows the layout and what was found)."""


def natural_key(text: str):
    """Sort key that orders embedded numbers numerically (``2m`` < ``10m``)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text) if t]


@dataclass
class FactorImages:
    """One factor: ordered ``conditions``, ``images[id][condition]`` = sorted image paths (the shots), and the
    known ``orientation`` (degrees) of each condition where ``conditions.json`` gives one."""

    name: str
    conditions: List[str]
    images: Dict[str, Dict[str, List[Path]]]
    orientation: Dict[str, float] = field(default_factory=dict)
    params: Dict[str, dict] = field(default_factory=dict)

    @property
    def identities(self) -> List[str]:
        return sorted(self.images, key=natural_key)

    def num_images(self) -> int:
        return sum(len(p) for by_c in self.images.values() for p in by_c.values())


@dataclass
class ImageSet:
    root: Path
    factors: Dict[str, FactorImages]
    skipped: List[str] = field(default_factory=list)


def _found(root: Path, limit: int = 12) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    more = f" ... (+{len(entries) - limit})" if len(entries) > limit else ""
    return ", ".join(entries[:limit]) + more if entries else "(empty)"


def _is_factor_dir(p: Path) -> bool:
    return p.is_dir() and p.name not in RESERVED and not p.name.startswith((".", "_"))


def scan_image_set(root, factors: Optional[Sequence[str]] = None, min_shots: int = 2,
                   skip_incomplete: bool = False) -> ImageSet:
    """Read the layout of ``root`` (module docstring) and check it: at least two conditions per factor, at least
    ``min_shots`` shots per person and condition. ``skip_incomplete``: persons with fewer shots somewhere are left
    out of that factor (listed in ``ImageSet.skipped``) instead of raising :class:`LayoutError`."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root} is not a folder. Expected {EXPECTED_LAYOUT}")
    meta = {}
    if (root / "conditions.json").is_file():
        try:
            meta = json.loads((root / "conditions.json").read_text()).get("factors", {}) or {}
        except ValueError as e:
            raise LayoutError(f"{root / 'conditions.json'} is not valid JSON: {e}") from None
    dirs = [p for p in sorted(root.iterdir(), key=lambda p: natural_key(p.name)) if _is_factor_dir(p)]
    if factors is not None:
        names = {p.name: p for p in dirs}
        missing = [f for f in factors if f not in names]
        if missing:
            raise LayoutError(f"factor(s) {missing} not found in {root}. Expected {EXPECTED_LAYOUT}; found: "
                              f"{_found(root)}")
        dirs = [names[f] for f in factors]
    if not dirs:
        raise LayoutError(f"no factor folders in {root}. Expected {EXPECTED_LAYOUT}; found: {_found(root)}")
    out = ImageSet(root, {})
    for fdir in dirs:
        stray = [p.name for p in fdir.iterdir() if p.is_file() and not p.name.startswith(".")]
        if stray:
            raise LayoutError(f"{fdir} holds files directly ({', '.join(sorted(stray)[:5])}): images go one level "
                              f"deeper, into condition folders. Expected {EXPECTED_LAYOUT}; found in {fdir.name}/: "
                              f"{_found(fdir)}")
        cdirs = {p.name: p for p in fdir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
        if len(cdirs) < 2:
            raise LayoutError(f"factor {fdir.name!r} has {len(cdirs)} condition folder(s) ({', '.join(cdirs) or 'none'}): "
                              f"a between-condition matrix needs at least two. Expected {EXPECTED_LAYOUT}")
        order = list(meta.get(fdir.name, {}).get("conditions", []))
        conds = [c for c in order if c in cdirs] + sorted((c for c in cdirs if c not in order), key=natural_key)
        images: Dict[str, Dict[str, List[Path]]] = {}
        for c in conds:
            files = [p for p in cdirs[c].iterdir() if p.is_file() and not p.name.startswith(".")]
            bad = [p.name for p in files if p.suffix.lower() in IMAGE_EXTS and not NAME_RE.match(p.name)]
            if bad:
                raise LayoutError(f"{cdirs[c]}: image names must be <id>_<shot>{IMAGE_EXTS[0]} (one underscore), "
                                  f"got {', '.join(sorted(bad)[:5])}. Expected {EXPECTED_LAYOUT}")
            imgs = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
            if not imgs:
                raise LayoutError(f"condition folder {cdirs[c]} holds no images. Expected {EXPECTED_LAYOUT}; found: "
                                  f"{_found(cdirs[c])}")
            for p in sorted(imgs, key=lambda p: natural_key(p.name)):
                pid = NAME_RE.match(p.name).group("id")
                images.setdefault(pid, {}).setdefault(c, []).append(p)
        for pid in sorted(images, key=natural_key):
            few = {c: len(v) for c, v in images[pid].items() if len(v) < min_shots}
            if few:
                msg = (f"{fdir.name}: person {pid} has fewer than {min_shots} shots in "
                       f"{', '.join(f'{c} ({n})' for c, n in few.items())}: the within-condition similarity is the "
                       f"mean over pairs of shots, so every condition needs at least two")
                if not skip_incomplete:
                    raise LayoutError(msg + " (--skip-incomplete leaves such persons out)")
                out.skipped.append(msg)
                del images[pid]
        if not images:
            raise LayoutError(f"factor {fdir.name!r}: no person with at least {min_shots} shots per condition")
        params = meta.get(fdir.name, {}).get("params", {}) or {}
        orient = {c: float(params[c]["orientation_deg"]) for c in conds
                  if isinstance(params.get(c), dict) and "orientation_deg" in params[c]}
        out.factors[fdir.name] = FactorImages(fdir.name, conds, images, orient, {c: params.get(c, {}) for c in conds})
    return out
