"""Person masks for background removal (Zhang & Wu, "Person re-identification based on multiple deep learning
methods", Sec. 3.1: an instance segmenter removes the background before re-id): segmentation backends, the
resumable extraction loop and the masked-copy writer behind ``tools/extract_masks.py`` (:mod:`.cli`). Masks
are written in the layout of :mod:`fastreid_ext.data.annotations` (``masks/<rel>.png`` at the dataset root)."""
from .backends import (BACKENDS, FileMaskImporter, MaskBackend, MediaPipeSegmenter,  # noqa: F401
                       TorchvisionMaskRCNN, build_segmenter, resize_mask)
from ..utils.extraction import list_images  # noqa: F401  (the image list the mask tool walks)
from .extract import (ExtractStats, MaskedCopyStats, copy_other_files, extract_masks,  # noqa: F401
                      mask_path_for, write_masked_copies, write_masked_dataset)
