"""Identity assignment against a growing gallery, and its accuracy against ground-truth ids.

:class:`IdentityGallery`: every person crop of a frame is compared (cosine distance of L2-normalised
embeddings) with the gallery; the crops of one frame are assigned one-to-one (greedy on increasing
distance: a person appears once per frame) to gallery identities closer than ``threshold``; a crop with
no gallery identity within ``threshold`` opens a new identity whose gallery entry is that first-seen
crop's embedding (``update="first"``, the default), or a running mean of its assigned crops
(``update="mean"``). Sharing one gallery across sequences matches identities across cameras.

:func:`identity_accuracy`: the optimal one-to-one mapping of predicted ids to ground-truth ids
(Hungarian on the co-occurrence counts); accuracy = crops whose predicted id maps to their gt id /
crops. With ground-truth boxes this is IDF1 (precision = recall). Also reported: purity (each
predicted id labelled with its majority gt id), and the numbers of ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np


@dataclass
class IdentityGallery:
    threshold: float = 0.35
    update: str = "first"  # "first" | "mean"
    feats: List[np.ndarray] = field(default_factory=list)
    counts: List[int] = field(default_factory=list)

    def __post_init__(self):
        if self.update not in ("first", "mean"):
            raise ValueError(f"gallery update must be 'first' or 'mean', got {self.update!r}")

    def __len__(self):
        return len(self.feats)

    def distances(self, q: np.ndarray) -> np.ndarray:
        """Cosine distances (N, G) of L2-normalised queries to the gallery."""
        if not self.feats:
            return np.zeros((len(q), 0), np.float32)
        g = np.stack(self.feats)
        g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return (1.0 - q @ g.T).astype(np.float32)

    def assign(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Assign the crops of one frame; returns (ids, distances; NaN for new identities)."""
        q = np.asarray(q, np.float32)
        n = len(q)
        ids = np.full(n, -1, np.int64)
        dist = np.full(n, np.nan, np.float32)
        d = self.distances(q)
        if d.size:
            order = np.argsort(d, axis=None, kind="stable")
            used_q, used_g = set(), set()
            for flat in order:
                i, j = divmod(int(flat), d.shape[1])
                if d[i, j] > self.threshold:
                    break
                if i in used_q or j in used_g:
                    continue
                ids[i], dist[i] = j, d[i, j]
                used_q.add(i)
                used_g.add(j)
        for i in range(n):
            if ids[i] < 0:
                ids[i] = len(self.feats)
                self.feats.append(q[i].copy())
                self.counts.append(1)
            elif self.update == "mean":
                j = ids[i]
                self.counts[j] += 1
                self.feats[j] = self.feats[j] + (q[i] - self.feats[j]) / self.counts[j]
        return ids, dist


def identity_accuracy(gt_ids: Sequence, pred_ids: Sequence) -> Dict[str, float]:
    """See the module docstring. ``gt_ids`` may be any hashables (e.g. ``(sequence, id)``)."""
    from scipy.optimize import linear_sum_assignment

    gt = list(gt_ids)
    pr = list(pred_ids)
    if len(gt) != len(pr):
        raise ValueError("gt_ids and pred_ids differ in length")
    if not gt:
        return {"id_accuracy": float("nan"), "purity": float("nan"), "num_crops": 0, "num_gt_ids": 0,
                "num_pred_ids": 0}
    gu = {g: i for i, g in enumerate(dict.fromkeys(gt))}
    pu = {p: i for i, p in enumerate(dict.fromkeys(pr))}
    c = np.zeros((len(pu), len(gu)), np.int64)
    for g, p in zip(gt, pr):
        c[pu[p], gu[g]] += 1
    r, k = linear_sum_assignment(-c)
    matched = int(c[r, k].sum())
    return {"id_accuracy": matched / len(gt), "purity": float(c.max(1).sum()) / len(gt), "num_crops": len(gt),
            "num_gt_ids": len(gu), "num_pred_ids": len(pu)}
