"""Why the HPLF local TriHard loss stays at its margin: a measured diagnostic (not a test).

    python -m fastreid_ext.hplf.diagnose [--config projects/HPLF/configs/SynthPed/hplf_R18.yml] [--iters 30]
        [--variant NAME ...] [--threads 1] [KEY VALUE ...]

Trains the HPLF model of ``--config`` for ``--iters`` iterations once per *variant* (a few ``MODEL.HPLF`` keys;
everything else, the initial weights and the batches are the same: ``SEED``) and prints per iteration, then a
summary table (first and last iterations):

* ``loss``: the local TriHard loss (HPLF Eq. 3 on the AlignedReID local distance);
* ``stripe d``: mean Euclidean distance between stripe features of two different images of the batch;
* ``sat``: fraction of those stripe distances whose normalised value ``(e^d - 1)/(e^d + 1) = tanh(d / 2)`` is above
  0.99, i.e. where its slope ``(1 - tanh^2) / 2`` is below 0.01 (the largest slope is 0.5, at d = 0); with
  ``NORMALIZE_DIST False`` the column is 0;
* ``d_an - d_ap``: mean over anchors of the local distance to the mined hardest negative minus the one to the
  mined hardest positive (the loss is ``mean(relu(margin - (d_an - d_ap)))``);
* ``active``: fraction of anchors whose hinge is open (``d_an - d_ap < margin``);
* ``|grad|``: norm of d(local loss) / d(stripe features), i.e. how much the local loss pushes the branch.

The optimizer is plain Adam on every parameter at the config's ``SOLVER.BASE_LR`` (constant, no warm-up) and
``SOLVER.WEIGHT_DECAY``, so that the variants differ only in their ``MODEL.HPLF`` keys. The variants:
``shipped`` (the SynthPed config as shipped before the fix: raw BN + ReLU stripes, global mining), ``mining-local``,
``normfeat-global``, ``paper`` (the new defaults: L2-normalised stripes, local mining), ``raw-distance``
(``NORMALIZE_DIST False``: plain Euclidean stripe distances, raw stripes, local mining).
"""
from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, Optional, Sequence

import torch

#: name -> MODEL.HPLF overrides
VARIANTS: Dict[str, List[str]] = {
    "shipped": ["MODEL.HPLF.NORM_FEAT", "False", "MODEL.HPLF.MINING", "global"],
    "mining-local": ["MODEL.HPLF.NORM_FEAT", "False", "MODEL.HPLF.MINING", "local"],
    "normfeat-global": ["MODEL.HPLF.NORM_FEAT", "True", "MODEL.HPLF.MINING", "global"],
    "paper": ["MODEL.HPLF.NORM_FEAT", "True", "MODEL.HPLF.MINING", "local"],
    "raw-distance": ["MODEL.HPLF.NORM_FEAT", "False", "MODEL.HPLF.MINING", "local",
                     "MODEL.HPLF.NORMALIZE_DIST", "False"],
}
DEFAULT_VARIANTS = ("shipped", "mining-local", "normfeat-global", "paper")
COLUMNS = ("loss", "stripe d", "sat", "d_an - d_ap", "active", "|grad|")


@torch.no_grad()
def local_branch_stats(model, local: torch.Tensor, global_feat: torch.Tensor, targets: torch.Tensor) -> dict:
    """The diagnostic's statistics (module docstring) of one batch of stripe features ``local`` (N, K, C)."""
    from ..functional.local_distance import local_distance_matrix, normalize_distance

    n = local.shape[0]
    raw = torch.cdist(local.unsqueeze(1), local.unsqueeze(0))  # (N, N, K, K) stripe-to-stripe Euclidean distances
    other = ~torch.eye(n, dtype=torch.bool, device=local.device)
    d = raw[other]
    sat = float((normalize_distance(d) > 0.99).float().mean()) if model.normalize_dist else 0.0
    dist = local_distance_matrix(local, local, model.distance, model.normalize_dist)
    same = targets.view(-1, 1) == targets.view(1, -1)
    is_pos, is_neg = same & other, ~same
    valid = is_pos.any(1) & is_neg.any(1)
    if model.mining == "global":
        from fastreid.modeling.losses.utils import cosine_dist, euclidean_dist

        g = global_feat
        md = cosine_dist(g, g) if model.loss_kwargs["tri"].get("norm_feat") else euclidean_dist(g, g)
    else:
        md = dist
    p = md.masked_fill(~is_pos, -math.inf).argmax(1)
    q = md.masked_fill(~is_neg, math.inf).argmin(1)
    idx = torch.arange(n, device=local.device)
    gap = (dist[idx, q] - dist[idx, p])[valid]
    return {"stripe d": float(d.mean()), "sat": sat, "d_an - d_ap": float(gap.mean()),
            "active": float((gap < model.local_margin).float().mean())}


def build_cfg(config: str, opts: Sequence[str]):
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"] + list(opts))
    if cfg.SEED < 0:
        cfg.SEED = 0
    return cfg


def run_variant(cfg, iters: int, log_every: int = 1, prefix: str = "") -> List[dict]:
    """Train ``cfg``'s HPLF model for ``iters`` iterations; the statistics of every iteration."""
    from fastreid.modeling import build_model
    from fastreid.utils.env import seed_all_rng

    from ..data.build import build_train_loader, build_train_set

    train_set = build_train_set(cfg)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = train_set.num_classes
    seed_all_rng(int(cfg.SEED))
    model = build_model(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    loader = iter(build_train_loader(cfg, train_set, seed=int(cfg.SEED)))
    rows = []
    for it in range(iters):
        batch = next(loader)
        targets = batch["targets"]
        out = model.branch_outputs(batch, targets)
        local = out.context["local"]
        local.retain_grad()
        losses = model.model_losses(out, batch, targets)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        row = {"iter": it, "loss": float(losses["loss_local_triplet"].detach()),
               "|grad|": float(local.grad.norm()) if local.grad is not None else 0.0}
        row.update(local_branch_stats(model, local.detach(), out.heads["plain"]["features"].detach(), targets))
        opt.step()
        rows.append(row)
        if log_every and (it % log_every == 0 or it == iters - 1):
            print(prefix + " ".join(f"{k} {row[k]:.4g}" if isinstance(row[k], float) else f"{k} {row[k]}"
                                    for k in ("iter",) + COLUMNS), flush=True)
    return rows


def summary_table(results: Dict[str, List[dict]], window: int = 3) -> str:
    """Markdown: per variant, the mean of each column over the first and the last ``window`` iterations."""
    lines = ["| variant | " + " | ".join(f"{c} (first -> last)" for c in COLUMNS) + " |",
             "| --- | " + " | ".join("---" for _ in COLUMNS) + " |"]
    for name, rows in results.items():
        first, last = rows[:window], rows[-window:]
        cells = []
        for c in COLUMNS:
            a = sum(r[c] for r in first) / len(first)
            b = sum(r[c] for r in last) / len(last)
            cells.append(f"{a:.4g} -> {b:.4g}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[dict]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="projects/HPLF/configs/SynthPed/hplf_R18.yml")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    ap.add_argument("--window", type=int, default=3, help="iterations averaged at both ends of the summary")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every variant")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = {}
    for name in args.variant or DEFAULT_VARIANTS:
        cfg = build_cfg(args.config, list(args.opts) + VARIANTS[name])
        t0 = time.perf_counter()
        results[name] = run_variant(cfg, args.iters, prefix=f"[{name}] ")
        print(f"[{name}] {args.iters} iterations in {time.perf_counter() - t0:.0f} s", flush=True)
    text = summary_table(results, args.window)
    print("\n" + text, flush=True)
    return results


if __name__ == "__main__":
    main()
