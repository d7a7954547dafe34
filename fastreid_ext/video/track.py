"""Per-sequence tracking with appearance (our re-id embeddings) and motion: the ``deep-sort-realtime`` package's
DeepSORT tracker (Wojke, Bewley & Paulus, "Simple online and realtime tracking with a deep association metric",
ICIP 2017: Kalman filter on (x, y, aspect, height), matching cascade on the cosine distance of appearance features
gated by the Mahalanobis distance, then IoU matching), fed with the embeddings the video tool already computed
(``DeepSort(embedder=None)``: its own embedders are never built).

``deep-sort-realtime`` is installed ``--no-deps`` (its metadata wants ``opencv-python``, which would clobber our
headless OpenCV); the tracker itself needs only numpy, scipy and cv2.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import numpy as np

__all__ = ["DeepSortTracker"]


class DeepSortTracker:
    """One sequence's tracker. :meth:`update` takes the frame's boxes, scores and L2-normalised embeddings and returns
    a track id per box (-1: not reported this frame).

    Args (DeepSORT's, see ``deep_sort_realtime.deepsort_tracker.DeepSort``):
        max_age: frames a track survives without a detection.
        n_init: consecutive detections before a track is confirmed.
        max_cosine_distance: appearance gate (cosine distance to the track's recent features).
        max_iou_distance: IoU gate of the second matching stage (1 - IoU).
        nn_budget: features kept per track (None: all).
        report_min_hits: a box gets its track's id when the track matched it this frame and is confirmed, or has at
            least this many detections (default ``n_init``: confirmed tracks only, DeepSORT's output; with
            ``n_init=1`` and ``report_min_hits=1`` a track is reported from its first frame).
    """

    def __init__(self, max_age: int = 30, n_init: int = 3, max_cosine_distance: float = 0.2,
                 max_iou_distance: float = 0.7, nn_budget: Optional[int] = 100, report_min_hits: Optional[int] = None):
        try:
            from deep_sort_realtime.deepsort_tracker import DeepSort
        except ModuleNotFoundError as e:
            raise ImportError(f"tracking needs deep-sort-realtime: pip install --no-deps deep-sort-realtime==1.3.2 "
                              f"(or bash tools/install.sh): {e}") from e
        self.ds = DeepSort(max_age=int(max_age), n_init=int(n_init), max_cosine_distance=float(max_cosine_distance),
                           max_iou_distance=float(max_iou_distance), nn_budget=nn_budget, embedder=None)
        self.report_min_hits = int(report_min_hits if report_min_hits is not None else n_init)
        # DeepSORT's Kalman gating solves 4x4 triangular systems (scipy.linalg); a multi-threaded OpenBLAS makes each
        # call ~1000x slower on a busy CPU (20 ms instead of 0.02 ms measured here): one BLAS thread while updating
        try:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()  # after the import above, so that scipy's OpenBLAS is seen
        except ImportError:
            self._blas = None

    def update(self, boxes_ltwh: np.ndarray, scores: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """Boxes ``(N, 4)`` (left, top, width, height; positive sizes), scores ``(N,)``, embeddings ``(N, D)`` ->
        track ids ``(N,)`` (int, -1 where no reported track holds the box)."""
        n = len(boxes_ltwh)
        ids = np.full(n, -1, np.int64)
        raw = [([float(v) for v in b], float(s), "person") for b, s in zip(boxes_ltwh, scores)]
        if any(b[0][2] <= 0 or b[0][3] <= 0 for b in raw):
            raise ValueError("tracker boxes need positive width and height")
        # others=i: each track carries the index of the detection it matched this frame
        with self._blas.limit(limits=1, user_api="blas") if self._blas is not None else nullcontext():
            tracks = self.ds.update_tracks(raw, embeds=[np.asarray(f, np.float32) for f in feats],
                                           others=list(range(n)))
        for t in tracks:
            if t.time_since_update != 0 or t.is_deleted():
                continue
            if not (t.is_confirmed() or t.hits >= self.report_min_hits):
                continue
            i = t.get_det_supplementary()
            if i is not None and 0 <= int(i) < n:
                ids[int(i)] = int(t.track_id)
        return ids
