"""Benchmark: RBNet's training-iteration and inference cost over FastReID's Baseline (same backbone/batch/input).

Not a test. One run: every model is built from ``projects/RBNet/configs/Base-RBNet.yml`` (the paper's recipe:
Table 1's reverse widths) with ``MODEL.META_ARCHITECTURE`` switched and per-variant overrides, then timed
*interleaved* (Baseline round, variant rounds, ...) so that load changes on a shared machine hit all alike;
the ratio to the Baseline is the median of the per-round ratios.

Variants (``--variants``; default: all but ``fusion``):

* ``table1-channel``: the paper configs as shipped: Table 1's widths 64/256/512/1024/2048 for ResNet-50
  (``GROUPING heads``), no channel mixing inside the reverse blocks (``POINTWISE channel``), re_layer1 mask, heatmap
  loss;
* ``table1-full``: the same with textbook depthwise-separable blocks (full pointwise 1x1s, ``POINTWISE full``);
* ``reduced``: the reduced, 17-grouped reverse path (``GROUPING all``, ``WIDTH_MULT 0.25``: 68/68/136/255/510);
* ``fusion``: the paper configs as shipped + the Section 1.1 step 3 fusion into backbone 2 at conv1 and layer1;
* ``floor``: the cheapest RBNet (``conv1`` mask from the reduced path, no heatmap loss): essentially the
  Baseline plus backbone 2, the method's floor.

Measured: the train iteration (forward with all losses + backward + Adam step on one fixed batch of random
images and keypoints), inference (eval forward, ms per image, ``TEST_FEATURE backbone2`` for every variant and
``backbone1`` / ``concat`` for the first) and, with ``--breakdown``, the per-part forward + backward time of the
first variant: each part run alone on inputs of its real shapes (captured from one training forward), so the
parts add up to about one iteration less the optimizer step.

Timings are this process's CPU time by default with ``--threads 1`` on a CPU (``--clock cpu``: on a machine shared
with other jobs the wall clock mostly measures the others' load; CPU time of one thread measures the work), else
wall-clock time.

Like ``tools/train_net.py`` on CPU, the process first lets glibc keep freed memory
(:func:`fastreid_ext.utils.malloc.keep_freed_memory`); ``--malloc system`` measures with glibc's default.

Prints a markdown report and writes it to ``bench/results/rbnet.md``.

    python bench/bench_rbnet.py --depth 50x --size 256 128 --batch 16 --rounds 5 --breakdown \\
        --variants table1-channel table1-full reduced fusion floor                    # the paper's model
    python bench/bench_rbnet.py --depth 18x --size 128 64 --batch 64 --variants reduced floor   # SynthPed configs
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _common import add_threads_arg, make_cfg, result_path, set_threads, write_report  # bench/_common.py

#: variant -> config overrides on top of Base-RBNet.yml
VARIANTS = {
    "table1-full": ["MODEL.RBNET.POINTWISE", "full"],
    "table1-channel": ["MODEL.RBNET.POINTWISE", "channel"],
    "reduced": ["MODEL.RBNET.GROUPING", "all", "MODEL.RBNET.WIDTH_MULT", "0.25"],
    "fusion": ["MODEL.RBNET.FUSION.LEVELS", "['conv1','layer1']"],
    "floor": ["MODEL.RBNET.GROUPING", "all", "MODEL.RBNET.WIDTH_MULT", "0.25", "MODEL.RBNET.MASK_SOURCE", "conv1",
              "MODEL.RBNET.LOSS.MSE", "0.0"],
}


def build(arch, depth, size, device, extra=()):
    import torch
    from fastreid.modeling.meta_arch import build_model

    feat = {"18x": 512, "34x": 512, "50x": 2048, "101x": 2048}[depth]
    cfg = make_cfg("projects/RBNet/configs/Base-RBNet.yml", [
        "MODEL.META_ARCHITECTURE", arch, "MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.FEAT_DIM", str(feat),
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", device, "MODEL.HEADS.NUM_CLASSES", "751",
        "INPUT.SIZE_TRAIN", str(list(size)), "INPUT.SIZE_TEST", str(list(size)), *extra])
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def batch(b, size, device, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    h, w = size
    kps = torch.rand(b, 17, 3, generator=g) * torch.tensor([w - 1.0, h - 1.0, 1.0])
    kps[..., 2] = 1.0
    return {"images": (torch.rand(b, 3, h, w, generator=g) * 255).to(device),
            "targets": (torch.arange(b) // 4).to(device), "keypoints": kps.to(device)}


def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


#: the clock of the timings (``--clock``): "cpu" = this process's CPU time (``time.process_time``; with one torch
#: thread, on a CPU shared with other jobs, the time the work took rather than how long it waited), "wall"
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = time.perf_counter


def train_iter(model, opt, data, device):
    model.train()
    t = clock()
    losses = model(data)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(device)
    return clock() - t


def infer(model, images, device):
    import torch

    model.eval()
    t = clock()
    with torch.no_grad():
        model(images)
    _sync(device)
    return clock() - t


# ---------------------------------------------------------------------------------------------------- breakdown
def _fwd_bwd(fn, inputs, device, reps=3):
    """Median time of ``fn(*inputs)`` forward + backward of the sum of its outputs (inputs that need a gradient get
    one, as inside the model)."""
    import torch

    def once():
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.grad is not None:
                x.grad = None
        t = clock()
        out = fn(*inputs)
        outs = out.values() if isinstance(out, dict) else (out if isinstance(out, (tuple, list)) else (out,))
        sum(o.float().sum() for o in outs if isinstance(o, torch.Tensor) and o.requires_grad).backward()
        _sync(device)
        return clock() - t

    once()
    return statistics.median(once() for _ in range(reps))


def breakdown(model, data, device, reps=3):
    """Per-part forward + backward seconds of one RBNet training iteration (module docstring)."""
    import torch

    from fastreid_ext.rbnet.reverse_backbone import LEVELS

    model.train()
    raw = model._raw_images(data)

    def leaf(t, grad=True):
        return t.detach().clone(memory_format=torch.preserve_format).requires_grad_(grad)

    with torch.no_grad():
        x = model._normalize(raw)
        feats = model.backbone.forward_features(x)
        rev = model.reverse(feats, heatmap_size=model.heatmap_size, upto=model.reverse_upto(True))
        mask, _ = model.mask_generator(rev, raw.shape[-2:])
        masked = raw * mask
        fin = model.fusion_inputs(rev)
    targets = data["targets"]
    parts = {}
    parts["backbone 1 (on the image)"] = _fwd_bwd(lambda a: model.backbone(a), [x], device, reps)
    parts["head 1 + L_id + L_tri"] = _fwd_bwd(
        lambda f: sum(model.losses(model.heads(f, targets), targets).values()), [leaf(feats["layer4"])], device, reps)
    cl = torch.channels_last if model.reverse.channels_last else torch.contiguous_format
    rf = {k: leaf(v.contiguous(memory_format=cl)) for k, v in feats.items()}
    for lvl in LEVELS:
        parts[f"reverse: change_channel({lvl})"] = _fwd_bwd(model.reverse.change_channel[lvl], [rf[lvl]], device, reps)
    for k in (4, 3, 2, 1):
        inp = leaf(rev[f"re_layer{k}_in"].contiguous(memory_format=cl))
        parts[f"reverse: re_layer{k} ({len(getattr(model.reverse, f're_layer{k}'))} blocks)"] = _fwd_bwd(
            getattr(model.reverse, f"re_layer{k}"), [inp], device, reps)
    if model.needs_heatmaps:
        tgt, wts = model.heatmap_targets(data, raw.shape[-2:], rev["heatmaps"].shape[-2:])
        from fastreid_ext.functional.heatmaps import heatmap_mse_loss

        def heat(a):
            h = model.reverse.re_conv1(a)
            if model.heatmap_size is not None:
                h = torch.nn.functional.interpolate(h, size=model.heatmap_size, mode="bilinear", align_corners=False)
            return heatmap_mse_loss(h, tgt, wts)

        parts["reverse: re_conv1 + heatmaps + L_MSE"] = _fwd_bwd(
            heat, [leaf(rev["re_conv1_in"].contiguous(memory_format=cl))], device, reps)
    mask_in = {k: leaf(v) for k, v in rev.items() if k in model.mask_generator.levels}
    parts["mask generator + x * M(x)"] = _fwd_bwd(
        lambda *a: raw * model.mask_generator(dict(zip(mask_in, a)), raw.shape[-2:])[0], list(mask_in.values()),
        device, reps)
    fin_l = {k: leaf(v) for k, v in (fin or {}).items()}
    name = "backbone 2 (on x * M(x), with input gradient" + (", fusion)" if fin else ")")
    parts[name] = _fwd_bwd(
        lambda a, *f: model._backbone2_features(model._normalize(a), "layer4", dict(zip(fin_l, f)) if fin else None)[
            "layer4"], [leaf(masked)] + list(fin_l.values()), device, reps)
    with torch.no_grad():
        f2 = model._backbone2_features(model._normalize(masked), "layer4", fin)["layer4"]
    parts["head 2 + L_id2 + L_tri2"] = _fwd_bwd(
        lambda f: sum(model.losses(model.heads2(f, targets), targets).values()), [leaf(f2)], device, reps)
    return parts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", default="50x")
    p.add_argument("--size", type=int, nargs=2, default=[256, 128])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--test-batch", type=int, default=16)
    p.add_argument("--variants", nargs="+", default=["table1-channel", "table1-full", "reduced", "floor"],
                   choices=sorted(VARIANTS), help="RBNet variants (the first one also gets the breakdown)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--iters", type=int, default=1, help="iterations per round")
    p.add_argument("--breakdown", action="store_true", help="per-part times of the first variant")
    p.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                   help="cpu: process CPU time (default with --threads 1: robust on a shared CPU); wall: elapsed time "
                        "(default otherwise, and on a GPU)")
    add_threads_arg(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--malloc", choices=("keep", "system"), default="keep",
                   help="keep: glibc keeps freed memory, as tools/train_net.py does on CPU; system: glibc's default")
    p.add_argument("--out", default=result_path("rbnet.md"))
    args = p.parse_args()
    global clock
    clock_name = args.clock or ("cpu" if args.threads == 1 and args.device == "cpu" else "wall")
    clock = CLOCKS[clock_name]

    import torch

    import fastreid_ext  # noqa: F401
    from fastreid.utils.events import EventStorage
    from fastreid_ext.utils.malloc import keep_freed_memory

    malloc = "glibc default"
    if args.malloc == "keep" and args.device == "cpu":
        malloc = "freed memory kept" if keep_freed_memory() else "glibc default (keep_freed_memory not available)"
    threads = set_threads(args.threads)
    size = tuple(args.size)
    data = batch(args.batch, size, args.device)
    test_images = batch(args.test_batch, size, args.device, seed=1)["images"]
    load0 = os.getloadavg()[0]
    models = {"Baseline": build("Baseline", args.depth, size, args.device)}
    for v in args.variants:
        models[v] = build("RBNet", args.depth, size, args.device, VARIANTS[v])
    first = args.variants[0]
    widths = {v: models[v][0].reverse.widths for v in args.variants}
    times = {k: [] for k in models}
    inf = {"Baseline": []}
    inf.update({f"{v} (backbone2)": [] for v in args.variants})
    inf.update({f"{first} (backbone1)": [], f"{first} (concat)": []})
    t_start = time.perf_counter()
    with EventStorage(0):
        for name, (m, o) in models.items():  # warm-up
            train_iter(m, o, data, args.device)
        for _ in range(args.rounds):
            for name, (m, o) in models.items():
                times[name].append(statistics.mean(train_iter(m, o, data, args.device) for _ in range(args.iters)))
            inf["Baseline"].append(infer(models["Baseline"][0], test_images, args.device))
            for v in args.variants:
                inf[f"{v} (backbone2)"].append(infer(models[v][0], test_images, args.device))
            m0 = models[first][0]
            for f in ("backbone1", "concat"):
                m0.test_feature = f
                inf[f"{first} ({f})"].append(infer(m0, test_images, args.device))
            m0.test_feature = "backbone2"
        parts = breakdown(models[first][0], data, args.device) if args.breakdown else None
    minutes = (time.perf_counter() - t_start) / 60
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = {v: [r / b for r, b in zip(times[v], times["Baseline"])] for v in args.variants}
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# RBNet vs Baseline cost ({args.depth}, {size[0]}x{size[1]}, batch {args.batch}, device {args.device}, "
        f"{threads} thread(s), {cpu}, load average {load0:.1f} at start / {os.getloadavg()[0]:.1f} at end, malloc: "
        f"{malloc}, {minutes:.0f} min wall; timings: {'process CPU time' if clock_name == 'cpu' else 'wall clock'})",
        "",
        f"Train iteration (forward + all losses + backward + Adam); median of {args.rounds} interleaved rounds of "
        f"{args.iters} iteration(s); the ratio is the median of the per-round ratios. Command: "
        f"`python bench/bench_rbnet.py --depth {args.depth} --size {size[0]} {size[1]} --batch {args.batch} "
        f"--rounds {args.rounds} --iters {args.iters} --threads {args.threads} --variants {' '.join(args.variants)}"
        f"{' --breakdown' if args.breakdown else ''} --clock {clock_name}`",
        "",
        "| model | reverse widths (conv1, layer1..layer4) | s / iteration | ratio over Baseline | per-round ratios |",
        "| --- | --- | --- | --- | --- |",
        f"| Baseline | - | {med['Baseline']:.3f} | 1.00 | |",
    ]
    for v in args.variants:
        w = "/".join(str(widths[v][k]) for k in ("conv1", "layer1", "layer2", "layer3", "layer4"))
        lines.append(f"| RBNet `{v}` | {w} | {med[v]:.3f} | **{statistics.median(ratios[v]):.2f}** | "
                     f"{', '.join(f'{r:.2f}' for r in ratios[v])} |")
    lines += ["", f"Inference (eval forward, batch {args.test_batch}), ms per image:", "",
              "| model (test feature) | ms / image | ratio over Baseline |", "| --- | --- | --- |"]
    base_inf = statistics.median(inf["Baseline"])
    for k, v in inf.items():
        m = statistics.median(v)
        lines.append(f"| {k} | {1000 * m / args.test_batch:.2f} | {m / base_inf:.2f} |")
    if parts is not None:
        total = sum(parts.values())
        b1 = parts["backbone 1 (on the image)"]
        lines += ["", f"Per-part forward + backward of `{first}` (each part alone on its real input shapes, median of "
                      f"3; the Baseline's whole iteration is {med['Baseline']:.3f} s; \"x backbone 1\" divides by "
                      f"backbone 1's forward + backward measured in the same pass):", "",
                  "| part | s | share of the parts | x backbone 1 | in Baseline iterations |",
                  "| --- | --- | --- | --- | --- |"]
        for k, v in parts.items():
            lines.append(f"| {k} | {v:.3f} | {100 * v / total:.1f} % | {v / b1:.2f} | {v / med['Baseline']:.2f} |")
        rev = sum(v for k, v in parts.items() if k.startswith("reverse") or k.startswith("mask"))
        lines.append(f"| **sum** | {total:.3f} | 100 % | {total / b1:.2f} | {total / med['Baseline']:.2f} |")
        lines.append(f"| of which reverse path + mask | {rev:.3f} | {100 * rev / total:.1f} % | {rev / b1:.2f} | "
                     f"{rev / med['Baseline']:.2f} |")
    write_report("\n".join(lines), args.out)
    return ratios


if __name__ == "__main__":
    main()
