#!/usr/bin/env python
"""Smoke check of every meta-architecture on a device (the GPU machine, or ``--device cpu`` here): 3 training
iterations of each on tiny SynthPed at 64 x 32 through ``tools/train_net.py`` in child processes (the experiment
runner), then FastReID's own ``DefaultTrainer`` (its CUDA data loader, our compat patches) for 3 iterations in this
process, with and without AMP on CUDA. Not numbers: a crash check.

    python bench/device/smoke.py [--device cuda] [--jobs 8] [--out logs/device_smoke]

Exit code 0 when every run finished.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from fastreid_ext.experiments import comparisons as C  # noqa: E402

_R18 = ("MODEL.BACKBONE.DEPTH", "18x")
#: arm -> (config, extra overrides); configs that exist in the repository today (R18 and MobileNetV2)
RUNS = {
    "Baseline (ImageNet MobileNetV2)": ("configs/SynthPed/bagtricks_mobilenetv2.yml", ()),
    "Baseline R18": ("configs/SynthPed/bagtricks_R18.yml", ()),
    "RBNet R18": ("projects/RBNet/configs/SynthPed/rbnet_R18.yml", ("MODEL.RBNET.HEATMAP.SIGMA", "0.75")),
    "HPLF R18": ("projects/HPLF/configs/SynthPed/hplf_R18.yml", ()),
    "JointIBN R18-IBN": ("projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml", ()),
    "MoCo MobileNetV2": ("projects/ConditionAnalysis/configs/SynthPed/moco_mnv2.yml", ()),
    "ArcFace MobileNetV2": ("projects/ConditionAnalysis/configs/SynthPed/arcface_mnv2.yml", ()),
    "PoseTransfer source MobileNetV2": ("projects/PoseTransfer/configs/SynthPedA-SynthPedB/source_mobilenetv2.yml", ()),
}
#: the runner's measurements, each on one run
MEASURE = {"RBNet R18": ("rbnet_maps",), "Baseline R18": ("adabn",)}
#: the ImageNet MobileNetV2 method configs of issue 18, smoked too when they exist
MNV2 = {
    "RBNet MobileNetV2": "projects/RBNet/configs/SynthPed/rbnet_mnv2.yml",
    "HPLF MobileNetV2": "projects/HPLF/configs/SynthPed/hplf_mnv2.yml",
}


def smoke_comparison() -> C.Comparison:
    stages = {}
    arms = []
    for name, (cfg, extra) in RUNS.items():
        stages[name] = C.Stage(name, cfg, tuple(extra), measure=MEASURE.get(name, ()))
        arms.append(C.Arm(name, (name,)))
    for name, cfg in MNV2.items():
        if os.path.isfile(os.path.join(ROOT, cfg)):
            stages[name] = C.Stage(name, cfg, ("MODEL.RBNET.HEATMAP.SIGMA", "0.75") if "RBNet" in name else (),
                                   measure=("rbnet_maps",) if "RBNet" in name else ())
            arms.append(C.Arm(name, (name,)))
    # MMT from two Baseline R18 source models (3 iterations each)
    src = "configs/SynthPed/bagtricks_R18.yml"
    stages["src1"] = C.Stage("src1", src, ("DATASETS.TESTS", '("SynthPedB",)'))
    stages["src2"] = C.Stage("src2", src, ("DATASETS.TESTS", '("SynthPedB",)'), seed_offset=1)
    stages["MMT R18"] = C.Stage("MMT R18", "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml",
                                # k-means pseudo labels (faiss): 3-iteration source models give DBSCAN no
                                # reliable clusters; the comparisons run MMT's DBSCAN
                                ("UDA.CLUSTERING", "kmeans", "UDA.NUM_CLUSTERS", "8"),
                                weights=(("MODEL.MMT.WEIGHTS_1", "src1"), ("MODEL.MMT.WEIGHTS_2", "src2")),
                                measure=("mmt_pseudo_labels",))
    arms.append(C.Arm("MMT R18", ("src1", "src2", "MMT R18")))
    return C.register_comparison(C.Comparison(
        name="device_smoke", description="3 iterations of each meta-architecture on tiny SynthPed (crash check, "
        "not numbers)", stages=stages, arms=arms, metrics=["SynthPedA/Rank-1", "SynthPedA/mAP", "SynthPedB/mAP"]))


def default_trainer(device: str, amp: bool, out: str) -> dict:
    """FastReID's own DefaultTrainer (not ours) for 3 iterations on ``device``: its loaders (DataLoaderX with CUDA
    streams on a GPU), its optimizer path through our compat patches, AMP when asked."""
    import fastreid_ext
    from fastreid.engine import DefaultTrainer

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml"))
    cfg.merge_from_list(list(C.SMOKE_OPTS) + ["SOLVER.ITERS_PER_EPOCH", "3", "MODEL.DEVICE", device,
                                              "SOLVER.AMP.ENABLED", str(amp), "DATALOADER.NUM_WORKERS", "2",
                                              "OUTPUT_DIR", out])
    os.makedirs(out, exist_ok=True)
    t = DefaultTrainer(cfg)
    w0 = next(t.model.parameters()).detach().clone()
    t.resume_or_load(resume=False)
    res = t.train()
    changed = not bool((next(t.model.parameters()).detach() == w0).all())
    return {"Rank-1": float(res["Rank-1"]), "mAP": float(res["mAP"]), "weights_changed": changed,
            "device": str(next(t.model.parameters()).device)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--out", default="logs/device_smoke")
    ap.add_argument("--skip-default-trainer", action="store_true")
    args = ap.parse_args()
    from fastreid_ext.experiments.runner import run_experiments

    t0 = time.time()
    smoke_comparison()
    res = run_experiments(["device_smoke"], [0], args.out, device=args.device, jobs=args.jobs, budget="smoke",
                          overrides=["SOLVER.ITERS_PER_EPOCH", "3"], workers=1,
                          command="python " + " ".join(sys.argv), root=ROOT)
    bad = len(res["failed"])
    print(f"[smoke] {len(res['records']['device_smoke'])} arm(s) finished, {bad} run(s) failed "
          f"({time.time() - t0:.0f} s)", flush=True)
    if not args.skip_default_trainer:
        for amp in ([False, True] if args.device.startswith("cuda") else [False]):
            try:
                r = default_trainer(args.device, amp, os.path.join(args.out, f"defaulttrainer_amp{int(amp)}"))
                ok = r["weights_changed"]
                print(f"[smoke] FastReID DefaultTrainer on {args.device} (AMP {amp}): {r}"
                      + ("" if ok else "  <- weights did not change"), flush=True)
                bad += not ok
            except Exception as e:  # noqa: BLE001  (report and go on)
                import traceback

                traceback.print_exc()
                print(f"[smoke] FastReID DefaultTrainer on {args.device} (AMP {amp}) FAILED: {e}", flush=True)
                bad += 1
    print(f"[smoke] {'OK' if not bad else f'{bad} FAILURE(S)'} in {time.time() - t0:.0f} s", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
