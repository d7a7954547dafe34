"""More CMC ranks in an evaluator's results: ``Rank-20`` next to FastReID's ``Rank-1/5/10``.

FastReID 1.4.0's ``ReidEvaluator.evaluate`` computes the whole CMC curve (``evaluate_rank``, 50 ranks) but keeps only
``Rank-1``, ``Rank-5`` and ``Rank-10``. Papers often report Rank-20 as well (e.g. the HPLF paper's Tables 2 and 4).
:func:`with_extra_ranks` makes one evaluator's ``evaluate()`` record the CMC curves (and mAP) of its
``evaluate_rank`` calls and, for every group of keys ``<prefix>Rank-1`` in its results (``Rank-1``, ``GL/Rank-1``,
``mean1/Rank-1``, ...), add ``<prefix>Rank-k`` from the recorded curve whose Rank-1/5/10 and mAP are the group's,
right after the group's last ``Rank-*`` key. Every FastReID key and value stays as it was, so ``print_csv_format``
shows one more column and hooks / checkpointers see the same keys plus the new ones. A key the evaluator already
reports (e.g. its own ``Rank-20``) is left alone; a group no recorded curve matches gets nothing.
"""
from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from typing import Iterator, List, Optional, Sequence

import numpy as np

__all__ = ["EXTRA_RANKS", "recording_cmc", "add_ranks", "matching_curve", "with_extra_ranks"]

#: ranks added to every evaluation by our ``Trainer``
EXTRA_RANKS = (20,)


@contextlib.contextmanager
def recording_cmc() -> Iterator[List]:
    """While active, every call of ``fastreid.evaluation.rank.evaluate_rank`` (what FastReID's evaluators import
    at evaluation time) appends ``(CMC curve, mAP in percent)`` to the yielded list."""
    import fastreid.evaluation.rank as fr_rank

    original = fr_rank.evaluate_rank
    curves: List = []

    @functools.wraps(original)
    def evaluate_rank(*args, **kwargs):
        out = original(*args, **kwargs)
        curves.append((out[0], float(np.mean(out[1])) * 100 if len(out[1]) else float("nan")))
        return out

    fr_rank.evaluate_rank = evaluate_rank
    try:
        yield curves
    finally:
        fr_rank.evaluate_rank = original


def add_ranks(results: dict, cmc, ranks: Sequence[int] = EXTRA_RANKS, prefix: str = "") -> dict:
    """``results`` with ``{prefix}Rank-k`` (percent) for every ``k`` in ``ranks`` that it lacks, placed after its
    last ``{prefix}Rank-*`` key. A CMC curve shorter than ``k`` (a gallery of fewer than ``k`` images) gives its
    last value: every true match is then within the top k."""
    new = [(f"{prefix}Rank-{k}", float(cmc[min(k, len(cmc)) - 1]) * 100) for k in ranks
           if f"{prefix}Rank-{k}" not in results and len(cmc)]
    if not new:
        return results
    keys = list(results)
    rank_keys = [i for i, k in enumerate(keys) if k.startswith(f"{prefix}Rank-")]
    at = rank_keys[-1] + 1 if rank_keys else len(keys)
    items = list(results.items())
    out = OrderedDict(items[:at] + new + items[at:])
    if type(results) is dict:
        out = dict(out)
    return out


def matching_curve(results: dict, curves: Sequence, prefix: str = "", tol: float = 1e-3) -> Optional[np.ndarray]:
    """The first recorded ``(cmc, mAP)`` of ``curves`` whose Rank-1/5/10 and mAP equal ``results``'
    ``{prefix}Rank-1/5/10`` / ``{prefix}mAP`` (those present, within ``tol`` percent); ``None`` if there is none."""
    checks = [(k, results[f"{prefix}Rank-{k}"]) for k in (1, 5, 10) if f"{prefix}Rank-{k}" in results]
    m_ap = results.get(f"{prefix}mAP")
    for cmc, cmap in curves:
        if not len(cmc):
            continue
        if all(abs(float(cmc[min(k, len(cmc)) - 1]) * 100 - float(v)) <= tol for k, v in checks) and \
                (m_ap is None or abs(cmap - float(m_ap)) <= tol):
            return cmc
    return None


def with_extra_ranks(evaluator, ranks: Sequence[int] = EXTRA_RANKS):
    """Make ``evaluator.evaluate()`` also report ``Rank-k`` for ``ranks`` (module docstring); returns ``evaluator``
    (same object and class). Idempotent."""
    if evaluator is None or getattr(evaluator, "_extra_ranks", None) is not None:
        return evaluator
    evaluate = evaluator.evaluate

    @functools.wraps(evaluate)
    def evaluate_with_ranks(*args, **kwargs):
        with recording_cmc() as curves:
            results = evaluate(*args, **kwargs)
        if not curves or not isinstance(results, dict):
            return results
        for prefix in [k[:-len("Rank-1")] for k in list(results) if k.endswith("Rank-1")]:
            cmc = matching_curve(results, curves, prefix)
            if cmc is not None:
                results = add_ranks(results, cmc, ranks, prefix)
        if isinstance(getattr(evaluator, "_results", None), dict) and evaluator._results is not results:
            evaluator._results = OrderedDict(results)
        return results

    evaluator._extra_ranks = tuple(ranks)
    evaluator.evaluate = evaluate_with_ranks
    return evaluator
