"""Benchmark HPLF (not a test): training-iteration cost over FastReID's Baseline, and the memory of the
global + local evaluation on a Market-sized problem.

1. Global + local evaluation (run first, so that the process holds nothing else): :class:`HPLFEvaluator`
   fed like the test loader (batches of 128) with synthetic outputs of the Market config (global 2048-d +
   16 stripes x 128), ``--queries`` x ``--gallery`` (3,000 x 15,000), then ``evaluate()`` (global,
   global + local and local rankings). Peak RSS is sampled every 10 ms from /proc/self/statm;
   Python/numpy allocations are traced with tracemalloc (torch CPU tensors are not, hence the RSS).
2. Train iteration (forward + backward + Adam step) of ``HPLF`` and ``Baseline`` built from the same config
   (``projects/HPLF/configs/SynthPed/hplf_R18.yml``: ResNet-18, 128x64, batch 64 = 16 ids x 4), same
   synthetic batch, iterations interleaved (A, B, A, B, ...) so that load from other processes hits both;
   the ratio of the medians is reported. ``--r50`` adds the Market recipe (ResNet-50, 256x128, batch 32).
   On a shared machine ``--threads 1`` avoids OpenMP barrier stalls that dwarf the small local-branch ops.

    python bench/bench_hplf.py [--iters 12] [--r50] [--threads N] [--queries 3000] [--gallery 15000]
        [--skip-train] [--skip-eval]

Prints a markdown table and writes it to ``bench/results/hplf.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
import tracemalloc

from _common import make_cfg as config_with, result_path, set_threads, write_report  # bench/_common.py

import fastreid_ext  # noqa: E402,F401  (compat first)
import torch  # noqa: E402
from fastreid.modeling import build_model  # noqa: E402
from fastreid.solver import build_optimizer  # noqa: E402
from fastreid.utils.events import EventStorage  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` in MiB."""

    def __init__(self, period=0.01):
        self.period, self.peak, self._stop = period, rss_mb(), threading.Event()

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def make_cfg(meta_arch, r50=False, batch=None, device="cpu"):
    opts = ["MODEL.META_ARCHITECTURE", meta_arch, "MODEL.HEADS.NUM_CLASSES", "751", "MODEL.DEVICE", device]
    if batch:
        opts += ["SOLVER.IMS_PER_BATCH", str(batch)]
    if r50:
        return config_with("projects/HPLF/configs/Market1501/hplf_R50.yml", [
            "MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.AMP.ENABLED", "False", *opts])
    return config_with("projects/HPLF/configs/SynthPed/hplf_R18.yml", opts)


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bench_train(r50: bool, iters: int, warmup: int, device: str = "cpu"):
    models = {}
    for name in ("Baseline", "HPLF"):
        cfg = make_cfg(name, r50, device=device)
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        opt, _ = build_optimizer(cfg, model)
        models[name] = (model, opt)
    bs = cfg.SOLVER.IMS_PER_BATCH
    h, w = cfg.INPUT.SIZE_TRAIN
    k = cfg.DATALOADER.NUM_INSTANCE
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(bs, 3, h, w, generator=g) * 255).to(device)
    targets = (torch.arange(bs) // k).to(device)

    def step(name):
        model, opt = models[name]
        t0 = time.perf_counter()
        with EventStorage(0):
            losses = model({"images": images.clone(), "targets": targets.clone()})
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    times = {n: [] for n in models}
    for it in range(warmup + iters):
        order = ("Baseline", "HPLF") if it % 2 == 0 else ("HPLF", "Baseline")
        for name in order:
            dt = step(name)
            if it >= warmup:
                times[name].append(dt)
    with torch.no_grad():
        feat = models["HPLF"][0].backbone(models["HPLF"][0].preprocess_image({"images": images[:1].clone()}))
    label = f"{cfg.MODEL.BACKBONE.DEPTH} {h}x{w} batch {bs} ({feat.shape[2]} stripes x {cfg.MODEL.HPLF.LOCAL_DIM})"
    return label, {n: statistics.median(v) for n, v in times.items()}, {n: min(v) for n, v in times.items()}


def bench_eval(nq: int, ng: int, gdim: int, stripes: int, ldim: int, batch: int = 128):
    from fastreid_ext.hplf.evaluator import HPLFEvaluator

    cfg = make_cfg("HPLF", r50=True)
    cfg.merge_from_list(["MODEL.BACKBONE.FEAT_DIM", str(gdim), "MODEL.HPLF.LOCAL_DIM", str(ldim)])
    ev = HPLFEvaluator(cfg, nq)
    ev.reset()
    n_ids = 750
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(n_ids, gdim + stripes * ldim, generator=g)
    pids = torch.cat([torch.arange(nq) % n_ids, torch.randint(0, n_ids, (ng,), generator=g)])
    camids = torch.cat([torch.zeros(nq, dtype=torch.long), torch.randint(1, 6, (ng,), generator=g)])
    base = rss_mb()
    for s in range(0, nq + ng, batch):
        p = pids[s:s + batch]
        out = centers[p] + 1.5 * torch.randn(len(p), centers.shape[1], generator=g)
        out[:, gdim:] *= 0.02  # stripe distances of a few units, as trained local features (tanh not saturated)
        ev.process({"targets": p, "camids": camids[s:s + batch]}, out)
    del centers
    before = rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    with PeakRSS() as peak:
        res = ev.evaluate()
    dt = time.perf_counter() - t0
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    feats_mb = (nq + ng) * (gdim + stripes * ldim) * 4 / 2**20
    return dict(base=base, before=before, peak=peak.peak, tracemalloc=tm_peak / 2**20, seconds=dt,
                feats_mb=feats_mb, res=res)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--r50", action="store_true", help="also time the ResNet-50 256x128 batch-32 recipe")
    ap.add_argument("--r50-iters", type=int, default=4)
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--gallery", type=int, default=15000)
    ap.add_argument("--global-dim", type=int, default=2048)
    ap.add_argument("--stripes", type=int, default=16)
    ap.add_argument("--local-dim", type=int, default=128)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu", help="device of the train-iteration part (cpu, cuda)")
    ap.add_argument("--out", default=result_path("hplf.md"))
    args = ap.parse_args()
    set_threads(args.threads)

    printed = 0
    lines = [f"# HPLF benchmark ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads)", ""]
    if not args.skip_eval:
        r = bench_eval(args.queries, args.gallery, args.global_dim, args.stripes, args.local_dim)
        res = r["res"]
        lines += [f"## Global + local evaluation, {args.queries} x {args.gallery} "
                  f"(global {args.global_dim}-d, {args.stripes} stripes x {args.local_dim})", "",
                  "| measure | value |", "| --- | --- |",
                  f"| RSS before feeding the evaluator | {r['base']:.0f} MiB |",
                  f"| RSS with all features stored ({r['feats_mb']:.0f} MiB of features) | {r['before']:.0f} MiB |",
                  f"| peak RSS during evaluate() | {r['peak']:.0f} MiB |",
                  f"| peak RSS - RSS before evaluate() | {r['peak'] - r['before']:.0f} MiB |",
                  f"| tracemalloc peak (Python/numpy only) | {r['tracemalloc']:.0f} MiB |",
                  f"| evaluate() wall time | {r['seconds']:.0f} s |",
                  f"| Rank-1 / mAP global, GL, L (synthetic features) | {res['Rank-1']:.1f} / {res['mAP']:.1f}, "
                  f"{res['GL/Rank-1']:.1f} / {res['GL/mAP']:.1f}, {res['L/Rank-1']:.1f} / {res['L/mAP']:.1f} |",
                  f"| fits in 4 GB (peak RSS of the whole process) | {'yes' if r['peak'] < 4096 else 'NO'} |", ""]
        print("\n".join(lines), flush=True)
        printed = len(lines)
    if not args.skip_train:
        rows = [bench_train(False, args.iters, args.warmup, args.device)]
        if args.r50:
            rows.append(bench_train(True, args.r50_iters, 1, args.device))
        lines += ["## Train iteration (forward + backward + Adam), median over interleaved iterations", "",
                  "| setting | Baseline (s) | HPLF (s) | HPLF / Baseline (median) | ratio of best |",
                  "| --- | --- | --- | --- | --- |"]
        for label, med, best in rows:
            lines.append(f"| {label} | {med['Baseline']:.3f} | {med['HPLF']:.3f} | "
                         f"{med['HPLF'] / med['Baseline']:.3f}x | {best['HPLF'] / best['Baseline']:.3f}x |")
        lines.append("")
    text = "\n".join(lines)
    write_report(text, args.out, shown="\n".join(lines[printed:]))


if __name__ == "__main__":
    main()
