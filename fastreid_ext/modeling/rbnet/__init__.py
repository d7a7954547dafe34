"""RBNet building blocks (plain torch): reverse backbone and mask generator. The registered meta-architecture
is :class:`fastreid_ext.modeling.meta_arch.rbnet.RBNet`."""
from .reverse_backbone import MASK_SOURCES, NUM_KEYPOINTS, MaskGenerator, ReverseBackbone  # noqa: F401
