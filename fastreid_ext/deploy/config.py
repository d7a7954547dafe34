"""Config keys of the deployment path (registered with every ``fastreid_ext.get_cfg()``, so that a config file or a
``KEY VALUE`` override may name them): ``MODEL.DEPLOY.ONNX`` makes ``tools/train_net.py --eval-only`` (and
:func:`fastreid_ext.deploy.ort_embedder.build_deploy_model`) evaluate an exported ONNX file through onnxruntime
instead of the PyTorch model. Importing this module imports neither onnx nor onnxruntime."""
from __future__ import annotations

from ..config import register_config

__all__ = ["add_deploy_config"]


@register_config
def add_deploy_config(cfg):
    """``MODEL.DEPLOY.ONNX``: evaluate / embed with this exported file through onnxruntime instead of the PyTorch
    model ("" = the PyTorch model); ``MODEL.DEPLOY.THREADS``: onnxruntime's intra-op threads (0 = its default)."""
    from fastreid.config import CfgNode as CN

    if "DEPLOY" not in cfg.MODEL:
        cfg.MODEL.DEPLOY = CN()
        cfg.MODEL.DEPLOY.ONNX = ""
        cfg.MODEL.DEPLOY.THREADS = 0
    return cfg
