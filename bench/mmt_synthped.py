"""End to end on CPU: SynthPedA (labelled source) -> SynthPedB (unlabelled target) with MMT, plain, with RBNet
and with JointIBN.

For each variant (``plain``: FastReID's Baseline, ``rbnet``: RBNet, ``bg``: JointIBN, i.e. ResNet-18 IBN-a with
background removal by SynthPed's person masks):

1. source pre-training x 2 on SynthPedA with two seeds (``configs/SynthPed/bagtricks_R18.yml`` or
   ``projects/RBNet/configs/SynthPed/rbnet_R18.yml``) with ``SEED`` 1 and 2 (the trainer seeds torch / numpy /
   random and the samplers; the MMT run uses ``SEED`` 1);
2. source-only evaluation on SynthPedB (the target test split) of both source models;
3. MMT adaptation on SynthPedB's unlabelled train split from the two checkpoints
   (``projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml`` / ``mmt_rbnet_R18.yml``);
4. evaluation of the mean network on SynthPedB.

Also: seed 1's source model with its BatchNorm statistics re-estimated on SynthPedB (AdaBN, a diagnostic, not
MMT) and, with ``--oracle``, the plain model trained with SynthPedB's labels (same budget) as a reference.
Inputs are 64 x 32 by default (``--size``; the configs say 128 x 64, 4x the compute) to fit ~20-30 CPU
minutes; one torch thread (2 OpenMP threads on 2 cores shared with other jobs spin and get much slower).

Prints a markdown table (also written to ``bench/results/mmt_synthped.md``) with the commands' settings.

    python bench/mmt_synthped.py [--variants plain rbnet] [--src-epochs 3] [--mmt-epochs 4] [--mmt-iters 20]
        [--size 64 32] [--threads 1] [--oracle]
        [--out-dir logs/MMT/synthped] [--mmt-opts KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _common import budget_opts, make_cfg, result_path, set_threads, write_report  # bench/_common.py

import torch  # noqa: E402

from fastreid_ext.engine import Trainer, build_trainer  # noqa: E402

SOURCE_CFG = {"plain": "configs/SynthPed/bagtricks_R18.yml", "rbnet": "projects/RBNet/configs/SynthPed/rbnet_R18.yml",
              "bg": "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml"}
MMT_CFG = {"plain": "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml",
           "rbnet": "projects/MMT/configs/SynthPedA-SynthPedB/mmt_rbnet_R18.yml",
           "bg": "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18-ibn_bg.yml"}
SOURCE_NAME = {"plain": "bagtricks_R18", "rbnet": "rbnet_R18", "bg": "joint_R18-ibn"}
MMT_NAME = {"plain": "R18", "rbnet": "rbnet_R18", "bg": "R18-ibn_bg"}
LABEL = {"plain": "MMT", "rbnet": "MMT + RBNet", "bg": "MMT + JointIBN (IBN-a, background removal)"}


def _metrics(r):
    return {k: float(r[k]) for k in ("mAP", "Rank-1", "Rank-5", "mINP") if k in r}


def run(cfg):
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    return _metrics(results), time.perf_counter() - t0, trainer


def adabn_eval(src_cfg_path, common, ckpt, target="SynthPedB"):
    """Diagnostic, not MMT: a source model with its BatchNorm statistics re-estimated on the target's train
    images (AdaBN), evaluated on the target; tells how much of the gap is normalisation statistics."""
    from fastreid_ext.mmt.evaluation import adabn_evaluate

    return _metrics(adabn_evaluate(make_cfg(src_cfg_path, common), ckpt, target))


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["plain", "rbnet"], choices=["plain", "rbnet", "bg"])
    ap.add_argument("--src-epochs", type=int, default=3)
    ap.add_argument("--mmt-epochs", type=int, default=4)
    ap.add_argument("--mmt-iters", type=int, default=20, help="SOLVER.ITERS_PER_EPOCH of MMT")
    ap.add_argument("--size", type=int, nargs=2, default=[64, 32], help="input size (sources and MMT)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--source", default="SynthPedA")
    ap.add_argument("--target", default="SynthPedB")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--oracle", action="store_true", help="also train the plain model on SynthPedB with labels")
    ap.add_argument("--out-dir", default="logs/MMT/synthped")
    ap.add_argument("--src-opts", nargs="*", default=[])
    ap.add_argument("--mmt-opts", nargs="*", default=[])
    ap.add_argument("--out", default=result_path("mmt_synthped.md"))
    args = ap.parse_args()
    set_threads(args.threads)
    h, w = args.size
    common = ["MODEL.DEVICE", "cpu", "DATASETS.SYNTHPED.PRESET", args.preset, "DATALOADER.NUM_WORKERS", str(args.workers),
              "INPUT.SIZE_TRAIN", f"[{h}, {w}]", "INPUT.SIZE_TEST", f"[{h}, {w}]",
              "INPUT.PADDING.SIZE", str(max(2, round(5 * h / 128)))]
    per_variant = {"plain": [], "rbnet": ["MODEL.RBNET.HEATMAP.SIGMA", str(1.5 * h / 128)], "bg": []}
    t_all, c_all = time.perf_counter(), cpu_seconds()
    rows, log = [], {}
    oracle = None
    trainer_items = []
    if args.oracle:
        cfg = make_cfg(SOURCE_CFG["plain"], common + [
            "DATASETS.NAMES", f'("{args.target}",)', "DATASETS.TESTS", f'("{args.target}",)',
            "OUTPUT_DIR", os.path.join(args.out_dir, f"oracle_bagtricks_R18_{args.target}")]
            + budget_opts(args.src_epochs, constant_lr=True) + args.src_opts, seed=1)
        oracle, secs, _ = run(cfg)
        print(f"oracle (plain, trained on {args.target} with labels): {oracle} ({secs:.0f} s)", flush=True)
    for v in args.variants:
        c0, t0 = cpu_seconds(), time.perf_counter()
        src, ck = [], []
        for seed in (1, 2):
            out = os.path.join(args.out_dir, f"source_{SOURCE_NAME[v]}_{args.source}_seed{seed}")
            cfg = make_cfg(SOURCE_CFG[v], common + per_variant[v] + [
                "DATASETS.NAMES", f'("{args.source}",)', "DATASETS.TESTS", f'("{args.target}",)', "OUTPUT_DIR", out]
                + budget_opts(args.src_epochs, constant_lr=True) + args.src_opts, seed=seed)
            m, secs, _ = run(cfg)
            print(f"[{v}] source seed {seed} on {args.target}: {m} ({secs:.0f} s)", flush=True)
            src.append((m, secs))
            ck.append(os.path.join(out, "model_final.pth"))
        ada = adabn_eval(SOURCE_CFG[v], common + per_variant[v], ck[0], args.target)
        print(f"[{v}] source seed 1 + AdaBN on {args.target}: {ada}", flush=True)
        out = os.path.join(args.out_dir, f"mmt_{MMT_NAME[v]}_{args.source}-{args.target}")
        cfg = make_cfg(MMT_CFG[v], common + per_variant[v] + [
            "MODEL.MMT.WEIGHTS_1", ck[0], "MODEL.MMT.WEIGHTS_2", ck[1], "OUTPUT_DIR", out,
            "DATASETS.NAMES", f'("{args.target}",)', "DATASETS.TESTS", f'("{args.target}",)',
            "SOLVER.MAX_EPOCH", str(args.mmt_epochs), "TEST.EVAL_PERIOD", str(args.mmt_epochs),
            "SOLVER.CHECKPOINT_PERIOD", str(args.mmt_epochs), "SOLVER.ITERS_PER_EPOCH", str(args.mmt_iters)]
            + args.mmt_opts, seed=1)
        m, secs, trainer = run(cfg)
        hist = [(x.num_clusters, x.num_outliers, round(x.eps, 4)) for x in trainer.uda.history]
        print(f"[{v}] MMT on {args.target}: {m} ({secs:.0f} s); clusters/outliers/eps per clustering: {hist}", flush=True)
        rows.append(dict(v=v, src=src, ada=ada, mmt=m, secs=secs, hist=hist, eval_net=trainer.cfg.MODEL.MMT.EVAL_NET,
                         cpu_min=(cpu_seconds() - c0) / 60, wall_min=(time.perf_counter() - t0) / 60))
        log[v] = {"source": [x[0] for x in src], "source1_adabn": ada, "mmt": m, "clusterings": hist}
        trainer_items = trainer.uda.items
        del trainer

    total, cpu_total = time.perf_counter() - t_all, cpu_seconds() - c_all
    n_target = len(trainer_items)
    lines = [f"{args.source} -> {args.target} (preset {args.preset}, {n_target} unlabelled target train images), "
             f"ResNet-18 from scratch at {h} x {w} on CPU ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores shared with other jobs, {torch.get_num_threads()} torch thread(s)): source "
             f"pre-training {args.src_epochs} epochs x 2 seeds, MMT {args.mmt_epochs} epochs x {args.mmt_iters} "
             f"iterations (batch 64 = 16 x 4). Total {cpu_total / 60:.1f} min CPU, {total / 60:.1f} min wall.", "",
             f"| variant | source-only mAP / R1 on {args.target} (seed 1; seed 2) | seed 1 + AdaBN (diagnostic) | "
             f"MMT mAP / R1 on {args.target} | "
             "mAP vs best source | clusters (outliers) per clustering, eps | CPU / wall min |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s_map = [x[0]["mAP"] for x in r["src"]]
        s_r1 = [x[0]["Rank-1"] for x in r["src"]]
        cl = ", ".join(f"{c} ({o})" for c, o, _ in r["hist"])
        lines.append(f"| {LABEL[r['v']]} | {s_map[0]:.1f} / {s_r1[0]:.1f}; "
                     f"{s_map[1]:.1f} / {s_r1[1]:.1f} | {r['ada']['mAP']:.1f} / {r['ada']['Rank-1']:.1f} | "
                     f"{r['mmt']['mAP']:.1f} / {r['mmt']['Rank-1']:.1f} | {r['mmt']['mAP'] - max(s_map):+.1f} | {cl}; "
                     f"eps {r['hist'][0][2]} | {r['cpu_min']:.1f} / {r['wall_min']:.1f} |")
    if oracle:
        lines += ["", f"Reference: the plain model trained *with labels* on {args.target} for the same {args.src_epochs} "
                      f"epochs: {oracle['mAP']:.1f} mAP / {oracle['Rank-1']:.1f} R1."]
    lines += ["", f"MMT is evaluated with its `{rows[0]['eval_net'] if rows else 'mean1'}` network. Command: "
                  f"`python bench/mmt_synthped.py {' '.join(sys.argv[1:])}`".rstrip() + "."]
    write_report("\n".join(lines), args.out)
    Path(args.out).with_suffix(".json").write_text(json.dumps({"oracle": oracle, **log}, indent=1))


if __name__ == "__main__":
    main()
