"""JointIBN: BoT with IBN-a trained jointly on several datasets without random erasing, on
background-removed crops (Zhang & Wu).

``config`` (``add_joint_ibn_config``), ``meta_arch`` (the registered ``JointIBN``).
"""
from . import config, meta_arch  # noqa: F401  (registrations)
from .config import add_joint_ibn_config  # noqa: F401
from .meta_arch import JointIBN  # noqa: F401
