#!/usr/bin/env python
"""Generate SynthPed domains (Market-1501 layout + keypoints.json + masks/ + meta.json) and previews.

    python tools/make_synthetic.py --domain SynthPedA --root datasets              # default preset
    python tools/make_synthetic.py --domain SynthPedA SynthPedB --preset tiny --root /tmp/ds
    python tools/make_synthetic.py --domain SynthPedA SynthPedB SynthPedC --preview-only \\
        --preview docs/synthped_samples.png                                         # samples, no dataset

The command line of :mod:`fastreid_ext.data.synthped.cli` (``--help`` lists every option); it imports
neither FastReID nor the methods.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastreid_ext.data.synthped.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
