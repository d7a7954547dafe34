"""How strongly each loss term pulls on each group of parameters: the L2 norm of d(loss_k)/d(group) per term.

A multi-loss model (FastReID's Baseline: ID + triplet; RBNet: Eq. 4's five terms, Yu & Piao, "Reverse backbone net
for unsupervised person re-identification", J. Jilin Univ. 2024) trains its shared weights with the sum of the
terms' gradients. With an adaptive optimiser such as Adam the update's *direction* is set by whichever term's
gradient is largest, whatever the loss weights suggest, so comparing the per-term gradient norms on the shared
backbone is the first diagnostic when one term's branch stops the others from learning. Plain torch; autograd gives
the per-term gradients (one ``torch.autograd.grad`` per term over a retained graph), nothing here is hand-derived.
"""
from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch


def loss_gradient_norms(losses: Mapping[str, torch.Tensor],
                        groups: Mapping[str, Sequence[torch.nn.Parameter]]) -> Dict[str, Dict[str, float]]:
    """``{term: {group: ||d term / d group||_2}}`` for every loss term and parameter group, plus a ``"total"`` row
    for the sum of the terms. A term that does not reach a group (no path in the graph) gets 0.0. The graph of
    ``losses`` must still be alive (computed in this call's caller, not yet backpropagated); it is kept."""
    terms = dict(losses)
    if not terms:
        raise ValueError("loss_gradient_norms: no loss terms given")
    terms["total"] = sum(terms.values())
    out: Dict[str, Dict[str, float]] = {}
    for name, loss in terms.items():
        if loss.dim() != 0:
            raise ValueError(f"loss term {name!r} is not a scalar (shape {tuple(loss.shape)})")
        out[name] = {}
        for gname, params in groups.items():
            params = [p for p in params if p.requires_grad]
            if not params or not loss.requires_grad:
                out[name][gname] = 0.0
                continue
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            sq = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
            out[name][gname] = sq ** 0.5
    return out


def mean_norms(runs: Sequence[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """Element-wise mean of several :func:`loss_gradient_norms` results (same terms and groups, e.g. per batch)."""
    if not runs:
        raise ValueError("mean_norms: nothing to average")
    return {t: {g: sum(r[t][g] for r in runs) / len(runs) for g in runs[0][t]} for t in runs[0]}
