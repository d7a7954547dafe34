"""Person-mask backends: RGB uint8 person crops in, one float32 ``H x W`` mask in [0, 1] out per crop
(1 = person), or ``None`` where no person was found.

* :class:`MediaPipeSegmenter` (``mediapipe``): the person segmentation bundled with mediapipe 0.10.14,
  offline on CPU. ``model="pose"`` is BlazePose's segmentation output (``Pose(static_image_mode=True,
  enable_segmentation=True)``), which only answers when the pose detector finds the person; small
  crops are padded and upscaled first and a few paddings/scales are tried. ``model="selfie"`` is the
  selfie segmenter (always answers, coarser). ``model="auto"`` (default) tries the pose segmentation
  and falls back to the selfie segmenter; :attr:`MediaPipeSegmenter.last_sources` says which answered.
* :class:`TorchvisionMaskRCNN` (``torchvision``): torchvision's Mask R-CNN (ResNet-50 FPN) from a
  checkpoint *you* give (COCO-trained weights: person = label 1); nothing is downloaded. The person
  instance that covers the crop centre best is the crop's person.
* :class:`FileMaskImporter` (``import``): existing masks (PNG or NPY, any folder) matched to images by
  file name (or by path relative to the image root), resized to the image and binarised.

Each backend has a :meth:`~MaskBackend.signature` stored next to the masks by the extraction tool.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..utils.extraction import ExtractionBackend

logger = logging.getLogger(__name__)

__all__ = ["MaskBackend", "MediaPipeSegmenter", "TorchvisionMaskRCNN", "FileMaskImporter", "BACKENDS",
           "build_segmenter", "resize_mask"]


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of a float mask to ``height x width`` (no-op if already that size)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask, mode="F").resize((width, height), Image.BILINEAR), dtype=np.float32)


class MaskBackend(ExtractionBackend):
    """Base class. Subclasses set :attr:`name` and implement :meth:`predict`."""

    def predict(self, images: Sequence[np.ndarray], paths: Optional[Sequence[str]] = None
                ) -> List[Optional[np.ndarray]]:
        """RGB uint8 ``(H, W, 3)`` crops -> float32 ``(H, W)`` masks in [0, 1] (``None``: no person).
        ``paths`` are the images' files (used by :class:`FileMaskImporter`)."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------------
# mediapipe
# ------------------------------------------------------------------------------------------------------
#: (padding as a fraction of the crop height added top+bottom and 4x that fraction of the width added
#: left+right, padding value, target canvas height in pixels). Tried in order until the pose model
#: finds the person: re-id crops are tight and small, BlazePose wants context and resolution.
DEFAULT_POSE_ATTEMPTS: Tuple[Tuple[float, str, int], ...] = (
    (0.25, "zero", 480), (0.25, "gray", 320), (0.5, "zero", 384), (0.5, "edge", 640), (0.25, "edge", 320),
)


class MediaPipeSegmenter(MaskBackend):
    """mediapipe 0.10.14's bundled person segmentation (offline, CPU). See the module docstring.

    Args:
        model: ``"auto"`` | ``"pose"`` | ``"selfie"``.
        attempts: padding/scale variants tried with the pose model.
    """

    name = "mediapipe"
    MODELS = ("auto", "pose", "selfie")

    def __init__(self, model: str = "auto", attempts: Sequence[Tuple[float, str, int]] = DEFAULT_POSE_ATTEMPTS):
        if model not in self.MODELS:
            raise ValueError(f"mediapipe model must be one of {self.MODELS}, got {model!r}")
        try:
            import mediapipe as mp  # noqa: F401
        except ImportError as e:
            raise ImportError("the mediapipe mask backend needs mediapipe==0.10.14 "
                              "(pip install -c constraints.txt mediapipe==0.10.14, or bash tools/install.sh)") from e
        self.model = model
        self.attempts = tuple(attempts)
        self._pose = None
        self._selfie = None
        #: for each image of the last :meth:`predict` call: "pose", "selfie" or None
        self.last_sources: List[Optional[str]] = []

    def signature(self) -> Dict:
        return {"backend": self.name, "model": self.model}

    @property
    def pose(self):
        if self._pose is None:
            import mediapipe as mp

            # model_complexity 1 is the one bundled in the wheel (0 and 2 would be downloaded)
            self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                                enable_segmentation=True)
        return self._pose

    @property
    def selfie(self):
        if self._selfie is None:
            import mediapipe as mp

            self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        return self._selfie

    @staticmethod
    def _canvas(img: np.ndarray, pad: float, value: str, height: int):
        """Pad ``img`` and scale it to ``height``; returns (canvas, (top, left, scale))."""
        h, w = img.shape[:2]
        ph, pw = int(round(h * pad / 2)), int(round(w * pad * 2))
        if value == "edge":
            big = np.pad(img, ((ph, ph), (pw, pw), (0, 0)), mode="edge")
        else:
            big = np.pad(img, ((ph, ph), (pw, pw), (0, 0)), mode="constant",
                         constant_values=0 if value == "zero" else 128)
        s = max(1.0, height / big.shape[0])
        if s > 1.0:
            big = np.asarray(Image.fromarray(big).resize((int(round(big.shape[1] * s)), int(round(big.shape[0] * s))),
                                                         Image.BICUBIC))
        return np.ascontiguousarray(big), (ph, pw, s)

    @staticmethod
    def _uncanvas(mask: np.ndarray, geom, w: int, h: int) -> np.ndarray:
        ph, pw, s = geom
        full = resize_mask(mask, int(round(mask.shape[1] / s)), int(round(mask.shape[0] / s)))
        out = full[ph:ph + h, pw:pw + w]
        if out.shape != (h, w):  # rounding: resize the crop region exactly
            out = resize_mask(full[ph:, pw:][:h, :w], w, h)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def predict_one(self, img: np.ndarray) -> Tuple[Optional[np.ndarray], Optional[str]]:
        h, w = img.shape[:2]
        if self.model in ("auto", "pose"):
            for pad, value, height in self.attempts:
                canvas, geom = self._canvas(img, pad, value, height)
                r = self.pose.process(canvas)
                if r.segmentation_mask is not None:
                    m = self._uncanvas(r.segmentation_mask, geom, w, h)
                    if m.max() >= 0.5:
                        return m, "pose"
        if self.model in ("auto", "selfie"):
            canvas, geom = self._canvas(img, 0.25, "zero", 256)
            r = self.selfie.process(canvas)
            if r.segmentation_mask is not None:
                m = self._uncanvas(r.segmentation_mask, geom, w, h)
                if m.max() >= 0.5:
                    return m, "selfie"
        return None, None

    def predict(self, images, paths=None):
        out, self.last_sources = [], []
        for img in images:
            m, src = self.predict_one(np.asarray(img, dtype=np.uint8))
            out.append(m)
            self.last_sources.append(src)
        return out

    def close(self):
        for obj in (self._pose, self._selfie):
            if obj is not None:
                obj.close()
        self._pose = self._selfie = None


# ------------------------------------------------------------------------------------------------------
# torchvision Mask R-CNN
# ------------------------------------------------------------------------------------------------------
class TorchvisionMaskRCNN(MaskBackend):
    """torchvision ``maskrcnn_resnet50_fpn`` loaded from ``checkpoint`` (a state dict, or a dict with
    ``model`` / ``state_dict``; ``torch.load(weights_only=True)``). COCO label 1 is the person.

    Args:
        checkpoint: path to the weights (required: torchvision's weights are not downloaded here).
        num_classes: classes of the checkpoint (91 for torchvision's COCO weights).
        person_label: the label id of "person".
        score_threshold: minimum detection score.
        device: torch device.
        min_size: Mask R-CNN's internal resize (small crops are upscaled to this shorter side).
    """

    name = "torchvision"
    default_batch_size = 4

    def __init__(self, checkpoint: Optional[str], num_classes: int = 91, person_label: int = 1,
                 score_threshold: float = 0.5, device: str = "cpu", min_size: int = 512):
        if not checkpoint:
            raise ValueError("the torchvision mask backend needs a Mask R-CNN checkpoint: --checkpoint PATH "
                             "(e.g. torchvision's maskrcnn_resnet50_fpn COCO weights, downloaded by you)")
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"Mask R-CNN checkpoint not found: {checkpoint}")
        import torch
        from torchvision.models.detection import maskrcnn_resnet50_fpn

        self.checkpoint = str(checkpoint)
        self.person_label = int(person_label)
        self.score_threshold = float(score_threshold)
        self.device = torch.device(device)
        model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes,
                                      min_size=min_size, max_size=max(1333, 2 * min_size))
        sd = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        if isinstance(sd, dict):
            for key in ("model", "state_dict"):
                if key in sd and isinstance(sd[key], dict):
                    sd = sd[key]
                    break
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f"{checkpoint} is not a maskrcnn_resnet50_fpn(num_classes={num_classes}) "
                               f"state dict:\n{str(e)[:2000]}") from None
        self.model = model.eval().to(self.device)

    def signature(self):
        return {"backend": self.name, "checkpoint": os.path.basename(self.checkpoint),
                "score_threshold": self.score_threshold}

    @staticmethod
    def pick_person(masks: np.ndarray, scores: np.ndarray) -> Optional[np.ndarray]:
        """The instance covering the crop centre best (ties: higher score). ``masks`` (N, H, W)."""
        if len(masks) == 0:
            return None
        h, w = masks.shape[1:]
        c = masks[:, int(h * 0.2):int(np.ceil(h * 0.8)), int(w * 0.25):int(np.ceil(w * 0.75))]
        cover = c.reshape(len(masks), -1).mean(1)
        best = int(np.argmax(cover + 1e-3 * scores))
        return masks[best] if cover[best] > 0 else None

    def predict(self, images, paths=None):
        import torch

        tens = [torch.from_numpy(np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)))
                .float().div(255).to(self.device) for im in images]
        with torch.no_grad():
            outs = self.model(tens)
        res = []
        for o in outs:
            keep = (o["labels"] == self.person_label) & (o["scores"] >= self.score_threshold)
            masks = o["masks"][keep][:, 0].cpu().numpy().astype(np.float32)
            res.append(self.pick_person(masks, o["scores"][keep].cpu().numpy()))
        return res


# ------------------------------------------------------------------------------------------------------
# existing mask files
# ------------------------------------------------------------------------------------------------------
class FileMaskImporter(MaskBackend):
    """Masks from an existing folder of PNG/NPY files.

    An image ``.../NAME.jpg`` matches ``SOURCE/**/NAME.png`` or ``NAME.npy`` (also ``NAME.jpg.png``);
    with ``image_root`` given, the path relative to it is tried first (``SOURCE/REL_WITHOUT_EXT.png``),
    which disambiguates equal file names in different folders. PNGs: values >= ``threshold * 255`` (or
    any non-zero label for palette/indexed PNGs) are the person; NPY: float arrays in [0, 1] thresholded,
    integer/bool arrays non-zero. The mask is resized (nearest) to the image size.
    """

    name = "import"

    def __init__(self, source: str, image_root: Optional[str] = None, threshold: float = 0.5):
        self.source = Path(source)
        if not self.source.is_dir():
            raise FileNotFoundError(f"mask source folder not found: {self.source}")
        self.image_root = Path(image_root).resolve() if image_root else None
        self.threshold = float(threshold)
        self._by_name: Dict[str, List[Path]] = {}
        for p in self.source.rglob("*"):
            if p.suffix.lower() in (".png", ".npy") and p.is_file():
                self._by_name.setdefault(p.stem, []).append(p)  # NAME.png / NAME.jpg.png

    def signature(self):
        return {"backend": self.name, "source": str(self.source)}

    def find(self, image_path: str) -> Optional[Path]:
        img = Path(image_path)
        if self.image_root is not None:
            try:
                rel = img.resolve().relative_to(self.image_root)
                for ext in (".png", ".npy"):
                    for cand in (self.source / rel.with_suffix(ext), self.source / (str(rel) + ext)):
                        if cand.is_file():
                            return cand
            except ValueError:
                pass
        for key in (img.stem, img.name):
            hits = self._by_name.get(key)
            if hits:
                if len(set(hits)) > 1:
                    logger.warning("several masks named %s for %s; using %s (give --image-root to match by "
                                   "relative path)", key, image_path, hits[0])
                return hits[0]
        return None

    def load(self, path: Path) -> np.ndarray:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, allow_pickle=False)
            arr = np.squeeze(arr)
            if arr.dtype.kind == "f":
                return (arr >= self.threshold).astype(np.float32)
            return (arr != 0).astype(np.float32)
        with Image.open(path) as im:
            if im.mode in ("P", "1"):
                return (np.asarray(im) != 0).astype(np.float32)
            a = np.asarray(im.convert("L"), dtype=np.float32)
        return (a >= self.threshold * 255).astype(np.float32)

    def predict(self, images, paths=None):
        if paths is None:
            raise ValueError("the import backend matches masks by file name: pass the image paths")
        out = []
        for img, p in zip(images, paths):
            f = self.find(p)
            if f is None:
                out.append(None)
                continue
            m = self.load(f)
            if m.ndim != 2:
                raise ValueError(f"mask {f} has shape {m.shape}, expected H x W")
            h, w = np.asarray(img).shape[:2]
            if m.shape != (h, w):
                m = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize((w, h), Image.NEAREST),
                               dtype=np.float32) / 255.0
            out.append(m)
        return out


BACKENDS = {"mediapipe": MediaPipeSegmenter, "torchvision": TorchvisionMaskRCNN, "import": FileMaskImporter}


def build_segmenter(name: str, **kwargs) -> MaskBackend:
    """``mediapipe`` (model=...), ``torchvision`` (checkpoint=..., ...), ``import`` (source=..., ...)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown mask backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](**kwargs)
