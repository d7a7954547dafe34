"""What the per-image extraction tools share (keypoints: :mod:`fastreid_ext.pose`, person masks:
:mod:`fastreid_ext.segmentation`): which files of a dataset folder are images, and the backend base class."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..data.annotations import MASKS_DIRNAME

__all__ = ["IMAGE_EXTENSIONS", "list_images", "ExtractionBackend"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def list_images(root: str | os.PathLike, subdirs: Optional[Sequence[str]] = None) -> List[Path]:
    """Image files under ``root`` (recursively, sorted), or under ``root/<subdir>`` for each of
    ``subdirs``. Hidden folders and files and mask folders (``masks/``, which hold PNGs mirroring the
    images) are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    tops = [root] if not subdirs else [root / s for s in subdirs]
    out = []
    for top in tops:
        if not top.is_dir():
            raise FileNotFoundError(f"{top} does not exist (from --subdirs)")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != MASKS_DIRNAME)
            for f in sorted(filenames):
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                    out.append(Path(dirpath) / f)
    return sorted(set(out))


class ExtractionBackend:
    """Base of the keypoint and mask backends: a :attr:`name`, a :meth:`signature` stored with the results
    (resuming with a backend of another signature is refused: two models never mix in one output), and
    :meth:`close` / context-manager use for backends that hold a model or a native session."""

    name = "base"
    #: images per ``predict`` call that the extraction loop should use by default
    default_batch_size = 1

    def signature(self) -> Dict:
        return {"backend": self.name}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
