"""Person masks for background removal (seed 000): segmentation backends and the resumable extraction
loop behind ``tools/extract_masks.py``. Masks are written in the layout of
:mod:`fastreid_ext.data.annotations` (``masks/<rel>.png`` at the dataset root)."""
from .backends import (BACKENDS, FileMaskImporter, MaskBackend, MediaPipeSegmenter,  # noqa: F401
                       TorchvisionMaskRCNN, build_segmenter, resize_mask)
from ..utils.extraction import list_images  # noqa: F401  (the image list the mask tool walks)
from .extract import ExtractStats, extract_masks, mask_path_for, write_masked_copies  # noqa: F401
