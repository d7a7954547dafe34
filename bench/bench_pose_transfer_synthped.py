#!/usr/bin/env python
"""PoseTransfer on CPU, SynthPedA -> SynthPedB: the fine-tuning baseline, Model A and Model B at several fractions of
the target training identities, several seeds each; prints a markdown table (mean and spread over seeds).

    python bench/bench_pose_transfer_synthped.py [--seeds 1 2 3] [--fractions 1.0 0.6 0.2] [--arms baseline A B]

Stages (everything in one process, one run after the other, torch threads 1 by default):

1. **source** (skipped when ``<out>/<name>/bench_source.json`` exists; ``SEED`` 0), in
   ``projects/PoseTransfer/configs/SynthPedA-SynthPedB``: ``source_mobilenetv2.yml`` (E_I + C_v, everything trains on
   SynthPedA: the baseline's source model), then ``source_modelA/B_mobilenetv2.yml`` (E_A + head + C_v on top of that
   E_I, frozen); each source model is evaluated on SynthPedA and, without any target training, on SynthPedB (the
   "no target data" row);
2. **transfer** (each seed x fraction x arm; finished runs are read back from ``<out>/runs.jsonl``): the arm's
   transfer config (``baseline`` / ``modelA`` / ``modelB_mobilenetv2.yml``: same iterations, optimizer and schedule for
   all) with ``SEED``, ``TRANSFER.FRACTION_SEED`` = the seed and ``TRANSFER.FRACTION`` = the fraction (by identities).

The table reports SynthPedB Top-1 / mAP of the first stage (re-id feature, Euclidean) and after verification
re-ranking of the top 100 (``RR/``), mean +- sample standard deviation over the seeds, and the wall time of each run.
Results: ``bench/results/pose_transfer_synthped.md`` (or ``--report``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, add_threads_arg, print_setup, result_path, set_threads, write_report  # noqa: E402

CFG_DIR = "projects/PoseTransfer/configs/SynthPedA-SynthPedB"
#: arm -> (its source model, its transfer config); source_modelA/B start from source_mobilenetv2's E_I
ARMS = {"baseline": ("source", "baseline"), "A": ("source_modelA", "modelA"), "B": ("source_modelB", "modelB")}
#: Table 2 of the paper (Market-1501 -> DukeMTMC-reID, Top-1 / mAP), columns in the order of the printed table
PAPER = {1.0: ((38.4, 23.0), (57.6, 37.5), (60.2, 40.9)), 0.8: ((37.3, 22.5), (56.7, 36.6), (58.7, 39.4)),
         0.6: ((36.4, 21.8), (54.7, 34.6), (57.5, 38.1)), 0.4: ((34.5, 20.5), (50.5, 31.1), (54.9, 35.5)),
         0.2: ((31.7, 18.7), (42.5, 25.2), (45.0, 28.2))}


def _cfg(config, opts):
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list(list(opts))
    return cfg


def _train(cfg):
    from fastreid_ext.engine import build_trainer
    from fastreid_ext.engine.trainer import setup_ext_logger

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    setup_ext_logger(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    res = trainer.train()
    trainer.cpu_seconds = time.process_time() - c0
    return dict(res), time.perf_counter() - t0, trainer


def _evaluate(cfg, weights):
    """Evaluate ``weights`` with ``cfg`` (its test set) through the PoseTransfer trainer (re-ranking included)."""
    import torch
    from fastreid.utils.checkpoint import Checkpointer

    from fastreid_ext.engine import trainer_class

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.TRANSFER.SOURCE_WEIGHTS = ""
    tc = trainer_class(cfg)
    model = tc.build_model(cfg)
    Checkpointer(model).load(weights)
    with torch.no_grad():
        return dict(tc.test(cfg, model))


def _keep(res):
    return {k: float(v) for k, v in res.items() if isinstance(v, (int, float)) and k != "metric"}


def run_source(arm, out, opts, ea_epochs=0):
    src, _ = ARMS[arm]
    d = os.path.join(out, src)
    weights = os.path.join(d, "model_final.pth")
    info_path = os.path.join(d, "bench_source.json")
    if os.path.isfile(weights) and os.path.isfile(info_path):
        return json.load(open(info_path))
    extra = [] if src == "source" else ["TRANSFER.SOURCE_WEIGHTS", os.path.join(out, "source", "model_final.pth")]
    if ea_epochs and src != "source":  # stage 2 only (the diagnostic of the README)
        extra += ["SOLVER.MAX_EPOCH", str(ea_epochs), "SOLVER.STEPS", f"[{ea_epochs + 1}]", "SOLVER.CHECKPOINT_PERIOD",
                  str(ea_epochs), "TEST.EVAL_PERIOD", str(ea_epochs)]
    cfg = _cfg(f"{CFG_DIR}/{src}_mobilenetv2.yml", ["OUTPUT_DIR", d, "SEED", "0"] + extra + opts)
    res, secs, trainer = _train(cfg)
    tcfg = _cfg(f"{CFG_DIR}/{ARMS[arm][1]}_mobilenetv2.yml", opts)
    on_b = _evaluate(tcfg, weights)
    info = {"arm": arm, "seconds": secs, "cpu_seconds": trainer.cpu_seconds, "source": _keep(res),
            "target_no_training": _keep(on_b)}
    json.dump(info, open(info_path, "w"), indent=1)
    return info


def run_transfer(arm, seed, fraction, out, opts, iters):
    src, name = ARMS[arm]
    d = os.path.join(out, f"{name}_f{fraction}_s{seed}")
    cfg = _cfg(f"{CFG_DIR}/{name}_mobilenetv2.yml",
               ["OUTPUT_DIR", d, "SEED", str(seed), "TRANSFER.FRACTION_SEED", str(seed), "TRANSFER.FRACTION",
                str(fraction), "TRANSFER.SOURCE_WEIGHTS", os.path.join(out, src, "model_final.pth")] + opts)
    if iters:
        cfg.SOLVER.ITERS_PER_EPOCH = max(1, iters // cfg.SOLVER.MAX_EPOCH)
    res, secs, trainer = _train(cfg)
    m = trainer.model
    groups = m.parameter_groups()
    return {"arm": arm, "seed": seed, "fraction": fraction, "seconds": secs, "cpu_seconds": trainer.cpu_seconds,
            "iters": cfg.SOLVER.ITERS_PER_EPOCH * cfg.SOLVER.MAX_EPOCH,
            "trainable": sum(g["trainable"] for g in groups.values()), **_keep(res)}


def _ms(vals):
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def report(rows, sources, fractions, arms, seeds, command) -> str:
    lines = [f"SynthPedA -> SynthPedB, CPU; {len(seeds)} seeds ({', '.join(map(str, seeds))}); mean ± sample std "
             f"over seeds. Command: `{command}`", ""]
    head = "| target data | " + " | ".join(f"{a} Top-1 | {a} mAP" for a in arms) + " |"
    lines += ["**First stage (re-id feature, Euclidean):**", "", head, "|" + " --- |" * (1 + 2 * len(arms))]
    for f in fractions:
        cells = []
        for a in arms:
            rs = [r for r in rows if r["arm"] == a and r["fraction"] == f]
            cells += [_ms([r["Rank-1"] for r in rs]), _ms([r["mAP"] for r in rs])]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    cells = []
    for a in arms:
        s = sources.get(a, {}).get("target_no_training", {})
        cells += [f"{s.get('Rank-1', float('nan')):.1f}", f"{s.get('mAP', float('nan')):.1f}"]
    lines.append("| 0 (source model) | " + " | ".join(cells) + " |")
    lines += ["", "**After verification re-ranking of the top 100 (RR/):**", "", head,
              "|" + " --- |" * (1 + 2 * len(arms))]
    for f in fractions:
        cells = []
        for a in arms:
            rs = [r for r in rows if r["arm"] == a and r["fraction"] == f]
            cells += [_ms([r.get("RR/Rank-1", float("nan")) for r in rs]),
                      _ms([r.get("RR/mAP", float("nan")) for r in rs])]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    cells = []
    for a in arms:
        s = sources.get(a, {}).get("target_no_training", {})
        cells += [f"{s.get('RR/Rank-1', float('nan')):.1f}", f"{s.get('RR/mAP', float('nan')):.1f}"]
    lines.append("| 0 (source model) | " + " | ".join(cells) + " |")
    lines += ["", "**Source models on SynthPedA and their training time (stage 1: baseline; stage 2: A, B):**", "",
              "| arm | SynthPedA Top-1 | SynthPedA mAP | train + eval s (wall) | CPU s |",
              "| --- | --- | --- | --- | --- |"]
    for a in arms:
        s = sources.get(a)
        if s:
            r = s["source"]
            lines.append(f"| {a} | {r.get('Rank-1', float('nan')):.1f} | {r.get('mAP', float('nan')):.1f} | "
                         f"{s['seconds']:.0f} | {s.get('cpu_seconds', float('nan')):.0f} |")
    lines += ["", "**Transfer runs:** " + ", ".join(
        f"{a}: {statistics.mean([r['seconds'] for r in rows if r['arm'] == a]):.0f} s per run, "
        f"{rows[[r['arm'] for r in rows].index(a)]['iters']} iterations, "
        f"{rows[[r['arm'] for r in rows].index(a)]['trainable']:,} trainable parameters"
        for a in arms if any(r["arm"] == a for r in rows)),
        f"total transfer time {sum(r['seconds'] for r in rows) / 60:.1f} min wall / "
        f"{sum(r.get('cpu_seconds', 0) for r in rows) / 60:.1f} min CPU, source stage "
        f"{sum(s['seconds'] for s in sources.values()) / 60:.1f} min wall / "
        f"{sum(s.get('cpu_seconds', 0) for s in sources.values()) / 60:.1f} min CPU (data loading in the main "
        f"process, one torch thread)."]
    lines += ["", "Paper, Table 2 (Market-1501 -> DukeMTMC-reID, Top-1 / mAP; columns as printed, see the README):", "",
              "| fraction | column 1 | column 2 | column 3 |", "| --- | --- | --- | --- |"]
    for f, cols in PAPER.items():
        lines.append(f"| {f} | " + " | ".join(f"{t} / {m}" for t, m in cols) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.6, 0.2])
    ap.add_argument("--arms", nargs="+", default=["baseline", "A", "B"], choices=list(ARMS))
    ap.add_argument("--iters", type=int, default=0, help="transfer iterations (0: the config's, 48)")
    ap.add_argument("--out", default="logs/PoseTransfer/bench_synthped")
    ap.add_argument("--report", default=result_path("pose_transfer_synthped.md"))
    ap.add_argument("--source-only", action="store_true", help="stop after the source stage")
    ap.add_argument("--ea-source-epochs", type=int, default=0,
                    help="epochs of source stage 2 (E_A of Model A / B on SynthPedA; 0: the config's, 2)")
    ap.add_argument("--reuse-stage1", default="", help="an --out folder whose source/ (stage 1: E_I + C_v) to reuse")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    add_threads_arg(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    os.chdir(ROOT)
    print_setup(args.out)
    for name in ("fastreid", "fastreid_ext"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from tqdm import tqdm

    opts = ["DATALOADER.NUM_WORKERS", "0"] + list(args.opts)  # one process: its CPU time is the run's
    sources = {}
    arms = ["baseline"] + [a for a in args.arms if a != "baseline"]
    if args.reuse_stage1 and not os.path.isdir(os.path.join(args.out, "source")):
        os.makedirs(args.out, exist_ok=True)
        os.symlink(os.path.abspath(os.path.join(args.reuse_stage1, "source")), os.path.join(args.out, "source"))
    for arm in tqdm(arms, desc="source stage", dynamic_ncols=True):  # E_I first: A and B build on it
        sources[arm] = run_source(arm, args.out, opts, args.ea_source_epochs)
        s = sources[arm]
        tqdm.write(f"source {arm}: SynthPedA R1 {s['source']['Rank-1']:.1f} mAP {s['source']['mAP']:.1f}; "
                   f"SynthPedB without target training R1 {s['target_no_training']['Rank-1']:.1f} mAP "
                   f"{s['target_no_training']['mAP']:.1f} ({s['seconds']:.0f} s)")
    if args.source_only:
        return
    log = os.path.join(args.out, "runs.jsonl")
    done = [json.loads(line) for line in open(log)] if os.path.isfile(log) else []
    todo = [(s, f, a) for s in args.seeds for f in args.fractions for a in args.arms
            if not any(r["seed"] == s and r["fraction"] == f and r["arm"] == a for r in done)]
    for seed, frac, arm in tqdm(todo, desc="transfer runs", dynamic_ncols=True):
        r = run_transfer(arm, seed, frac, args.out, opts, args.iters)
        done.append(r)
        with open(log, "a") as fh:
            fh.write(json.dumps(r) + "\n")
        tqdm.write(f"{arm} fraction {frac} seed {seed}: R1 {r['Rank-1']:.1f} mAP {r['mAP']:.1f} | RR R1 "
                   f"{r.get('RR/Rank-1', float('nan')):.1f} mAP {r.get('RR/mAP', float('nan')):.1f} "
                   f"({r['seconds']:.0f} s)")
    rows = [r for r in done if r["seed"] in args.seeds and r["fraction"] in args.fractions and r["arm"] in args.arms]
    command = "python bench/bench_pose_transfer_synthped.py " + " ".join(sys.argv[1:])
    shown = {a: sources[a] for a in args.arms}
    write_report(report(rows, shown, args.fractions, args.arms, args.seeds, command.strip()), args.report)


if __name__ == "__main__":
    main()
