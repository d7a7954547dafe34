#!/usr/bin/env python
"""Export any registered re-id model to ONNX (checked: onnx.checker, onnxruntime, parity with PyTorch), and evaluate
the exported file with FastReID's evaluator next to the PyTorch model.

    python tools/export_onnx.py --config-file CFG --weights W --output model.onnx [--evaluate] [KEY VALUE ...]
    python tools/export_onnx.py --torchreid-weights ../shared/realdata/weights/osnet_x0_25_market1501.pth \\
        --output osnet_x0_25.onnx

The command line of :mod:`fastreid_ext.deploy.cli` (``--help`` lists every option).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.deploy.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
