#!/usr/bin/env python
"""Similarity attention: the exact per-location decomposition of a pair's cosine similarity (Stylianou et al.,
WACV 2019) over both images: a thin wrapper over :mod:`fastreid_ext.visualization.similarity_cli`."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.visualization.similarity_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
