"""Angular-margin heads: FastReID's ``EmbeddingHead`` with SphereFace's multiplicative margin and Eq. (1)'s
combined margins of Yoshida et al. (``SphereSoftmax``, ``CombinedMarginSoftmax``) next to FastReID's ``ArcSoftmax``,
``CosSoftmax`` and ``CircleSoftmax`` (configs in ``projects/ConditionAnalysis/configs``).

``config`` (``add_angular_config``: ``MODEL.HEADS.ANGULAR``), ``margins`` (plain torch), ``heads`` (the registered
``AngularEmbeddingHead``).
"""
from . import config, heads  # noqa: F401  (registrations)
from .config import add_angular_config  # noqa: F401
from .heads import AngularEmbeddingHead  # noqa: F401
from .margins import CombinedMarginSoftmax, SphereSoftmax  # noqa: F401
