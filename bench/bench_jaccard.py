"""Benchmark: sparse k-reciprocal Jaccard distance + DBSCAN vs FastReID's dense ``compute_jaccard_distance``.

Not a test. Features are clustered random vectors shaped like a re-id model's on Market-1501's train set
(2048-d, L2-normalized, ~17.2 images per identity, identity centres and camera shifts in a 32-d
subspace plus noise; the nearest neighbour has the same identity for ~90 % of the samples), so that
k-reciprocal neighbourhoods look realistic. Every measurement runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is clean:

* ``dense``: FastReID's ``compute_jaccard_distance`` (CPU faiss, as patched by fastreid_ext.compat) and
  scikit-learn's DBSCAN on the dense N x N matrix (only at the first N);
* ``sparse``: :func:`fastreid_ext.functional.clustering.jaccard_dbscan` pieces: faiss kNN, sparse Jaccard
  (upper triangle), MMT's eps (rho = 1.6e-3), DBSCAN on the sparse radius graph.

Both use k1 = 30, k2 = 6 (MMT's), min_samples = 4. At the first N the labels of both are compared.
Prints a markdown table and writes it to ``bench/results/jaccard.md``.

    python bench/bench_jaccard.py [--sizes 12936 32621 100000] [--dim 2048] [--skip-dense]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import proc_status_mb, result_path, write_report  # bench/_common.py (puts the repository root on sys.path)


def market_like(n: int, d: int = 2048, imgs_per_id: float = 17.2, rank: int = 0, noise: float = 0.85,
                cam_shift: float = 0.3, cams: int = 6, seed: int = 0):
    """Clustered unit vectors: identity centre + camera shift (+ noise) in a random ``rank``-d subspace,
    plus a little isotropic noise in all ``d`` dimensions. ``rank`` 0: 32 for Market's 751 identities,
    growing with sqrt(identities) so that larger N are not more crowded."""
    rs = np.random.RandomState(seed)
    ids = max(1, int(round(n / imgs_per_id)))
    rank = rank or int(round(32 * max(1.0, ids / 751) ** 0.5))
    basis = np.linalg.qr(rs.randn(d, rank))[0].T.astype(np.float32)
    c = rs.randn(ids, rank).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    camc = rs.randn(cams, rank).astype(np.float32)
    camc *= cam_shift / np.linalg.norm(camc, axis=1, keepdims=True)
    lab = rs.randint(0, ids, n)
    cam = rs.randint(0, cams, n)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):  # in chunks: keeps the generator's own peak small
        e = min(n, s + 8192)
        z = c[lab[s:e]] + camc[cam[s:e]] + noise * rs.randn(e - s, rank).astype(np.float32) / np.sqrt(rank)
        x[s:e] = z @ basis + 0.2 * rs.randn(e - s, d).astype(np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, lab


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(kind: str, n: int, dim: int, k1: int, k2: int, index: str, labels_out: str,
           compare_eps: float = 0.0, rho: float = 1.6e-3) -> dict:
    import fastreid_ext  # noqa: F401  (compat: CPU faiss for FastReID's function)
    from fastreid_ext.functional import jaccard as J
    from fastreid_ext.functional.clustering import dbscan_sparse

    x, ids = market_like(n, dim)
    base = proc_status_mb("VmRSS")
    res = {"kind": kind, "n": n, "rss_before_mb": base, "rho": rho}
    if kind == "dense":
        import torch
        from fastreid.utils.compute_dist import compute_jaccard_distance
        from sklearn.cluster import DBSCAN

        t0 = time.perf_counter()
        dist = compute_jaccard_distance(torch.from_numpy(x), k1=k1, k2=k2, search_option=3)
        t1 = time.perf_counter()
        eps = J.dense_mmt_eps(dist, rho)  # MMT's rule (same zero tolerance as the sparse one)
        t2 = time.perf_counter()
        labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(dist)
        t3 = time.perf_counter()
        res.update(t_jaccard=t1 - t0, t_eps=t2 - t1, t_dbscan=t3 - t2, total=t3 - t0, eps=eps)
    else:
        from sklearn.cluster import DBSCAN

        from fastreid_ext.functional.clustering import graph_from_pairs

        t0 = time.perf_counter()
        rank = J.knn_search(x, k1, index=index)
        t1 = time.perf_counter()
        v = J.jaccard_weights(x, k1, k2, normalize=False, rank=rank)
        stats = {}
        eps, r, c, d = J.jaccard_eps_and_pairs(v, rho, stats=stats)  # distances + MMT's eps, streaming
        t2 = time.perf_counter()
        g = graph_from_pairs(n, r, c, d)
        labels = DBSCAN(eps=eps, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(g)
        t4 = time.perf_counter()
        used = index if index != "auto" else ("torch" if n <= J.AUTO_IVF_ABOVE else "approx")
        res.update(t_knn=t1 - t0, t_jaccard=t2 - t0, t_eps=0.0, t_dbscan=t4 - t2, total=t4 - t0, eps=eps,
                   nnz_per_row=(2 * stats["pairs"] - n) / n, held_max=stats["held_max"], within_eps=int(r.size),
                   index=used, nn1=float((ids[rank[:, 1]] == ids).mean()))
        if used in ("ivf", "approx"):
            res["knn_recall"] = J.knn_recall(x, rank, 300)
        if compare_eps > 0:  # untimed: labels at the dense run's eps, for the identity check
            full = J.jaccard_from_weights(v, symmetric=False)
            np.save(labels_out + ".cmp.npy", dbscan_sparse(full, compare_eps, 4, upper=True))
    res["peak_rss_mb"] = _rss_mb()
    res["clusters"] = int(labels.max() + 1)
    res["outliers"] = int((labels < 0).sum())
    # cluster purity against the generating identities (sanity check of "realistic")
    m = labels >= 0
    if m.any():
        _, inv = np.unique(labels[m], return_inverse=True)
        maj = sum(np.bincount(ids[m][inv == c]).max() for c in range(inv.max() + 1))
        res["purity"] = float(maj / m.sum())
    if labels_out:
        np.save(labels_out, labels)
    return res


def rho_for(n, args) -> float:
    """MMT's rho at the first N; beyond it scaled by N0 / N so that rho * N / 2, the mean number of pairs per
    sample inside the averaged set, stays the same (a fixed rho makes eps grow with N; MMT tuned 1.6e-3 on
    Market / Duke sizes)."""
    return args.rho * args.sizes[0] / n if args.scale_rho else args.rho


def run_sub(kind, n, args, labels_out="", compare_eps=0.0) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--dim", str(args.dim), "--k1", str(args.k1),
           "--k2", str(args.k2), "--index", args.index, "--labels-out", labels_out, "--compare-eps", repr(compare_eps),
           "--rho", repr(rho_for(n, args))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} N={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[12936, 32621, 100000])
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--k1", type=int, default=30)
    ap.add_argument("--k2", type=int, default=6)
    ap.add_argument("--index", default="auto", help="kNN index of the sparse version (auto: exact torch up to 50k, "
                    "approx above; see fastreid_ext.functional.jaccard.knn_search)")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--worker", default="")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--labels-out", default="")
    ap.add_argument("--compare-eps", type=float, default=0.0)
    ap.add_argument("--rho", type=float, default=1.6e-3)
    ap.add_argument("--no-scale-rho", dest="scale_rho", action="store_false")
    ap.add_argument("--out", default=result_path("jaccard.md"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.dim, args.k1, args.k2, args.index, args.labels_out,
                                args.compare_eps, args.rho)))
        return

    rows = []
    same_labels = None
    with tempfile.TemporaryDirectory() as tmp:
        n0 = args.sizes[0]
        dense = None
        if not args.skip_dense:
            dense = run_sub("dense", n0, args, os.path.join(tmp, "dense.npy"))
            print("dense", dense, flush=True)
        for n in args.sizes:
            cmp_eps = dense["eps"] if (dense is not None and n == n0) else 0.0
            r = run_sub("sparse", n, args, os.path.join(tmp, f"sparse{n}.npy"), cmp_eps)
            print("sparse", r, flush=True)
            rows.append(r)
        if dense is not None:
            same_labels = bool(np.array_equal(np.load(os.path.join(tmp, "dense.npy")),
                                              np.load(os.path.join(tmp, f"sparse{n0}.npy.cmp.npy"))))

    lines = [f"Sparse Jaccard + DBSCAN vs FastReID's dense `compute_jaccard_distance` (k1={args.k1}, k2={args.k2}, "
             f"min_samples=4, eps by MMT's rule), {args.dim}-d clustered features (`market_like`: 17.2 images "
             f"per identity).", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
             f"(shared with other jobs), Python {platform.python_version()}. Peak RSS = `ru_maxrss` of a fresh "
             f"subprocess (includes Python + torch + the N x {args.dim} float32 features, see 'RSS before').", "",
             "| method | N | kNN index | kNN s | Jaccard s (incl. kNN, eps) | DBSCAN s | total s | peak RSS MB | "
             "RSS before MB | pairs < 1 per row | rho | eps | clusters | outliers | purity | NN same id |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if dense is not None:
        lines.append(f"| FastReID dense | {dense['n']} | flat_l2 | - | {dense['t_jaccard'] + dense['t_eps']:.2f} | "
                     f"{dense['t_dbscan']:.2f} | {dense['total']:.2f} | {dense['peak_rss_mb']:.0f} | "
                     f"{dense['rss_before_mb']:.0f} | {dense['n']} (dense) | {dense['rho']:.2e} | {dense['eps']:.4f} | "
                     f"{dense['clusters']} | {dense['outliers']} | {dense.get('purity', 0):.3f} | - |")
    for r in rows:
        idx = r["index"] + (f" (recall@{args.k1} {r['knn_recall']:.3f})" if "knn_recall" in r else "")
        lines.append(f"| sparse (ours) | {r['n']} | {idx} | {r['t_knn']:.2f} | {r['t_jaccard']:.2f} | "
                     f"{r['t_dbscan']:.2f} | {r['total']:.2f} | {r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | "
                     f"{r['nnz_per_row']:.0f} | {r['rho']:.2e} | {r['eps']:.4f} | {r['clusters']} | {r['outliers']} | "
                     f"{r.get('purity', 0):.3f} | {r['nn1']:.3f} |")
    if dense is not None:
        s0 = rows[0]
        d_j = dense["t_jaccard"] + dense["t_eps"]
        lines += ["", f"At N = {s0['n']}: {d_j / s0['t_jaccard']:.2f}x faster on the Jaccard distance (+ eps), "
                      f"{dense['total'] / s0['total']:.2f}x on Jaccard + eps + DBSCAN; peak RSS {dense['peak_rss_mb']:.0f} MB "
                      f"-> {s0['peak_rss_mb']:.0f} MB ({dense['peak_rss_mb'] - dense['rss_before_mb']:.0f} -> "
                      f"{s0['peak_rss_mb'] - s0['rss_before_mb']:.0f} MB above the baseline); DBSCAN labels identical "
                      f"at the same eps ({dense['eps']:.4f}): {same_labels}."]
    if len(rows) > 1:
        extra = [(r["n"], r["peak_rss_mb"] - r["rss_before_mb"]) for r in rows]
        lines += ["", "Memory above the features-loaded baseline: " + ", ".join(
            f"N={n}: {m:.0f} MB ({m / n * 1e3:.1f} kB/sample)" for n, m in extra) + ". Beyond the first N, rho is "
            f"scaled by N0 / N (same number of averaged pairs per sample; `--no-scale-rho` keeps 1.6e-3)."]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
