"""Config keys of the angular-margin heads (``MODEL.HEADS.ANGULAR``), used by ``AngularEmbeddingHead``."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_angular_config(cfg):
    """``MODEL.HEADS.ANGULAR``: the margins of ``CombinedMarginSoftmax`` and SphereFace's lambda annealing."""
    _C = cfg
    _C.MODEL.HEADS.ANGULAR = CN()
    # (m1, m2, m3) of Eq. (1) of Yoshida et al. (SphereFace's multiplicative, ArcFace's additive angular, CosFace's
    # additive cosine margin) for CLS_LAYER CombinedMarginSoftmax; default: ArcFace's m2 = 0.5.
    _C.MODEL.HEADS.ANGULAR.MARGINS = [1.0, 0.5, 0.0]
    # SphereFace (Liu et al., CVPR 2017) trains with f = (lambda cos + psi) / (1 + lambda), lambda = max(LAMBDA_MIN,
    # LAMBDA_BASE * (1 + LAMBDA_GAMMA * step) ^ -LAMBDA_POWER) per training step: the values of its released
    # training prototxt. CLS_LAYER SphereSoftmax; the multiplicative margin is MODEL.HEADS.MARGIN (SphereFace: 4).
    _C.MODEL.HEADS.ANGULAR.LAMBDA_BASE = 1000.0
    _C.MODEL.HEADS.ANGULAR.LAMBDA_GAMMA = 0.12
    _C.MODEL.HEADS.ANGULAR.LAMBDA_POWER = 1.0
    _C.MODEL.HEADS.ANGULAR.LAMBDA_MIN = 5.0
