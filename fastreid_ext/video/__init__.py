"""The real-time detect-then-re-id path of Zhang & Wu, "Person re-identification based on multiple deep learning
methods" (Sec. 4.5: about 33 frames/s), behind ``tools/reid_video.py`` (:mod:`.cli`): MOTChallenge frames and
boxes (or a detector callable), crops, optional background removal, embeddings from any registered
FastReID model or torchreid's OSNet (or an exported ONNX file through onnxruntime), identity assignment against a
gallery, per-sequence tracking (DeepSORT on our embeddings, :mod:`.track`), MOTChallenge results and motmetrics
scores (:mod:`.mot_eval`), accuracy and timings. Detectors: :mod:`.detect` (OpenCV HOG, torchvision, mmdet)."""
from .embed import ReidEmbedder, build_embedder, load_cfg, torchreid_osnet_cfg  # noqa: F401
from .gallery import IdentityGallery, identity_accuracy  # noqa: F401
from .mot import Box, MotSequence, load_sequence, read_mot_boxes  # noqa: F401
from .pipeline import RunResult, Timing, load_detector, run_sequences  # noqa: F401
from .detect import HogDetector, MMDetDetector, TorchvisionDetector, build_detector, filter_boxes  # noqa: F401
from .mot_eval import MotResultsWriter, evaluate_mot, read_mot_results  # noqa: F401
from .track import DeepSortTracker  # noqa: F401
