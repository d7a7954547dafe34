"""HPLF vs FastReID Baseline on SynthPedA with vertical misalignment, same budget, CPU (not a test).

Runs ``tools/train_net.py`` twice (``projects/HPLF/configs/SynthPed/baseline_R18.yml`` and ``hplf_R18.yml``)
with the same overrides (``DATASETS.SYNTHPED.VERTICAL_MISALIGN``, epochs, LR steps), reads the final evaluation
from each run's log and prints a markdown table (global Rank-1/mAP for both; global + local
``GL/...`` and local-only ``L/...`` for HPLF), also written to ``bench/results/hplf_misalign.md``.

    python bench/bench_hplf_misalign.py [--misalign 0.25] [--epochs 5] [--threads 1]
        [--variant HPLF-normfeat] [KEY VALUE ...]

Both runs are ``tools/train_net.py`` itself (FastReID's contiguous-buffer optimizer, which updates no
weight under torch 2, is replaced by per-parameter state by compat patch ``optimizer_not_contiguous``).

``--seed`` (``SEED``, default 0) makes both runs repeatable (``-1``: seeded from the clock, FastReID's way).
The LR steps are the benchmarks' rule (``bench/_common.py``: Base-SynthPed's schedule scaled to ``--epochs``,
8/12 and 11/12 of the epochs). The dataset variant is generated first (timed separately, shared by both runs).
Extra ``KEY VALUE`` pairs go to both runs (e.g. ``DATASETS.SYNTHPED.NUM_TRAIN_IDS 200``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, budget_opts, make_cfg, result_path, write_report  # bench/_common.py
CONFIGS = {"Baseline": "projects/HPLF/configs/SynthPed/baseline_R18.yml",
           "HPLF": "projects/HPLF/configs/SynthPed/hplf_R18.yml"}
#: optional extra runs: name -> (config, overrides)
VARIANTS = {"HPLF-normfeat": (CONFIGS["HPLF"], ["MODEL.HPLF.NORM_FEAT", "True"])}
KEYS = ("Rank-1", "Rank-5", "mAP", "mINP")


def last_eval(log_file: Path) -> dict:
    """The last ``Evaluation results in csv format`` table of a run's log (FastReID writes the final
    evaluation to the log but not always to metrics.json)."""
    lines = open(log_file).read().splitlines()
    starts = [i for i, line in enumerate(lines) if "Evaluation results in csv format" in line]
    if not starts:
        raise RuntimeError(f"no evaluation in {log_file}")
    header, row = lines[starts[-1] + 1], lines[starts[-1] + 3]
    keys = [c.strip() for c in header.strip().strip("|").split("|")]
    vals = [c.strip() for c in row.strip().strip("|").split("|")]
    return {k: float(v) for k, v in zip(keys[1:], vals[1:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--misalign", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="SEED of both runs (-1: from the clock)")
    ap.add_argument("--variant", action="append", default=[], choices=sorted(VARIANTS),
                    help="extra HPLF run(s); HPLF-normfeat: L2-normalised stripe features (MODEL.HPLF.NORM_FEAT)")
    ap.add_argument("--reuse", action="store_true",
                    help="skip a run whose identical command already completed (its done.json)")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the runs (0: inherit)")
    ap.add_argument("--out-root", default="logs/hplf_misalign")
    ap.add_argument("--out", default=result_path("hplf_misalign.md"))
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args()

    common = (["DATASETS.SYNTHPED.VERTICAL_MISALIGN", str(args.misalign), "SEED", str(args.seed)]
              + budget_opts(args.epochs) + list(args.opts))
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    # generate the dataset variant once, outside the timed runs
    from fastreid_ext.data.build import build_dataset

    t0 = time.time()
    cfg = make_cfg(CONFIGS["HPLF"], common)
    for name in dict.fromkeys(tuple(cfg.DATASETS.NAMES) + tuple(cfg.DATASETS.TESTS)):
        build_dataset(name, cfg)
    print(f"dataset ready in {time.time() - t0:.0f} s", flush=True)
    results, cmds, secs = {}, {}, {}
    runs = {name: (cfg, []) for name, cfg in CONFIGS.items()}
    runs.update({v: VARIANTS[v] for v in args.variant})
    for name, (cfg, extra) in runs.items():
        out_dir = ROOT / args.out_root / name.lower()
        cmd = [sys.executable, "tools/train_net.py", "--config-file", cfg, *common, *extra,
               "OUTPUT_DIR", str(out_dir)]
        cmds[name] = " ".join(cmd[1:]).replace(str(ROOT) + "/", "")
        done = out_dir / "done.json"
        if args.reuse and done.exists() and json.load(open(done))["cmd"] == cmds[name]:
            info = json.load(open(done))  # same command already completed: reuse its numbers
            print(f"[{name}] reusing {done}", flush=True)
        else:
            print(f"[{name}] {cmds[name]}", flush=True)
            t0 = time.time()
            out_dir.mkdir(parents=True, exist_ok=True)
            with open(out_dir / "stdout.txt", "w") as log:
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
            info = {"cmd": cmds[name], "seconds": time.time() - t0, "results": last_eval(out_dir / "stdout.txt")}
            json.dump(info, open(done, "w"), indent=1)
        secs[name], results[name] = info["seconds"], info["results"]

    lines = [f"# HPLF vs Baseline, SynthPedA, VERTICAL_MISALIGN {args.misalign:g}, {args.epochs} epochs, "
             "CPU", "",
             "| model | distance | " + " | ".join(KEYS) + " | train + eval time |",
             "| --- | --- | " + " | ".join("---" for _ in KEYS) + " | --- |"]
    for name, res in results.items():
        variants = [("global", "")] + ([("global + local", "GL/"), ("local only", "L/")]
                                       if name.startswith("HPLF") else [])
        for label, prefix in variants:
            vals = " | ".join(f"{res[prefix + k]:.2f}" for k in KEYS)
            lines.append(f"| {name} | {label} | {vals} | {secs[name] / 60:.1f} min |")
    thr = f"OMP_NUM_THREADS={args.threads} " if args.threads else ""
    lines += ["", "Produced by (from the repository root):", "",
              "    python bench/bench_hplf_misalign.py " + " ".join(sys.argv[1:]), "",
              "which runs:", ""]
    lines += [f"    {thr}python {c}" for c in cmds.values()]
    text = "\n".join(lines)
    write_report(text, args.out)


if __name__ == "__main__":
    main()
