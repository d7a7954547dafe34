#!/usr/bin/env python
"""Pose grids (the pose-transfer paper's Figure 3: input | the person generated in several target poses) and
reconstruction errors of a PoseGAN checkpoint, on CPU.

    python tools/generate_poses.py --config-file projects/PoseTransfer/configs/SynthPed-GAN/stage2_gan.yml \\
        --weights logs/PoseTransfer/SynthPed-GAN/stage2_gan/model_final.pth --output pose_grid.png [KEY VALUE ...]

The command line of :mod:`fastreid_ext.pose_transfer.generate` (``--help`` lists every option).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.pose_transfer.generate import main  # noqa: E402

if __name__ == "__main__":
    main()
