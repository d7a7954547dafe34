"""Benchmark: RBNet's training-iteration and inference cost over FastReID's Baseline (same backbone/batch/input).

Not a test. One run: both models are built from the same config (``MODEL.META_ARCHITECTURE`` switched),
then timed *interleaved* (Baseline round, RBNet round, ...) so that load changes on a shared machine hit both
alike; medians are reported.

* train iteration: forward (all losses) + backward + Adam step on one fixed batch (random images, random
  keypoints), ``--batch`` x 3 x H x W;
* inference: eval-mode feature extraction per image (batch ``--test-batch``), for RBNet with each
  ``MODEL.RBNET.TEST_FEATURE`` (backbone1 skips the reverse path and backbone 2).

Like ``tools/train_net.py`` on CPU, the process first lets glibc keep freed memory
(:func:`fastreid_ext.utils.malloc.keep_freed_memory`); ``--malloc system`` measures with glibc's default, under
which every large activation is page-faulted in anew each step (that penalises memory-bound layers, of which
RBNet's reverse path has many).

Prints a markdown table and writes it to ``bench/results/rbnet.md``.

    python bench/bench_rbnet.py [--depth 18x] [--size 128 64] [--batch 64] [--rounds 5] [--threads 1]
    python bench/bench_rbnet.py --depth 50x --size 256 128 --batch 16      # the paper's backbone/input
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _report import write_report  # bench/_report.py (this folder is on sys.path when a script runs)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(arch, depth, size, device, extra=()):
    import torch

    import fastreid_ext
    from fastreid_ext.engine import Trainer

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / "projects" / "RBNet" / "configs" / "Base-RBNet.yml"))
    feat = {"18x": 512, "34x": 512, "50x": 2048, "101x": 2048}[depth]
    cfg.merge_from_list(["MODEL.META_ARCHITECTURE", arch, "MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.FEAT_DIM",
                         str(feat), "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", device,
                         "MODEL.HEADS.NUM_CLASSES", "751", "INPUT.SIZE_TRAIN", str(list(size)), *extra])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
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


def train_iter(model, opt, data, device):
    model.train()
    t = time.perf_counter()
    losses = model(data)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(device)
    return time.perf_counter() - t


def infer(model, images, device):
    import torch

    model.eval()
    t = time.perf_counter()
    with torch.no_grad():
        model(images)
    _sync(device)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", default="18x")
    p.add_argument("--size", type=int, nargs=2, default=[128, 64])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--test-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    p.add_argument("--iters", type=int, default=2, help="iterations per round")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is robust on a busy machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--malloc", choices=("keep", "system"), default="keep",
                   help="keep: glibc keeps freed memory, as tools/train_net.py does on CPU; system: glibc's default")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "rbnet.md"))
    args = p.parse_args()

    import torch

    import fastreid_ext  # noqa: F401
    from fastreid.utils.events import EventStorage
    from fastreid_ext.utils.malloc import keep_freed_memory

    malloc = "glibc default"
    if args.malloc == "keep" and args.device == "cpu":
        malloc = "freed memory kept" if keep_freed_memory() else "glibc default (keep_freed_memory not available)"
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    data = batch(args.batch, size, args.device)
    test_images = batch(args.test_batch, size, args.device, seed=1)["images"]
    models = {"Baseline": build("Baseline", args.depth, size, args.device),
              "RBNet": build("RBNet", args.depth, size, args.device)}
    feats = ("backbone1", "backbone2", "concat")
    times = {k: [] for k in models}
    inf = {k: [] for k in ["Baseline"] + [f"RBNet ({f})" for f in feats]}
    with EventStorage(0):
        for name, (m, o) in models.items():  # warm-up
            train_iter(m, o, data, args.device)
        for _ in range(args.rounds):
            for name, (m, o) in models.items():
                times[name].append(statistics.mean(train_iter(m, o, data, args.device) for _ in range(args.iters)))
            inf["Baseline"].append(infer(models["Baseline"][0], test_images, args.device))
            for f in feats:
                models["RBNet"][0].test_feature = f
                inf[f"RBNet ({f})"].append(infer(models["RBNet"][0], test_images, args.device))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [r / b for r, b in zip(times["RBNet"], times["Baseline"])]
    ratio = statistics.median(ratios)
    cpu = platform.processor() or platform.machine()
    lines = [
        f"# RBNet vs Baseline cost ({args.depth}, {size[0]}x{size[1]}, device {args.device}, "
        f"{args.threads} thread(s), {cpu}, load {os.getloadavg()[0]:.1f}, malloc: {malloc})",
        "",
        f"Train iteration (forward + backward + Adam, batch {args.batch}); median of {args.rounds} interleaved "
        f"rounds of {args.iters} iterations; the ratio is the median of the per-round ratios (all: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}).",
        "",
        "| model | s / iteration | ratio over Baseline |",
        "| --- | --- | --- |",
        f"| Baseline | {med['Baseline']:.3f} | 1.00 |",
        f"| RBNet | {med['RBNet']:.3f} | **{ratio:.2f}** |",
        "",
        f"Inference (eval forward, batch {args.test_batch}), ms per image:",
        "",
        "| model | ms / image | ratio over Baseline |",
        "| --- | --- | --- |",
    ]
    base_inf = statistics.median(inf["Baseline"])
    for k, v in inf.items():
        m = statistics.median(v)
        lines.append(f"| {k} | {1000 * m / args.test_batch:.2f} | {m / base_inf:.2f} |")
    text = "\n".join(lines)
    write_report(text, args.out)
    return ratio


if __name__ == "__main__":
    main()
