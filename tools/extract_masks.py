#!/usr/bin/env python
"""Person masks for a re-id dataset (background removal), resumable.

    python tools/extract_masks.py --root $FASTREID_DATASETS/Market-1501-v15.09.15 --backend mediapipe
    python tools/extract_masks.py --dataset DukeMTMC --backend mediapipe
    python tools/extract_masks.py --root DIR --backend mediapipe --write-masked OUT_ROOT/Market-1501-v15.09.15

The command line of :mod:`fastreid_ext.segmentation.cli` (``--help`` lists every backend and option).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.segmentation.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
