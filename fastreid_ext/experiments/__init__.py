"""Experiment runner: named comparisons of the methods (several seeds, each FastReID run in a child process,
resumable), with a table (mean ± std per metric per arm, per-seed numbers, commands) and a plot.

* :mod:`.comparisons` - the named comparisons (``rbnet``, ``hplf``, ``mmt``, ``jointibn``, ``posetransfer``);
* :mod:`.runner` - planning, dataset preparation, child processes, resume (``tools/run_experiment.py``);
* :mod:`.measure` - measurements after a run (RBNet's map quality, MMT's pseudo-label quality);
* :mod:`.report` - aggregation, markdown, plot.
"""
from .comparisons import COMPARISONS, Arm, Comparison, Stage, get_comparison, register_comparison  # noqa: F401
