"""Benchmark: MMT's pseudo-label clustering (sparse k-reciprocal Jaccard + DBSCAN) with the exact vs the approximate
kNN search, at Market / Duke train sizes and at 100,000 samples.

Not a test. Features: ``bench_jaccard.market_like`` (2048-d clustered unit vectors, 17.2 images per identity, see
there). Each (N, kNN index) runs in its own child process (peak RSS = ``VmHWM``): kNN search
(:func:`fastreid_ext.functional.jaccard.knn_search`), query-expanded k-reciprocal weights, streaming Jaccard
distances + MMT's eps (``jaccard_eps_and_pairs``, rho 1.6e-3 scaled by 12,936 / N as in ``bench_jaccard``) and
scikit-learn's DBSCAN on the sparse radius graph: the pieces of
:func:`fastreid_ext.functional.clustering.jaccard_dbscan` (k1 30, k2 6, min_samples 4: MMT's), timed separately.

Arms: ``torch`` (exact search by torch matrix products, ``index="auto"``'s choice up to 50,000 samples),
``approx`` (PCA + thresholded bfloat16 search + exact re-ranking of the candidates, recall-driven, ``auto``'s
choice above 50,000), and
optionally ``flat_l2`` (faiss' exact flat index, FastReID's choice). The approximate labels are compared with the
exact ones (``sklearn.metrics.adjusted_rand_score``, outliers as one label, and on the samples both keep).
The 400,000 case is extrapolated in ``BENCHMARKS.md`` from the measured scaling.

    python bench/bench_clustering.py [--sizes 12936 32621 100000] [--arms torch approx] [--threads 2]
                                     [--labels-dir DIR]
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
from bench_jaccard import market_like


def worker(index: str, n: int, dim: int, k1: int, k2: int, rho: float, labels_out: str) -> dict:
    from sklearn.cluster import DBSCAN

    from fastreid_ext.functional import jaccard as J
    from fastreid_ext.functional.clustering import graph_from_pairs

    x, ids = market_like(n, dim)
    res = {"index": index, "n": n, "rss_before_mb": proc_status_mb("VmRSS"), "rho": rho}
    info = {}
    t0 = time.perf_counter()
    rank = J.knn_search(x, k1, index=index, info=info)
    t1 = time.perf_counter()
    res["peak_knn_mb"] = proc_status_mb("VmHWM")
    v = J.jaccard_weights(x, k1, k2, normalize=False, rank=rank)
    t2 = time.perf_counter()
    stats = {}
    eps, r, c, d = J.jaccard_eps_and_pairs(v, rho, stats=stats)
    t3 = time.perf_counter()
    del v
    g = graph_from_pairs(n, r, c, d)
    labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=1).fit_predict(g)
    t4 = time.perf_counter()
    res.update(t_knn=t1 - t0, t_weights=t2 - t1, t_jaccard_eps=t3 - t2, t_dbscan=t4 - t3, total=t4 - t0,
               eps=eps, peak_mb=proc_status_mb("VmHWM"), clusters=int(labels.max() + 1), outliers=int((labels < 0).sum()),
               pairs_per_row=(2 * stats["pairs"] - n) / n, info=info)
    if "recall" not in info:  # exact arms: self-check on 300 queries (cheap)
        res["recall"] = 1.0 if index in ("torch", "flat_l2") else J.knn_recall(x, rank, 300)
    else:
        res["recall"] = info["recall"]
    np.save(labels_out, labels)
    return res


def run_child(index, n, args, labels_out) -> dict:
    rho = args.rho * 12936 / n
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", index, "--n", str(n), "--dim", str(args.dim),
           "--k1", str(args.k1), "--k2", str(args.k2), "--rho", repr(rho), "--labels-out", labels_out,
           "--threads", str(args.threads)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{index} N={n} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["wall_child"] = time.perf_counter() - t0
    r["load"] = os.getloadavg()[0]
    return r


def ari_against(ref: np.ndarray, lab: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score

    both = (ref >= 0) & (lab >= 0)
    return {"ari_all": float(adjusted_rand_score(ref, lab)),  # every outlier as label -1 (one group)
            "ari_kept": float(adjusted_rand_score(ref[both], lab[both])) if both.any() else float("nan"),
            "same_outlier": float((ref < 0).__eq__(lab < 0).mean())}


def _labels_file(args, arm: str, n: int) -> str:
    """Where ``--labels-dir`` keeps one arm's labels (keyed by every setting that changes them)."""
    if not args.labels_dir:
        return ""
    return os.path.join(args.labels_dir, f"labels_{arm}_n{n}_d{args.dim}_k{args.k1}-{args.k2}_rho{args.rho:g}.npy")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[12936, 32621, 100000])
    ap.add_argument("--arms", nargs="+", default=["torch", "approx"])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k1", type=int, default=30)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--rho", type=float, default=1.6e-3, help="MMT's rho at N = 12,936 (scaled by 12,936 / N)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--worker", default="")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--labels-out", default="")
    ap.add_argument("--labels-dir", default="", help="keep every arm's labels here (outside the repository), and "
                    "when the exact arm ('torch') is not run, compare with its stored labels for the same settings")
    ap.add_argument("--render", default="", help="only write the report from the JSON lines of an earlier run's "
                    "output (a log file)")
    ap.add_argument("--out", default=result_path("clustering.md"))
    add_threads_arg(ap, default=0)
    args = ap.parse_args()
    threads = set_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.k1, args.k2, args.rho, args.labels_out)))
        return

    load0 = os.getloadavg()
    rows = []
    if args.render:
        with open(args.render) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        load0 = (rows[0]["load"],) if rows else load0
    with tempfile.TemporaryDirectory() as tmp:
        for n in ([] if args.render else args.sizes):
            ref = None
            for arm in args.arms:
                path = os.path.join(tmp, f"{arm}{n}.npy")
                r = run_child(arm, n, args, path)
                lab = np.load(path)
                stored = _labels_file(args, "torch", n)
                if args.labels_dir:
                    os.makedirs(args.labels_dir, exist_ok=True)
                    np.save(_labels_file(args, arm, n), lab)
                if ref is None and arm != "torch" and stored and os.path.exists(stored):
                    ref = np.load(stored)  # the exact labels of an earlier run with the same settings
                    r["vs"] = "torch (stored)"
                    r.update(ari_against(ref, lab))
                elif ref is None:
                    ref = lab
                    r["vs"] = "-"
                else:
                    r.update(ari_against(ref, lab))
                    r["vs"] = args.arms[0]
                print(json.dumps(r), flush=True)
                rows.append(r)
    load1 = (rows[-1]["load"],) if args.render and rows else os.getloadavg()
    lines = [f"MMT clustering (sparse k-reciprocal Jaccard k1={args.k1} k2={args.k2} + MMT's eps + DBSCAN "
             f"min_samples 4), {args.dim}-d `market_like` features, exact vs approximate kNN.",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), torch threads "
             f"{threads}; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One child process per row; peak = VmHWM "
             f"(includes Python, torch and the N x {args.dim} float32 features: see 'RSS before').", "",
             "| N | kNN | recall@k1 | kNN s | weights s | Jaccard+eps s | DBSCAN s | total s | peak RSS MB | "
             "RSS before MB | eps | clusters | outliers | ARI vs exact (all / kept) | same outlier flag | load |",
             "| --- " * 16 + "|"]
    for r in rows:
        kn = r["index"]
        if r["info"]:
            rd = r["info"]["rounds"][-1]
            kn += f" (PCA {r['info']['pca_dim']}, bf16 {r['info'].get('bf16')}, {rd['candidates']} candidates, " \
                  f"{len(r['info']['rounds'])} round(s))"
        ari = f"{r['ari_all']:.4f} / {r['ari_kept']:.4f}" if "ari_all" in r else "-"
        same = f"{r['same_outlier']:.4f}" if "same_outlier" in r else "-"
        lines.append(f"| {r['n']} | {kn} | {r['recall']:.4f} | {r['t_knn']:.1f} | {r['t_weights']:.1f} | "
                     f"{r['t_jaccard_eps']:.1f} | {r['t_dbscan']:.1f} | {r['total']:.1f} | {r['peak_mb']:.0f} | "
                     f"{r['rss_before_mb']:.0f} | {r['eps']:.4f} | {r['clusters']} | {r['outliers']} | {ari} | "
                     f"{same} | {r['load']:.2f} |")
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
