"""MoCo v2 (He et al., CVPR 2020; Chen et al. 2020): self-supervised training of any FastReID backbone on unlabelled
crops, the GAP feature as the embedding; and MoCo-format checkpoints (LUPerson's) into FastReID's ResNet.

``config`` (``add_moco_config``: ``MODEL.MOCO``), ``functional`` (InfoNCE, momentum / queue updates; plain torch),
``meta_arch`` (the registered ``MoCoV2``), ``data`` (MoCo v2 augmentation, two views per image), ``trainer``
(``MoCoTrainer``, registered for ``MoCoV2``), ``checkpoint`` (loader, exporter, ``build_moco_resnet_backbone``).
"""
from . import checkpoint, config, meta_arch, trainer  # noqa: F401  (registrations)
from .checkpoint import export_moco_checkpoint, load_moco_checkpoint  # noqa: F401
from .config import add_moco_config  # noqa: F401
from .meta_arch import MoCoV2  # noqa: F401
