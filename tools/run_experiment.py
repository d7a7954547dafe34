#!/usr/bin/env python
"""Run named comparisons for several seeds and write a table + plot: a thin wrapper over
:mod:`fastreid_ext.experiments.runner`.

    python tools/run_experiment.py NAME [NAME ...] --seeds 0 1 2 [--out logs/experiments] [--device cpu|cuda]
        [--jobs N] [--threads T] [--workers W] [--budget default|smoke] [--arms ARM ...] [--resume]
        [--time-limit SECONDS] [--skip-missing] [--dry-run] [KEY VALUE ...]

NAME: rbnet, hplf, mmt, jointibn, posetransfer (``--list`` describes them). ``KEY VALUE`` overrides go to every run of
every arm. Finished (arm, seed) results are kept and not redone; an interrupted run starts again (``--resume``:
continues from its last checkpoint). Results: ``<out>/<NAME>/report.md`` (+ ``report.png``, ``results.json``).
"""
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from fastreid_ext.experiments.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(root=ROOT))
