"""HPLF: a horizontal-pooling local branch on FastReID's Baseline, with its global + local evaluator.

``config`` (``add_hplf_config``), ``meta_arch`` (the registered ``HPLF``), ``evaluator`` (``HPLFEvaluator``,
registered for ``HPLF`` in the trainer's evaluator registry); ``diagnose`` (not imported here: ``python -m
fastreid_ext.hplf.diagnose``, why the local TriHard loss sat at its margin with unnormalised stripes).
"""
from . import config, evaluator, meta_arch  # noqa: F401  (registrations)
from .config import add_hplf_config  # noqa: F401
from .meta_arch import HPLF  # noqa: F401
