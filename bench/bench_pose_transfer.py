#!/usr/bin/env python
"""PoseTransfer training cost: trainable parameters and time per training iteration of the fine-tuning baseline,
Model A and Model B against full fine-tuning, in one run; and the cost of verification re-ranking.

    python bench/bench_pose_transfer.py [--rounds 5] [--iters 3] [--setups synthped r18]

Setups: ``synthped`` = the CPU configs of ``projects/PoseTransfer/configs/SynthPedA-SynthPedB`` (ImageNet MobileNetV2,
128 x 64, batch 64, E_A 256 wide); ``r18`` = the paper's E_I, ResNet-18 at 256 x 128 (``Base-PoseTransfer.yml``,
E_A 512 wide), batch 32. Each arm is a ``PoseTransfer`` built from its config (full fine-tuning: ``VARIANT none``,
``FREEZE none``; baseline: ``none`` / ``trunk``; A and B: ``encoder``) with FastReID's Adam. A round times ``--iters``
iterations (forward, C_v's BCE, backward, step) of every arm on the same synthetic batch, arms interleaved; the table
gives the median over rounds and the ratio to full fine-tuning. Wall time (``time.perf_counter``) and process CPU time.
"Trained params": parameters that receive a gradient (the head's identity classifier gets none without an ID loss).

Re-ranking: C_v re-scores the top 100 of every query, for SynthPedA's test split sizes (181 x 1,063) and DukeMTMC-reID's
(2,228 queries x 17,661 gallery), with random features of C_v's width.
Results: ``bench/results/pose_transfer_cost.md`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, add_threads_arg, print_setup, result_path, set_threads, write_report  # noqa: E402

ARMS = (("full fine-tuning", "none", "none"), ("baseline (last block)", "none", "trunk"),
        ("Model A", "A", "encoder"), ("Model B", "B", "encoder"))
SETUPS = {
    "synthped": ("projects/PoseTransfer/configs/SynthPedA-SynthPedB/Base-transfer.yml", 64, (128, 64), []),
    "r18": ("projects/PoseTransfer/configs/Base-PoseTransfer.yml", 32, (256, 128),
            ["MODEL.BACKBONE.PRETRAIN", "False"]),
}


def build(config, variant, freeze, opts, device="cpu"):
    import fastreid_ext
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.engine import trainer_class

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", "16",
                         "MODEL.POSE_TRANSFER.VARIANT", variant, "MODEL.POSE_TRANSFER.FREEZE", freeze] + list(opts))
    model = build_model(cfg)
    opt = trainer_class(cfg).build_optimizer(cfg, model)  # what training uses (per-parameter, FastReID's groups)
    opt = opt[0] if isinstance(opt, tuple) else opt
    return model, opt


def step(model, opt, batch):
    losses = model(batch)
    loss = sum(losses.values())
    opt.zero_grad()
    loss.backward()
    opt.step()


def updated(module) -> int:
    """Parameters of ``module`` that received a gradient in the last step (a head's identity classifier gets none
    without an ID loss; a frozen E_I none at all)."""
    return sum(p.numel() for p in (module.parameters() if module is not None else []) if p.grad is not None)


def bench_setup(name, rounds, iters):
    import torch
    from tqdm import tqdm

    config, bs, size, opts = SETUPS[name]
    g = torch.Generator().manual_seed(0)
    batch = {"images": torch.rand(bs, 3, *size, generator=g) * 255, "targets": torch.arange(bs) // 4}
    models = {}
    for label, variant, freeze in ARMS:
        m, opt = build(config, variant, freeze, opts)
        m.train()
        step(m, opt, batch)  # warm-up
        models[label] = (m, opt)
    wall = {k: [] for k in models}
    cpu = {k: [] for k in models}
    for _ in tqdm(range(rounds), desc=f"{name}: rounds", dynamic_ncols=True):
        for label, (m, opt) in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(iters):
                step(m, opt, batch)
            wall[label].append((time.perf_counter() - t0) / iters)
            cpu[label].append((time.process_time() - c0) / iters)
    ref = statistics.median(wall["full fine-tuning"])
    ref_c = statistics.median(cpu["full fine-tuning"])
    lines = [f"**{name}** ({config}; batch {bs}, {size[0]} x {size[1]}; median of {rounds} rounds x {iters} "
             f"iterations, arms interleaved):", "",
             "| arm | trained params | vs full | E_I / E_A / head / C_v | s / iteration | vs full | "
             "CPU s / iteration | vs full |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ref_p = updated(models["full fine-tuning"][0])
    for label, (m, _) in models.items():
        parts = {"E_I": m.backbone, "E_A": m.ea, "head": m.heads, "C_v": m.verifier}
        n = updated(m)
        w, c = statistics.median(wall[label]), statistics.median(cpu[label])
        split = " / ".join(f"{updated(parts[k]):,}" for k in ("E_I", "E_A", "head", "C_v"))
        lines.append(f"| {label} | {n:,} | {n / ref_p:.2f}x | {split} | {w:.3f} | {w / ref:.2f}x | {c:.3f} | "
                     f"{c / ref_c:.2f}x |")
    verif_dim = models["Model B"][0].verifier.dim
    return "\n".join(lines), models["Model B"][0].verifier, verif_dim


def bench_rerank(verifier, dim, sizes, topk=100):
    import torch

    from fastreid_ext.pose_transfer.rerank import verification_rerank

    verifier.eval()
    rows = []
    for label, nq, ng in sizes:
        g = torch.Generator().manual_seed(1)
        q, gal = torch.randn(nq, dim, generator=g).abs(), torch.randn(ng, dim, generator=g).abs()
        dist = torch.cdist(q, gal).numpy()
        _, cost = verification_rerank(dist, q, gal, verifier.different_prob, topk)
        t0 = time.perf_counter()
        torch.cdist(q, gal)
        first = time.perf_counter() - t0
        rows.append(f"| {label} | {nq:,} x {ng:,} | {topk} | {cost['pairs']:,.0f} | {cost['seconds']:.3f} | "
                    f"{cost['ms_per_query']:.3f} | {first:.3f} |")
    return "\n".join(["| test split | queries x gallery | k | C_v pairs | re-ranking s | ms / query | "
                      "first-stage distances s |", "| --- | --- | --- | --- | --- | --- | --- |"] + rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--setups", nargs="+", default=["synthped", "r18"], choices=list(SETUPS))
    ap.add_argument("--out", default=result_path("pose_transfer_cost.md"))
    add_threads_arg(ap)
    args = ap.parse_args()
    set_threads(args.threads)
    os.chdir(ROOT)
    print_setup()
    import fastreid_ext  # noqa: F401

    parts = [f"Command: `python bench/bench_pose_transfer.py {' '.join(sys.argv[1:])}`".rstrip() + "; load average "
             f"{os.getloadavg()[0]:.1f} at the start.", ""]
    verifier = dim = None
    for name in args.setups:
        text, verifier, dim = bench_setup(name, args.rounds, args.iters)
        parts += [text, ""]
    parts += [f"**Verification re-ranking** (C_v of the last setup, {dim}-d features, one thread):", "",
              bench_rerank(verifier, dim, [("SynthPedA size", 181, 1063), ("DukeMTMC-reID size", 2228, 17661)]), ""]
    write_report("\n".join(parts), args.out)


if __name__ == "__main__":
    main()
