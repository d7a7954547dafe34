"""Re-id embeddings of person crops with any registered FastReID model (config + weights), including
torchreid's OSNet through :mod:`fastreid_ext.modeling.backbones.torchreid_bridge`."""
from __future__ import annotations

import importlib.resources
import logging
import os
from contextlib import nullcontext
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

#: the config used for ``--torchreid-weights`` (torchreid OSNet through the bridge, no training): package data
#: (``fastreid_ext/video/configs``), also the ``_BASE_`` of ``projects/JointIBN/configs/torchreid/osnet_x0_25.yml``
TORCHREID_OSNET_CONFIG = importlib.resources.files(__package__) / "configs" / "torchreid_osnet_x0_25.yml"


def load_cfg(config_file: Optional[str] = None, opts: Sequence[str] = (), weights: Optional[str] = None,
             device: str = "cpu"):
    """fastreid_ext's config from ``config_file`` + ``opts``; ``weights`` sets ``MODEL.WEIGHTS``."""
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    if config_file:
        # a packaged resource (importlib.resources) is materialised as a file for yacs' merge_from_file
        with importlib.resources.as_file(config_file) if not isinstance(config_file, (str, os.PathLike)) \
                else nullcontext(config_file) as path:
            cfg.merge_from_file(str(path))
    cfg.merge_from_list(list(opts))
    if weights:
        cfg.MODEL.WEIGHTS = str(weights)
    cfg.MODEL.DEVICE = device
    return cfg


def torchreid_osnet_cfg(weights: str, arch: str = "osnet_x0_25", device: str = "cpu"):
    """A ``Baseline`` whose backbone is torchreid's OSNet loaded from ``weights`` (torchreid checkpoint)."""
    return load_cfg(TORCHREID_OSNET_CONFIG, ["MODEL.BACKBONE.TORCHREID.ARCH", arch, "MODEL.BACKBONE.PRETRAIN", "True",
                                             "MODEL.BACKBONE.PRETRAIN_PATH", str(weights)], device=device)


RESIZE_METHODS = ("pil", "fast")
#: ``ReidEmbedder(precision=...)``: the network in float32, or under ``torch.autocast`` in float16 / bfloat16
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _resize_one(c: np.ndarray, h: int, w: int, method: str) -> np.ndarray:
    c = np.asarray(c, dtype=np.uint8)
    if method == "fast" and c.shape[0] <= h and c.shape[1] <= w:
        import cv2

        # upscaling: no antialiasing filter is involved, OpenCV's bicubic differs from PIL's only by its cubic
        # coefficient (-0.75 vs -0.5) and is ~8x faster (OSNet x0.25 features of MOT17-04 crops: cosine >= 0.998)
        return cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.asarray(Image.fromarray(c).resize((w, h), Image.BICUBIC))


def resize_crops(crops: Sequence[np.ndarray], masks: Optional[Sequence[Optional[np.ndarray]]], size_hw,
                 method: str = "pil"):
    """RGB uint8 crops -> float (N, 3, H, W) 0..255, bicubic as FastReID's test transform (``T.Resize(size,
    interpolation=3)``, PIL); masks -> (N, 1, H, W) in [0, 1] (bilinear; ``None`` entries: the whole crop), or None.
    ``method="fast"``: crops smaller than the input size on both axes are upscaled with OpenCV's bicubic instead."""
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    h, w = size_hw
    imgs = np.stack([_resize_one(c, h, w, method) for c in crops]).astype(np.float32)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    if masks is None:
        return x, None
    ms = []
    for m, c in zip(masks, crops):
        if m is None:
            m = np.ones(np.asarray(c).shape[:2], np.float32)
        ms.append(np.asarray(Image.fromarray(np.asarray(m, np.float32), mode="F").resize((w, h), Image.BILINEAR)))
    return x, torch.from_numpy(np.stack(ms)[:, None].astype(np.float32)).clamp_(0, 1)


class ReidEmbedder:
    """Builds the model of ``cfg`` (``MODEL.WEIGHTS`` loaded with FastReID's ``Checkpointer`` when set)
    and embeds RGB uint8 crops resized to ``INPUT.SIZE_TEST`` (bicubic, as FastReID's test transform).

    Background removal: give ``masks`` (float ``H x W`` in [0, 1] per crop) to :meth:`embed`. A model
    with its own mask stage (``JointIBN`` with ``MODEL.JOINT_IBN.ENABLED``) gets them as
    ``batched_inputs["masks"]`` (all-ones masks when none are given, with a warning); any other model gets
    the crops already multiplied by the mask (``fill`` as in :mod:`fastreid_ext.functional.background`).

    ``precision``: ``fp32``, or ``fp16`` / ``bf16`` to run the network under ``torch.autocast`` on its device
    (features are returned as float32 either way).
    """

    def __init__(self, cfg, batch_size: int = 32, fill: str = "zero", precision: str = "fp32"):
        import fastreid_ext  # noqa: F401  (compat + registrations)
        from fastreid.modeling import build_model

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        from fastreid.utils.checkpoint import Checkpointer

        cfg = cfg.clone()
        cfg.defrost()
        if cfg.MODEL.HEADS.NUM_CLASSES == 0:
            cfg.MODEL.HEADS.NUM_CLASSES = 1  # inference only; a checkpoint's head shape is loaded below
        if cfg.MODEL.WEIGHTS and cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone":
            cfg.MODEL.BACKBONE.PRETRAIN = False  # the checkpoint holds the backbone
        self.cfg = cfg
        self.model = build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            if not os.path.isfile(cfg.MODEL.WEIGHTS):
                raise FileNotFoundError(f"MODEL.WEIGHTS not found: {cfg.MODEL.WEIGHTS}")
            Checkpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.model.eval()
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.size_hw = (int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
        self.batch_size = int(batch_size)
        self.fill = fill
        self.model_masks = bool(getattr(self.model, "requires_masks", False))
        self.pixel_mean = list(cfg.MODEL.PIXEL_MEAN)
        self.precision = precision
        self._warned = False

    def preprocess(self, crops: Sequence[np.ndarray], masks: Optional[Sequence[Optional[np.ndarray]]] = None):
        """Crops -> float (N, 3, H, W) 0..255 and masks -> (N, 1, H, W) (or None): :func:`resize_crops`."""
        return resize_crops(crops, masks, self.size_hw, getattr(self, "resize", "pil"))

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor, m: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, 3, H, W) 0..255 (+ masks) -> L2-normalised features (N, D) on the CPU."""
        from ..functional.background import remove_background

        outs = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size].to(self.device)
            mb = None if m is None else m[i:i + self.batch_size].to(self.device)
            inputs = {"images": xb}
            if self.model_masks:
                if mb is None:
                    if not self._warned:
                        logger.warning("the model removes backgrounds but no masks were given: using the whole crop")
                        self._warned = True
                    mb = xb.new_ones(xb.shape[0], 1, *xb.shape[2:])
                inputs["masks"] = mb
            elif mb is not None:
                inputs["images"] = remove_background(xb, mb, self.fill, pixel_mean=self.pixel_mean)
            dtype = PRECISIONS[getattr(self, "precision", "fp32")]
            with torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext():
                f = self.model(inputs)
            outs.append(F.normalize(f.float(), dim=1).cpu())
        return torch.cat(outs) if outs else torch.zeros(0, 1)

    def embed(self, crops: Sequence[np.ndarray], masks: Optional[Sequence[Optional[np.ndarray]]] = None) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, 1), np.float32)
        x, m = self.preprocess(crops, masks)
        return self.embed_tensor(x, m).numpy()


def build_embedder(config_file: Optional[str] = None, opts: Sequence[str] = (), weights: Optional[str] = None,
                   torchreid_weights: Optional[str] = None, torchreid_arch: str = "osnet_x0_25",
                   device: str = "cpu", batch_size: int = 32, fill: str = "zero", onnx: Optional[str] = None,
                   threads: int = 0, resize: str = "pil", precision: str = "fp32"):
    """A FastReID config (+ ``MODEL.WEIGHTS``), or torchreid OSNet weights through the bridge; with ``onnx`` (a file
    exported by ``tools/export_onnx.py``) an onnxruntime embedder (:class:`fastreid_ext.deploy.ort_embedder.
    OrtEmbedder`), refused when a config / weights given with it describe another model. ``resize``: see
    :func:`resize_crops`; ``precision`` (PyTorch only): see :class:`ReidEmbedder`."""
    if onnx:
        from ..deploy.ort_embedder import OrtEmbedder

        emb = OrtEmbedder(onnx, threads=threads, batch_size=batch_size, fill=fill, resize=resize)
        if torchreid_weights or config_file:
            ref = build_embedder(config_file, opts, weights, torchreid_weights, torchreid_arch, device, batch_size,
                                 fill)
            emb.net.check_matches(ref.cfg, ref.model)
            emb.cfg = ref.cfg
        return emb
    if torchreid_weights:
        cfg = torchreid_osnet_cfg(torchreid_weights, torchreid_arch, device)
        cfg.merge_from_list(list(opts))
    elif config_file:
        cfg = load_cfg(config_file, opts, weights, device)
    else:
        raise ValueError("give a FastReID config (--config-file, with MODEL.WEIGHTS) or --torchreid-weights")
    emb = ReidEmbedder(cfg, batch_size=batch_size, fill=fill, precision=precision)
    emb.resize = resize
    return emb

