"""Shared modeling components of fastreid_ext (backbones); methods live in their own packages."""
from .backbones import imagenet  # noqa: F401  (build_mobilenetv2_imagenet_backbone)
from .backbones import multiscale  # noqa: F401  (build_multiscale_resnet_backbone)
from .backbones import torchreid_bridge  # noqa: F401  (build_osnet_torchreid_backbone)
