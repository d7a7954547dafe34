#!/usr/bin/env python
"""Ranked lists (worst AP first, green/red borders), distance distributions and ROC of any registered model: a thin
wrapper over :mod:`fastreid_ext.visualization.ranked_cli` (see its docstring or ``--help``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.visualization.ranked_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
