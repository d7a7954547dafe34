#!/usr/bin/env python
"""RBNet attention strips (the paper's Figures 3 and 4) for query images of a dataset.

    python tools/visualize_rbnet.py --config-file projects/RBNet/configs/SynthPed/rbnet_R18.yml \\
        --weights logs/SynthPed/rbnet_R18/model_final.pth --num-images 8 --output vis/rbnet [KEY VALUE ...]

The command line of :mod:`fastreid_ext.rbnet.visualize` (``--help`` lists every option).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.rbnet.visualize import main  # noqa: E402

if __name__ == "__main__":
    main()
