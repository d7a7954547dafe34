"""RBNet variants on SynthPedA at the same budget (CPU): the plain masked pass against the Section 1.1 step 3 fusion
into backbone 2, and the max-union of the part masks against the paper's sum (Yu & Piao, "Reverse backbone net for
unsupervised person re-identification", 2024).

Not a test. Every run trains ``projects/RBNet/configs/SynthPed/rbnet_R18.yml`` (ResNet-18 from scratch, 128x64,
reduced 17-grouped reverse path) with one variant's overrides, the same iterations, batch, schedule and ``SEED``,
then evaluates SynthPedA's query/gallery (Rank-1, mAP) and the maps (mask mean on person / background against
SynthPed's exact person masks, keypoint error of the heatmaps' argmax). Runs go to separate processes (``--jobs``
at a time, ``--threads`` torch threads each); a markdown table of every run and the per-variant mean +- std is
printed and written to ``--out``.

    python projects/RBNet/variants_synthped.py --variants plain fusion sum --seeds 0 1 2 --iters 80 --batch 32 \\
        --threads 1 --jobs 2                  # what the README reports (projects/RBNet/README.md, "Variants")

Each run costs about 80 x 2.5-4 s of CPU for training (one thread, 2.5 s idle, up to 4 s on a loaded machine)
plus about a minute of evaluation; the README says how many seeds finished.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "projects/RBNet/configs/SynthPed/rbnet_R18.yml"
VARIANTS = {
    "plain": [],
    "fusion": ["MODEL.RBNET.FUSION.LEVELS", "['conv1','layer1']"],
    "sum": ["MODEL.RBNET.MASK_REDUCE", "sum"],
}
EPOCH_ITERS = 20


def budget(iters, batch):
    """``KEY VALUE`` overrides: ``iters`` iterations as epochs of 20, LR x0.1 after 2/3 and 11/12, warm-up a tenth,
    evaluation and checkpoint at the end only."""
    epochs = max(1, round(iters / EPOCH_ITERS))
    steps = sorted({max(1, epochs * 8 // 12), max(1, epochs * 11 // 12)})
    return ["SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.ITERS_PER_EPOCH", str(EPOCH_ITERS), "SOLVER.MAX_EPOCH",
            str(epochs), "SOLVER.STEPS", str(steps).replace(" ", ""), "SOLVER.WARMUP_ITERS", str(max(1, iters // 10)),
            "TEST.EVAL_PERIOD", str(epochs), "SOLVER.CHECKPOINT_PERIOD", str(epochs), "DATALOADER.NUM_WORKERS", "0"]


def run_one(variant, seed, iters, batch, threads, out):
    """Train and evaluate one (variant, seed) in this process; returns the result dict."""
    import torch

    torch.set_num_threads(threads)
    import fastreid_ext
    from fastreid_ext.engine import build_trainer
    from fastreid_ext.rbnet.evaluation import map_quality

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, CONFIG))
    cfg.merge_from_list(budget(iters, batch) + VARIANTS[variant] + ["SEED", str(seed), "OUTPUT_DIR", out])
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    res = trainer.train()
    minutes = (time.perf_counter() - t0) / 60
    q = map_quality(trainer.model, cfg, 0)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json")) if "loss_cls2" in line]
    last = rows[-1] if rows else {}
    return {"variant": variant, "seed": seed, "iters": trainer.max_iter, "Rank-1": float(res["Rank-1"]),
            "mAP": float(res["mAP"]), "mask_person": q["mask_person"], "mask_bg": q["mask_bg"],
            "kpt_err": q["kpt_err"],
            "loss_masked": last.get("loss_cls2", float("nan")) + last.get("loss_triplet2", 0.0),
            "minutes": minutes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["plain", "fusion", "sum"], choices=sorted(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=240)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (separate processes)")
    ap.add_argument("--runs", default=None, help="run folders (default: a temporary folder)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "rbnet_variants_synthped.md"))
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args(argv)
    runs = args.runs or tempfile.mkdtemp(prefix="rbnet_variants_")
    os.makedirs(runs, exist_ok=True)
    if args.one:
        v, s = args.one[0], int(args.one[1])
        r = run_one(v, s, args.iters, args.batch, args.threads, os.path.join(runs, f"{v}_seed{s}"))
        print("RESULT " + json.dumps(r), flush=True)
        return r
    todo = [(v, s) for s in args.seeds for v in args.variants]
    procs, results = [], []
    print(f"runs in {runs}; load average {os.getloadavg()[0]:.1f}", flush=True)
    while todo or procs:
        while todo and len(procs) < args.jobs:
            v, s = todo.pop(0)
            log = open(os.path.join(runs, f"{v}_seed{s}.log"), "w")
            cmd = [sys.executable, os.path.abspath(__file__), "--one", v, str(s), "--iters", str(args.iters),
                   "--batch", str(args.batch), "--threads", str(args.threads), "--runs", runs]
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log, v, s))
        time.sleep(5)
        for p in [p for p in procs if p[0].poll() is not None]:
            procs.remove(p)
            p[1].close()
            lines = [ln for ln in open(p[1].name) if ln.startswith("RESULT ")]
            if not lines:
                print(f"{p[2]} seed {p[3]} failed (log: {p[1].name})", flush=True)
                continue
            results.append(json.loads(lines[-1][len("RESULT "):]))
            print(lines[-1].strip(), flush=True)
    cmd = (f"python projects/RBNet/variants_synthped.py --variants {' '.join(args.variants)} --seeds "
           f"{' '.join(map(str, args.seeds))} --iters {args.iters} --batch {args.batch} --threads {args.threads} "
           f"--jobs {args.jobs}")
    keys = ("Rank-1", "mAP", "mask_person", "mask_bg", "kpt_err", "loss_masked", "minutes")
    lines = [f"# RBNet variants on SynthPedA ({CONFIG}, same budget)", "", f"Command: `{cmd}`", "",
             "| variant | seed | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 2)]
    for r in sorted(results, key=lambda r: (r["variant"], r["seed"])):
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    lines += ["", "| variant | runs | " + " | ".join(f"{k} (mean +- std)" for k in keys[:5]) + " |",
              "|" + " --- |" * 7]
    for v in args.variants:
        rs = [r for r in results if r["variant"] == v]
        if not rs:
            continue
        cells = []
        for k in keys[:5]:
            xs = [r[k] for r in rs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.2f} +- {sd:.2f}")
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    return results


if __name__ == "__main__":
    main()
