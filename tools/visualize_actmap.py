#!/usr/bin/env python
"""Activation maps (torchreid's recipe) of any registered model and layer, several models side by side: a thin
wrapper over :mod:`fastreid_ext.visualization.actmap_cli` (see its docstring or ``--help``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.visualization.actmap_cli import main  # noqa: E402

if __name__ == "__main__":
    main()
