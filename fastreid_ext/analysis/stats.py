"""Condition-matrix statistics (numpy only, no FastReID import).

Yoshida et al., "Evaluation of metric learning model for Person Re-identification" (in Japanese), Sec. 3: every
image is embedded, and for one person the similarity *between* two conditions is the mean cosine similarity over
the 5 x 5 = 25 pairs of their shots, the similarity *within* a condition the mean over the C(5, 2) = 10 pairs of
its shots; the matrices (diagonal: within, off-diagonal: between) are shown as heat maps (Figs. 6-11).

Here, for any number of shots and persons:

* :func:`person_matrix`: that matrix for one person (``NaN`` where the person lacks a condition);
* :class:`MatrixAccumulator`: mean over persons and its spread (sample standard deviation over persons, and the
  number of persons per cell), accumulated person by person so that features never need to be held for more than
  one person at a time;
* :class:`ImpostorAccumulator`: for reference, the mean similarity between *different* persons under the same
  condition, from per-condition feature sums only (``O(dim)`` memory per condition).

Features are L2-normalised first (cosine similarity = dot product).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ["normalize", "person_matrix", "MatrixAccumulator", "ImpostorAccumulator"]


def normalize(feats) -> np.ndarray:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (N, D), got {f.shape}")
    n = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(n, 1e-12)


def person_matrix(feats_by_condition: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """``(C, C)`` matrix of one person: ``[a, a]`` = mean cosine similarity over the pairs of distinct shots of
    condition ``a`` (``NaN`` with fewer than two shots), ``[a, b]`` = mean over all shot pairs of ``a`` x ``b``
    (``NaN`` when either is missing). ``feats_by_condition[a]``: ``(shots, D)`` features or ``None``."""
    fs = [None if f is None or len(f) == 0 else normalize(f) for f in feats_by_condition]
    C = len(fs)
    m = np.full((C, C), np.nan)
    for a in range(C):
        if fs[a] is None:
            continue
        for b in range(a, C):
            if fs[b] is None:
                continue
            s = fs[a] @ fs[b].T
            if a == b:
                n = len(fs[a])
                if n >= 2:
                    m[a, a] = (s.sum() - np.trace(s)) / (n * (n - 1))
            else:
                m[a, b] = m[b, a] = s.mean()
    return m


class MatrixAccumulator:
    """Mean over persons of :func:`person_matrix` and its spread, cell by cell (missing cells are skipped)."""

    def __init__(self, num_conditions: int):
        C = int(num_conditions)
        self.sum = np.zeros((C, C))
        self.sumsq = np.zeros((C, C))
        self.count = np.zeros((C, C), dtype=np.int64)
        self.persons: List[str] = []

    def add(self, matrix: np.ndarray, person: str = "") -> None:
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != self.sum.shape:
            raise ValueError(f"matrix {m.shape} does not match {self.sum.shape}")
        ok = ~np.isnan(m)
        self.sum[ok] += m[ok]
        self.sumsq[ok] += m[ok] ** 2
        self.count += ok
        self.persons.append(person)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)

    def std(self) -> np.ndarray:
        """Sample standard deviation over persons (``NaN`` for cells seen for fewer than two persons)."""
        n = self.count.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (self.sumsq - self.sum ** 2 / np.maximum(n, 1)) / np.maximum(n - 1, 1)
        return np.where(n >= 2, np.sqrt(np.clip(var, 0, None)), np.nan)


class ImpostorAccumulator:
    """Mean cosine similarity between shots of *different* persons under each condition.

    With ``S_c`` the sum of all normalised features of condition ``c`` and ``S_pc`` that of person ``p``:
    ``sum over pairs of different persons = |S_c|^2 - sum_p |S_pc|^2`` over ``N_c^2 - sum_p n_pc^2`` pairs."""

    def __init__(self, num_conditions: int):
        self.C = int(num_conditions)
        self.total: Dict[int, np.ndarray] = {}
        self.own = np.zeros(self.C)
        self.n = np.zeros(self.C)
        self.n_own = np.zeros(self.C)

    def add(self, condition: int, feats: np.ndarray) -> None:
        """All shots of one person under ``condition``."""
        f = normalize(feats)
        s = f.sum(0)
        self.total[condition] = self.total.get(condition, 0) + s
        self.own[condition] += float(s @ s)
        self.n[condition] += len(f)
        self.n_own[condition] += len(f) ** 2

    def mean(self) -> np.ndarray:
        out = np.full(self.C, np.nan)
        for c, s in self.total.items():
            pairs = self.n[c] ** 2 - self.n_own[c]
            if pairs > 0:
                out[c] = (float(s @ s) - self.own[c]) / pairs
        return out
