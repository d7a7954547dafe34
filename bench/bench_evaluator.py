"""Benchmark: FastReID's Cython ``evaluate_cy`` vs ``evaluate_rank_vectorized``.

Not a test.  Builds a synthetic Market-1501-sized problem (3,368 queries x
15,913 gallery, 751 identities, 6 cameras, plus distractors) whose distances
come from noisy identity embeddings, so rankings look like a real model's
(~80-90% rank-1).  Times, best of N runs each:

* the shared ``np.argsort(distmat, axis=1)`` both implementations start with,
* FastReID's Cython evaluator (built with ``fastreid_ext.evaluation.cython_build``),
* our vectorized numpy evaluator,

then prints a markdown table (seconds, vectorized/Cython ratio, max abs
difference of CMC / AP / INP) and writes it to ``bench/results/evaluator.md``.

    python bench/bench_evaluator.py [--repeats 3] [--queries 3368] [--gallery 15913]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
from _common import result_path, write_report  # bench/_common.py (puts the repository root on sys.path)

from fastreid_ext.evaluation.cython_build import build_cython_evaluator, load_cython_evaluator  # noqa: E402
from fastreid_ext.evaluation.rank import evaluate_rank_vectorized  # noqa: E402


def market_like_problem(num_q=3368, num_g=15913, num_ids=751, num_cams=6, num_distractors=2798,
                        dim=128, noise=1.4, seed=0):
    """Distances between noisy embeddings with a Market-1501-like label layout."""
    rs = np.random.RandomState(seed)
    centers = rs.randn(num_ids, dim).astype(np.float32)
    # each query identity has images in >= 2 cameras; gallery holds the rest
    q_pids = np.concatenate([np.arange(num_ids), rs.randint(0, num_ids, num_q - num_ids)])
    q_cams = rs.randint(0, num_cams, num_q)
    n_real = num_g - num_distractors
    g_pids = np.concatenate([np.arange(num_ids), rs.randint(0, num_ids, n_real - num_ids)])
    g_cams = rs.randint(0, num_cams, n_real)
    # distractors: identities not in the query set, random cameras
    d_centers = rs.randn(num_distractors, dim).astype(np.float32)
    q_emb = centers[q_pids] + noise * rs.randn(num_q, dim).astype(np.float32)
    g_emb = np.concatenate([centers[g_pids] + noise * rs.randn(n_real, dim).astype(np.float32),
                            d_centers + noise * rs.randn(num_distractors, dim).astype(np.float32)])
    g_pids = np.concatenate([g_pids, np.full(num_distractors, num_ids + 1000)])
    g_cams = np.concatenate([g_cams, rs.randint(0, num_cams, num_distractors)])
    q_emb /= np.linalg.norm(q_emb, axis=1, keepdims=True)
    g_emb /= np.linalg.norm(g_emb, axis=1, keepdims=True)
    distmat = (1.0 - q_emb @ g_emb.T).astype(np.float32)  # cosine distance, as FastReID
    perm = rs.permutation(num_g)
    return (np.ascontiguousarray(distmat[:, perm]), q_pids.astype(np.int64),
            g_pids[perm].astype(np.int64), q_cams.astype(np.int64), g_cams[perm].astype(np.int64))


def best_of_interleaved(fns, repeats):
    """Best wall time of each callable, run round-robin so drift hits all alike."""
    best = {k: float("inf") for k in fns}
    out = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k] = fn()
            best[k] = min(best[k], time.perf_counter() - t0)
            out[k] = out[k] if k != "sort" else None  # drop the 430 MB index matrix
    return best, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--queries", type=int, default=3368)
    ap.add_argument("--gallery", type=int, default=15913)
    ap.add_argument("--max-rank", type=int, default=50)
    ap.add_argument("--out", default=result_path("evaluator.md"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    distmat, q_pids, g_pids, q_cams, g_cams = market_like_problem(args.queries, args.gallery)
    print(f"problem: {distmat.shape[0]} x {distmat.shape[1]} built in {time.perf_counter() - t0:.1f}s")

    if build_cython_evaluator() is None or load_cython_evaluator() is None:
        rank_cy = None
        print("WARNING: FastReID's Cython evaluator could not be built; timing the vectorized one only")
    else:
        rank_cy = load_cython_evaluator()

    mr, reps = args.max_rank, args.repeats
    fns = {"sort": lambda: np.argsort(distmat, axis=1),
           "vec": lambda: evaluate_rank_vectorized(distmat, q_pids, g_pids, q_cams, g_cams, mr)}
    if rank_cy is not None:
        fns["cy"] = lambda: rank_cy.evaluate_cy(distmat, q_pids, g_pids, q_cams, g_cams, mr, False)
    best, res = best_of_interleaved(fns, reps)
    t_sort, t_vec, res_vec = best["sort"], best["vec"], res["vec"]
    rows = [("argsort only (shared cost)", t_sort)]
    if rank_cy is not None:
        t_cy, res_cy = best["cy"], res["cy"]
        rows.append(("FastReID Cython `evaluate_cy`", t_cy))
    rows.append(("fastreid_ext `evaluate_rank_vectorized`", t_vec))

    cmc, all_ap, all_inp = res_vec
    lines = [
        f"Synthetic Market-1501-sized evaluation: {distmat.shape[0]:,} queries x {distmat.shape[1]:,} gallery, "
        f"max_rank={mr}, best of {reps}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, numpy {np.__version__}.",
        "",
        "| step | seconds | excl. argsort |",
        "|---|---:|---:|",
    ]
    for name, t in rows:
        extra = "" if name.startswith("argsort") else f"{max(t - t_sort, 0.0):.3f}"
        lines.append(f"| {name} | {t:.3f} | {extra} |")
    lines.append("")
    if rank_cy is not None:
        ratio = t_vec / t_cy
        d_cmc = float(np.abs(res_cy[0] - cmc).max())
        same_len = res_cy[1].shape == all_ap.shape and res_cy[2].shape == all_inp.shape
        d_ap = float(np.abs(res_cy[1] - all_ap).max()) if same_len else float("inf")
        d_inp = float(np.abs(res_cy[2] - all_inp).max()) if same_len else float("inf")
        identical = same_len and all(np.array_equal(a, b) for a, b in zip(res_cy, res_vec))
        lines += [
            "| metric | value |",
            "|---|---:|",
            f"| ratio vectorized / Cython (goal <= 1.2) | {ratio:.3f} |",
            f"| max abs diff CMC / AP / INP | {d_cmc:.1e} / {d_ap:.1e} / {d_inp:.1e} |",
            f"| bit-identical outputs | {'yes' if identical else 'no'} |",
        ]
    lines += [
        f"| rank-1 / mAP / mINP | {cmc[0]:.4f} / {all_ap.mean():.4f} / {all_inp.mean():.4f} |"
        if rank_cy is not None else
        f"rank-1 / mAP / mINP: {cmc[0]:.4f} / {all_ap.mean():.4f} / {all_inp.mean():.4f}",
    ]
    try:
        write_report("\n".join(lines), args.out)
        print(f"\nwritten to {args.out}")
    except OSError as exc:  # results are a convenience; the print is what matters
        print(f"could not write {args.out}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
