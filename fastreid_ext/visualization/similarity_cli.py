"""Command line of ``tools/visualize_similarity.py``: which locations of two images make their similarity.

    python tools/visualize_similarity.py --config-file CONFIG --weights CKPT --images A.jpg B.jpg --output pair.png
    python tools/visualize_similarity.py --model Baseline CONFIG CKPT [--model ...] \\
        --dataset SynthPedA --pid 12 [--mask none|exact|both] --output pair.png

For each model (a row; with ``--mask both`` two rows, without and with background removal by the images' person
masks) it draws ``image a | S_a over a | S_b over b | image b``: the exact per-location terms of the pair's cosine
similarity (Stylianou et al., "Visualizing deep similarity networks", WACV 2019; definitions and the pooling /
head cases in :mod:`fastreid_ext.visualization.similarity`), red where a location adds to the similarity, blue
where it subtracts, one colour scale per row. Each map sums to the printed cosine similarity of the model's test
feature (the JSON next to the picture has the numbers, per branch too). The images shown are what the model sees
(its input size; masked when masking is on). Maps are drawn cell by cell (nearest), at the map's own grid
(8 x 4 for 128 x 64 inputs to a stride-16 backbone; any h x w).

Models whose similarity has no exact decomposition get a row with the reason instead (e.g. a ReLU after pooling,
a feature pooled inside the backbone, a feature the head's pooling does not reproduce). ``--pid`` picks two images
of that identity from two different cameras of the dataset's test split (``--cams`` to choose them).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["build_parser", "main", "pair_items"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize_similarity.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="")
    p.add_argument("--weights", default="")
    p.add_argument("--model", nargs="+", action="append", default=[], metavar="ARG",
                   help="NAME CONFIG [WEIGHTS] [member=m] [KEY=VALUE ...]; repeat for more rows")
    p.add_argument("--member", default="", help="of a wrapper (MMT): only this member")
    p.add_argument("--images", nargs=2, metavar=("A", "B"), help="the two images")
    p.add_argument("--dataset", default="", help="with --pid: take the pair from this dataset's test split")
    p.add_argument("--pid", type=int, default=None)
    p.add_argument("--cams", type=int, nargs=2, default=None, help="cameras (0-based) of the two images of --pid")
    p.add_argument("--mask", default="none", choices=("none", "exact", "both"),
                   help="remove the background with the images' person masks (masks/ next to the dataset)")
    p.add_argument("--fill", default="zero", choices=("zero", "mean", "blur"))
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--output", default="vis/similarity.png")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model: KEY VALUE ...")
    return p


def pair_items(items, pid: int, cams: Optional[Sequence[int]] = None):
    """Two items of identity ``pid`` from two different cameras (``cams``: which)."""
    mine = [it for it in items if int(it[1]) == int(pid)]
    if cams is not None:
        a = [it for it in mine if int(it[2]) == int(cams[0])]
        b = [it for it in mine if int(it[2]) == int(cams[1])]
        if not a or not b:
            raise ValueError(f"identity {pid} has no images on cameras {cams} (it has "
                             f"{sorted({int(it[2]) for it in mine})})")
        return a[0], b[0]
    for it in mine[1:]:
        if int(it[2]) != int(mine[0][2]):
            return mine[0], it
    raise ValueError(f"identity {pid} has no two images from different cameras ({len(mine)} images)")


def _text_panel(width: int, lines: List[str], scale: float = 0.36) -> np.ndarray:
    """White panel of ``width`` pixels with ``lines``, each wrapped at word boundaries to fit."""
    import cv2

    wrapped: List[str] = []
    for text in lines:
        words, line = text.split(), ""
        for word in words:
            trial = f"{line} {word}".strip()
            if line and cv2.getTextSize(trial, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 6:
                wrapped.append(line)
                line = word
            else:
                line = trial
        wrapped.append(line)
    bar = np.full((14 * len(wrapped) + 4, width, 3), 255, np.uint8)
    for k, t in enumerate(wrapped):
        cv2.putText(bar, t, (3, 13 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def main(argv: Optional[Sequence[str]] = None) -> List[dict]:
    """Draw the rows; returns one dict per row (``model``, ``masked``, ``similarity``, ``sum_a``, ``sum_b``,
    ``branches``, ``note``; or ``error``)."""
    import cv2
    import torch

    import fastreid_ext  # noqa: F401

    from ..functional.background import remove_background
    from ..utils.visualize import hstack_panels, to_uint8_rgb, vstack_panels
    from .actmap_cli import model_specs
    from .inputs import batches, dataset_items, model_dataset
    from .models import decompose_pair, input_images, interface_models, load_model
    from .similarity import NotDecomposable, signed_overlay, upsample_map

    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    specs = model_specs(args)
    masks_needed = args.mask != "none"
    rows, results = [], []
    pair = None
    for spec in specs:
        cfg, model = load_model(spec.config, spec.weights, list(args.opts) + spec.opts, args.device)
        if pair is None:
            if args.images:
                pair = [(args.images[0], -1, 0), (args.images[1], -1, 1)]
            elif args.pid is not None:
                name = args.dataset or cfg.DATASETS.TESTS[0]
                pair = list(pair_items(dataset_items(name, cfg, "test"), args.pid, args.cams))
            else:
                raise SystemExit("give --images A B, or --pid P [--dataset NAME]")
        (batch,) = next(batches([model_dataset(cfg, pair, masks=masks_needed)], 2))
        settings = {"none": [False], "exact": [True], "both": [False, True]}[args.mask]
        for label, m in interface_models(model, spec.name or cfg.MODEL.META_ARCHITECTURE, spec.member or args.member):
            for masked in settings:
                b = dict(batch)
                if masked:
                    b["images"] = remove_background(batch["images"], batch["masks"], args.fill,
                                                    pixel_mean=list(cfg.MODEL.PIXEL_MEAN))
                seen = input_images(m, b)
                seen = b["images"] if seen is None else seen
                imgs = [to_uint8_rgb(seen[i]) for i in range(2)]
                head = f"{label}{', background removed' if masked else ''}"
                try:
                    total, parts = decompose_pair(m, b)
                except NotDecomposable as e:
                    results.append({"model": label, "masked": masked, "error": str(e)})
                    logger.warning("%s: %s", head, e)
                    rows.append(_text_panel(imgs[0].shape[1] * args.scale * 4 + 12,
                                            [f"{head}: no exact decomposition.", str(e)]))
                    continue
                h, w = imgs[0].shape[:2]
                sa, sb = upsample_map(total.map_a, (h, w)), upsample_map(total.map_b, (h, w))
                vmax = float(max(np.abs(total.map_a).max(), np.abs(total.map_b).max()))
                panels = [imgs[0], signed_overlay(imgs[0], sa, vmax), signed_overlay(imgs[1], sb, vmax), imgs[1]]
                panels = [cv2.resize(p, (w * args.scale, h * args.scale), interpolation=cv2.INTER_NEAREST)
                          for p in panels]
                strip = hstack_panels(panels)
                info = [f"{head}: cosine {total.similarity:.4f} = sum of S_a {total.map_a.sum():.4f} "
                        f"= sum of S_b {total.map_b.sum():.4f}",
                        f"{total.map_a.shape[0]}x{total.map_a.shape[1]} cells; {total.note}"]
                rows.append(np.vstack([_text_panel(strip.shape[1], info), strip]))
                results.append({"model": label, "masked": masked, "similarity": total.similarity,
                                "sum_a": float(total.map_a.sum()), "sum_b": float(total.map_b.sum()),
                                "grid": list(total.map_a.shape), "note": total.note,
                                "branches": {k: {"similarity": v.similarity, "note": v.note} for k, v in parts.items()},
                                "map_a": total.map_a.tolist(), "map_b": total.map_b.tolist()})
    width = max(r.shape[1] for r in rows)
    title = _text_panel(width, [f"Similarity attention of {os.path.basename(pair[0][0])} and "
                                f"{os.path.basename(pair[1][0])}: red cells add to the cosine similarity, blue cells "
                                f"subtract (one scale per row)"])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    cv2.imwrite(args.output, vstack_panels([title] + rows, gap=8)[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    with open(os.path.splitext(args.output)[0] + ".json", "w") as f:
        json.dump({"images": [p[0] for p in pair], "rows": results}, f, indent=1)
    for r in results:
        print(r["model"], "masked" if r["masked"] else "", r.get("similarity", r.get("error")))
    return results


if __name__ == "__main__":
    main()
