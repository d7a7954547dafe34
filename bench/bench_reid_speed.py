"""Benchmark: re-id embedding speed on CPU and the frames/s of the detect-then-re-id tool (Zhang & Wu,
"Person re-identification based on multiple deep learning methods", Sec. 4.5).

Not a test. Part 1 times FastReID models in eval mode at 256x128 (crops/s, batch 1 and batch 32):
ResNet-50-IBN-a and ResNet-18 (the ``Baseline`` of our configs, random weights: speed only) and, when
torchreid is installed, torchreid's OSNet x0.25 through the bridge. Part 2 runs ``tools/reid_video.py``'s
pipeline on ``../shared/realdata/mot17_mini`` with ground-truth boxes (skipped when absent): frames/s,
crops/s, identity accuracy, with the OSNet Market-1501 weights (+ mediapipe background removal on
MOT17-02) and with a ResNet-50-IBN (speed only). Prints markdown tables and writes them to
``bench/results/reid_speed.md``.

    python bench/bench_reid_speed.py [--threads 1] [--min-seconds 3] [--skip-video]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from _common import ROOT, result_path, set_threads, write_report  # bench/_common.py

REAL = ROOT.parent / "shared" / "realdata"
MOT = REAL / "mot17_mini"
OSNET = REAL / "weights" / "osnet_x0_25_market1501.pth"


def model_cfg(name: str):
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    if name == "osnet_x0_25":
        from fastreid_ext.video.embed import TORCHREID_OSNET_CONFIG, load_cfg

        opts = ["MODEL.BACKBONE.PRETRAIN_PATH", str(OSNET)] if OSNET.is_file() else ["MODEL.BACKBONE.PRETRAIN", "False"]
        return load_cfg(str(TORCHREID_OSNET_CONFIG), opts)
    cfg.merge_from_file(str(ROOT / "configs" / "Base-bagtricks.yml"))
    depth, ibn = {"R50-ibn": ("50x", True), "R18": ("18x", False), "R18-ibn": ("18x", True)}[name]
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.WITH_IBN", str(ibn),
                         "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.BACKBONE.FEAT_DIM",
                         "2048" if depth == "50x" else "512", "MODEL.HEADS.NUM_CLASSES", "1",
                         "INPUT.SIZE_TEST", "[256, 128]"])
    return cfg


def time_model(model, batch: int, min_seconds: float):
    import torch

    x = torch.rand(batch, 3, 256, 128) * 255
    with torch.no_grad():
        model({"images": x})  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            model({"images": x})
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds and n >= 2:
                break
    return n * batch / dt, dt / n


def bench_models(names, min_seconds):
    from fastreid.modeling import build_model

    rows = []
    for name in names:
        if name == "osnet_x0_25":
            try:
                import importlib.util

                if importlib.util.find_spec("torchreid") is None:
                    raise ImportError
            except ImportError:
                print("torchreid not installed: OSNet skipped")
                continue
        cfg = model_cfg(name)
        model = build_model(cfg).eval()
        params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        for b in (1, 32):
            cps, lat = time_model(model, b, min_seconds)
            rows.append((name, params, b, cps, lat * 1000))
            print(f"{name:12s} batch {b:2d}: {cps:8.1f} crops/s  ({lat * 1000:.1f} ms / batch)", flush=True)
    return rows


def bench_video(threads_note):
    from fastreid_ext.segmentation import MediaPipeSegmenter
    from fastreid_ext.video import ReidEmbedder, run_sequences, torchreid_osnet_cfg

    seqs = [str(MOT / "MOT17-02-FRCNN"), str(MOT / "MOT17-04-FRCNN")]
    runs = []
    if OSNET.is_file():
        emb = ReidEmbedder(torchreid_osnet_cfg(str(OSNET)))
        runs.append(("OSNet x0.25 (Market)", "no", seqs, emb, None))
        runs.append(("OSNet x0.25 (Market)", "mediapipe", seqs[:1], emb, MediaPipeSegmenter()))
    runs.append(("R50-IBN (random weights, speed only)", "no", seqs, ReidEmbedder(model_cfg("R50-ibn")), None))
    rows = []
    for name, bg, sq, emb, seg in runs:
        res = run_sequences(sq, emb, boxes="gt", segmenter=seg, threshold=0.35, out_dir=None, draw="none")
        t = res.timing.as_dict()
        m = res.metrics
        rows.append((name, bg, ", ".join(Path(s).name.replace("-FRCNN", "") for s in sq), t["frames"], t["crops"],
                     t["fps"], t["crops_per_s_embed"], t["crops_per_s_end_to_end"], m["id_accuracy"],
                     m["num_gt_ids"], m["num_pred_ids"], t["segment"], t["embed"], t["read"]))
        print(f"{name} bg={bg}: {t['fps']:.2f} fps, {t['crops_per_s_embed']:.1f} crops/s (embed), "
              f"id accuracy {m['id_accuracy']:.3f}", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default). 1 by default: on a CPU shared with other "
                         "jobs OpenMP's spin-waiting makes 2 threads an order of magnitude slower than 1")
    ap.add_argument("--min-seconds", type=float, default=3.0, help="timing per model and batch size")
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--out", default=result_path("reid_speed.md"))
    args = ap.parse_args()
    import torch

    set_threads(args.threads)
    import fastreid_ext  # noqa: F401

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
           f"{torch.get_num_threads()} torch threads, load average at start {load[0]:.1f}")
    print(env, flush=True)
    rows = bench_models(["R50-ibn", "R18", "osnet_x0_25"], args.min_seconds)
    lines = ["# Re-id speed on CPU (bench/bench_reid_speed.py)", "", env, "",
             "## Embedding, 256x128, eval mode", "",
             "| model | backbone params (M) | batch | crops/s | ms / batch |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {p:.1f} | {b} | {c:.1f} | {lat:.1f} |" for n, p, b, c, lat in rows]
    if not args.skip_video and MOT.is_dir():
        vrows = bench_video(env)
        lines += ["", "## Detect-then-re-id on MOT17 mini (ground-truth boxes, tools/reid_video.py pipeline)", "",
                  "frames/s counts reading the 1920x1080 JPEG, crops, segmentation, embedding (batch 32) and "
                  "matching; drawing/writing not counted.", "",
                  "| re-id model | background removal | sequences | frames | crops | frames/s | crops/s (embed) | "
                  "crops/s (end to end) | id accuracy | gt ids | assigned ids | segment s | embed s | read s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.2f} | {r[6]:.1f} | {r[7]:.1f} | {r[8]:.3f} | "
                  f"{r[9]} | {r[10]} | {r[11]:.2f} | {r[12]:.2f} | {r[13]:.2f} |" for r in vrows]
    elif not args.skip_video:
        lines += ["", f"(MOT17 mini not found at {MOT}: video part skipped)"]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
