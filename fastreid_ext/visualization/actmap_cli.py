"""Command line of ``tools/visualize_actmap.py``: activation maps (torchreid's recipe,
:mod:`fastreid_ext.visualization.actmap`) of any registered model and any chosen layer, several models side by side.

    python tools/visualize_actmap.py --config-file CONFIG --weights CKPT [--layers retrieval] \\
        [--dataset NAME | --folder DIR] [--num-images N] --output DIR [KEY VALUE ...]
    python tools/visualize_actmap.py \\
        --model Baseline projects/RBNet/configs/SynthPed/baseline_R18.yml logs/.../model_final.pth \\
        --model RBNet projects/RBNet/configs/SynthPed/rbnet_R18.yml logs/.../model_final.pth \\
            layers=b1_layer4,mask,b2_layer4 \\
        --dataset SynthPedA --num-images 8 --output vis/actmap

One picture per image (``--ext jpg`` by default, as torchreid), ``image | map | overlay`` for each model and layer (labels above), plus ``overview.png`` (the
first ``--overview`` strips under each other). Layers (``--layers`` for every model, ``layers=a,b`` for one):

* ``retrieval`` (default): the map each retrieval branch's feature is pooled from (the interface's
  ``pooled_maps``; RBNet ``concat``: both branches);
* a key of the model's ``feature_maps()`` (Baseline: ``backbone``; RBNet: ``heatmaps``, ``mask``, ``part_masks``,
  ``b1_conv1``, ``b1_layer4``, ``b2_conv1``, ``b2_layer4``; HPLF: ``local_stripes``; PoseTransfer: ``ei_mid``,
  ``ei_out``, ``ea``);
* the dotted name of any submodule (``backbone.layer3``, ``backbone.net.conv4`` of the torchreid bridge; see
  ``model.named_modules()``), its output taken by a forward hook; ``NAME@k`` is its k-th call in the pass;
* ``input``: the image the model sees (JointIBN: after background removal), shown as it is.
* ``input_mask``: the person masks the model is given with the images (JointIBN: the mask of its background
  removal; needs ``DATASETS.ANNOTATIONS.LOAD_MASKS``), shown as they are.

A wrapper (MMT) shows the interface models it holds (``net1``, ``net2``, ``mean1``, ``mean2``), or one of them with
``member=mean1`` (``--member`` for all). Images are streamed batch by batch (a Market-sized query split is fine):
only paths are listed up front, at most ``--overview`` strips are kept in memory.
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize_actmap.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="", help="one model: its config (or use --model)")
    p.add_argument("--weights", default="", help="with --config-file: checkpoint (default MODEL.WEIGHTS)")
    p.add_argument("--model", nargs="+", action="append", default=[], metavar="ARG",
                   help="NAME CONFIG [WEIGHTS] [layers=a,b] [member=m] [KEY=VALUE ...]; repeat for side by side")
    p.add_argument("--layers", nargs="+", default=["retrieval"], help="layers of every model (see above)")
    p.add_argument("--member", default="", help="of a wrapper (MMT), show only this member (e.g. mean1)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="", help="registered dataset (default: the first model's DATASETS.TESTS[0])")
    src.add_argument("--folder", default="", help="a folder of images instead of a dataset")
    p.add_argument("--split", default="query", choices=("query", "gallery", "test"), help="split of --dataset")
    p.add_argument("--num-images", type=int, default=-1, help="images to draw (-1: all)")
    p.add_argument("--show-input", action="store_true", help="add the image each model sees (layer 'input')")
    p.add_argument("--output", default="vis/actmap", help="output folder")
    p.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscaling of every panel")
    p.add_argument("--overview", type=int, default=8, help="strips stacked into overview.png (0: none)")
    p.add_argument("--ext", default="jpg", choices=("jpg", "png"), help="format of the per-image strips "
                   "(jpg, as torchreid writes them, encodes several times faster)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data-loader workers")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model: KEY VALUE ...")
    return p


def model_specs(args):
    from .models import ModelSpec, parse_model_tokens

    specs = [parse_model_tokens(t) for t in args.model]
    if args.config_file:
        specs.insert(0, ModelSpec("", args.config_file, args.weights))
    if not specs:
        raise SystemExit("give --config-file CONFIG [--weights CKPT] or one or more --model NAME CONFIG [WEIGHTS]")
    return specs


def load_entries(specs, args):
    """``[(cfg, [(label, interface model, layers)])]`` per loaded model."""
    from .models import interface_models, load_model

    entries = []
    for spec in specs:
        cfg, model = load_model(spec.config, spec.weights, list(args.opts) + spec.opts, args.device)
        name = spec.name or cfg.MODEL.META_ARCHITECTURE
        layers = list(spec.layers or args.layers)
        if args.show_input and "input" not in layers:
            layers.insert(0, "input")
        members = interface_models(model, name, spec.member or args.member)
        entries.append((cfg, [(label, m, layers) for label, m in members]))
    return entries


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Write the strips; returns ``{"images": n, "output": folder, "columns": [...]}``."""
    import cv2
    import torch
    from tqdm import tqdm

    import fastreid_ext  # noqa: F401  (compat + registrations)

    from ..utils.visualize import to_uint8_rgb, vstack_panels
    from .actmap import actmap_strip, display_maps
    from .inputs import batches, dataset_items, folder_items, model_dataset
    from .models import INPUT, RETRIEVAL, input_images, named_maps

    args = build_parser().parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    entries = load_entries(model_specs(args), args)
    cfg0 = entries[0][0]
    if args.folder:
        items, source = folder_items(args.folder), args.folder
    else:
        name = args.dataset or cfg0.DATASETS.TESTS[0]
        items, source = dataset_items(name, cfg0, args.split), f"{name} {args.split}"
    if args.num_images >= 0:
        items = items[:args.num_images]
    datasets = [model_dataset(cfg, items) for cfg, _ in entries]
    os.makedirs(args.output, exist_ok=True)
    kept: List[np.ndarray] = []
    columns: List[str] = []
    done = 0
    with tqdm(total=len(items), desc=f"activation maps ({source})", unit="img", disable=args.no_progress) as bar:
        for group in batches(datasets, args.batch_size, args.workers):
            display = group[0]["images"]
            size = display.shape[-2:]
            per_image: List[list] = [[] for _ in range(display.shape[0])]
            extras: List[list] = [[] for _ in range(display.shape[0])]
            cols: List[str] = []
            for (cfg, members), batch in zip(entries, group):
                for label, model, layers in members:
                    with torch.no_grad():
                        maps = named_maps(model, batch, [n for n in layers if n != INPUT])
                        seen = input_images(model, batch) if INPUT in layers else None
                    if seen is not None:
                        seen = torch.nn.functional.interpolate(seen, size=tuple(size), mode="bilinear",
                                                               align_corners=False)
                        for i in range(seen.shape[0]):
                            extras[i].append((f"{label}: input", to_uint8_rgb(seen[i])))
                    for lname, fmap in maps.items():
                        shown = display_maps(fmap, size)
                        col = label if (len(maps) == 1 and lname == RETRIEVAL) else f"{label}: {lname}"
                        cols.append(col)
                        for i in range(shown.shape[0]):
                            per_image[i].append((col, shown[i]))
            columns = cols
            for i in range(display.shape[0]):
                strip = actmap_strip(display[i], per_image[i], scale=args.scale, extra_panels=extras[i])
                base = os.path.splitext(os.path.basename(group[0]["img_paths"][i]))[0]
                cv2.imwrite(os.path.join(args.output, f"{done:05d}_{base}.{args.ext}"), strip[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95] if args.ext == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1])
                if len(kept) < args.overview:
                    kept.append(strip)
                done += 1
                bar.update(1)
    if kept:
        cv2.imwrite(os.path.join(args.output, "overview.png"), vstack_panels(kept)[..., ::-1],
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {done} activation strips ({', '.join(columns)}) to {os.path.abspath(args.output)}")
    return {"images": done, "output": os.path.abspath(args.output), "columns": columns}


if __name__ == "__main__":
    main()
