#!/usr/bin/env python
"""Per-loss-term gradient norms on the backbone of any registered model: a thin wrapper over
:mod:`fastreid_ext.engine.loss_gradients` (see its docstring or ``--help``)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.engine.loss_gradients import main  # noqa: E402

if __name__ == "__main__":
    main()
