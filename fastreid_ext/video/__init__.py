"""The real-time detect-then-re-id path of Zhang & Wu, "Person re-identification based on multiple deep learning
methods" (Sec. 4.5: about 33 frames/s), behind ``tools/reid_video.py`` (:mod:`.cli`): MOTChallenge frames and
boxes (or a detector callable), crops, optional background removal, embeddings from any registered
FastReID model or torchreid's OSNet, identity assignment against a gallery, accuracy and timings."""
from .embed import ReidEmbedder, build_embedder, load_cfg, torchreid_osnet_cfg  # noqa: F401
from .gallery import IdentityGallery, identity_accuracy  # noqa: F401
from .mot import Box, MotSequence, load_sequence, read_mot_boxes  # noqa: F401
from .pipeline import RunResult, Timing, load_detector, run_sequences  # noqa: F401
