"""Benchmark: JointIBN on SynthPed, cross-domain mAP on the held-out SynthPedB (CPU).

Not a test. Four runs of ``projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml`` (ResNet-18 IBN-a from
scratch, no random erasing) with the same budget (the same number of iterations, batch and schedule):

| run | training domains | background removal |
| --- | --- | --- |
| joint + bg | SynthPedA + SynthPedC | on (SynthPed's exact masks, train and test) |
| joint | SynthPedA + SynthPedC | off |
| single + bg | SynthPedA | on |
| single | SynthPedA | off |

Every run is evaluated on SynthPedB (never trained on). FastReID counts training in epochs of
``len(train set) // batch`` iterations, which would give the joint runs (twice the images) half the
epochs of the single-domain runs for the same iterations and a different LR schedule. The bench
therefore fixes the epoch length to ``--epoch-iters`` iterations for every run (``SOLVER.ITERS_PER_EPOCH``;
the identity sampler draws from the whole training set regardless): identical iterations, warm-up and LR
steps (the benchmarks' rule, ``bench/_common.py``: x0.1 after 2/3 and 11/12 of training) for all four runs;
each seed of ``--seeds`` is a run's ``SEED``.
Prints a markdown table and writes it to ``bench/results/joint_ibn_synthped.md`` (``--results``).

    python bench/bench_joint_ibn_synthped.py [--iters 500] [--batch 32] [--seeds 0] [--runs ...] [--untrained]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import add_threads_arg, make_cfg, print_setup, result_path, set_threads, write_report  # bench/_common.py

CONFIG = "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml"
RUNS = {
    "joint+bg": (("SynthPedA", "SynthPedC"), True),
    "joint": (("SynthPedA", "SynthPedC"), False),
    "single+bg": (("SynthPedA",), True),
    "single": (("SynthPedA",), False),
}


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def run_cfg(names, bg, iters, batch, epoch_iters, out_dir, seed, extra=()):
    return make_cfg(CONFIG, ["DATASETS.NAMES", str(tuple(names)), "MODEL.JOINT_IBN.ENABLED", str(bg),
                             "DATASETS.ANNOTATIONS.LOAD_MASKS", str(bg), "SOLVER.IMS_PER_BATCH", str(batch),
                             "OUTPUT_DIR", str(out_dir), *extra], seed=seed, iters=iters, epoch_iters=epoch_iters)


def run_one(name, iters, batch, epoch_iters, seed, out_root, extra=()):
    from fastreid_ext.engine import build_trainer

    names, bg = RUNS[name]
    out = Path(out_root) / f"{name}_s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_cfg(names, bg, iters, batch, epoch_iters, out, seed, extra)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = build_trainer(cfg)
    n_train = len(trainer.data_loader.dataset)
    real_iters = trainer.max_iter
    w0 = trainer.model.backbone.conv1.weight.detach().clone()
    trainer.resume_or_load(resume=False)
    res = trainer.train()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if torch_equal(w0, trainer.model.backbone.conv1.weight.detach()):
        raise RuntimeError(f"run {name}: the weights did not change during training")
    r = {"run": name, "seed": seed, "train": "+".join(names), "bg": bg, "train_images": n_train,
         "classes": trainer.model.heads.weight.shape[0], "iters": real_iters, "epochs": cfg.SOLVER.MAX_EPOCH,
         "mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"]), "mINP": float(res.get("mINP", float("nan"))),
         "seconds": dt, "cpu_seconds": cpu}
    print(json.dumps(r), flush=True)
    return r


def eval_untrained(batch, epoch_iters, out_root, seed, extra=()):
    """SynthPedB metrics of a randomly initialised model (the floor the runs start from)."""
    from fastreid_ext.engine import Trainer, seed_from_config

    cfg = run_cfg(("SynthPedA",), False, epoch_iters, batch, epoch_iters, Path(out_root) / "untrained", seed, extra)
    cfg.MODEL.HEADS.NUM_CLASSES = 1
    seed_from_config(cfg)
    model = Trainer.build_model(cfg)
    res = Trainer.test(cfg, model)
    r = {"run": "untrained", "seed": seed, "train": "-", "bg": False, "train_images": 0, "classes": 0, "iters": 0,
         "epochs": 0, "mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"]),
         "mINP": float(res.get("mINP", float("nan"))), "seconds": 0.0, "cpu_seconds": 0.0}
    print(json.dumps(r), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=500, help="training iterations per run (same for all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epoch-iters", type=int, default=25, help="iterations per (fixed-length) epoch")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--untrained", action="store_true", help="also evaluate an untrained model on SynthPedB")
    ap.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    ap.add_argument("--results", default="joint_ibn_synthped.md",
                    help="the markdown report: a file name under bench/results/ or a path")
    add_threads_arg(ap)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides for every run")
    args = ap.parse_args()
    threads = set_threads(args.threads)

    out_root = args.out or tempfile.mkdtemp(prefix="joint_ibn_bench_")
    print_setup(out_root)
    results = [eval_untrained(args.batch, args.epoch_iters, out_root, args.seeds[0], args.opts)] \
        if args.untrained else []
    results += [run_one(name, args.iters, args.batch, args.epoch_iters, seed, out_root, args.opts)
                for seed in args.seeds for name in args.runs]
    lines = ["# JointIBN on SynthPed: cross-domain test on SynthPedB (bench/bench_joint_ibn_synthped.py)", "",
             f"ResNet-18 IBN-a from scratch, no random erasing, batch {args.batch}, {args.iters} iterations per "
             f"run in epochs of {args.epoch_iters}, CPU ({threads} thread(s)). Command: `python "
             f"bench/bench_joint_ibn_synthped.py {' '.join(sys.argv[1:])}`", "",
             "| run | train on | background removal | seed | train images | classes | iterations | "
             "SynthPedB mAP | SynthPedB Rank-1 | SynthPedB mINP | wall min | CPU min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['run']} | {r['train']} | {'on' if r['bg'] else 'off'} | {r['seed']} | {r['train_images']} | "
                     f"{r['classes']} | {r['iters']} | {r['mAP']:.2f} | {r['Rank-1']:.2f} | {r['mINP']:.2f} | "
                     f"{r['seconds'] / 60:.1f} | {r['cpu_seconds'] / 60:.1f} |")
    if len(args.seeds) > 1:
        import numpy as np

        lines += ["", "| run | mean mAP | std | mean Rank-1 |", "| --- | --- | --- | --- |"]
        for name in args.runs:
            ms = [r["mAP"] for r in results if r["run"] == name]
            r1 = [r["Rank-1"] for r in results if r["run"] == name]
            lines.append(f"| {name} | {np.mean(ms):.2f} | {np.std(ms):.2f} | {np.mean(r1):.2f} |")
    write_report("\n".join(lines), args.results if "/" in args.results else result_path(args.results))


if __name__ == "__main__":
    main()
