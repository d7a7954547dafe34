"""Kept for imports of ``fastreid_ext.data.synthped.preview``; the preview lives in :mod:`.generate`."""
from .generate import make_preview  # noqa: F401
