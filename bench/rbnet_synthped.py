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
``MAX_EPOCH = round(iters / iters_per_epoch)`` epochs with LR steps at 2/3 and 11/12. Prints a markdown table
and writes it to ``bench/results/rbnet_synthped.md``.

    python bench/rbnet_synthped.py [--iters 300] [--batch 32] [--seed 0] [--threads 1] [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = {"RBNet": ROOT / "projects" / "RBNet" / "configs" / "SynthPed" / "rbnet_R18.yml",
           "Baseline": ROOT / "projects" / "RBNet" / "configs" / "SynthPed" / "baseline_R18.yml"}


def make_cfg(arch, iters, batch, out_dir, seed, extra=()):
    import fastreid_ext
    from fastreid_ext.data.build import build_train_set
    from fastreid_ext.engine.trainer import prepare_cfg

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(CONFIGS[arch]))
    cfg.merge_from_list(["SOLVER.IMS_PER_BATCH", str(batch), "OUTPUT_DIR", str(out_dir),
                         "DATALOADER.NUM_WORKERS", "0", *extra])
    prepare_cfg(cfg)
    n = len(build_train_set(cfg))
    ipe = max(1, n // batch)
    epochs = max(1, int(round(iters / ipe)))
    steps = sorted({max(1, int(round(epochs * 2 / 3))), max(1, int(round(epochs * 11 / 12)))})
    cfg.merge_from_list(["SOLVER.MAX_EPOCH", str(epochs), "SOLVER.STEPS", str(steps),
                         "SOLVER.WARMUP_ITERS", str(max(1, iters // 10)), "TEST.EVAL_PERIOD", str(epochs),
                         "SOLVER.CHECKPOINT_PERIOD", str(epochs), "TEST.EVAL_INIT", "False"])
    return cfg, n, ipe * epochs


def map_quality(model, cfg, max_images=0):
    """Mean keypoint error (px) of the heatmaps' argmax and mask means on person / background over the first
    test set's images (query + gallery; ``max_images`` > 0 limits them)."""
    import torch

    from fastreid_ext.data.build import build_test_loader
    from fastreid_ext.functional.heatmaps import keypoint_errors
    from fastreid_ext.rbnet.masking import mask_person_background_means

    c = cfg.clone()
    c.defrost()
    c.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = True
    c.DATASETS.ANNOTATIONS.LOAD_MASKS = True
    loader, _ = build_test_loader(c, c.DATASETS.TESTS[0])
    thr = cfg.MODEL.RBNET.HEATMAP.SCORE_THRESH
    err_sum, err_n, sums, counts, seen = 0.0, 0, 0, 0, 0
    for batch in loader:
        maps = model.inference_maps(batch["images"])
        err, valid = keypoint_errors(maps["heatmaps"], batch["keypoints"], batch["images"].shape[-2:], thr)
        err_sum += float(err[valid].sum())
        err_n += int(valid.sum())
        s, n = mask_person_background_means(maps["mask"], batch["masks"])
        sums, counts = sums + s, counts + n
        seen += batch["images"].shape[0]
        if max_images and seen >= max_images:
            break
    means = (sums / counts).tolist()
    return {"kpt_err": err_sum / max(err_n, 1), "mask_person": means[0], "mask_bg": means[1], "images": seen}


def run(arch, iters, batch, seed, out_root, extra, measure_images):
    from fastreid.utils.env import seed_all_rng

    from fastreid_ext.engine import Trainer

    out = Path(out_root) / arch
    out.mkdir(parents=True, exist_ok=True)
    cfg, n_train, real_iters = make_cfg(arch, iters, batch, out, seed, extra)
    seed_all_rng(seed)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    r = {"arch": arch, "train_images": n_train, "iters": real_iters, "epochs": cfg.SOLVER.MAX_EPOCH}
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
    ap.add_argument("--out", default=None, help="run folders (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default; 1 avoids "
                    "OpenMP spin-waiting on a CPU shared with other jobs)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides for both runs")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import fastreid_ext  # noqa: F401

    out_root = args.out or tempfile.mkdtemp(prefix="rbnet_bench_")
    print(f"datasets under {os.path.abspath(os.getenv('FASTREID_DATASETS', 'datasets'))}; runs in {out_root}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rb = run("RBNet", args.iters, args.batch, args.seed, out_root, args.opts, args.measure_images)
    base = run("Baseline", args.iters, args.batch, args.seed, out_root, args.opts, args.measure_images)
    cmd = (f"python bench/rbnet_synthped.py --iters {args.iters} --batch {args.batch} --seed {args.seed}"
           + (f" {' '.join(args.opts)}" if args.opts else ""))
    i, t = rb["init"], rb["trained"]
    lines = [
        "# RBNet vs Baseline on SynthPedA (bench/rbnet_synthped.py)", "",
        f"ResNet-18 from scratch, 128x64, batch {args.batch}, {rb['iters']} iterations ({rb['epochs']} epochs of "
        f"{rb['train_images']} images) for both, CPU ({torch.get_num_threads()} thread). Command: `{cmd}`", "",
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
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    res_dir = ROOT / "bench" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "rbnet_synthped.md").write_text(text)


if __name__ == "__main__":
    main()
