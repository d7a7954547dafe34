"""Benchmark: FastReID's dense ``TEST.RERANK`` vs our sparse k-reciprocal re-ranking at Market-1501 size.

Not a test. ``TEST.RERANK`` in FastReID 1.4.0 (``ReidEvaluator.evaluate``) calls
``fastreid.utils.compute_dist.build_dist(q, g, metric="jaccard", k1, k2)``, i.e. ``compute_jaccard_distance`` on
the concatenated (query + gallery) features: dense N x N weight / expanded weight / distance matrices and Python
loops over every row (Zhong et al., "Re-ranking person re-identification with k-reciprocal encoding", CVPR 2017,
Eq. 7-14), then mixes ``(1 - lambda) d_J + lambda d`` (Eq. 15). Ours is the same computation from sparse weights
(:func:`fastreid_ext.functional.rerank.jaccard_query_gallery`, what ``import fastreid_ext`` installs in
``build_dist``).

Both arms run FastReID's own ``ReidEvaluator`` with ``TEST.RERANK.ENABLED`` (K1 20, K2 6, LAMBDA 0.3, metric
cosine: FastReID's defaults) on the same features; only ``build_dist(metric="jaccard")`` differs (``fastreid``:
FastReID's original function, CPU faiss as patched by ``fastreid_ext.compat``; ``ours``: the sparse one). Each arm
runs in its own child process: its time of the Jaccard call, its peak RSS (``VmHWM``) right after it and at the
end, and the evaluator's metrics are returned; the Jaccard matrices are compared in the parent (max abs
difference) and the metrics must be identical.

Optional third arm ``--zhong``: ``fastreid.evaluation.rerank.re_ranking``, the original re-ranking code (a
different kernel normalisation, so its values differ; dense argsort of N x N; time and memory only).

Features: synthetic re-id embeddings with Market-1501's layout (751 test identities, 3,368 queries, 15,913
gallery images of which 2,798 distractors of other identities, 6 cameras), each an identity centre + camera
shift + noise in a low-rank subspace plus isotropic noise, L2-normalized, ``--dim`` 2048 (FastReID's R50 head).

    python bench/bench_rerank.py [--dim 2048] [--threads 1] [--zhong]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import add_threads_arg, proc_status_mb, result_path, set_threads, write_report  # bench/_common.py


def market_query_gallery(dim: int = 2048, num_q: int = 3368, num_g: int = 15913, num_ids: int = 751,
                         num_distractors: int = 2798, cams: int = 6, rank: int = 32, noise: float = 0.8,
                         cam_shift: float = 0.35, iso: float = 0.25, seed: int = 0):
    """(features (N, dim) float32, pids, camids, num_query): queries first, then the gallery."""
    rs = np.random.RandomState(seed)
    n_real = num_g - num_distractors
    q_pids = np.concatenate([np.arange(num_ids), rs.randint(0, num_ids, num_q - num_ids)])
    g_pids = np.concatenate([np.arange(num_ids), rs.randint(0, num_ids, n_real - num_ids),
                             num_ids + np.arange(num_distractors) // 3])  # distractors: other ids, 3 images each
    q_cams = rs.randint(0, cams, num_q)
    g_cams = rs.randint(0, cams, num_g)
    pids = np.concatenate([q_pids, g_pids])
    camids = np.concatenate([q_cams, g_cams])
    n_ids = int(pids.max()) + 1
    basis = np.linalg.qr(rs.randn(dim, rank))[0].T.astype(np.float32)
    centres = rs.randn(n_ids, rank).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    camc = rs.randn(cams, rank).astype(np.float32)
    camc *= cam_shift / np.linalg.norm(camc, axis=1, keepdims=True)
    n = pids.size
    z = centres[pids] + camc[camids] + noise * rs.randn(n, rank).astype(np.float32) / np.sqrt(rank)
    x = z @ basis + iso * rs.randn(n, dim).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), pids, camids, num_q


def worker(arm: str, dim: int, out_npy: str) -> dict:
    import torch

    import fastreid_ext  # noqa: F401  (compat: CPU faiss for FastReID's function, sparse build_dist)
    import fastreid.evaluation.reid_evaluation as reid_evaluation
    from fastreid.evaluation import ReidEvaluator

    x, pids, camids, nq = market_query_gallery(dim)
    feats = torch.from_numpy(x)
    patched = reid_evaluation.build_dist
    original = patched.__wrapped__  # FastReID's build_dist (dense compute_jaccard_distance)
    res = {"arm": arm, "n": int(x.shape[0]), "num_query": nq, "rss_before_mb": proc_status_mb("VmRSS")}

    def timed_build_dist(f1, f2, metric="euclidean", **kw):
        if metric != "jaccard":
            return original(f1, f2, metric, **kw)
        t0 = time.perf_counter()
        if arm == "fastreid":
            d = original(f1, f2, metric, **kw)
        elif arm == "ours":
            d = patched(f1, f2, metric, **kw)
        elif arm == "ours_faiss":  # same, with FastReID's faiss neighbour search instead of torch's
            from fastreid_ext.functional.rerank import jaccard_query_gallery

            d = jaccard_query_gallery(f1, f2, k1=kw["k1"], k2=kw["k2"], knn="flat_l2")
        else:
            raise ValueError(arm)
        res["t_jaccard"] = time.perf_counter() - t0
        res["peak_after_jaccard_mb"] = proc_status_mb("VmHWM")
        np.save(out_npy, np.asarray(d, dtype=np.float32))
        return d

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["TEST.METRIC", "cosine", "TEST.RERANK.ENABLED", "True", "TEST.RERANK.K1", "20",
                         "TEST.RERANK.K2", "6", "TEST.RERANK.LAMBDA", "0.3"])
    reid_evaluation.build_dist = timed_build_dist
    ev = ReidEvaluator(cfg, nq)
    ev.process({"targets": torch.from_numpy(pids), "camids": torch.from_numpy(camids)}, feats)
    t0 = time.perf_counter()
    metrics = ev.evaluate()
    res["t_evaluate"] = time.perf_counter() - t0
    res["peak_mb"] = proc_status_mb("VmHWM")
    res["metrics"] = {k: float(v) for k, v in metrics.items()}
    return res


def worker_zhong(dim: int, out_npy: str) -> dict:
    """FastReID's ``re_ranking`` (Zhong et al.'s original code) from the cosine distances (numpy)."""
    import fastreid_ext  # noqa: F401  (compat: FastReID imports on Python 3.11)
    from fastreid.evaluation.rank import evaluate_rank
    from fastreid.evaluation.rerank import re_ranking

    x, pids, camids, nq = market_query_gallery(dim)
    res = {"arm": "zhong", "n": int(x.shape[0]), "num_query": nq, "rss_before_mb": proc_status_mb("VmRSS")}
    q, g = x[:nq], x[nq:]
    t0 = time.perf_counter()
    qg, qq, gg = 1 - q @ g.T, 1 - q @ q.T, 1 - g @ g.T
    d = re_ranking(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    res["t_jaccard"] = time.perf_counter() - t0
    res["peak_after_jaccard_mb"] = proc_status_mb("VmHWM")
    del qq, gg
    cmc, ap, inp = evaluate_rank(d, pids[:nq], pids[nq:], camids[:nq], camids[nq:])
    res["t_evaluate"] = 0.0
    res["peak_mb"] = proc_status_mb("VmHWM")
    res["metrics"] = {"Rank-1": cmc[0] * 100, "Rank-5": cmc[4] * 100, "Rank-10": cmc[9] * 100,
                      "mAP": float(np.mean(ap)) * 100, "mINP": float(np.mean(inp)) * 100}
    res["metrics"] = {k: float(v) for k, v in res["metrics"].items()}
    return res


def run_child(arm: str, args, out_npy: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", arm, "--dim", str(args.dim), "--threads",
           str(args.threads), "--npy", out_npy]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--arms", nargs="+", default=["fastreid", "ours"],
                    choices=["fastreid", "ours", "ours_faiss", "zhong"])
    ap.add_argument("--zhong", action="store_true", help="also run fastreid.evaluation.rerank.re_ranking")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", default="")
    ap.add_argument("--npy", default="")
    ap.add_argument("--out", default=result_path("rerank.md"))
    add_threads_arg(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    if args.worker:
        r = worker_zhong(args.dim, args.npy) if args.worker == "zhong" else worker(args.worker, args.dim, args.npy)
        print(json.dumps(r))
        return

    arms = list(args.arms) + (["zhong"] if args.zhong and "zhong" not in args.arms else [])
    load0 = os.getloadavg()
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in arms:
            res[arm] = run_child(arm, args, os.path.join(tmp, f"{arm}.npy"))
            print(arm, json.dumps(res[arm]), flush=True)
        diff = None
        if "fastreid" in res and "ours" in res:
            a = np.load(os.path.join(tmp, "fastreid.npy"))
            b = np.load(os.path.join(tmp, "ours.npy"))
            diff = float(np.abs(a - b).max())
            below = float((a < 1).mean())
            del a, b
        pair_diffs = []  # every other pair of Jaccard matrices (e.g. ours with torch vs faiss neighbour search)
        names_run = [a for a in res if a != "zhong"]
        for i, a_name in enumerate(names_run):
            for b_name in names_run[i + 1:]:
                if {a_name, b_name} == {"fastreid", "ours"}:
                    continue
                a = np.load(os.path.join(tmp, f"{a_name}.npy"))
                b = np.load(os.path.join(tmp, f"{b_name}.npy"))
                dab = np.abs(a - b)
                pair_diffs.append(f"{a_name} vs {b_name}: max abs difference {float(dab.max()):.2e}, "
                                  f"{int((dab > 1e-5).sum())} of {dab.size} pairs differ by more than 1e-5")
                del a, b, dab
    load1 = os.getloadavg()
    names = {"fastreid": "FastReID dense (`build_dist` jaccard)", "ours": "ours, sparse (`jaccard_query_gallery`)",
             "ours_faiss": "ours, sparse, faiss `IndexFlatL2` neighbours (`knn='flat_l2'`)",
             "zhong": "FastReID `re_ranking` (Zhong's original code)"}
    r0 = next(iter(res.values()))
    keys = ["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"]
    lines = [f"Re-ranking at Market-1501 size: {r0['num_query']} queries x {r0['n'] - r0['num_query']} gallery "
             f"(N = {r0['n']}), {args.dim}-d synthetic re-id features (`market_query_gallery`), k1 20, k2 6, "
             f"lambda 0.3, cosine, FastReID's `ReidEvaluator` with `TEST.RERANK.ENABLED`.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch threads "
             f"{args.threads}; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Each arm in its own process; peak = VmHWM.", "",
             "| arm | Jaccard s | evaluate() s (incl. Jaccard) | peak RSS after Jaccard MB | RSS before MB | "
             + " | ".join(keys) + " |", "| --- " * (5 + len(keys)) + "|"]
    for arm, r in res.items():
        lines.append(f"| {names[arm]} | {r['t_jaccard']:.2f} | {r['t_evaluate']:.2f} | "
                     f"{r['peak_after_jaccard_mb']:.0f} | {r['rss_before_mb']:.0f} | "
                     + " | ".join(f"{r['metrics'][k]:.4f}" for k in keys) + " |")
    if diff is not None:
        f, o = res["fastreid"], res["ours"]
        same = all(f["metrics"][k] == o["metrics"][k] for k in keys)
        lines += ["", f"Speed-up on the Jaccard distance: {f['t_jaccard'] / o['t_jaccard']:.1f}x; on the whole "
                      f"evaluate(): {f['t_evaluate'] / o['t_evaluate']:.1f}x. Memory above the features-loaded "
                      f"baseline: {f['peak_after_jaccard_mb'] - f['rss_before_mb']:.0f} MB -> "
                      f"{o['peak_after_jaccard_mb'] - o['rss_before_mb']:.0f} MB. Max abs difference of the "
                      f"query x gallery Jaccard matrices: {diff:.2e} ({below * 100:.2f} % of the pairs below 1). "
                      f"Metrics identical (all of {', '.join(keys)} bit-equal): {same}."]
    if pair_diffs:
        lines += ["", "Jaccard matrices, other pairs: " + "; ".join(pair_diffs) + "."]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
