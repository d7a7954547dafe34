#!/usr/bin/env python
"""Detect-then-re-id on MOTChallenge sequences, with timings.

    python tools/reid_video.py --seq ../shared/realdata/mot17_mini/MOT17-02-FRCNN --boxes gt \\
        --torchreid-weights ../shared/realdata/weights/osnet_x0_25_market1501.pth --out logs/reid_video
    python tools/reid_video.py --seq SEQ --config-file projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml \\
        MODEL.WEIGHTS logs/synthped/joint_R18-ibn/model_final.pth

The command line of :mod:`fastreid_ext.video.cli` (``--help`` lists every option).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.video.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
