"""Command line of ``tools/similarity_matrix.py``: condition similarity matrices of re-id models.

    python tools/similarity_matrix.py --data datasets/synthped_controlled --out results/cond \\
        --model arcface projects/ConditionAnalysis/configs/SynthPed/arcface_mnv2.yml logs/.../model_final.pth \\
        --model moco projects/ConditionAnalysis/configs/SynthPed/moco_mnv2.yml logs/.../model_final.pth \\
        [--model moco+mask ...yml ...pth mask=exact] [--torchreid osnet osnet_x0_25.pth] \\
        [--factors distance orientation] [--letterbox on|off|config] [--pad-value 128 128 128] \\
        [--mask none|exact|mediapipe|torchvision|import] [--fill pad|zero|mean|blur] \\
        [--flip none|known|keypoints] [--keep right|left] [--feature model|gap] [--size H W]

Input: a folder ``<factor>/<condition>/<id>_<shot>.png`` (``fastreid_ext/analysis/layout.py``; SynthPed's
controlled mode writes one: ``tools/make_synthetic.py --controlled DIR``; photographs sorted the same way work).
Per factor and model: the matrix of mean cosine similarities within a condition (diagonal: over the pairs of a
person's shots) and between two conditions (off-diagonal: over all shot pairs), averaged over persons with the
spread over persons, written as CSV (``OUT/<factor>/<model>_{mean,std,n,impostor}.csv``), as annotated heat maps
side by side (``OUT/<factor>.png``), an overview of every factor (``OUT/overview.png``), ``OUT/summary.csv`` and
``OUT/summary.json``.

Each ``--model NAME CONFIG [WEIGHTS] [key=value ...]`` is a column; the keys (``mask``, ``fill``, ``flip``,
``keep``, ``letterbox``, ``feature``) override the global options for that column, so one run can show a model with
and without masking side by side. Defaults follow the paper: letterbox to the model's input size with grey (128,
128, 128) padding, no masking, no flip, the model's own test feature (``feature=gap``: the global average pooling of
its last feature map, as the paper reads its MoCo model).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .embed import FEATURES, FILLS, FLIPS, LETTERBOX, MASKS, VariantSpec, parse_variant

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="similarity_matrix.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder in the layout <factor>/<condition>/<id>_<shot>.png")
    p.add_argument("--replot", action="store_true",
                   help="redraw the figures (and print the table) from OUT/summary.json, embedding nothing")
    p.add_argument("--out", required=True, help="output folder (CSV, PNG, summary.json)")
    p.add_argument("--model", nargs="+", action="append", default=[], metavar="ARG",
                   help="NAME CONFIG [WEIGHTS] [key=value ...]; repeat for more models")
    p.add_argument("--torchreid", nargs="+", action="append", default=[], metavar="ARG",
                   help="NAME WEIGHTS [key=value ...]: torchreid OSNet weights through the bridge")
    p.add_argument("--torchreid-arch", default="osnet_x0_25")
    p.add_argument("--factors", nargs="+", default=None, help="factor folders to analyse (default: all)")
    p.add_argument("--letterbox", default="on", choices=LETTERBOX,
                   help="aspect-preserving resize with padding (on: the paper's), plain resize (off), or as the "
                        "model's config says (config)")
    p.add_argument("--pad-value", type=int, nargs=3, default=(128, 128, 128), metavar=("R", "G", "B"))
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="input size (default: each model's INPUT.SIZE_TEST)")
    p.add_argument("--mask", default="none", choices=MASKS,
                   help="background masking: exact (DATA/masks/..., SynthPed's), or a mask backend")
    p.add_argument("--fill", default="pad", choices=FILLS, help="what replaces the background (pad: the pad colour)")
    p.add_argument("--mask-source", default=None, help="mask=import: folder of PNG/NPY masks")
    p.add_argument("--mask-checkpoint", default=None, help="mask=torchvision: Mask R-CNN weights")
    p.add_argument("--flip", default="none", choices=FLIPS,
                   help="flip canonicalisation: known (conditions.json orientation) or keypoints")
    p.add_argument("--keep", default="right", choices=("right", "left"),
                   help="orientations kept: right = 0..180 degrees (90 = facing image right)")
    p.add_argument("--pose-backend", default=None, help="flip=keypoints without keypoints.json: mediapipe | mmpose")
    p.add_argument("--feature", default="model", choices=FEATURES)
    p.add_argument("--scale", default="model", choices=("model", "shared", "fixed"),
                   help="heat-map colour range per model panel, shared by a figure's panels, or fixed -0.2..1")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out persons with fewer than two shots in a condition instead of stopping")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE config overrides for every model")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--figure", nargs="+", action="append", default=[], metavar="ARG",
                   help="GROUP MODEL [MODEL ...]: also draw OUT/<factor>_GROUP.png and OUT/overview_GROUP.png with "
                        "these models' panels only (repeatable); the default figures show every model")
    p.add_argument("--no-plots", action="store_true")
    return p


def variants_from_args(a) -> List[VariantSpec]:
    defaults = VariantSpec(name="", mask=a.mask, fill=a.fill, flip=a.flip, keep=a.keep, letterbox=a.letterbox,
                           pad_value=tuple(a.pad_value), feature=a.feature, size=tuple(a.size) if a.size else None,
                           opts=tuple(a.opts), torchreid_arch=a.torchreid_arch)
    specs = [parse_variant(t, defaults) for t in a.model] + [parse_variant(t, defaults, torchreid=True)
                                                             for t in a.torchreid]
    if not specs:
        raise SystemExit("give at least one --model NAME CONFIG [WEIGHTS] (or --torchreid NAME WEIGHTS)")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SystemExit(f"model names must be unique: {names}")
    return specs


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the analysis; returns the results (also written under ``--out``)."""
    import torch

    from .embed import VariantEmbedder
    from .layout import scan_image_set
    from .matrices import SampleSource, compute_matrices, write_results

    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.replot:
        results = load_results(Path(a.out) / "summary.json")
        draw(results, Path(a.out), a)
        print_summary(results)
        return results
    if not a.data:
        raise SystemExit("--data DIR is required (or --replot)")
    specs = variants_from_args(a)
    for group, *names in a.figure:
        unknown = [n for n in names if n not in {s.name for s in specs}]
        if not names or unknown:
            raise SystemExit(f"--figure {group}: give the names of --model / --torchreid columns (unknown: {unknown})")
    image_set = scan_image_set(a.data, a.factors, skip_incomplete=a.skip_incomplete)
    for msg in image_set.skipped:
        logger.warning("skipped: %s", msg)
    t0 = time.time()
    embedders = [VariantEmbedder(s, device=a.device, batch_size=a.batch_size) for s in specs]
    source = SampleSource(image_set, masks=[s.mask for s in specs], keypoints=any(s.flip == "keypoints" for s in specs),
                          mask_source=a.mask_source, mask_checkpoint=a.mask_checkpoint, pose_backend=a.pose_backend)
    results = compute_matrices(image_set, embedders, source, list(image_set.factors), batch_size=a.batch_size,
                               progress=not a.no_progress)
    info = {"data": str(Path(a.data).resolve()), "models": [vars(s) for s in specs],
            "seconds": round(time.time() - t0, 1), "skipped": image_set.skipped}
    out = write_results(results, a.out, info)
    print_summary(results)
    if not a.no_plots:
        draw(results, out, a)
    print(f"written to {out} ({time.time() - t0:.0f} s)")
    return results


def draw(results: dict, out: Path, a) -> None:
    """``OUT/<factor>.png`` and ``OUT/overview.png`` with every model, and the ``--figure`` groups."""
    from .plot import plot_factor, plot_overview

    for f, r in results.items():
        plot_factor(r, f, out / f"{f}.png", scale=a.scale)
    plot_overview(results, out / "overview.png", scale=a.scale)
    for group, *names in a.figure:
        for f, r in results.items():
            plot_factor(r, f, out / f"{f}_{group}.png", models=names, scale=a.scale)
        plot_overview(results, out / f"overview_{group}.png", models=names, scale=a.scale)


def print_summary(results: dict) -> None:
    from .matrices import summary_rows

    print("| factor | model | within | between | min between | different persons | within - between |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in summary_rows(results):
        print(f"| {r['factor']} | {r['model']} | {r['within']:.3f} | {r['between']:.3f} | {r['min_between']:.3f} | "
              f"{r['different_persons']:.3f} | {r['drop']:.3f} |", flush=True)


def load_results(path: Path) -> dict:
    """The results of a previous run (``summary.json``) with numpy arrays again."""
    import json

    import numpy as np

    if not path.is_file():
        raise SystemExit(f"--replot: {path} not found (run the analysis into that --out first)")
    results = json.loads(path.read_text())["results"]
    for r in results.values():
        for v in r["variants"].values():
            for k in ("mean", "std", "n", "impostor", "flipped"):
                v[k] = np.array([[np.nan if x is None else x for x in row] for row in v[k]], float) \
                    if k in ("mean", "std", "n") else np.array([np.nan if x is None else x for x in v[k]], float)
    return results


if __name__ == "__main__":
    main()
