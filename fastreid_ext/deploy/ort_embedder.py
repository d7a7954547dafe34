"""Re-id features from an exported ONNX file with onnxruntime (https://onnxruntime.ai/docs/api/python/api_summary.html).

* :class:`OnnxReidModel`: the session, its inputs (``images`` (N, 3, H, W) RGB 0..255, and ``masks`` for a model with a
  mask input) and a check that the file is a re-id embedder (a detector or any other network is refused with a clear
  message; a file exported from another model than a given config / weights too, see
  :func:`~fastreid_ext.deploy.onnx_export.check_same_model`).
* :class:`OnnxEvalModel`: an ``nn.Module`` with FastReID's eval interface (``model(batched_inputs)`` -> features), so
  that FastReID's evaluator (``trainer_class(cfg).test(cfg, model)``, with the method's own evaluator) scores the
  exported model exactly as it scores the PyTorch one; built from the config key ``MODEL.DEPLOY.ONNX``
  (:func:`build_deploy_model`). Its ``torch_reference`` (the PyTorch model of the same weights, when given) serves
  the parts of a method's evaluation that are not image -> feature (PoseTransfer's C_v re-ranking).
* :class:`OrtEmbedder`: person crops -> L2-normalised features for the video tool (same preprocessing and
  background-removal behaviour as :class:`fastreid_ext.video.embed.ReidEmbedder`), all crops of a frame in one run.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import add_deploy_config  # noqa: F401  (MODEL.DEPLOY.*, re-exported)
from .onnx_export import check_same_model, make_session, read_metadata

logger = logging.getLogger(__name__)

__all__ = ["OnnxEvalModel", "OnnxReidModel", "OrtEmbedder", "add_deploy_config", "build_deploy_model",
           "check_feature_dim"]


class OnnxReidModel:
    """An onnxruntime session of a re-id embedder exported by :func:`~fastreid_ext.deploy.onnx_export.export_onnx`
    (or any ONNX model with one ``(N, 3, H, W)`` float input and one ``(N, D)`` output)."""

    def __init__(self, path: str, threads: int = 0, providers: Optional[Sequence[str]] = None):
        path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path}")
        try:
            self.meta = read_metadata(path)
        except Exception as e:  # not protobuf at all
            raise ValueError(f"{path} is not an ONNX model: {type(e).__name__}: {e}") from e
        self.path = path
        self.session = make_session(path, threads=threads, providers=providers)
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        self.input_names = tuple(i.name for i in ins)
        img = ins[0]
        shape = list(img.shape)
        ok = (len(shape) == 4 and shape[1] == 3 and isinstance(shape[2], int) and isinstance(shape[3], int)
              and img.type == "tensor(float)" and len(outs) == 1 and len(outs[0].shape) == 2
              and set(self.input_names[1:]) <= {"masks"})
        if not ok:
            raise ValueError(
                f"{path} is not a re-id embedder: inputs "
                f"{[(i.name, i.shape, i.type) for i in ins]}, outputs {[(o.name, o.shape) for o in outs]}; expected "
                f"images (N, 3, H, W) float [+ masks (N, 1, H, W)] -> features (N, D). Export a re-id model with "
                f"tools/export_onnx.py")
        if not self.meta:
            logger.warning("%s has no fastreid_ext metadata (not exported by tools/export_onnx.py): assuming RGB "
                           "input in 0..255 with the normalization inside the graph", path)
        self.size_hw = (int(shape[2]), int(shape[3]))
        d = outs[0].shape[1]
        self.feature_dim = int(d) if isinstance(d, int) else int(self.meta.get("feature_dim", 0) or 0)
        self.needs_masks = "masks" in self.input_names
        self.pixel_mean = [float(v) for v in self.meta["pixel_mean"].split(",")] if self.meta.get("pixel_mean") \
            else [123.675, 116.28, 103.53]

    def run(self, images: np.ndarray, masks: Optional[np.ndarray] = None) -> np.ndarray:
        """``images`` float32 (N, 3, H, W) RGB 0..255 (+ ``masks`` (N, 1, H, W)) -> raw features (N, D)."""
        images = np.ascontiguousarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != (3,) + self.size_hw:
            raise ValueError(f"{self.path} takes images (N, 3, {self.size_hw[0]}, {self.size_hw[1]}), got "
                             f"{tuple(images.shape)}")
        feeds = {self.input_names[0]: images}
        if self.needs_masks:
            if masks is None:
                masks = np.ones((images.shape[0], 1) + self.size_hw, np.float32)
            feeds["masks"] = np.ascontiguousarray(masks, np.float32)
        return self.session.run(None, feeds)[0]

    def check_matches(self, cfg=None, model: Optional[nn.Module] = None, check_weights: bool = True) -> None:
        """Refuse a file exported from another model than ``cfg`` / ``model`` (ValueError); ``check_weights=False``
        for a ``model`` without its trained weights (meta-architecture, input size, test feature still checked)."""
        check_same_model(self.meta, model=model, cfg=cfg, onnx_path=self.path, check_weights=check_weights)
        if cfg is not None:
            size = (int(cfg.INPUT.SIZE_TEST[0]), int(cfg.INPUT.SIZE_TEST[1]))
            if size != self.size_hw:
                raise ValueError(f"{self.path} takes {self.size_hw[0]}x{self.size_hw[1]} images but the config's "
                                 f"INPUT.SIZE_TEST is {size[0]}x{size[1]}: it was exported from another model")


class OnnxEvalModel(nn.Module):
    """FastReID's eval interface over an ONNX file: ``model(batched_inputs)`` -> features (torch, CPU). Inference only."""

    def __init__(self, path: str, threads: int = 0, providers: Optional[Sequence[str]] = None):
        super().__init__()
        self.net = OnnxReidModel(path, threads=threads, providers=providers)
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # .to() / .device work as for a model
        self._last_images = None
        #: the PyTorch model this file was checked against with the same weights (digest), or None: for the parts
        #: of a method's evaluation that are not an image -> feature map (PoseTransfer's C_v re-ranking on pairs of
        #: features, fastreid_ext/pose_transfer/evaluator.py). Not a submodule: no parameter of it belongs here
        self.__dict__["torch_reference"] = None

    @property
    def device(self):
        return self._anchor.device

    def set_torch_reference(self, model: Optional[nn.Module]) -> "OnnxEvalModel":
        """Record ``model`` (whose weights digest the file's matches) as :attr:`torch_reference`."""
        self.__dict__["torch_reference"] = model
        return self

    def forward(self, batched_inputs):
        if self.training:
            raise RuntimeError("an ONNX model is for inference only: call .eval()")
        images = batched_inputs["images"] if isinstance(batched_inputs, dict) else batched_inputs
        masks = None
        if self.net.needs_masks:
            masks = batched_inputs.get("masks") if isinstance(batched_inputs, dict) else None
            if masks is None:
                raise KeyError(f"{self.net.path} takes person masks: batched_inputs['masks'] (set "
                               "DATASETS.ANNOTATIONS.LOAD_MASKS True)")
            # FastReID's flip test (inference_on_dataset) mirrors batched_inputs["images"] in place and calls the
            # model again; it leaves the masks as they are, so mirror them here when the images are the last ones
            # mirrored (the PyTorch model does the same, fastreid_ext/joint_ibn/meta_arch.py)
            last = self._last_images
            if last is not None and last is not images and last.shape == images.shape \
                    and torch.equal(last.flip(3), images):
                masks = masks.flip(3)
            self._last_images = images
            masks = masks.float().cpu().numpy()
        out = self.net.run(images.float().cpu().numpy(), masks)
        return torch.from_numpy(out).to(self.device)


def build_deploy_model(cfg, reference: Optional[nn.Module] = None,
                       check_weights: bool = True) -> Optional[OnnxEvalModel]:
    """The :class:`OnnxEvalModel` of ``cfg.MODEL.DEPLOY.ONNX``, or None when unset.

    The file is refused (``ValueError`` saying it was exported from another model) when its metadata names another
    meta-architecture or input size than ``cfg`` (``INPUT.SIZE_TEST``; for a file without our metadata, its graph's
    input size), when ``reference`` (the config's PyTorch model) gives features of another dimension, and, with
    ``check_weights``, when its weights digest differs from ``reference``'s (give ``check_weights=False`` for a
    ``reference`` without the trained weights loaded); with ``check_weights`` the model's ``torch_reference`` is
    ``reference`` (the same weights as the file)."""
    deploy = cfg.MODEL.get("DEPLOY") if hasattr(cfg.MODEL, "get") else None
    if not deploy or not deploy.ONNX:
        return None
    m = OnnxEvalModel(deploy.ONNX, threads=int(deploy.THREADS))
    m.net.check_matches(cfg, reference, check_weights=check_weights)
    if reference is not None:
        check_feature_dim(m.net, reference)
        if check_weights:
            m.set_torch_reference(reference)
    return m.eval()


def check_feature_dim(net: OnnxReidModel, reference: nn.Module) -> None:
    """Refuse (``ValueError``) an ONNX file whose features have another dimension than ``reference``'s test feature
    (one all-grey image through both)."""
    from .onnx_export import model_input_names

    h, w = net.size_hw
    x = torch.full((1, 3, h, w), 128.0)
    names = model_input_names(reference)
    inputs = {"images": x}
    if "masks" in names:
        inputs["masks"] = torch.ones(1, 1, h, w)
    was_training = reference.training
    reference.eval()
    with torch.no_grad():
        d_ref = int(reference(inputs).shape[-1])
    reference.train(was_training)
    d = net.feature_dim or int(net.run(x.numpy(), inputs.get("masks", torch.ones(1, 1, h, w)).numpy()).shape[-1])
    if d != d_ref:
        raise ValueError(f"{net.path} gives {d}-dimensional features but the config's model "
                         f"({type(reference).__name__}) gives {d_ref}: it was exported from another model. Export this "
                         f"model with tools/export_onnx.py, or give the config it came from")


class OrtEmbedder:
    """Person crops (RGB uint8) -> L2-normalised features with onnxruntime; the interface of
    :class:`fastreid_ext.video.embed.ReidEmbedder` (``size_hw``, ``batch_size``, :meth:`embed`).

    Crops are resized bicubically to the model's input size (FastReID's test transform); a batch holds up to
    ``batch_size`` crops (the video tool passes all crops of a frame at once). Background removal: ``masks`` go to
    the model's mask input when it has one, else the crops are multiplied by the mask (``fill``, as in
    :mod:`fastreid_ext.functional.background`)."""

    def __init__(self, path: str, threads: int = 0, batch_size: int = 64, fill: str = "zero",
                 providers: Optional[Sequence[str]] = None, resize: str = "pil"):
        self.net = OnnxReidModel(path, threads=threads, providers=providers)
        self.resize = resize  # "pil" (FastReID's test transform) | "fast" (see fastreid_ext.video.embed.resize_crops)
        self.size_hw = self.net.size_hw
        self.batch_size = int(batch_size)
        self.fill = fill
        self.model_masks = self.net.needs_masks
        self.pixel_mean = self.net.pixel_mean
        self.cfg = None

    def preprocess(self, crops, masks=None):
        from ..video.embed import resize_crops

        return resize_crops(crops, masks, self.size_hw, self.resize)

    def embed_tensor(self, x: torch.Tensor, m: Optional[torch.Tensor] = None) -> torch.Tensor:
        from ..functional.background import remove_background

        outs = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size]
            mb = None if m is None else m[i:i + self.batch_size]
            if mb is not None and not self.model_masks:
                xb = remove_background(xb, mb, self.fill, pixel_mean=self.pixel_mean)
                mb = None
            f = self.net.run(xb.numpy(), None if mb is None else mb.numpy())
            outs.append(torch.nn.functional.normalize(torch.from_numpy(f).float(), dim=1))
        return torch.cat(outs) if outs else torch.zeros(0, 1)

    def embed(self, crops, masks=None) -> np.ndarray:
        if len(crops) == 0:
            return np.zeros((0, max(1, self.net.feature_dim)), np.float32)
        x, m = self.preprocess(crops, masks)
        return self.embed_tensor(x, m).numpy()
