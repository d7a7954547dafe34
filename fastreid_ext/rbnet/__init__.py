"""RBNet (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024).

``config`` (``add_rbnet_config``), ``meta_arch`` (the registered ``RBNet``), ``reverse_backbone`` (reverse
backbone and mask generator), ``fusion`` (same-level features fused into backbone 2, an option), ``masking``
(plain-torch mask functions), ``evaluation`` (keypoint / mask quality), ``visualize`` (the image | heatmaps |
mask | activations strip and its command line), ``hooks`` (the picture and map quality after training,
``MODEL.RBNET.PICTURE``).
"""
from . import config, hooks, meta_arch  # noqa: F401  (registrations)
from .config import add_rbnet_config  # noqa: F401
from .meta_arch import RBNet  # noqa: F401
