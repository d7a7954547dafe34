"""Config keys of JointIBN (joint multi-dataset IBN training with background removal)."""
from fastreid.config import CfgNode as CN

from ..config import register_config


@register_config
def add_joint_ibn_config(cfg):
    """``MODEL.JOINT_IBN``: the background-removal input stage of :class:`JointIBN`."""
    cfg.MODEL.JOINT_IBN = CN()
    # multiply each image by its person mask before normalization (needs DATASETS.ANNOTATIONS.LOAD_MASKS)
    cfg.MODEL.JOINT_IBN.ENABLED = True
    # background fill: "zero" (the paper's black background), "mean" (MODEL.PIXEL_MEAN: 0 after
    # normalization) or "blur" (Gaussian-blurred image)
    cfg.MODEL.JOINT_IBN.FILL = "zero"
    # odd Gaussian kernel size (pixels of the input) for FILL "blur"; sigma follows OpenCV's default
    cfg.MODEL.JOINT_IBN.BLUR_KERNEL = 21
