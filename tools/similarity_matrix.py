#!/usr/bin/env python
"""Condition similarity matrices (within / between conditions) of re-id models on a
``<factor>/<condition>/<id>_<shot>.png`` folder: a thin wrapper over :mod:`fastreid_ext.analysis.cli`.

    python tools/similarity_matrix.py --data DIR --out OUT --model NAME CONFIG [WEIGHTS] [key=value ...] ...
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.analysis.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
