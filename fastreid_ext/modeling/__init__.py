"""Registered meta-architectures, heads and backbones of fastreid_ext (one module per method)."""
from .backbones import imagenet  # noqa: F401,E402  (build_mobilenetv2_imagenet_backbone)
from .meta_arch import joint_ibn  # noqa: F401,E402  (JointIBN, build_osnet_torchreid_backbone)
from .meta_arch import rbnet  # noqa: F401,E402  (RBNet, add_rbnet_config, build_multiscale_resnet_backbone)
from .meta_arch import hplf  # noqa: F401,E402  (HPLF, add_hplf_config)
from .meta_arch import mmt  # noqa: F401,E402  (MMT, add_mmt_config; its trainer and hook in engine/hooks_uda.py)
