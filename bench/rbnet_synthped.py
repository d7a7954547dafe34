"""Benchmark: RBNet vs Baseline on SynthPedA (CPU), same budget; does the reverse backbone learn the keypoints,
does the mask find the person?

Not a test. Trains ``projects/RBNet/configs/SynthPed/rbnet_R18.yml`` and ``baseline_R18.yml`` (ResNet-18 from
scratch, 128x64) for the same number of iterations, batch and schedule, then reports:

* **keypoint error**: mean distance (input pixels) between the argmax of RBNet's 17 heatmaps and SynthPed's
  exact keypoints (visible ones), over the test images (query + gallery), at initialisation and after
  training;
* **mask on person / background**: the mean of the generated mask M(x) over person pixels and over
  background pixels (SynthPed's exact person masks, ``DATASETS.ANNOTATIONS.LOAD_MASKS True`` at eval), at
  initialisation and after training;
* Rank-1 / mAP of both models on SynthPedA's query/gallery.

FastReID counts training in epochs of ``len(train set) // batch`` iterations, so each run gets
``MAX_EPOCH = round(iters / iters_per_epoch)`` epochs with the benchmarks' LR steps (``bench/_common.py``: x0.1
after 2/3 and 11/12 of the epochs); ``--seed`` is the runs' ``SEED``. Prints a markdown table and writes it to
``bench/results/rbnet_synthped.md`` (``--out``).

    python bench/rbnet_synthped.py [--iters 300] [--batch 32] [--seed 0] [--threads 1] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import add_threads_arg, make_cfg, print_setup, result_path, set_threads, write_report  # bench/_common.py

CONFIGS = {"RBNet": "projects/RBNet/configs/SynthPed/rbnet_R18.yml",
           "Baseline": "projects/RBNet/configs/SynthPed/baseline_R18.yml"}


def run(arch, iters, batch, seed, out_root, extra, measure_images):
    from fastreid_ext.engine import build_trainer
    from fastreid_ext.rbnet.evaluation import map_quality

    out = Path(out_root) / arch
    out.mkdir(parents=True, exist_ok=True)
    cfg = make_cfg(CONFIGS[arch], ["SOLVER.IMS_PER_BATCH", str(batch), "OUTPUT_DIR", str(out),
                                   "DATALOADER.NUM_WORKERS", "0", *extra], seed=seed, iters=iters)
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    r = {"arch": arch, "train_images": len(trainer.data_loader.dataset), "iters": trainer.max_iter,
         "epochs": cfg.SOLVER.MAX_EPOCH}
    if arch == "RBNet":
        r["init"] = map_quality(trainer.model, cfg, measure_images)
        print("init", json.dumps(r["init"]), flush=True)
    t1 = time.perf_counter()
    res = trainer.train()
    r["train_seconds"] = time.perf_counter() - t1
    if arch == "RBNet":
        r["trained"] = map_quality(trainer.model, cfg, measure_images)
    r.update({"mAP": float(res["mAP"]), "Rank-1": float(res["Rank-1"]), "seconds": time.perf_counter() - t0})
    print(json.dumps(r), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300, help="training iterations per model (same for both)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-images", type=int, default=0, help="limit the test images of the map metrics")
    ap.add_argument("--runs", default=None, help="run folders (default: a temporary folder)")
    ap.add_argument("--out", default=result_path("rbnet_synthped.md"), help="the markdown report")
    add_threads_arg(ap)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides for both runs")
    args = ap.parse_args()
    threads = set_threads(args.threads)

    out_root = args.runs or tempfile.mkdtemp(prefix="rbnet_bench_")
    print_setup(out_root)
    rb = run("RBNet", args.iters, args.batch, args.seed, out_root, args.opts, args.measure_images)
    base = run("Baseline", args.iters, args.batch, args.seed, out_root, args.opts, args.measure_images)
    cmd = (f"python bench/rbnet_synthped.py --iters {args.iters} --batch {args.batch} --seed {args.seed}"
           + (f" {' '.join(args.opts)}" if args.opts else ""))
    i, t = rb["init"], rb["trained"]
    lines = [
        "# RBNet vs Baseline on SynthPedA (bench/rbnet_synthped.py)", "",
        f"ResNet-18 from scratch, 128x64, batch {args.batch}, {rb['iters']} iterations ({rb['epochs']} epochs of "
        f"{rb['train_images']} images) for both, CPU ({threads} thread(s)). Command: `{cmd}`", "",
        "| RBNet map quality (SynthPedA test images) | at initialisation | after training |",
        "| --- | --- | --- |",
        f"| mean keypoint error of the heatmaps' argmax (px, 128x64 input) | {i['kpt_err']:.2f} | {t['kpt_err']:.2f} |",
        f"| mask mean on the person | {i['mask_person']:.3f} | {t['mask_person']:.3f} |",
        f"| mask mean on the background | {i['mask_bg']:.3f} | {t['mask_bg']:.3f} |",
        f"| person / background ratio | {i['mask_person'] / max(i['mask_bg'], 1e-9):.2f} | "
        f"{t['mask_person'] / max(t['mask_bg'], 1e-9):.2f} |", "",
        "| model | Rank-1 | mAP | train minutes |", "| --- | --- | --- | --- |",
        f"| Baseline | {base['Rank-1']:.2f} | {base['mAP']:.2f} | {base['train_seconds'] / 60:.1f} |",
        f"| RBNet ({'re_layer1'} mask, backbone-2 feature) | {rb['Rank-1']:.2f} | {rb['mAP']:.2f} | "
        f"{rb['train_seconds'] / 60:.1f} |",
    ]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
