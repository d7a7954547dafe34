"""``AngularEmbeddingHead``: FastReID's ``EmbeddingHead`` that also accepts the margin layers of
:mod:`fastreid_ext.angular.margins` (``SphereSoftmax``, ``CombinedMarginSoftmax``) as ``MODEL.HEADS.CLS_LAYER``;
FastReID's own layers (``Linear``, ``ArcSoftmax``, ``CosSoftmax``, ``CircleSoftmax``) work unchanged."""
from __future__ import annotations

from fastreid.config import configurable
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from fastreid.modeling.heads.embedding_head import EmbeddingHead

from .margins import ANGULAR_CLS_LAYERS, CombinedMarginSoftmax, SphereSoftmax


@REID_HEADS_REGISTRY.register()
class AngularEmbeddingHead(EmbeddingHead):
    """``EmbeddingHead`` (pooling, optional 1x1 embedding, BN-neck, classifier on normalised features) whose
    ``cls_type`` may also be ``SphereSoftmax`` or ``CombinedMarginSoftmax``."""

    @configurable
    def __init__(self, *, cls_type, angular_margins=(1.0, 0.5, 0.0), sphere_lambda=(1000.0, 0.12, 1.0, 5.0),
                 **kwargs):
        ours = cls_type in ANGULAR_CLS_LAYERS
        super().__init__(cls_type="CosSoftmax" if ours else cls_type, **kwargs)  # CosSoftmax: a placeholder
        if cls_type == "SphereSoftmax":
            self.cls_layer = SphereSoftmax(kwargs["num_classes"], kwargs["scale"], kwargs["margin"], *sphere_lambda)
        elif cls_type == "CombinedMarginSoftmax":
            self.cls_layer = CombinedMarginSoftmax(kwargs["num_classes"], kwargs["scale"], kwargs["margin"],
                                                   angular_margins)

    @classmethod
    def from_config(cls, cfg):
        args = EmbeddingHead.from_config(cfg)
        a = cfg.MODEL.HEADS.ANGULAR
        args["angular_margins"] = tuple(a.MARGINS)
        args["sphere_lambda"] = (a.LAMBDA_BASE, a.LAMBDA_GAMMA, a.LAMBDA_POWER, a.LAMBDA_MIN)
        return args
