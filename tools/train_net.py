#!/usr/bin/env python
"""Train / evaluate any fastreid_ext or FastReID model: a thin wrapper over :mod:`fastreid_ext.engine.cli`.

    python tools/train_net.py --config-file projects/<Method>/configs/...yml [--eval-only] [--resume]
        [--num-gpus N] [KEY VALUE ...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
