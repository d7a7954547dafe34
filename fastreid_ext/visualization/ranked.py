"""Ranked lists, their AP bookkeeping, distance distributions and ROC, computed query chunk by query chunk
(numpy, OpenCV, matplotlib; no FastReID).

The protocol is the one of Market-1501 (Zheng et al., "Scalable person re-identification: a benchmark", ICCV 2015)
as FastReID's and torchreid's evaluators implement it: for each query the gallery is sorted by distance, gallery
images of the query's identity taken by the query's camera are removed ("junk"), a gallery image is a true match
when it has the query's identity, AP is the mean over the true matches of the precision at their ranks, and a query
without any true match counts in no metric (its AP is NaN here). :func:`rank_chunk` does this for a chunk of
queries against the whole gallery, so that a Market-sized split (3,368 x 15,913) never needs the full distance
matrix; :class:`DistanceHistogram` accumulates the distances of positive pairs (same identity, other camera) and
negative pairs (other identity) into fixed bins, which give the distributions and the ROC curve (true-positive rate
against false-positive rate when a pair is accepted below a distance threshold) of FastReID's
``demo/visualize_result.py`` at bin resolution, in constant memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["ChunkRanks", "rank_chunk", "distances", "DistanceHistogram", "query_order", "ranked_row",
           "plot_distributions", "plot_roc", "MATCH_RGB", "MISMATCH_RGB"]

MATCH_RGB = (0, 190, 0)
MISMATCH_RGB = (220, 0, 0)


def distances(q: np.ndarray, g: np.ndarray, metric: str = "cosine", g_sqnorm: Optional[np.ndarray] = None) -> np.ndarray:
    """(nq, ng) distances as FastReID's ``build_dist``: ``cosine`` = 1 - cosine similarity, ``euclidean`` = squared
    Euclidean distance (FastReID's, no square root). ``g_sqnorm``: the gallery's squared norms, computed once by a
    caller that ranks chunk after chunk (the gallery is never copied)."""
    q = np.asarray(q, np.float32)
    g = np.asarray(g, np.float32)
    if g_sqnorm is None:
        g_sqnorm = np.einsum("ij,ij->i", g, g)
    q_sqnorm = np.einsum("ij,ij->i", q, q)
    dot = q @ g.T
    if metric == "cosine":
        dot /= np.maximum(np.sqrt(q_sqnorm), 1e-12)[:, None]
        dot /= np.maximum(np.sqrt(g_sqnorm), 1e-12)[None, :]
        return np.subtract(1.0, dot, out=dot)
    if metric == "euclidean":
        dot *= -2.0
        dot += q_sqnorm[:, None]
        dot += g_sqnorm[None, :]
        return np.maximum(dot, 0.0, out=dot)
    raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


@dataclass
class ChunkRanks:
    """Results for a chunk of queries: ``ap`` (NaN without a true match), ``first`` (0-based rank of the first true
    match among the kept gallery, -1 without one), ``num_pos`` (true matches), ``topk`` (gallery indices of the first
    k kept images, -1 padded), ``topk_match`` (bool), ``topk_dist``."""

    ap: np.ndarray
    first: np.ndarray
    num_pos: np.ndarray
    topk: np.ndarray
    topk_match: np.ndarray
    topk_dist: np.ndarray


def rank_chunk(dist: np.ndarray, q_pids, q_camids, g_pids, g_camids, topk: int = 10) -> ChunkRanks:
    """Rank a chunk of queries (``dist``: (nq, ng)) against the gallery, Market-1501 protocol (module docstring).
    Ties keep the gallery order (the order of a stable sort), so the numbers equal those of a full ``argsort``
    evaluator whenever distances are distinct.

    Only distances are sorted, never indices: the rank of each true match among the kept gallery images is
    ``#kept closer (a binary search in the sorted kept distances) + #kept as close with a lower index + 1``, and
    the top k are the kept images within the k-th smallest kept distance."""
    dist = np.asarray(dist)
    q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
    g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
    nq, ng = dist.shape
    k = int(topk)
    index = np.arange(ng)
    same = g_pids[None, :] == q_pids[:, None]
    junk = same & (g_camids[None, :] == q_camids[:, None])
    match = same & ~junk
    kept_d = np.where(junk, np.inf, dist)  # junk sorts last and is never "closer"
    sorted_d = np.sort(kept_d, axis=1)
    num_pos = match.sum(1).astype(np.int64)
    ap = np.full(nq, np.nan)
    first = np.full(nq, -1, np.int64)
    top = np.full((nq, k), -1, np.int64)
    top_match = np.zeros((nq, k), bool)
    top_dist = np.full((nq, k), np.nan, np.float32)
    for r in range(nq):
        row = kept_d[r]
        pos = np.flatnonzero(match[r])
        if len(pos):
            dp = dist[r, pos]
            less = np.searchsorted(sorted_d[r], dp, side="left")
            equal = np.searchsorted(sorted_d[r], dp, side="right") - less
            ties = np.zeros(len(pos), np.int64)
            for j in np.flatnonzero(equal > 1):  # exact ties: the lower gallery index comes first
                ties[j] = int(np.count_nonzero((row == dp[j]) & (index < pos[j])))
            ranks = np.sort(less + ties + 1)
            ap[r] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
            first[r] = ranks[0] - 1
        if k:
            cand = np.flatnonzero(row <= sorted_d[r, min(k, ng) - 1])
            cand = cand[np.lexsort((cand, dist[r, cand]))]
            cand = cand[~junk[r, cand]][:k]
            top[r, :len(cand)] = cand
            top_match[r, :len(cand)] = same[r, cand]
            top_dist[r, :len(cand)] = dist[r, cand]
    return ChunkRanks(ap, first, num_pos, top, top_match, top_dist)


class DistanceHistogram:
    """Counts of positive / negative pair distances in ``bins`` equal bins over ``[lo, hi]`` (values outside are
    clipped into the end bins). Positive: same identity, other camera; negative: other identity; pairs of the same
    identity and camera are left out, as in ranking."""

    def __init__(self, lo: float, hi: float, bins: int = 4000):
        if not hi > lo:
            raise ValueError(f"histogram range must have hi > lo, got [{lo}, {hi}]")
        self.lo, self.hi, self.bins = float(lo), float(hi), int(bins)
        self.pos = np.zeros(self.bins, np.int64)
        self.neg = np.zeros(self.bins, np.int64)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def _index(self, d: np.ndarray) -> np.ndarray:
        i = np.floor((d - self.lo) / (self.hi - self.lo) * self.bins).astype(np.int64)
        return np.clip(i, 0, self.bins - 1)

    def add(self, dist: np.ndarray, q_pids, q_camids, g_pids, g_camids) -> None:
        """Add the pairs of a (nq, ng) chunk of distances."""
        q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
        g_pids, g_camids = np.asarray(g_pids), np.asarray(g_camids)
        same_id = q_pids[:, None] == g_pids[None, :]
        keep = ~(same_id & (q_camids[:, None] == g_camids[None, :]))
        idx = self._index(np.asarray(dist))
        self.pos += np.bincount(idx[same_id & keep], minlength=self.bins)
        self.neg += np.bincount(idx[~same_id], minlength=self.bins)

    def roc(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(fpr, tpr, thresholds)``: a pair is accepted when its distance is below the threshold (the upper edge
        of each bin), from accepting nothing to accepting every pair."""
        tp = np.concatenate([[0], np.cumsum(self.pos)]) / max(int(self.pos.sum()), 1)
        fp = np.concatenate([[0], np.cumsum(self.neg)]) / max(int(self.neg.sum()), 1)
        return fp, tp, self.edges

    def auc(self) -> float:
        """Area under :meth:`roc` (trapezoids; pairs tied in one bin count half, as for tied scores)."""
        fpr, tpr, _ = self.roc()
        return float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


def query_order(ap: np.ndarray, order: str = "worst") -> np.ndarray:
    """Query indices to draw: ``worst`` (lowest AP first, what one looks at to find failures), ``best`` or
    ``index``; queries without a true match (NaN AP) come last."""
    ap = np.asarray(ap, np.float64)
    idx = np.arange(len(ap))
    if order == "index":
        return idx
    valid = ~np.isnan(ap)
    key = ap[valid] if order == "worst" else -ap[valid]
    if order not in ("worst", "best"):
        raise ValueError(f"order must be 'worst', 'best' or 'index', got {order!r}")
    return np.concatenate([idx[valid][np.argsort(key, kind="stable")], idx[~valid]])


# ------------------------------------------------------------------------------------------------------ drawing
def _fit(img: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    h, w = int(size_hw[0]), int(size_hw[1])
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)


def _bordered(img: np.ndarray, colour, border: int) -> np.ndarray:
    return cv2.copyMakeBorder(img, border, border, border, border, cv2.BORDER_CONSTANT, value=tuple(int(c) for c in colour))


def _caption(width: int, text: str, height: int = 14) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    scale = 0.32
    (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while tw > width - 2 and scale > 0.2:
        scale -= 0.03
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(bar, text, (max(1, (width - tw) // 2), height - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return bar


def ranked_row(query_rgb: np.ndarray, gallery_rgb: Sequence[np.ndarray], matches: Sequence[bool],
               captions: Sequence[str], query_caption: str = "query", size_hw: Sequence[int] = (128, 64),
               border: int = 4, gap: int = 6, title: Optional[str] = None) -> np.ndarray:
    """One query's row: the query (grey border) then its ranked gallery images with a green border for a true match
    and a red one otherwise, a caption under each, an optional title line. RGB uint8."""
    cells = [np.vstack([_bordered(_fit(query_rgb, size_hw), (128, 128, 128), border),
                        _caption(int(size_hw[1]) + 2 * border, query_caption)])]
    for img, ok, cap in zip(gallery_rgb, matches, captions):
        cell = _bordered(_fit(img, size_hw), MATCH_RGB if ok else MISMATCH_RGB, border)
        cells.append(np.vstack([cell, _caption(cell.shape[1], cap)]))
    h = cells[0].shape[0]
    parts: List[np.ndarray] = []
    for i, c in enumerate(cells):
        parts.append(c)
        if i + 1 < len(cells):
            parts.append(np.full((h, gap * (3 if i == 0 else 1), 3), 255, np.uint8))
    row = np.hstack(parts)
    if title:
        bar = np.full((16, row.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, title, (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
        row = np.vstack([bar, row])
    return row


def plot_distributions(hist: DistanceHistogram, path: str, title: str = "") -> None:
    """Normalised histograms of positive and negative pair distances (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = np.nonzero(hist.pos + hist.neg)[0]
    a, b = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, hist.bins)
    coarse = max(1, (b - a) // 80)  # about 80 bars over the occupied range
    starts = np.arange(a, b, coarse)
    edges = np.append(hist.edges[starts], hist.edges[min(b, hist.bins)])
    pos = np.add.reduceat(hist.pos[:b], starts)
    neg = np.add.reduceat(hist.neg[:b], starts)
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=110)
    for counts, label, colour in ((pos, f"positive pairs ({int(hist.pos.sum()):,})", "tab:green"),
                                  (neg, f"negative pairs ({int(hist.neg.sum()):,})", "tab:red")):
        dens = counts / max(counts.sum(), 1)
        ax.stairs(dens, edges, fill=True, alpha=0.45, color=colour, label=label)
    ax.set_xlabel("distance")
    ax.set_ylabel("fraction of pairs")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(hist: DistanceHistogram, path: str, title: str = "") -> None:
    """ROC curve (true-positive rate against false-positive rate, log x axis) with its AUC (matplotlib, PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = hist.roc()
    fig, ax = plt.subplots(figsize=(4.2, 3.4), dpi=110)
    ok = fpr > 0
    ax.plot(fpr[ok], tpr[ok], color="tab:blue", label=f"AUC {hist.auc():.4f}")
    ax.set_xscale("log")
    ax.set_xlim(max(float(fpr[ok].min()) if ok.any() else 1e-6, 1e-6), 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
