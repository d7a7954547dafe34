"""Benchmark: one MMT training iteration vs one iteration of its base model (same backbone, batch and input).

Not a test. A Baseline step is forward + backward + Adam step of one network; an MMT step is two networks
forward + backward, two mean networks forward (no grad), the MMT losses, one Adam step over both networks
and the temporal-mean update. Expected ratio: with backward ~ 2 x forward, (2 x 3 + 2 x 1) / 3 = 2.67 (goal
<= 2.8). ``--base RBNet`` times RBNet alone too and compares MMT (RBNet) with it (random keypoints, so that
every model computes its heatmap loss). Random images, P x K labels; the first ``--warmup`` iterations are not timed. Prints a markdown table
and writes it to ``bench/results/mmt.md``.

    python bench/bench_mmt.py [--depth 18x] [--batch 64] [--size 128 64] [--iters 5] [--threads 0]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from _common import make_cfg as config_with, result_path, set_threads, write_report  # bench/_common.py

import fastreid_ext  # noqa: E402,F401  (compat first)
from fastreid.modeling.meta_arch import build_model  # noqa: E402
from fastreid.solver import build_optimizer  # noqa: E402


def make_cfg(arch, depth, size, classes, base="Baseline", device="cpu"):
    feat = 512 if depth in ("18x", "34x") else 2048
    return config_with("configs/Base-SynthPed.yml", [
        "MODEL.META_ARCHITECTURE", arch, "MODEL.MMT.BASE_ARCH", base, "MODEL.BACKBONE.DEPTH", depth,
        "MODEL.BACKBONE.FEAT_DIM", str(feat), "MODEL.HEADS.NUM_CLASSES", str(classes),
        "INPUT.SIZE_TRAIN", str(list(size)), "MODEL.DEVICE", device, "SOLVER.OPT", "Adam"])


def time_steps(model, batch, iters, warmup, mmt):
    opt, _ = build_optimizer(model.cfg_for_bench, model, contiguous=False)
    model.train()
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        losses = model(batch)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mmt:
            model.update_mean_nets()
        if torch.cuda.is_available() and model.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t = sorted(times[warmup:])
    return t[len(t) // 2], sum(t) / len(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="18x")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, nargs=2, default=[128, 64])
    ap.add_argument("--classes", type=int, default=500)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--base", default="Baseline", help="MMT's BASE_ARCH for the MMT row (Baseline or RBNet)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", default=result_path("mmt.md"))
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    b, (h, w) = args.batch, args.size
    targets = torch.arange(b) // 4 % args.classes
    batch = {"images": torch.rand(b, 3, h, w) * 255, "images_2": torch.rand(b, 3, h, w) * 255, "targets": targets}
    if args.base == "RBNet":  # RBNet's heatmap loss in every model that has one
        for k in ("keypoints", "keypoints_2"):
            kp = torch.rand(b, 17, 3) * torch.tensor([w - 1.0, h - 1.0, 1.0])
            kp[..., 2] = 1.0
            batch[k] = kp
    batch = {k: v.to(args.device) for k, v in batch.items()}

    from fastreid.utils.events import EventStorage

    rows = []
    storage = EventStorage(0)  # both models log their accuracy like in FastReID's trainer
    storage.__enter__()
    archs = ("Baseline", "MMT") if args.base == "Baseline" else ("Baseline", args.base, "MMT")
    for arch in archs:
        cfg = make_cfg(arch, args.depth, args.size, args.classes, args.base, args.device)
        model = build_model(cfg)
        model.cfg_for_bench = cfg
        if arch == "MMT":
            c = int(targets.max()) + 1
            model.reset_classifiers({bname: torch.randn(c, cfg.MODEL.BACKBONE.FEAT_DIM)
                                     for bname in model.net1.branch_names})
            b_in = batch
        else:
            b_in = {k: v for k, v in batch.items() if not k.endswith("_2")}
        med, mean = time_steps(model, b_in, args.iters, args.warmup, arch == "MMT")
        rows.append((arch if arch != "MMT" else f"MMT ({args.base})", med, mean))
        print(rows[-1], flush=True)
    ratio = rows[-1][1] / rows[-2][1]  # MMT over its base model (Baseline or RBNet)
    lines = [f"MMT vs {args.base} training iteration, ResNet-{args.depth[:-1]}, batch {b}, {h}x{w}, Adam, "
             f"{args.device} "
             f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores shared, "
             f"{torch.get_num_threads()} torch threads), median of {args.iters} after {args.warmup} warm-up.", "",
             f"| model | s / iteration (median) | s / iteration (mean) | ratio to Baseline | ratio to {args.base} |",
             "| --- | --- | --- | --- | --- |"]
    for name, med, mean in rows:
        lines.append(f"| {name} | {med:.3f} | {mean:.3f} | {med / rows[0][1]:.2f} | {med / rows[-2][1]:.2f} |")
    lines += ["", f"MMT over {args.base}: ratio {ratio:.2f} (goal <= 2.8; two students forward + backward and two teachers forward "
                  f"give ~2.67 when backward ~ 2 x forward)."]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
