"""Horizontal-stripe local features and their AlignedReID-style distance (HPLF, "Horizontal Pooling for Local
Feature", a person re-identification paper in Chinese: Sec. 2.2-2.3).

Plain torch, no FastReID import. Notation: an image gives ``K`` stripe features ``s_1..s_K`` (horizontal
pooling of the N x C x H x W map with a 1 x W window, HPLF Sec. 2.2). For two images ``x``, ``y``:

* stripe distance matrix ``D[i, j] = f(||x_i - y_j||_2)`` with AlignedReID's element-wise normalisation
  ``f(d) = (e^d - 1) / (e^d + 1)`` (= ``tanh(d / 2)``, computed that way to avoid ``e^d`` overflow);
* local distance = the length of the shortest path from ``D[0, 0]`` to ``D[m-1, n-1]`` moving only right or
  down (AlignedReID, Zhang et al. 2017, Eq. 1: ``S[i, j] = min(S[i-1, j], S[i, j-1]) + D[i, j]``),
  or optionally the mean of the aligned (same index) stripe distances ``1/K sum_k D[k, k]``;
* TriHard loss on it (HPLF Eq. 3): ``1/(PK) sum_a [max_p d(a, p) - min_n d(a, n) + alpha]_+``, the hardest
  positive / negative being mined with the local distance itself (HPLF Sec. 2.1: each branch builds its own hard
  triplets) or with a given distance, e.g. the global one (AlignedReID).

Documented property (kept on purpose, as in AlignedReID): the right/down path visits ``m + n - 1`` cells, so
for identical inputs it must leave the zero diagonal ``K - 1`` times and ``d(x, x) > 0`` as soon as the
stripes differ. It is at most the staircase cost ``sum_i f(||s_i - s_{i+1}||)``, with equality when the
stripe distances grow with ``|i - j|``: e.g. ``s_i = i v`` gives ``d(x, x) = (K - 1) tanh(||v|| / 2)``.
The aligned variant gives 0. (Distances are ``sqrt(max(d^2, 1e-12))`` for finite gradients, so a zero
stripe distance reads as ``tanh(5e-7)``.)
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "horizontal_pool", "normalize_distance", "stripe_distance", "shortest_path", "aligned_path",
    "local_distance", "local_distance_matrix", "local_triplet_loss", "METHODS",
]

METHODS = ("shortest_path", "aligned")
_EPS = 1e-12


def _divisors(h: int):
    return [k for k in range(1, h + 1) if h % k == 0]


def horizontal_pool(feat: torch.Tensor, num_stripes: int = 0, mode: str = "avg") -> torch.Tensor:
    """HPLF Sec. 2.2: pool the N x C x H x W map with a 1 x W window into H stripes -> N x C x K x 1.

    ``num_stripes`` 0 keeps ``K = H``; otherwise ``H`` must be divisible by ``K`` and each stripe pools
    ``H / K`` rows x W columns. ``mode``: ``"avg"`` (AlignedReID) or ``"max"``.
    """
    if feat.dim() != 4:
        raise ValueError(f"horizontal_pool expects an N x C x H x W feature map, got shape {tuple(feat.shape)}")
    n, c, h, w = feat.shape
    k = h if not num_stripes else int(num_stripes)
    if k <= 0 or h == 0 or h % k != 0:
        raise ValueError(
            f"HPLF: a feature map of height {h} cannot be split into {k} horizontal stripes "
            f"(MODEL.HPLF.NUM_STRIPES={num_stripes}); use 0 (one stripe per row) or a divisor of {h}: "
            f"{_divisors(h) if h > 0 else []}. The height is the input height / the backbone stride "
            f"(16 with MODEL.BACKBONE.LAST_STRIDE 1, else 32).")
    x = feat.reshape(n, c, k, (h // k) * w)
    if mode == "avg":
        return x.mean(-1, keepdim=True)
    if mode == "max":
        return x.amax(-1, keepdim=True)
    raise ValueError(f"HPLF: unknown stripe pooling {mode!r}; expected 'avg' or 'max'")


def normalize_distance(d: torch.Tensor) -> torch.Tensor:
    """AlignedReID's element-wise normalisation ``(e^d - 1) / (e^d + 1) = tanh(d / 2)``, maps [0, inf) to [0, 1).

    It saturates: the slope ``(1 - tanh^2(d/2)) / 2`` is 0.5 at d = 0 and below 0.01 from d = 5.3 on (where the
    value passes 0.99). Stripe features whose typical distance is larger (e.g. 128-d BN + ReLU outputs, ~9 apart)
    give a local distance, and a local TriHard loss, that neither varies nor back-propagates; L2-normalised stripes
    keep d in [0, 2] (projects/HPLF/README.md)."""
    return torch.tanh(0.5 * d)


def stripe_distance(a: torch.Tensor, b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Stripe-to-stripe distance matrix ``D[..., i, j] = f(||a_i - b_j||)``.

    ``a``: (..., m, C), ``b``: (..., n, C), leading dims broadcast -> (..., m, n). ``f`` is
    :func:`normalize_distance` when ``normalize`` else the identity (plain Euclidean distance).
    """
    d2 = (a.pow(2).sum(-1).unsqueeze(-1) + b.pow(2).sum(-1).unsqueeze(-2)
          - 2.0 * torch.matmul(a, b.transpose(-1, -2)))
    d = d2.clamp_min(_EPS).sqrt()
    return normalize_distance(d) if normalize else d


def _shortest_path_flipped(df: torch.Tensor, dim1: int = -2, dim2: int = -1) -> torch.Tensor:
    """Shortest right/down path through ``D`` given ``df = D.flip(dim2)``: one vectorised step per anti-diagonal.

    Anti-diagonal ``t`` of ``D`` (cells ``(i, t - i)``) is the diagonal of ``df`` at offset ``n - 1 - t``;
    ``S[i, t-i] = D[i, t-i] + min(S[i-1, t-i], S[i, t-1-i])`` only needs anti-diagonal ``t - 1``, so
    ``m + n - 1`` element-wise steps cover every pair of the batch (the other dims of ``df``).
    """
    m, n = df.shape[dim1], df.shape[dim2]

    def diag(t):  # rows lo..hi of anti-diagonal t, as (L, *batch)
        return torch.diagonal(df, offset=n - 1 - t, dim1=dim1, dim2=dim2).movedim(-1, 0)

    grad = torch.is_grad_enabled() and df.requires_grad
    prev, prev_lo, prev_hi = diag(0), 0, 0  # S[0, 0] = D[0, 0]
    for t in range(1, m + n - 1):
        lo, hi = max(0, t - n + 1), min(t, m - 1)
        cur = diag(t)
        length = hi - lo + 1
        # rows lo+s .. lo+e-1 have both neighbours: up = S[i-1, t-i] (prev row i-1), left = S[i, t-1-i]
        s = 1 if lo == prev_lo else 0  # row lo has no upper neighbour while t < n
        e = length - 1 if hi == prev_hi + 1 else length  # row hi has no left neighbour while t < m
        up, left = prev[lo + s - 1 - prev_lo:lo + e - 1 - prev_lo], prev[lo + s - prev_lo:lo + e - prev_lo]
        if grad:
            parts = ([prev[:1]] if s == 1 else []) + ([torch.minimum(up, left)] if e > s else []) \
                + ([prev[prev_hi - prev_lo:]] if e == length - 1 else [])
            new = torch.cat(parts, 0) + cur
        else:
            new = torch.empty_like(cur, memory_format=torch.contiguous_format)
            if e > s:
                torch.minimum(up, left, out=new[s:e])
            if s == 1:
                new[0] = prev[0]
            if e == length - 1:
                new[length - 1] = prev[prev_hi - prev_lo]
            new += cur
        prev, prev_lo, prev_hi = new, lo, hi
    return prev[0]


def shortest_path(dist: torch.Tensor) -> torch.Tensor:
    """AlignedReID Eq. 1: length of the shortest right/down path from ``dist[..., 0, 0]`` to
    ``dist[..., m-1, n-1]`` (``S[i, j] = min(S[i-1, j], S[i, j-1]) + D[i, j]``), vectorised over ``...``."""
    if dist.dim() < 2 or dist.shape[-1] == 0 or dist.shape[-2] == 0:
        raise ValueError(f"shortest_path expects a (..., m, n) matrix with m, n >= 1, got {tuple(dist.shape)}")
    return _shortest_path_flipped(dist.flip(-1))


def aligned_path(dist: torch.Tensor) -> torch.Tensor:
    """Mean of the aligned (same index) stripe distances ``1/K sum_k D[k, k]`` (requires m == n)."""
    if dist.shape[-1] != dist.shape[-2]:
        raise ValueError(f"the aligned local distance needs as many stripes on both sides, got {tuple(dist.shape)}")
    return torch.diagonal(dist, dim1=-2, dim2=-1).mean(-1)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown local distance {method!r}; expected one of {METHODS}")


def local_distance(a: torch.Tensor, b: torch.Tensor, method: str = "shortest_path",
                   normalize: bool = True) -> torch.Tensor:
    """Local distance between paired stripe sets ``a`` (..., m, C) and ``b`` (..., n, C) -> (...)."""
    _check_method(method)
    d = stripe_distance(a, b, normalize)
    return shortest_path(d) if method == "shortest_path" else aligned_path(d)


def _blocks(total: int, size: int):
    for s in range(0, total, size):
        yield s, min(total, s + size)


def local_distance_matrix(x: torch.Tensor, y: torch.Tensor, method: str = "shortest_path",
                          normalize: bool = True, max_block_elems: int = 1 << 23) -> torch.Tensor:
    """All-pairs local distance ``(Nx, m, C) x (Ny, n, C) -> (Nx, Ny)``.

    Differentiable (one broadcast ``(Nx, Ny, m, n)`` matrix, for training batches) when an input requires
    grad and grad mode is on; otherwise computed block by block with in-place ops so that the stripe
    distance block never holds more than about ``max_block_elems`` values (query x gallery at test time).
    """
    _check_method(method)
    if x.dim() != 3 or y.dim() != 3 or x.shape[-1] != y.shape[-1]:
        raise ValueError(f"local_distance_matrix expects (Nx, m, C) and (Ny, n, C), got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    if method == "aligned" and x.shape[1] != y.shape[1]:
        raise ValueError(f"the aligned local distance needs as many stripes on both sides: {x.shape[1]} vs "
                         f"{y.shape[1]}")
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        return local_distance(x.unsqueeze(1), y.unsqueeze(0), method, normalize)
    with torch.no_grad():
        return _local_distance_matrix_blocked(x, y, method, normalize, max_block_elems)


def _local_distance_matrix_blocked(x, y, method, normalize, max_block_elems):
    nx, m, c = x.shape
    ny, n, _ = y.shape
    out = x.new_empty(nx, ny)
    if nx == 0 or ny == 0:
        return out
    if method == "aligned":
        bx = max(1, min(nx, max_block_elems // max(1, ny)))
        for i0, i1 in _blocks(nx, bx):
            acc = torch.zeros(i1 - i0, ny, dtype=x.dtype, device=x.device)
            for k in range(m):
                dk = torch.cdist(x[i0:i1, k], y[:, k])
                acc += normalize_distance(dk) if normalize else dk
            out[i0:i1] = acc / m
        return out
    per_pair = m * n
    by = max(1, min(ny, max_block_elems // (per_pair * min(nx, 32))))
    bx = max(1, min(nx, max_block_elems // (per_pair * by)))
    yf = y.flip(1)  # reversed gallery stripes: the block comes out as D.flip(-1) directly
    for j0, j1 in _blocks(ny, by):
        yb = yf[j0:j1].transpose(0, 1).reshape(n * (j1 - j0), c)  # stripe-major rows
        ynb = yb.pow(2).sum(1)
        for i0, i1 in _blocks(nx, bx):
            xb = x[i0:i1].transpose(0, 1).reshape(m * (i1 - i0), c)
            xnb = xb.pow(2).sum(1)
            blk = torch.mm(xb, yb.t())  # (m*bx, n*by), stripe-major on both sides
            blk.mul_(-2.0).add_(xnb[:, None]).add_(ynb[None, :]).clamp_(min=_EPS).sqrt_()
            if normalize:
                blk.mul_(0.5).tanh_()
            # (m, bx, n, by) with the gallery stripes reversed; pairs stay the contiguous inner dims
            df = blk.view(m, i1 - i0, n, j1 - j0)
            out[i0:i1, j0:j1] = _shortest_path_flipped(df, dim1=0, dim2=2)
            del blk, df
    return out


_EMPTY_WARNINGS = {"count": 0}


def _warn_empty(msg: str) -> None:
    _EMPTY_WARNINGS["count"] += 1
    c = _EMPTY_WARNINGS["count"]
    if c <= 3 or c % 100 == 0:
        logger.warning("%s (local TriHard loss set to 0; seen %d time(s))", msg, c)


def local_triplet_loss(local_feats: torch.Tensor, targets: torch.Tensor, margin: float = 0.3,
                       mining_dist: Optional[torch.Tensor] = None, method: str = "shortest_path",
                       normalize: bool = True, on_empty: str = "warn") -> Tuple[torch.Tensor, int]:
    """TriHard on the local distance (HPLF Eq. 3): ``mean_a [d(a, p*) - d(a, n*) + margin]_+``.

    ``local_feats``: (N, K, C) stripe features, ``targets``: (N,) identities. ``mining_dist`` (N, N): pick
    the hardest positive ``p* = argmax_p`` / negative ``n* = argmin_n`` on it (AlignedReID mines with the
    global distance) and apply the local distance to those pairs; ``None``: mine on the local distance
    matrix itself. ``margin <= 0`` uses the soft margin ``log(1 + e^(d_ap - d_an))``.

    An anchor needs another image of its identity and one of another identity; anchors without are left
    out of the mean. A batch with no such anchor gives a zero loss (still attached to the graph) and a
    logged warning (``on_empty="warn"``) or raises ``ValueError`` (``on_empty="raise"``); never NaN.
    Returns ``(loss, number of anchors used)``.
    """
    if local_feats.dim() != 3:
        raise ValueError(f"local_feats must be (N, K, C), got {tuple(local_feats.shape)}")
    if on_empty not in ("warn", "raise"):
        raise ValueError(f"on_empty must be 'warn' or 'raise', got {on_empty!r}")
    n = local_feats.shape[0]
    targets = targets.view(-1)
    if targets.numel() != n:
        raise ValueError(f"{n} local features but {targets.numel()} targets")
    same = targets.view(n, 1) == targets.view(1, n)
    is_pos = same & ~torch.eye(n, dtype=torch.bool, device=same.device)
    is_neg = ~same
    valid = is_pos.any(1) & is_neg.any(1)
    if not bool(valid.any()):
        msg = (f"HPLF local TriHard: no anchor in this batch of {n} has both a positive and a negative "
               f"({int(targets.unique().numel())} identities); use an identity sampler with >= 2 identities "
               f"and >= 2 images each (DATALOADER.NUM_INSTANCE)")
        if on_empty == "raise":
            raise ValueError(msg)
        _warn_empty(msg)
        return local_feats.sum() * 0.0, 0
    anchors = valid.nonzero().view(-1)
    if mining_dist is None:
        dist = local_distance_matrix(local_feats[anchors], local_feats, method, normalize)
        d_ap = dist.masked_fill(~is_pos[anchors], -math.inf).amax(1)
        d_an = dist.masked_fill(~is_neg[anchors], math.inf).amin(1)
    else:
        if mining_dist.shape != (n, n):
            raise ValueError(f"mining_dist must be ({n}, {n}), got {tuple(mining_dist.shape)}")
        md = mining_dist.detach()[anchors]
        p_idx = md.masked_fill(~is_pos[anchors], -math.inf).argmax(1)
        n_idx = md.masked_fill(~is_neg[anchors], math.inf).argmin(1)
        a = local_feats[anchors]
        pair = torch.stack([local_feats[p_idx], local_feats[n_idx]], 0)  # (2, A, K, C)
        d = local_distance(a.unsqueeze(0), pair, method, normalize)  # (2, A)
        d_ap, d_an = d[0], d[1]
    if margin > 0:
        loss = F.relu(d_ap - d_an + margin).mean()
    else:
        loss = F.softplus(d_ap - d_an).mean()
    return loss, int(anchors.numel())
