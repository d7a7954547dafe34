"""HPLF: a horizontal-pooling local branch on FastReID's Baseline, with its global + local evaluator.

``config`` (``add_hplf_config``), ``meta_arch`` (the registered ``HPLF``), ``evaluator`` (``HPLFEvaluator``,
registered for ``HPLF`` in the trainer's evaluator registry).
"""
from . import config, evaluator, meta_arch  # noqa: F401  (registrations)
from .config import add_hplf_config  # noqa: F401
from .meta_arch import HPLF  # noqa: F401
