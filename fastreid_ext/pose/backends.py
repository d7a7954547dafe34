"""Keypoint extraction backends: images in, COCO-17 keypoints ``(17, 3)`` (x, y, score) out.

A backend takes a list of BGR uint8 images (as ``cv2.imread`` returns them) and returns one float32
array ``(17, 3)`` per image in that image's pixel coordinates (pixel centres at integers, the
convention of :mod:`fastreid_ext.data.annotations`), score in [0, 1]. "No person found" is an array of
zeros (all scores 0). Each image is a person crop: the whole image is the person box.

* :class:`MMPoseBackend` (``mmpose``): a top-down mmpose model (HRNet-w48 COCO 256x192 by default, the
  config shipped inside the mmpose package), batched over images.
* :class:`MediaPipeBackend` (``mediapipe``): BlazePose (33 landmarks) mapped to COCO-17
  (:data:`BLAZEPOSE_TO_COCO17`), one image at a time, with padding/upscaling of small crops.

Both backends zero the score of points that fall outside the image (see :func:`finalize_keypoints`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..functional.keypoints import COCO17_NAMES, NUM_KEYPOINTS
from ..utils.extraction import ExtractionBackend

logger = logging.getLogger(__name__)

__all__ = ["KeypointBackend", "MMPoseBackend", "MediaPipeBackend", "BACKENDS", "build_backend",
           "BLAZEPOSE_TO_COCO17", "DEFAULT_MMPOSE_CONFIG", "finalize_keypoints", "mmpose_config_path"]



def finalize_keypoints(kps: np.ndarray, width: int, height: int, margin: float = 0.5) -> np.ndarray:
    """Common post-processing: float32 (17, 3), non-finite values to 0, scores clipped to [0, 1], and the
    score of points outside the image ``[-margin, W - 1 + margin] x [-margin, H - 1 + margin]`` set to 0
    (their coordinates are kept: a model's guess for a cut-off ankle is not a visible ankle)."""
    out = np.nan_to_num(np.asarray(kps, dtype=np.float32).reshape(NUM_KEYPOINTS, 3), nan=0.0,
                        posinf=0.0, neginf=0.0)
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    x, y = out[:, 0], out[:, 1]
    outside = (x < -margin) | (x > width - 1 + margin) | (y < -margin) | (y > height - 1 + margin)
    out[outside, 2] = 0.0
    return out


class KeypointBackend(ExtractionBackend):
    """Base class. Subclasses set :attr:`name` and implement :meth:`predict`; the signature is stored in the
    partial and the final keypoint file."""

    default_batch_size = 16

    def predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        """BGR uint8 images -> one float32 (17, 3) array each (all zeros: no person found)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------------
# mmpose (HRNet top-down)
# ----------------------------------------------------------------------------------------------------
#: the paper's shortlist (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024,
#: Section 1.1: mmpose's 256x192 COCO models, HRNet-w48+UDP AP 0.768 and HRNet-w48 0.756, "we choose HRNet"):
#: HRNet-w48 trained on COCO at 256x192 (config shipped inside the mmpose package); the UDP variant is
#: ``td-hm_hrnet-w48_udp-8xb32-210e_coco-256x192.py`` (``--config``)
DEFAULT_MMPOSE_CONFIG = "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py"
#: where OpenMMLab publishes the matching checkpoint (download it yourself; this tool never downloads)
#: (mmpose's model index, .mim/configs/body_2d_keypoint/topdown_heatmap/coco/hrnet_coco.yml)
DEFAULT_MMPOSE_CHECKPOINT_URL = ("https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
                                 "td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth")


def mmpose_config_path(config: Optional[str] = None) -> str:
    """Resolve ``config``: an existing file, or a path relative to the configs shipped inside the mmpose
    package (``mmpose/.mim/configs/``); ``None`` means :data:`DEFAULT_MMPOSE_CONFIG`."""
    config = config or DEFAULT_MMPOSE_CONFIG
    if os.path.isfile(config):
        return config
    import importlib.util

    spec = importlib.util.find_spec("mmpose")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"mmpose config {config!r} not found and mmpose is not installed")
    base = Path(spec.origin).parent / ".mim" / "configs"
    rel = config[len("configs/"):] if config.startswith("configs/") else config
    path = base / rel
    if not path.is_file():
        raise FileNotFoundError(f"mmpose config {config!r} is neither a file nor shipped in {base}")
    return str(path)


class MMPoseBackend(KeypointBackend):
    """Top-down mmpose model; the whole crop ``[0, 0, W, H]`` is the person box (mmpose's own default for
    an image without boxes; its pipeline pads the box by 1.25 to the model's aspect ratio).

    Args:
        config: mmpose config file, or a path relative to mmpose's shipped configs.
        checkpoint: model weights (``.pth``). ``None``: random weights, with a loud warning: the keypoints
            are then meaningless (only useful to test the plumbing).
        device: ``cpu``, ``cuda``, ``cuda:1``, ...
        flip_test: override the config's test-time flip averaging (HRNet's config: on, which doubles
            the cost; ``False`` halves it at a small accuracy cost).
    """

    name = "mmpose"
    default_batch_size = 16

    def __init__(self, config: Optional[str] = None, checkpoint: Optional[str] = None, device: str = "cpu",
                 flip_test: Optional[bool] = None):
        from .. import compat

        compat.apply_pose()  # mmcv-lite stand-ins; a no-op when already applied
        import torch  # noqa: F401
        from mmpose.apis import init_model

        self.config = mmpose_config_path(config)
        self.checkpoint = checkpoint
        self.device = device
        if checkpoint is None:
            logger.warning(
                "\n" + "!" * 100 + "\n!! mmpose backend WITHOUT --checkpoint: the model has RANDOM WEIGHTS and the "
                "keypoints it writes are MEANINGLESS.\n!! Download the HRNet-w48 COCO 256x192 checkpoint "
                "(%s)\n!! and pass it with --checkpoint.\n" + "!" * 100, DEFAULT_MMPOSE_CHECKPOINT_URL)
        elif not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"mmpose checkpoint {checkpoint} not found")
        self.model = init_model(self.config, checkpoint, device=device)
        test_cfg = getattr(self.model, "test_cfg", None)
        if flip_test is not None and test_cfg is not None:
            test_cfg["flip_test"] = bool(flip_test)
        self.flip_test = bool((test_cfg or {}).get("flip_test", False))
        names = (self.model.dataset_meta or {}).get("keypoint_id2name")
        if names is not None:
            names = tuple(names[i] for i in range(len(names)))
            if names != COCO17_NAMES:
                raise ValueError(f"{self.config} predicts {len(names)} keypoints {names[:5]}..., not COCO-17")
        from mmengine.dataset import Compose

        self.pipeline = Compose(self.model.cfg.test_dataloader.dataset.pipeline)

    def signature(self) -> Dict:
        return {"backend": self.name, "config": os.path.basename(self.config),
                "checkpoint": os.path.basename(self.checkpoint) if self.checkpoint else None,
                "flip_test": self.flip_test}

    def predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        import torch
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import init_default_scope

        if not images:
            return []
        init_default_scope(self.model.cfg.get("default_scope", "mmpose"))
        data = []
        for img in images:
            h, w = img.shape[:2]
            info = dict(img=img, bbox=np.array([[0, 0, w, h]], dtype=np.float32),
                        bbox_score=np.ones(1, dtype=np.float32))
            info.update(self.model.dataset_meta)
            data.append(self.pipeline(info))
        with torch.no_grad():  # one forward pass for the whole batch
            results = self.model.test_step(pseudo_collate(data))
        out = []
        for img, res in zip(images, results):
            pred = res.pred_instances
            kps = np.zeros((NUM_KEYPOINTS, 3), np.float32)
            kps[:, :2] = np.asarray(pred.keypoints, dtype=np.float32)[0]
            kps[:, 2] = np.asarray(pred.keypoint_scores, dtype=np.float32)[0]
            out.append(finalize_keypoints(kps, img.shape[1], img.shape[0]))
        return out


# ----------------------------------------------------------------------------------------------------
# mediapipe (BlazePose)
# ----------------------------------------------------------------------------------------------------
#: COCO-17 index -> BlazePose landmark index. BlazePose's 33 landmarks: 0 nose, 1-3 left eye (inner,
#: centre, outer), 4-6 right eye (inner, centre, outer), 7 left ear, 8 right ear, 9-10 mouth, 11/12
#: left/right shoulder, 13/14 elbows, 15/16 wrists, 17-22 hand points, 23/24 hips, 25/26 knees,
#: 27/28 ankles, 29-32 heels and foot tips. Left/right are the person's own (as in COCO), so the map is
#: a plain selection: nose, eye centres, ears, then the limbs 11..16 and 23..28.
BLAZEPOSE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

#: preprocessing attempts, tried in order until a plausible detection: (margin as a fraction of the crop's
#: longer side, side of the square canvas the padded crop is scaled to[, "clahe"]). BlazePose's person
#: detector finds few people in tight 64x128 crops; a black margin plus upscaling finds most (measured on
#: the real Market crops: 3/7 without margin, 7/7 with these attempts). "clahe" equalizes the lightness
#: first (CLAHE on L of Lab), which finds some more people in dark crops.
DEFAULT_MEDIAPIPE_ATTEMPTS: Tuple[tuple, ...] = ((0.3, 384), (0.15, 512), (0.6, 384), (0.3, 384, "clahe"))


class MediaPipeBackend(KeypointBackend):
    """BlazePose through ``mediapipe.solutions.pose`` (offline, CPU, one image at a time).

    Each crop is centred on a black square canvas with a margin of ``pad * max(H, W)`` above and below
    (and the width padded to match), scaled so that the canvas side is ``size`` pixels, and given to
    ``Pose.process``. The attempts (``pad``, ``size``[, ``"clahe"``]) are tried in order; the first detection whose mean
    COCO-17 score reaches ``accept_score`` is kept, otherwise the best detection over all attempts.
    Score = BlazePose's landmark ``visibility``. No detection at all gives all-zero scores.

    Args:
        model_complexity: 0 (lite), 1 (full) or 2 (heavy). The pip wheel bundles only the full model;
            the others are downloaded by mediapipe on first use (needs network).
        attempts: preprocessing attempts, see :data:`DEFAULT_MEDIAPIPE_ATTEMPTS`.
        min_detection_confidence: BlazePose's person-detector threshold.
        accept_score: mean score of the 17 points that ends the attempts early.
    """

    name = "mediapipe"
    default_batch_size = 32

    def __init__(self, model_complexity: int = 1, attempts: Sequence[tuple] = DEFAULT_MEDIAPIPE_ATTEMPTS,
                 min_detection_confidence: float = 0.5, accept_score: float = 0.5):
        os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ start-up chatter
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp

        self.model_complexity = int(model_complexity)
        self.attempts = tuple((float(a[0]), int(a[1])) + tuple(str(x) for x in a[2:]) for a in attempts)
        if not self.attempts:
            raise ValueError("at least one preprocessing attempt is needed")
        for a in self.attempts:
            if len(a) > 3 or (len(a) == 3 and a[2] != "clahe") or a[0] < 0 or a[1] < 16:
                raise ValueError(f"bad attempt {a}: expected (pad >= 0, size >= 16[, 'clahe'])")
        self.min_detection_confidence = float(min_detection_confidence)
        self.accept_score = float(accept_score)
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=self.model_complexity,
                                            enable_segmentation=False, smooth_landmarks=False,
                                            min_detection_confidence=self.min_detection_confidence)
        #: number of images per attempt index that ended there (last slot: no detection)
        self.attempt_counts = [0] * (len(self.attempts) + 1)

    def signature(self) -> Dict:
        return {"backend": self.name, "model_complexity": self.model_complexity,
                "attempts": [list(a) for a in self.attempts]}

    @staticmethod
    def _clahe(img: np.ndarray) -> np.ndarray:
        import cv2

        lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
        lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 8)).apply(lab[..., 0])
        return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)

    @staticmethod
    def _canvas(img: np.ndarray, pad: float, size: int):
        """Pad ``img`` to a centred square with a vertical margin ``pad * H`` and scale it to ``size``.
        Returns the canvas and (offset_x, offset_y, scale) mapping original -> canvas edge coordinates."""
        import cv2

        h, w = img.shape[:2]
        side = max(h, w) + 2 * int(round(pad * max(h, w)))
        top = (side - h) // 2
        left = (side - w) // 2
        canvas = cv2.copyMakeBorder(img, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT,
                                    value=(0, 0, 0))
        scale = size / side
        if scale != 1.0:
            canvas = cv2.resize(canvas, (size, size),
                                interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        return canvas, (left, top, scale)

    def _detect(self, img: np.ndarray, pad: float, size: int, *ops: str) -> Optional[np.ndarray]:
        import cv2

        if "clahe" in ops:
            img = self._clahe(img)
        canvas, (left, top, scale) = self._canvas(img, pad, size)
        res = self._pose.process(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))
        if res.pose_landmarks is None:
            return None
        lm = res.pose_landmarks.landmark
        side = canvas.shape[0]
        kps = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        for k, b in enumerate(BLAZEPOSE_TO_COCO17):
            p = lm[b]
            # normalized [0, 1] over the canvas edges -> canvas edge coords -> original pixel centres
            kps[k, 0] = p.x * side / scale - left - 0.5
            kps[k, 1] = p.y * side / scale - top - 0.5
            kps[k, 2] = p.visibility
        return finalize_keypoints(kps, img.shape[1], img.shape[0])

    def predict_one(self, img: np.ndarray) -> np.ndarray:
        best, best_score, best_i = None, -1.0, len(self.attempts)
        for i, attempt in enumerate(self.attempts):
            kps = self._detect(img, *attempt)
            if kps is None:
                continue
            score = float(kps[:, 2].mean())
            if score > best_score:
                best, best_score, best_i = kps, score, i
            if score >= self.accept_score:
                break
        self.attempt_counts[best_i] += 1
        if best is None:
            return np.zeros((NUM_KEYPOINTS, 3), np.float32)
        return best

    def predict(self, images: Sequence[np.ndarray]) -> List[np.ndarray]:
        return [self.predict_one(img) for img in images]

    def close(self) -> None:
        if getattr(self, "_pose", None) is not None:
            self._pose.close()
            self._pose = None


BACKENDS = {MMPoseBackend.name: MMPoseBackend, MediaPipeBackend.name: MediaPipeBackend}


def build_backend(name: str, **kwargs) -> KeypointBackend:
    """``build_backend("mmpose", checkpoint=...)`` / ``build_backend("mediapipe")``. Options that are
    ``None`` are dropped (the backend's defaults apply)."""
    if name not in BACKENDS:
        raise KeyError(f"unknown keypoint backend {name!r}; known: {sorted(BACKENDS)} (and 'import', see "
                       "fastreid_ext.pose.convert)")
    return BACKENDS[name](**{k: v for k, v in kwargs.items() if v is not None})
