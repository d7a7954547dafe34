"""Similarity attention: the exact per-location decomposition of a pair's cosine similarity (no FastReID).

Stylianou, Souvenir and Pless, "Visualizing deep similarity networks", WACV 2019, Sec. 3: for an embedding that is
the global average pooling (GAP) of a last convolutional map, the dot product of two pooled features is a sum of
terms, one per pair of locations, and summing them over the locations of one image gives a map over the other
image whose values add up to the similarity. Their code assumes square maps of equal size; here nothing does (re-id
maps are 16 x 8 at 256 x 128 inputs, and the two images may even have different map sizes).

Notation: map ``A`` of image a, ``N_a = h_a w_a`` locations ``A_i`` (C-vectors). A pooling writes the pooled
vector as a sum of per-location contributions ``v_i`` (:func:`pooling_contributions`):

* ``avg`` (GAP): ``v_i = A_i / N``, the decomposition of the paper;
* ``max``: ``v_i[c] = A_i[c]`` where location i holds channel c's maximum (ties share it equally), else 0;
* ``avgmax`` (FastReID's ``AdaptiveAvgMaxPool``: GAP + max): the sum of both;
* ``gem`` (generalized mean, Radenovic et al., TPAMI 2019: ``f_c = (mean_i max(A_ic, eps)^p)^(1/p)``): a power mean
  is not a sum of per-location terms, so its decomposition is not unique; ``v_i[c] = f_c x_ic^p / sum_j x_jc^p``
  (``x = max(A, eps)``), each location's share of ``f_c^p``, is exact (it sums to ``f``) and equals GAP's for
  ``p = 1``. The pictures say when this convention was used.

An affine map ``g(v) = W v + b`` after pooling (FastReID's BN-neck in eval mode, a 1x1 conv or FC embedding, a
linear projection: anything affine) keeps the decomposition exact: ``g(sum_i v_i) = sum_i t_i`` with
``t_i = g(v_i) - (1 - 1/N) g(0)`` (:func:`affine_terms`; the bias shared equally by the locations). A non-affine
layer after pooling (a ReLU, as torchreid's ``fc`` = Linear-BN-ReLU) has no exact decomposition: :func:`check_affine`
raises :class:`NotDecomposable` saying so.

The cosine similarity of the two features ``u_a = sum_i t^a_i``, ``u_b = sum_j t^b_j`` then decomposes as
(:func:`cosine_decomposition`)

    s = <u_a, u_b> / (|u_a| |u_b|) = sum_i S_a(i) = sum_j S_b(j) = sum_ij P(i, j),
    S_a(i) = <t^a_i, u_b> / (|u_a| |u_b|),   S_b(j) = <u_a, t^b_j> / (|u_a| |u_b|),   P(i, j) = <t^a_i, t^b_j> / (...)

``S_a`` and ``S_b`` are the two maps drawn over the images (the marginals of ``P``). A retrieval feature that
concatenates K L2-normalised branch features (RBNet's ``concat``) has cosine ``(1/K) sum_k s_k``: its maps are the
mean of the branches' maps when the branches share a grid (:func:`combine_branches`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["POOLINGS", "NotDecomposable", "PairDecomposition", "pooling_contributions", "affine_terms",
           "check_affine", "cosine_decomposition", "combine_branches", "signed_overlay", "upsample_map"]

POOLINGS = ("avg", "max", "avgmax", "gem")


class NotDecomposable(ValueError):
    """The model's similarity has no exact per-location decomposition (the message says why)."""


def pooling_contributions(fmap: torch.Tensor, kind: str = "avg", p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Per-location contributions ``v`` (B, N, C), N = h w, of the pooling of ``fmap`` (B, C, h, w):
    ``v.sum(1)`` is the pooled (B, C) vector exactly (module docstring; ``p``, ``eps``: GeM's)."""
    if fmap.dim() != 4:
        raise ValueError(f"fmap must be (B, C, h, w), got {tuple(fmap.shape)}")
    b, c, h, w = fmap.shape
    x = fmap.detach().double().flatten(2).transpose(1, 2)  # (B, N, C)
    n = h * w
    if kind == "avg":
        return x / n
    if kind == "max":
        top = x.amax(1, keepdim=True)
        hit = (x == top).double()
        return hit * top / hit.sum(1, keepdim=True)
    if kind == "avgmax":
        return pooling_contributions(fmap, "avg") + pooling_contributions(fmap, "max")
    if kind == "gem":
        xp = x.clamp(min=eps).pow(float(p))
        f = xp.mean(1, keepdim=True).pow(1.0 / float(p))
        return f * xp / xp.sum(1, keepdim=True)
    raise NotDecomposable(f"no exact per-location decomposition for pooling {kind!r} (known: {', '.join(POOLINGS)})")


def check_affine(g: Callable[[torch.Tensor], torch.Tensor], dim: int, what: str = "the layers after pooling",
                 rtol: float = 1e-4, seed: int = 0) -> None:
    """Raise :class:`NotDecomposable` unless ``g`` ((M, dim) -> (M, D)) is affine on random inputs:
    ``g(x + y) - g(0) = (g(x) - g(0)) + (g(y) - g(0))`` and ``g(a x) - g(0) = a (g(x) - g(0))`` (signed inputs, so
    that a ReLU or a clamp shows)."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(2, 4, dim, generator=gen, dtype=torch.float64)
    zero = torch.zeros(1, dim, dtype=torch.float64)
    g0 = g(zero)
    lin = lambda v: g(v) - g0  # noqa: E731
    lhs = torch.cat([lin(x + y), lin(-2.5 * x)])
    rhs = torch.cat([lin(x) + lin(y), -2.5 * lin(x)])
    err = float((lhs - rhs).abs().max())
    scale = float(rhs.abs().max()) + 1e-12
    if not err <= rtol * scale:
        raise NotDecomposable(f"{what} are not affine (relative deviation {err / scale:.2g} on random inputs, e.g. a "
                              f"ReLU or clamp): the pooled feature is not a sum of per-location terms, so the "
                              f"similarity has no exact per-location decomposition")


def affine_terms(contrib: torch.Tensor, g: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Per-location terms ``t`` (B, N, D) of ``g(sum_i v_i)`` for contributions ``contrib`` (B, N, C) and an affine
    ``g`` ((M, C) -> (M, D); ``None``: identity): ``t_i = g(v_i) - (1 - 1/N) g(0)``, so ``t.sum(1) = g(v.sum(1))``."""
    if g is None:
        return contrib
    b, n, c = contrib.shape
    out = g(contrib.reshape(b * n, c))
    g0 = g(torch.zeros(1, c, dtype=contrib.dtype, device=contrib.device))
    return out.reshape(b, n, -1) - (1.0 - 1.0 / n) * g0.reshape(1, 1, -1)


@dataclass
class PairDecomposition:
    """The decomposition of one pair's cosine similarity (module docstring): ``similarity`` s, maps ``map_a``
    (h_a, w_a) and ``map_b`` (h_b, w_b) that each sum to s, and the location-pair terms ``pairs`` (N_a, N_b)."""

    similarity: float
    map_a: np.ndarray
    map_b: np.ndarray
    pairs: np.ndarray
    note: str = ""


def cosine_decomposition(terms_a: torch.Tensor, terms_b: torch.Tensor, shape_a: Sequence[int],
                         shape_b: Sequence[int], note: str = "") -> PairDecomposition:
    """Decompose the cosine similarity of ``u_a = terms_a.sum(0)`` and ``u_b = terms_b.sum(0)`` (terms (N, D), any
    N_a, N_b) into the maps ``S_a`` (``shape_a`` = (h_a, w_a)) and ``S_b`` and the pair terms ``P``."""
    ta, tb = terms_a.double(), terms_b.double()
    ua, ub = ta.sum(0), tb.sum(0)
    denom = float(ua.norm() * ub.norm())
    if denom <= 0:
        raise NotDecomposable("a feature is zero: its cosine similarity is undefined")
    pairs = (ta @ tb.T) / denom
    sa = (ta @ ub) / denom
    sb = (tb @ ua) / denom
    s = float(ua @ ub) / denom
    return PairDecomposition(s, sa.reshape(*shape_a).cpu().numpy(), sb.reshape(*shape_b).cpu().numpy(),
                             pairs.cpu().numpy(), note)


def combine_branches(parts: List[PairDecomposition]) -> PairDecomposition:
    """The decomposition for a retrieval feature that concatenates the L2-normalised features of the branches of
    ``parts``: cosine = mean of the branches' cosines, maps = mean of their maps (the branches must share both
    grids)."""
    if len(parts) == 1:
        return parts[0]
    shapes = {(p.map_a.shape, p.map_b.shape) for p in parts}
    if len(shapes) != 1:
        raise NotDecomposable(f"the branches' maps have different grids {sorted(shapes)}: the concatenated "
                              f"feature's maps cannot be added location by location (see the per-branch maps)")
    k = float(len(parts))
    return PairDecomposition(sum(p.similarity for p in parts) / k, sum(p.map_a for p in parts) / k,
                             sum(p.map_b for p in parts) / k, sum(p.pairs for p in parts) / k,
                             "; ".join(p.note for p in parts if p.note))


# ------------------------------------------------------------------------------------------------------ display
def upsample_map(values: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """A (h, w) map of per-location terms resized to the image (nearest: each location keeps its cell)."""
    import cv2

    h, w = int(size_hw[0]), int(size_hw[1])
    return cv2.resize(np.asarray(values, np.float32), (w, h), interpolation=cv2.INTER_NEAREST)


def signed_overlay(image_rgb: np.ndarray, values: np.ndarray, vmax: float, alpha: float = 0.75) -> np.ndarray:
    """Overlay a signed map (H, W, already at the image size) on ``image_rgb`` (H, W, 3 uint8): red for positive
    terms, blue for negative ones, opacity ``alpha |v| / vmax`` (one ``vmax`` for both images of a pair, so that
    their colours compare)."""
    v = np.clip(np.asarray(values, np.float32) / max(float(vmax), 1e-12), -1.0, 1.0)
    colour = np.where(v[..., None] >= 0, np.array([230.0, 20.0, 20.0]), np.array([30.0, 60.0, 230.0]))
    a = alpha * np.abs(v)[..., None]
    out = (1 - a) * image_rgb.astype(np.float32) + a * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
