"""fastreid_ext: methods, datasets and tools plugged into FastReID's registries.

Importing this package first makes ``fastreid==1.4.0`` work on today's stack (see
:mod:`fastreid_ext.compat`), then registers our datasets, meta-architectures and heads.
"""
from . import compat

compat.apply()

from . import config, data, engine, evaluation, modeling  # noqa: E402,F401  (registrations)
from .config import add_fastreid_ext_config, get_cfg  # noqa: E402,F401

__version__ = "0.1.0"
