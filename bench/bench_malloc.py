"""Benchmark: glibc's default malloc vs :func:`fastreid_ext.utils.malloc.keep_freed_memory` on CPU training.

Not a test. mallopt is process-wide, so each setting lives in its own worker process; the parent drives both
*interleaved* (one measurement in one, then the same in the other, ``--rounds`` times), so that the speed
changes of a shared machine hit both alike; medians are reported:

* in each fresh worker, before anything else: a ReLU over a 35 MB tensor (64 x 68 x 64 x 32, the size of
  RBNet's reverse features at conv1 for a 128 x 64 batch of 64), time and minor page faults per call (median
  of 10; later in a process glibc may serve such sizes from its heap anyway, after its mmap threshold adapted);
* a training iteration (forward + backward + Adam, as ``bench/bench_rbnet.py``) of FastReID's Baseline and of
  RBNet, same backbone / batch / input: seconds and minor page faults per iteration; peak RSS per process.

Prints a markdown table and writes it to ``bench/results/malloc.md``.

    python bench/bench_malloc.py [--depth 18x] [--size 128 64] [--batch 64] [--rounds 8]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

from _common import ROOT, result_path, set_threads, write_report  # bench/_common.py


def child(args):
    """Worker: builds both models, then answers one measurement per line read from stdin."""
    import resource
    import time

    import torch

    from fastreid_ext.utils.malloc import keep_freed_memory

    applied = keep_freed_memory()
    set_threads(args.threads)
    from bench_rbnet import batch, build, train_iter
    from fastreid.utils.events import EventStorage

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    x = torch.randn(64, 68, 64, 32)
    relu = []
    for i in range(13):
        f0, t = faults(), time.perf_counter()
        torch.relu(x)
        if i >= 3:  # after 3 warm-up calls
            relu.append((time.perf_counter() - t, faults() - f0))
    relu = [statistics.median(r[0] for r in relu), statistics.median(r[1] for r in relu)]
    size = tuple(args.size)
    data = batch(args.batch, size, "cpu")
    models = {arch: build(arch, args.depth, size, "cpu") for arch in ("Baseline", "RBNet")}

    def measure(what):
        f0, t = faults(), time.perf_counter()
        train_iter(*models[what], data, "cpu")
        return time.perf_counter() - t, faults() - f0

    with EventStorage(0):
        for what in ("Baseline", "RBNet", "Baseline", "RBNet"):  # warm-up
            measure(what)
        print(json.dumps({"ready": applied, "relu": relu}), flush=True)
        for line in sys.stdin:
            what = line.strip()
            if what == "quit":
                break
            t, f = measure(what)
            print(json.dumps({"t": t, "faults": f,
                              "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", default="18x")
    p.add_argument("--size", type=int, nargs=2, default=[128, 64])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=8, help="interleaved rounds (medians reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=result_path("malloc.md"))
    args = p.parse_args()
    if args.child:
        return child(args)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench"),
                                                       os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, __file__, "--child", "--depth", args.depth, "--size", *map(str, args.size),
           "--batch", str(args.batch), "--threads", str(args.threads)]
    workers, applied, relu = {}, {}, {}
    for mode in ("system", "keep"):
        workers[mode] = subprocess.Popen(cmd, env=dict(env, FASTREID_EXT_MALLOC=mode), stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = workers[mode].stdout.readline()
        if not line:
            raise SystemExit(f"worker ({mode}) failed to start: run with --child to see its error")
        ready = json.loads(line)
        applied[mode], relu[mode] = ready["ready"], ready["relu"]
    what_list = ("Baseline", "RBNet")
    res = {(m, w): [] for m in workers for w in what_list}
    for _ in range(args.rounds):
        for what in what_list:
            for mode, proc in workers.items():
                proc.stdin.write(what + "\n")
                proc.stdin.flush()
                res[mode, what].append(json.loads(proc.stdout.readline()))
    for proc in workers.values():
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait()

    def med(mode, what, key="t"):
        return statistics.median(r[key] for r in res[mode, what])

    rows = [(f"Baseline train iteration (R{args.depth[:-1]}, batch {args.batch})", "Baseline", 1, "s"),
            (f"RBNet train iteration (R{args.depth[:-1]}, batch {args.batch})", "RBNet", 1, "s")]
    lines = [f"# glibc malloc: default vs freed memory kept ({platform.machine()}, {args.threads} thread(s), "
             f"{args.size[0]}x{args.size[1]}, load {os.getloadavg()[0]:.1f})", "",
             f"Medians of {args.rounds} interleaved rounds (two worker processes). keep_freed_memory applied: "
             f"{applied['keep']} (opted out in the default worker: {not applied['system']}).", "",
             "| what | default: time | default: page faults | kept: time | kept: page faults | speed-up |",
             "| --- | --- | --- | --- | --- | --- |",
             f"| ReLU, 35 MB tensor, fresh process | {relu['system'][0] * 1e3:.3g} ms | {relu['system'][1]:,.0f} | "
             f"{relu['keep'][0] * 1e3:.3g} ms | {relu['keep'][1]:,.0f} | {relu['system'][0] / relu['keep'][0]:.2f}x |"]
    for name, what, scale, unit in rows:
        a, b = med("system", what), med("keep", what)
        lines.append(f"| {name} | {a * scale:.3g} {unit} | {med('system', what, 'faults'):,.0f} | "
                     f"{b * scale:.3g} {unit} | {med('keep', what, 'faults'):,.0f} | {a / b:.2f}x |")
    ratio_sys = med("system", "RBNet") / med("system", "Baseline")
    ratio_keep = med("keep", "RBNet") / med("keep", "Baseline")
    lines += ["", f"RBNet / Baseline: {ratio_sys:.2f}x with glibc's default, {ratio_keep:.2f}x with freed memory kept.",
              f"Peak RSS: {res['system', 'RBNet'][-1]['rss']:.0f} MiB default, "
              f"{res['keep', 'RBNet'][-1]['rss']:.0f} MiB kept."]
    text = "\n".join(lines)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
