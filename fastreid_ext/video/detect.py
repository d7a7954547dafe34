"""Person detectors for the video tool: each is a callable ``frame (H, W, 3) RGB uint8 -> (N, 5) float array`` of
``(left, top, width, height, score)`` in pixels, like a MOTChallenge ``det.txt`` row.

* :class:`HogDetector`: OpenCV's HOG + linear SVM people detector (Dalal & Triggs, "Histograms of oriented gradients
  for human detection", CVPR 2005; ``cv2.HOGDescriptor_getDefaultPeopleDetector``). Needs no weights file: the offline
  default that always works.
* :class:`TorchvisionDetector`: a torchvision detection model (``torchvision.models.detection``, e.g.
  ``fasterrcnn_resnet50_fpn``) built without downloading anything and loaded from a user's checkpoint.
* :class:`MMDetDetector`: an MMDetection model from a user's config + checkpoint (``mmdet.apis.init_detector``); it
  needs the full mmcv with its compiled operators (mmcv-lite cannot run mmdet models: :func:`mmdet_unavailable` says
  so and what to install).
* :func:`build_detector` builds one from a spec (``hog``, ``torchvision:NAME``, ``mmdet``, or a user's
  ``module:function`` / ``file.py:function``).

:func:`filter_boxes` applies the confidence / size filters to any box source (detector, ``det.txt``, ``gt.txt``).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["HogDetector", "MMDetDetector", "TorchvisionDetector", "build_detector", "filter_boxes", "mmdet_unavailable"]


def filter_boxes(boxes: Sequence, min_score: float = -np.inf, min_height: float = 0.0, min_width: float = 0.0,
                 max_height: float = np.inf) -> List:
    """Boxes (objects with ``score``, ``width``, ``height``, e.g. :class:`fastreid_ext.video.mot.Box`) that pass the
    confidence and size filters."""
    return [b for b in boxes if b.score >= min_score and b.height >= min_height and b.width >= min_width
            and b.height <= max_height]


def _as_array(rows) -> np.ndarray:
    a = np.asarray(rows, np.float32).reshape(-1, 5) if len(rows) else np.zeros((0, 5), np.float32)
    return a


class HogDetector:
    """OpenCV's default HOG people detector (64 x 128 window, Dalal & Triggs 2005).

    ``resize``: the frame is scaled by this factor first (people must then be at least ~100 px tall; 1.0 for MOT17's
    1080p frames, larger for far-away people); ``scale`` / ``win_stride`` / ``hit_threshold``: ``detectMultiScale``'s
    pyramid step, window stride and SVM margin. Overlapping windows are merged by non-maximum suppression (``nms``
    IoU); the HOG window holds a margin around the person, so boxes are tightened by 15 % of the width on each side
    and 5 % of the height (as OpenCV's ``samples/python/peopledetect.py`` draws them). Score: the SVM margin."""

    def __init__(self, resize: float = 1.0, scale: float = 1.05, win_stride: int = 8, hit_threshold: float = 0.0,
                 nms: float = 0.4, tighten: bool = True):
        import cv2

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.resize = float(resize)
        self.scale = float(scale)
        self.win_stride = int(win_stride)
        self.hit_threshold = float(hit_threshold)
        self.nms = float(nms)
        self.tighten = bool(tighten)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        img = frame
        if self.resize != 1.0:
            img = cv2.resize(frame, None, fx=self.resize, fy=self.resize, interpolation=cv2.INTER_LINEAR)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        rects, weights = self.hog.detectMultiScale(gray, hitThreshold=self.hit_threshold,
                                                   winStride=(self.win_stride, self.win_stride), padding=(8, 8),
                                                   scale=self.scale, groupThreshold=0)
        if len(rects) == 0:
            return np.zeros((0, 5), np.float32)
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / self.resize
        scores = np.asarray(weights, np.float32).reshape(-1)
        keep = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), score_threshold=0.0, nms_threshold=self.nms)
        keep = np.asarray(keep).reshape(-1)
        rects, scores = rects[keep], scores[keep]
        if self.tighten:
            pw, ph = 0.15 * rects[:, 2], 0.05 * rects[:, 3]
            rects = np.stack([rects[:, 0] + pw, rects[:, 1] + ph, rects[:, 2] - 2 * pw, rects[:, 3] - 2 * ph], 1)
        return np.concatenate([rects, scores[:, None]], 1).astype(np.float32)


def _load_state_dict(path: str) -> dict:
    import torch

    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"detector checkpoint not found: {path!r}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is not a state dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


class TorchvisionDetector:
    """A ``torchvision.models.detection`` model built with ``weights=None, weights_backbone=None`` (nothing is
    downloaded) and loaded strictly from ``checkpoint`` (a state dict, or ``{"model": ...}`` / ``{"state_dict": ...}``).
    ``person_label``: the person class index (1 for torchvision's COCO models); ``num_classes`` of the checkpoint.
    ``checkpoint=None`` keeps random weights (tests only; said in a warning)."""

    def __init__(self, name: str = "fasterrcnn_resnet50_fpn", checkpoint: Optional[str] = None, person_label: int = 1,
                 num_classes: int = 91, device: str = "cpu", **kwargs):
        import torch
        import torchvision

        fn = getattr(torchvision.models.detection, name, None)
        if not callable(fn):
            names = sorted(n for n in dir(torchvision.models.detection) if n.islower() and not n.startswith("_")
                           and callable(getattr(torchvision.models.detection, n)) and "_" in n)
            raise ValueError(f"torchvision.models.detection has no model {name!r}; e.g. {', '.join(names[:12])}")
        self.model = fn(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        if checkpoint:
            self.model.load_state_dict(_load_state_dict(checkpoint), strict=True)
        else:
            logger.warning("torchvision detector %s has random weights (no --det-checkpoint)", name)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.person_label = int(person_label)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().div_(255).to(self.device)
        with torch.no_grad():
            out = self.model([x])[0]
        keep = out["labels"] == self.person_label
        b, s = out["boxes"][keep].cpu().numpy(), out["scores"][keep].cpu().numpy()
        return _as_array([[x0, y0, x1 - x0, y1 - y0, sc] for (x0, y0, x1, y1), sc in zip(b, s)])


#: what to install for MMDetection's detectors (mmdet 3.3 requires mmcv >= 2.0.0rc4, < 2.2.0, built with its ops)
MMDET_INSTALL = ('pip uninstall -y mmcv-lite && pip install -U openmim && mim install "mmcv>=2.0.0rc4,<2.2.0" '
                 '&& pip install terminaltables pycocotools shapely')


def mmdet_unavailable() -> str:
    """Why MMDetection's detectors cannot run in this environment ("" when they can): mmdet missing, mmcv-lite
    (OpenMMLab's build without compiled operators, ``mmcv._ext``: NMS, RoIAlign, ... that every mmdet detector
    imports) in place of the full mmcv, or another module mmdet needs."""
    import importlib.util

    alternatives = ("Meanwhile use --detector hog (OpenCV), --detector torchvision:NAME --det-checkpoint FILE, or "
                    "--boxes det (MOTChallenge det/det.txt).")
    if importlib.util.find_spec("mmdet") is None:
        return f"mmdet is not installed. Install it with: pip install mmdet==3.3.0 && {MMDET_INSTALL}. {alternatives}"
    if importlib.util.find_spec("mmcv") is not None and importlib.util.find_spec("mmcv._ext") is None:
        try:
            from importlib.metadata import PackageNotFoundError, version

            try:
                which = f"mmcv-lite {version('mmcv-lite')}"
            except PackageNotFoundError:
                which = f"mmcv {version('mmcv')} built without its operators"
        except Exception:  # metadata unreadable
            which = "an mmcv without its operators"
        return (f"mmdet's detectors cannot run here: the installed mmcv is {which}, which has no compiled "
                f"operators (mmcv._ext: NMS, RoIAlign, ... imported by every mmdet model). Install the full mmcv built "
                f"for your PyTorch (and CUDA): {MMDET_INSTALL} (https://mmcv.readthedocs.io/en/latest/get_started/"
                f"installation.html). {alternatives}")
    try:
        import mmdet.apis  # noqa: F401
    except ImportError as e:
        return (f"mmdet cannot be imported: {type(e).__name__}: {e}. mmdet 3.3 needs: {MMDET_INSTALL}. "
                f"{alternatives}")
    return ""


class MMDetDetector:
    """An MMDetection 3.x model from ``config`` + ``checkpoint`` (``mmdet.apis.init_detector`` /
    ``inference_detector``, https://mmdetection.readthedocs.io/en/latest/user_guides/inference.html); person class
    looked up by name in the model's ``dataset_meta["classes"]`` (or ``person_label``)."""

    def __init__(self, config: str, checkpoint: Optional[str], device: str = "cpu", person_label: Optional[int] = None):
        if not config or not os.path.isfile(config):
            raise FileNotFoundError(f"mmdet config not found: {config!r} (--det-config)")
        if checkpoint and not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"mmdet checkpoint not found: {checkpoint!r} (--det-checkpoint)")
        problem = mmdet_unavailable()
        if problem:
            raise ImportError(problem)
        from mmdet.apis import inference_detector, init_detector

        self._infer = inference_detector
        self.model = init_detector(config, checkpoint, device=device)
        classes = [str(c).lower() for c in (getattr(self.model, "dataset_meta", None) or {}).get("classes", ())]
        self.person_label = person_label if person_label is not None else (classes.index("person") if "person" in
                                                                          classes else 0)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        res = self._infer(self.model, np.ascontiguousarray(frame[:, :, ::-1]))  # mmdet takes BGR arrays
        inst = res.pred_instances
        keep = inst.labels == self.person_label
        b, s = inst.bboxes[keep].cpu().numpy(), inst.scores[keep].cpu().numpy()
        return _as_array([[x0, y0, x1 - x0, y1 - y0, sc] for (x0, y0, x1, y1), sc in zip(b, s)])


def build_detector(spec: str, checkpoint: Optional[str] = None, config: Optional[str] = None, device: str = "cpu",
                   hog_resize: float = 1.0, hog_scale: float = 1.05, person_label: Optional[int] = None) -> Callable:
    """``hog`` | ``torchvision:NAME`` (with ``checkpoint``) | ``mmdet`` (with ``config`` and ``checkpoint``) | a user's
    ``module:function`` / ``file.py:function`` (frame -> boxes, see :func:`fastreid_ext.video.pipeline.load_detector`)."""
    if spec == "hog":
        return HogDetector(resize=hog_resize, scale=hog_scale)
    if spec.startswith("torchvision:"):
        if not checkpoint:
            raise ValueError("a torchvision detector needs --det-checkpoint (weights are never downloaded)")
        return TorchvisionDetector(spec.split(":", 1)[1], checkpoint, person_label=1 if person_label is None
                                   else person_label, device=device)
    if spec == "mmdet":
        return MMDetDetector(config, checkpoint, device=device, person_label=person_label)
    from .pipeline import load_detector

    return load_detector(spec)
