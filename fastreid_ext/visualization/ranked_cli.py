"""Command line of ``tools/visualize_ranked.py``: ranked lists (worst AP first), distance distributions and ROC.

    python tools/visualize_ranked.py --config-file CONFIG --weights CKPT [--dataset NAME] [--topk 10] \\
        [--num-vis 100] [--order worst|best|index] [--grid 8] --output DIR [KEY VALUE ...]

What it writes (``--output``; per member in a sub-folder for a wrapper such as MMT):

* ``ranked/NNNNN_<query>.jpg`` (``--ext``) for ``--num-vis`` queries (``-1``: all), in ``--order`` (default ``worst``: lowest AP
  first, what one looks at to find failures): the query, then its top-k gallery images with a green border for a
  true match and a red one otherwise; gallery images of the query's identity and camera are skipped, as the
  evaluator does (:mod:`fastreid_ext.visualization.ranked`);
* ``grid.png``: the first ``--grid`` of those rows under each other;
* ``distances.png`` (positive / negative pair distances) and ``roc.png`` (ROC with its AUC), as FastReID's
  ``demo/visualize_result.py`` draws them;
* ``per_query.csv`` (AP, rank of the first true match) and ``summary.json`` (mAP, CMC, AUC; the same numbers as
  FastReID's evaluator on the same features and metric).

The test feature is the interface's ``retrieval_feature(branch_features(batch))`` (``--feature inference``: the
model's eval forward instead), compared with ``TEST.METRIC`` (cosine or FastReID's squared Euclidean). Memory is
bounded: images are streamed to extract features (only the (N, D) features are kept), queries are ranked
``--chunk`` at a time against the gallery, distances go into fixed histograms, pictures read their images from disk.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
from typing import Dict, Optional, Sequence

import numpy as np

from .ranked import DistanceHistogram, distances, plot_distributions, plot_roc, query_order, rank_chunk, ranked_row

__all__ = ["build_parser", "main", "extract_features", "rank_and_draw"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize_ranked.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS)")
    p.add_argument("--member", default="", help="of a wrapper (MMT): only this member (e.g. mean1)")
    p.add_argument("--dataset", default="", help="registered dataset (default: DATASETS.TESTS[0])")
    p.add_argument("--feature", default="retrieval", choices=("retrieval", "inference"))
    p.add_argument("--metric", default="", choices=("", "cosine", "euclidean"), help="default: TEST.METRIC")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--num-vis", type=int, default=100, help="ranked lists to draw (-1: every query)")
    p.add_argument("--order", default="worst", choices=("worst", "best", "index"))
    p.add_argument("--grid", type=int, default=8, help="rows in grid.png (0: none)")
    p.add_argument("--size", type=int, nargs=2, default=(128, 64), metavar=("H", "W"), help="picture cell size")
    p.add_argument("--chunk", type=int, default=128, help="queries ranked at a time")
    p.add_argument("--bins", type=int, default=4000, help="histogram bins of the distances")
    p.add_argument("--ext", default="jpg", choices=("jpg", "png"), help="format of the per-query pictures")
    p.add_argument("--output", default="vis/ranked")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def extract_features(models, dataset, feature: str = "retrieval", batch_size: int = 64, workers: int = 0,
                     progress: bool = True, desc: str = "features") -> Dict[str, np.ndarray]:
    """``{label: (N, D) float32}`` of every ``(label, interface model)`` on ``dataset``, streamed: one batch of
    images at a time, features written into preallocated arrays."""
    import torch
    from tqdm import tqdm

    from .inputs import batches
    from .models import retrieval_features

    n = len(dataset)
    out: Dict[str, np.ndarray] = {}
    done = 0
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        for (batch,) in batches([dataset], batch_size, workers):
            b = batch["images"].shape[0]
            for label, model in models:
                with torch.no_grad():
                    f = retrieval_features(model, batch) if feature == "retrieval" else model(batch)
                f = f.detach().float().reshape(b, -1).cpu().numpy()
                if label not in out:
                    out[label] = np.empty((n, f.shape[1]), np.float32)
                out[label][done:done + b] = f
            done += b
            bar.update(b)
    return out


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "model"


def rank_and_draw(q_feat: np.ndarray, g_feat: np.ndarray, q_items, g_items, output: str, metric: str = "cosine",
                  topk: int = 10, num_vis: int = 100, order: str = "worst", grid: int = 8, size=(128, 64),
                  chunk: int = 128, bins: int = 4000, progress: bool = True, title: str = "", ext: str = "jpg") -> dict:
    """Rank every query chunk by chunk, write the pictures / plots / CSV / JSON of the module docstring; returns
    the summary. ``*_items``: ``(path, pid, camid)``; pictures read their images from the paths."""
    import cv2
    from tqdm import tqdm

    from ..utils.visualize import vstack_panels
    from .inputs import read_rgb

    os.makedirs(os.path.join(output, "ranked"), exist_ok=True)
    nq, ng = len(q_items), len(g_items)
    q_pids = np.array([int(i[1]) for i in q_items])
    q_cams = np.array([int(i[2]) for i in q_items])
    g_pids = np.array([int(i[1]) for i in g_items])
    g_cams = np.array([int(i[2]) for i in g_items])
    # histogram range from up to 256 evenly spread queries against the whole gallery, widened by 5 % of the span
    # on both sides (a distance outside falls into the end bins)
    g_feat = np.asarray(g_feat, np.float32)
    g_sqnorm = np.einsum("ij,ij->i", g_feat, g_feat)  # once: chunks never copy the gallery
    sample = distances(q_feat[np.linspace(0, nq - 1, min(nq, 256)).astype(int)], g_feat, metric, g_sqnorm)
    lo, hi = float(sample.min()), float(sample.max())
    pad = 0.05 * max(hi - lo, 1e-6)
    hist = DistanceHistogram(max(lo - pad, 0.0), hi + pad, bins)
    del sample
    ap = np.full(nq, np.nan)
    first = np.full(nq, -1, np.int64)
    top = np.full((nq, topk), -1, np.int64)
    top_match = np.zeros((nq, topk), bool)
    top_dist = np.zeros((nq, topk), np.float32)
    for s in tqdm(range(0, nq, chunk), desc="ranking", unit="chunk", disable=not progress):
        e = min(nq, s + chunk)
        d = distances(q_feat[s:e], g_feat, metric, g_sqnorm)
        r = rank_chunk(d, q_pids[s:e], q_cams[s:e], g_pids, g_cams, topk)
        hist.add(d, q_pids[s:e], q_cams[s:e], g_pids, g_cams)
        ap[s:e], first[s:e], top[s:e], top_match[s:e], top_dist[s:e] = r.ap, r.first, r.topk, r.topk_match, r.topk_dist
        del d, r
    valid = ~np.isnan(ap)
    cmc = {f"rank{k}": float(np.mean((first[valid] >= 0) & (first[valid] < k))) * 100 if valid.any() else 0.0
           for k in (1, 5, 10)}
    summary = {"num_query": nq, "num_gallery": ng, "queries_with_match": int(valid.sum()), "metric": metric,
               "mAP": float(np.nanmean(ap)) * 100 if valid.any() else 0.0, **cmc, "roc_auc": hist.auc(),
               "positive_pairs": int(hist.pos.sum()), "negative_pairs": int(hist.neg.sum()), "order": order}
    with open(os.path.join(output, "per_query.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "path", "pid", "camid", "ap", "first_match_rank"])
        for i, (path, pid, cam) in enumerate((it[0], it[1], it[2]) for it in q_items):
            w.writerow([i, path, pid, cam, "" if np.isnan(ap[i]) else f"{ap[i]:.6f}", int(first[i])])
    plot_distributions(hist, os.path.join(output, "distances.png"), title)
    plot_roc(hist, os.path.join(output, "roc.png"), title)
    todo = query_order(ap, order)
    if num_vis >= 0:
        todo = todo[:num_vis]
    rows = []
    for n, qi in enumerate(tqdm(todo, desc="ranked lists", unit="query", disable=not progress)):
        kept = top[qi][top[qi] >= 0]
        gal = [read_rgb(g_items[j][0]) for j in kept]
        caps = [f"{k + 1}: {g_pids[j]} {top_dist[qi, k]:.3f}" for k, j in enumerate(kept)]
        apt = "no true match in the gallery" if np.isnan(ap[qi]) else f"AP {ap[qi] * 100:.1f}%"
        row = ranked_row(read_rgb(q_items[qi][0]), gal, top_match[qi][:len(kept)], caps,
                         query_caption=f"id {q_pids[qi]} camid {q_cams[qi]}", size_hw=size,
                         title=f"query {qi}: {os.path.basename(q_items[qi][0])}  {apt}")
        base = os.path.splitext(os.path.basename(q_items[qi][0]))[0]
        cv2.imwrite(os.path.join(output, "ranked", f"{n:05d}_{base}.{ext}"), row[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if len(rows) < grid:
            rows.append(row)
    if rows:
        head = f"{title}  " if title else ""
        cv2.imwrite(os.path.join(output, "grid.png"),
                    vstack_panels(rows, title=f"{head}{order} AP first; green: same identity, red: other")[..., ::-1],
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    summary["written"] = int(len(todo))
    with open(os.path.join(output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Returns ``{label: summary}`` (one per interface model; see :func:`rank_and_draw`)."""
    import torch

    import fastreid_ext  # noqa: F401

    from .inputs import dataset_items, model_dataset
    from .models import interface_models, load_model

    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg, model = load_model(args.config_file, args.weights, args.opts, args.device)
    members = interface_models(model, cfg.MODEL.META_ARCHITECTURE, args.member)
    name = args.dataset or cfg.DATASETS.TESTS[0]
    q_items, g_items = dataset_items(name, cfg, "query"), dataset_items(name, cfg, "gallery")
    feats = extract_features(members, model_dataset(cfg, list(q_items) + list(g_items)), args.feature,
                             args.batch_size, args.workers, not args.no_progress, desc=f"features ({name})")
    metric = args.metric or cfg.TEST.METRIC
    out = {}
    for label, _ in members:
        f = feats[label]
        folder = args.output if len(members) == 1 else os.path.join(args.output, _safe(label))
        out[label] = rank_and_draw(f[:len(q_items)], f[len(q_items):], q_items, g_items, folder, metric, args.topk,
                                   args.num_vis, args.order, args.grid, tuple(args.size), args.chunk, args.bins,
                                   not args.no_progress, title=f"{label} on {name}", ext=args.ext)
        s = out[label]
        print(f"{label} on {name}: mAP {s['mAP']:.2f}  Rank-1 {s['rank1']:.2f}  ROC AUC {s['roc_auc']:.4f}; "
              f"{s['written']} ranked lists in {os.path.abspath(folder)}")
    return out


if __name__ == "__main__":
    main()
