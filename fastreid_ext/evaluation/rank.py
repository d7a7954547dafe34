"""Vectorized CMC / mAP / mINP evaluation, numerically identical to FastReID's Cython.

FastReID 1.4.0 evaluates re-identification rankings with
``fastreid/evaluation/rank_cylib/rank_cy.pyx`` (``evaluate_cy``) and falls back
to ``fastreid/evaluation/rank.py`` (a per-query Python loop, broken on
numpy >= 1.24 by ``np.bool``).  :func:`evaluate_rank_vectorized` re-implements
``evaluate_cy`` with chunked numpy array code and returns *the same numbers*:

* identical ranking: ``np.argsort(np.asarray(distmat, np.float32), axis=1)``
  (numpy's default sort kind, exactly as the Cython), so ties are broken the
  same way;
* identical floating point: the Cython accumulates AP terms in a C ``float``
  (``tmp_cmc_sum += k / (i + 1.)`` with a ``double`` addend), computes INP in
  ``double`` then stores a ``float``, and sums the CMC rows in ``float``; all of
  this is reproduced operation by operation;
* identical quirks: with ``num_gallery < max_rank`` the Cython copies stale
  values of its reused ``cmc`` buffer into the CMC of queries whose filtered
  gallery is shorter than ``max_rank`` (market mode) and zero-pads it
  (cuhk03 mode); both are reproduced;
* identical randomness (cuhk03 mode): the single-gallery-shot sampling draws
  ``np.random.choice(idxs)`` for every (valid query, repeat, gallery identity)
  in that order, identities in order of first appearance in the ranked,
  filtered gallery.  ``np.random.choice`` on a length-``n`` list consumes the
  legacy global ``RandomState`` exactly like ``np.random.randint(0, n)``, and
  the array form ``np.random.randint(0, highs)`` consumes it exactly like the
  same scalar calls in sequence (checked empirically for numpy 1.26, including
  ``n == 1`` which draws nothing), so one vectorized call per query chunk
  reproduces the Cython's random stream.

Definitions (Ye et al., "Deep Learning for Person Re-identification: A Survey
and Outlook", TPAMI 2021, Sec. 2.1/4.1 and Eq. of mINP):

* gallery samples with the same identity *and* camera as the query are
  discarded (Market-1501 protocol); queries with no remaining true match are
  skipped;
* CMC-k (rank-k accuracy): fraction of valid queries with a true match among
  the top-k ranked gallery samples;
* AP: mean over the true matches of the precision at their ranks,
  ``AP = 1/|G| * sum_i i / rank_i``; mAP is the mean AP over valid queries;
* INP = ``|G| / R_hard`` where ``R_hard`` is the rank of the hardest (last)
  true match; mINP is its mean over valid queries.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["evaluate_rank", "evaluate_rank_vectorized"]

#: Target number of distance-matrix elements per query chunk (~4 MiB of
#: float32 distances, ~8 MiB of argsort indices): keeps memory bounded and the
#: working set cache friendly on Market/MSMT-sized problems.
CHUNK_ELEMENTS = 1 << 20

_NUM_REPEATS = 10  # cuhk03 single-gallery-shot repeats, as in FastReID


# --------------------------------------------------------------------------- input helpers
def _to_numpy(x, dtype) -> np.ndarray:
    """``np.asarray(x, dtype)`` that also accepts (CUDA) torch tensors."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach"):
        x = x.detach().cpu()
        try:
            x = x.numpy()
        except TypeError:  # e.g. bfloat16 has no numpy dtype
            x = x.float().numpy()
    return np.asarray(x, dtype=dtype)


def _prepare(distmat, q_pids, g_pids, q_camids, g_camids):
    # the same dtypes the Cython forces: float32 distances, int64 labels
    distmat = _to_numpy(distmat, np.float32)
    q_pids = _to_numpy(q_pids, np.int64).reshape(-1)
    g_pids = _to_numpy(g_pids, np.int64).reshape(-1)
    q_camids = _to_numpy(q_camids, np.int64).reshape(-1)
    g_camids = _to_numpy(g_camids, np.int64).reshape(-1)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D, got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    if q_pids.shape[0] != num_q or q_camids.shape[0] != num_q:
        raise ValueError("q_pids/q_camids length must equal distmat.shape[0]")
    if g_pids.shape[0] != num_g or g_camids.shape[0] != num_g:
        raise ValueError("g_pids/g_camids length must equal distmat.shape[1]")
    return distmat, q_pids, g_pids, q_camids, g_camids


def _chunk_rows(num_q: int, num_g: int, chunk_size: Optional[int]) -> int:
    if chunk_size is None:
        chunk_size = CHUNK_ELEMENTS // max(num_g, 1)
    return int(max(1, min(chunk_size, max(num_q, 1))))


def _dense_labels(q_pids: np.ndarray, g_pids: np.ndarray):
    """Map pids to dense ``int32`` codes; query pids absent from the gallery get -1."""
    uniq, g_code = np.unique(g_pids, return_inverse=True)
    g_code = g_code.astype(np.int32, copy=False)
    pos = np.searchsorted(uniq, q_pids)
    pos_c = np.minimum(pos, max(len(uniq) - 1, 0))
    found = (pos < len(uniq)) & (uniq[pos_c] == q_pids) if len(uniq) else np.zeros(len(q_pids), bool)
    q_code = np.where(found, pos_c, -1).astype(np.int32)
    return q_code, g_code, len(uniq)


# --------------------------------------------------------------------------- shared kernels
def _ap_float32(rows: np.ndarray, ranks: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """AP per row, reproducing the Cython's float32 accumulation bit for bit.

    ``rows``/``ranks``: row index and 0-based filtered rank of every true
    match, sorted by (row, rank); ``n_pos[r]`` (> 0) matches in row ``r``.
    The Cython computes ``tmp_cmc_sum += (k / (rank + 1.)) * 1`` with a C
    ``float`` accumulator and a ``double`` addend, then ``tmp_cmc_sum / num_rel``
    in float.  The k-th positive of every row is processed in one vector step
    (a loop over k, not over queries); rows are visited longest-first so the
    active rows always form a prefix.
    """
    n_rows = n_pos.shape[0]
    starts = np.zeros(n_rows, dtype=np.int64)
    np.cumsum(n_pos[:-1], out=starts[1:])
    k = np.arange(rows.shape[0], dtype=np.int64) - starts[rows] + 1  # 1-based hit count
    terms = k / (ranks + 1.0)  # float64, as the C division by (g_idx + 1.)
    by_len = np.argsort(-n_pos, kind="stable")
    start_s = starts[by_len]
    len_s = n_pos[by_len]
    acc = np.zeros(n_rows, dtype=np.float32)
    max_len = int(len_s[0]) if n_rows else 0
    # number of rows still active at step j: rows with n_pos > j (a prefix)
    active_counts = np.searchsorted(-len_s, -np.arange(max_len), side="left")
    for j in range(max_len):
        a = int(active_counts[j])
        if a == 0:
            break
        acc[:a] = (acc[:a].astype(np.float64) + terms[start_s[:a] + j]).astype(np.float32)
    out = np.empty(n_rows, dtype=np.float32)
    out[by_len] = acc / n_pos[by_len].astype(np.float32)
    return out


def _inp_float32(last_rank: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """INP = |G| / (rank of the last true match), double division stored as float."""
    return (n_pos.astype(np.float64) / (last_rank.astype(np.float64) + 1.0)).astype(np.float32)


def _row_groups(rows: np.ndarray, n_rows: int):
    """Counts and first/last element index of each row in a row-sorted flat array."""
    counts = np.bincount(rows, minlength=n_rows).astype(np.int64)
    ends = np.cumsum(counts)
    return counts, ends - counts, ends - 1


# --------------------------------------------------------------------------- market-1501 mode
def _ranked_hits(order: np.ndarray, match: np.ndarray, buf: np.ndarray):
    """(row, rank) of every true match, row-major, given the ranking ``order``.

    ``match`` (bool, gallery order) is permuted into ranked order with one
    ``np.take`` into the preallocated ``buf``; the (sparse) non-zeros are then
    found 8 bytes at a time through a ``uint64`` view.
    """
    c, num_g = order.shape
    n = c * num_g
    flat = order + (np.arange(c, dtype=np.int64) * num_g)[:, None]
    ranked = buf[:n].reshape(c, num_g)
    np.take(match.reshape(-1), flat, out=ranked, mode="wrap")  # indices are valid: no buffering
    del flat
    n_words = (n + 7) // 8
    buf[n:n_words * 8] = False
    words = buf[:n_words * 8].view(np.uint64)
    nz_words = np.flatnonzero(words)
    if nz_words.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    w, b = np.nonzero(buf[:n_words * 8].reshape(n_words, 8)[nz_words])
    flat_hits = nz_words[w] * 8 + b
    return flat_hits // num_g, flat_hits % num_g


def _eval_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size):
    num_q, num_g = distmat.shape
    rows_per_chunk = _chunk_rows(num_q, num_g, chunk_size)
    q_code, g_code, _ = _dense_labels(q_pids, g_pids)
    g_code_row = g_code[None, :]
    rank_grid = np.arange(max_rank, dtype=np.int64)

    buf = np.zeros(rows_per_chunk * num_g + 8, dtype=bool)  # reused take() output
    cmc_counts = np.zeros(max_rank, dtype=np.int64)  # valid queries whose first hit <= r
    stale = np.zeros(max_rank, dtype=np.float32)  # Cython's reused cmc buffer (tail)
    aps, inps = [], []
    num_valid = 0

    for s in range(0, num_q, rows_per_chunk):
        e = min(s + rows_per_chunk, num_q)
        c = e - s
        order = np.argsort(distmat[s:e], axis=1)  # int64 (c, num_g), ties as the Cython
        hit_rows, hit_cols = _ranked_hits(order, g_code_row == q_code[s:e, None], buf)
        if hit_rows.size:
            g_idx = order[hit_rows, hit_cols]
            removed = g_camids[g_idx] == q_camids[s + hit_rows]  # same pid AND same camera
        else:
            removed = np.zeros(0, dtype=bool)
        del order
        # filtered rank = raw rank - number of removed samples ranked before it
        # (removed samples are always true-match entries, so counting them
        # among the hits of the same row is enough)
        n_hits, hit_first, _ = _row_groups(hit_rows, c)
        removed_excl = np.cumsum(removed, dtype=np.int64) - removed  # over all rows
        row_base = np.zeros(c, dtype=np.int64)
        has_hits = n_hits > 0
        row_base[has_hits] = removed_excl[hit_first[has_hits]]
        n_removed_row = np.bincount(hit_rows, weights=removed, minlength=c).astype(np.int64)
        keep = ~removed
        pos_rows = hit_rows[keep]
        pos_ranks = (hit_cols - (removed_excl - row_base[hit_rows]))[keep]

        n_pos, first_idx, last_idx = _row_groups(pos_rows, c)
        valid = n_pos > 0
        nv = int(valid.sum())
        if nv == 0:
            continue
        num_valid += nv
        vrows = np.flatnonzero(valid)
        fr = pos_ranks[first_idx[vrows]]  # first true match (0-based filtered rank)
        last_rank = pos_ranks[last_idx[vrows]]
        nr = num_g - n_removed_row[vrows]  # filtered gallery length per query

        inps.append(_inp_float32(last_rank, n_pos[vrows]))
        # positives of valid rows are all positives; re-index rows densely
        dense_row = np.cumsum(valid) - 1
        aps.append(_ap_float32(dense_row[pos_rows], pos_ranks, n_pos[vrows]))

        if int(nr.min()) >= max_rank:
            # common case: cmc row = [first_rank <= r]; only counts are needed
            cmc_counts += np.cumsum(np.bincount(np.minimum(fr, max_rank), minlength=max_rank + 1))[:max_rank]
            # the last valid query wrote every position < max_rank as
            # min(cumsum, 1) = [first_rank <= r]
            stale = (rank_grid >= fr[-1]).astype(np.float32)
        else:
            # tiny gallery: positions >= n_real keep the Cython buffer's stale
            # values from the last valid query that wrote them
            written = nr[:, None] > rank_grid[None, :]  # (nv, max_rank)
            vals = (rank_grid[None, :] >= fr[:, None]).astype(np.float32)
            src = np.where(written, np.arange(nv)[:, None], -1)
            np.maximum.accumulate(src, axis=0, out=src)
            filled = np.where(src >= 0, vals[np.maximum(src, 0), rank_grid[None, :]], stale[None, :])
            cmc_counts += filled.sum(axis=0, dtype=np.float64).astype(np.int64)
            stale = filled[-1].astype(np.float32)

    if num_valid == 0:
        raise AssertionError("Error: all query identities do not appear in gallery")
    # the Cython sums 0/1 floats (exact) then divides in float32
    cmc = cmc_counts.astype(np.float32) / np.float32(num_valid)
    all_ap = np.concatenate(aps).astype(np.float32, copy=False)
    all_inp = np.concatenate(inps).astype(np.float32, copy=False)
    return cmc.astype(np.float32), all_ap, all_inp


# --------------------------------------------------------------------------- cuhk03 mode
def _repeat_cmc_table() -> np.ndarray:
    """Value of the Cython's float32 ``cmc += masked_cmc / 10`` after m hits, m = 0..10."""
    step = np.float32(1.0) / np.float32(_NUM_REPEATS)
    table = [np.float32(0.0)]
    for _ in range(_NUM_REPEATS):
        table.append(np.float32(table[-1] + step))
    return np.asarray(table, dtype=np.float32)


def _eval_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size):
    num_q, num_g = distmat.shape
    rows_per_chunk = _chunk_rows(num_q, num_g, chunk_size)
    q_code, g_code, n_ids = _dense_labels(q_pids, g_pids)
    table = _repeat_cmc_table()
    rank_grid = np.arange(max_rank, dtype=np.int64)
    R = _NUM_REPEATS

    cmc_rows, aps = [], []
    for s in range(0, num_q, rows_per_chunk):
        e = min(s + rows_per_chunk, num_q)
        c = e - s
        order = np.argsort(distmat[s:e], axis=1)
        gp = g_code[order]  # int32 (c, num_g), gallery identity in ranked order
        match = gp == q_code[s:e, None]
        keep = ~(match & (g_camids[order] == q_camids[s:e, None]))
        del order
        n_real = keep.sum(axis=1)
        n_pos = (match & keep).sum(axis=1)
        valid = n_pos > 0
        if not valid.any():
            continue
        vrows = np.flatnonzero(valid)
        nv = vrows.size
        # flattened filtered ranked lists of the valid queries (row-major)
        keep_v = keep[vrows]
        pid_k = gp[vrows][keep_v]
        match_k = match[vrows][keep_v]
        del gp, match, keep, keep_v
        len_v = n_real[vrows].astype(np.int64)
        starts = np.cumsum(len_v) - len_v
        row_k = np.repeat(np.arange(nv, dtype=np.int64), len_v)
        pos_k = np.arange(row_k.size, dtype=np.int64) - starts[row_k]

        # AP, exactly as in market mode
        aps.append(_ap_float32(row_k[match_k], pos_k[match_k], n_pos[vrows].astype(np.int64)))

        # gallery identities per query, in order of first appearance
        key = row_k * n_ids + pid_k
        srt = np.argsort(key, kind="stable")  # groups, positions ascending inside
        key_s = key[srt]
        pos_s = pos_k[srt]
        del key, srt
        gstart = np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]])
        gsize = np.diff(np.r_[gstart, key_s.size])
        grow = key_s[gstart] // n_ids
        gpid = key_s[gstart] - grow * n_ids
        gfirst = pos_s[gstart]
        go = np.lexsort((gfirst, grow))  # (row, first appearance)
        gstart, gsize, grow, gpid = gstart[go], gsize[go], grow[go], gpid[go]
        ng = np.bincount(grow, minlength=nv).astype(np.int64)  # identities per query
        g_off = np.cumsum(ng) - ng

        # one draw per (query, repeat, identity), in the Cython's loop order
        n_draw = R * ng
        d_off = np.cumsum(n_draw) - n_draw
        d_row = np.repeat(np.arange(nv, dtype=np.int64), n_draw)
        t = np.arange(d_row.size, dtype=np.int64) - d_off[d_row]
        ng_d = ng[d_row]
        d_rep = t // ng_d
        d_grp = g_off[d_row] + (t - d_rep * ng_d)
        del t, ng_d
        draws = np.random.randint(0, gsize[d_grp])  # == np.random.choice(idxs) in sequence
        sel = pos_s[gstart[d_grp] + draws]  # filtered position of the sampled image
        del draws
        rr = d_row * R + d_rep  # (query, repeat) id
        is_true = gpid[d_grp] == q_code[s + vrows][d_row]
        s_true = np.zeros(nv * R, dtype=np.int64)
        s_true[rr[is_true]] = sel[is_true]
        # rank of the true identity among the sampled images (0-based)
        rank = np.bincount(rr, weights=sel < s_true[rr], minlength=nv * R).astype(np.int64)
        del d_row, d_rep, d_grp, sel, rr, is_true
        rank = rank.reshape(nv, R)
        # hits[q, r] = #repeats with rank <= r, zero past the sampled list (n ids)
        hist = np.zeros((nv, max_rank + 1), dtype=np.int64)
        np.add.at(hist, (np.repeat(np.arange(nv), R), np.minimum(rank, max_rank).reshape(-1)), 1)
        hits = np.cumsum(hist, axis=1)[:, :max_rank]
        hits[rank_grid[None, :] >= ng[:, None]] = 0
        cmc_rows.append(table[hits])

    if not cmc_rows:
        raise AssertionError("Error: all query identities do not appear in gallery")
    all_cmc = np.concatenate(cmc_rows, axis=0)
    all_ap = np.concatenate(aps)
    num_valid = np.float32(all_cmc.shape[0])
    # the Cython sums per rank / over queries sequentially in float32
    if max_rank:
        cmc = np.cumsum(all_cmc, axis=0, dtype=np.float32)[-1] / num_valid
    else:
        cmc = np.zeros(0, dtype=np.float32)
    m_ap = np.cumsum(all_ap, dtype=np.float32)[-1] / num_valid
    return cmc.astype(np.float32), float(m_ap)


# --------------------------------------------------------------------------- public API
def evaluate_rank_vectorized(
        distmat,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        max_rank: int = 50,
        use_metric_cuhk03: bool = False,
        chunk_size: Optional[int] = None,
):
    """Chunked numpy re-implementation of FastReID's Cython ``evaluate_cy``.

    Args:
        distmat: (num_query, num_gallery) distances (numpy array or torch
            tensor), smaller is closer; cast to float32 like the Cython.
        q_pids, g_pids, q_camids, g_camids: 1-D identity / camera labels.
        max_rank: length of the CMC curve, clipped to ``num_gallery``.
        use_metric_cuhk03: CUHK03 single-gallery-shot CMC (10 random repeats
            drawn from the global ``np.random`` state, same stream as FastReID).
        chunk_size: queries per chunk (default: ~``CHUNK_ELEMENTS`` distances).

    Returns:
        market mode: ``(cmc float32[max_rank], all_AP float32[num_valid],
        all_INP float32[num_valid])`` — CMC, AP and INP as defined in Ye et al.,
        "Deep Learning for Person Re-identification: A Survey and Outlook"
        (mAP = ``all_AP.mean()``, mINP = ``all_INP.mean()``);
        cuhk03 mode: ``(cmc float32[max_rank], mAP float)``.

    Raises:
        AssertionError: when no query has a true match left in the gallery
        (same message as FastReID).
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _prepare(distmat, q_pids, g_pids, q_camids, g_camids)
    num_g = distmat.shape[1]
    max_rank = int(max_rank)
    if num_g < max_rank:
        max_rank = num_g
        logger.info("Note: number of gallery samples is quite small, got %d", num_g)
    if use_metric_cuhk03:
        return _eval_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size)
    return _eval_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, chunk_size)


def evaluate_rank(
        distmat,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        max_rank: int = 50,
        use_metric_cuhk03: bool = False,
        use_cython: bool = True,
):
    """Drop-in replacement for ``fastreid.evaluation.rank.evaluate_rank``.

    Uses FastReID's compiled Cython ``evaluate_cy`` when ``use_cython`` and
    :func:`fastreid_ext.evaluation.cython_build.load_cython_evaluator` finds a
    cached build (nothing is compiled here), else
    :func:`evaluate_rank_vectorized`; both return the same numbers.  Accepts
    numpy arrays or torch tensors.  Returns ``(cmc, all_AP, all_INP)`` in market
    mode and ``(cmc, mAP)`` in cuhk03 mode (CMC/AP/INP per Ye et al., "Deep
    Learning for Person Re-identification: A Survey and Outlook").
    """
    distmat, q_pids, g_pids, q_camids, g_camids = _prepare(distmat, q_pids, g_pids, q_camids, g_camids)
    if use_cython:
        rank_cy = _cython_module()
        if rank_cy is not None:
            return rank_cy.evaluate_cy(distmat, q_pids, g_pids, q_camids, g_camids,
                                       max_rank, use_metric_cuhk03)
    return evaluate_rank_vectorized(distmat, q_pids, g_pids, q_camids, g_camids,
                                    max_rank, use_metric_cuhk03)


def _cython_module():
    try:
        from .cython_build import load_cython_evaluator
    except ImportError:  # pragma: no cover
        return None
    return load_cython_evaluator()
