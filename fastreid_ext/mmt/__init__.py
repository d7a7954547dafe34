"""MMT: Mutual Mean-Teaching (Ge, Chen & Li, ICLR 2020) around any model of the multi-branch interface.

``config`` (``add_mmt_config``), ``meta_arch`` (the registered ``MMT``), ``losses`` (plain-torch MMT losses
and the temporal mean), ``two_view`` (two augmentations per target image), ``hooks`` (the MMT trainer and the
pseudo-label / mean-net hook), ``evaluator`` (both mean nets evaluated, the better reported).
"""
from . import config, evaluator, hooks, meta_arch  # noqa: F401  (registrations)
from .config import add_mmt_config  # noqa: F401
from .meta_arch import MMT  # noqa: F401
