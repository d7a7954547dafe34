"""Command line of ``tools/extract_masks.py``: person masks for a re-id dataset (background removal as in
Zhang & Wu, "Person re-identification based on multiple deep learning methods", Sec. 3.1), resumable.

    # every image under a dataset root -> ROOT/masks/<rel>.png (what DATASETS.ANNOTATIONS.LOAD_MASKS reads)
    python tools/extract_masks.py --root $FASTREID_DATASETS/Market-1501-v15.09.15 --backend mediapipe
    # a registered dataset (train + query + gallery) under $FASTREID_DATASETS
    python tools/extract_masks.py --dataset DukeMTMC --backend mediapipe
    # torchvision Mask R-CNN from your checkpoint (COCO weights: person = label 1)
    python tools/extract_masks.py --root DIR --backend torchvision --checkpoint maskrcnn_resnet50_fpn_coco.pth
    # import existing masks (PNG/NPY, any folder, matched by file name), resized and binarised
    python tools/extract_masks.py --root DIR --backend import --source OTHER_MASKS/
    # background-removed copies of the images for a plain FastReID (no fastreid_ext mask path):
    #   --root DIR: OUT is a masked copy of DIR; --dataset NAME: OUT is a new $FASTREID_DATASETS holding the
    #   dataset's folder (FastReID's layout: Market-1501-v15.09.15/, cuhk03/, MSMT17_V2/, DukeMTMC-reID/ ...)
    python tools/extract_masks.py --root DIR --backend mediapipe --write-masked OUT_ROOT/Market-1501-v15.09.15
    python tools/extract_masks.py --dataset CUHK03 --backend mediapipe --write-masked /data/masked
    FASTREID_DATASETS=/data/masked python tools/train_net.py ...     # a plain FastReID reads the masked copy

Masks are written one by one and atomically: interrupt it at any time; rerunning skips every mask
already written (``--overwrite`` recomputes). Images with no person found get no mask and are listed in
``masks/_no_person.txt``; at training time ``DATASETS.ANNOTATIONS.ON_MISSING`` decides (``error``: clear
error naming the image; ``empty``: logged, image used unmasked). SynthPed ships exact masks: nothing to do.

``--write-masked`` copies such images unmasked, counts them and warns (``--on-missing error``: stop at the first
one instead); every other file and folder of the dataset is copied too, and JSON split files (FastReID's CUHK03
keeps each image's full path in them) get their paths moved to the copy, so FastReID reads the masked images.
With ``--dataset`` the images are everything FastReID's class loads for that dataset with or without
``DATASETS.COMBINEALL``: train, query, gallery and MSMT17's ``list_val``; CUHK03 is FastReID's default split
(labeled, new protocol: FastReID 1.4.0's configs cannot choose another). Its masks go to ``masks/`` in the
dataset's folder (``cuhk03/masks/images_labeled/...``), where the loader finds them.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["build_parser", "dataset_images", "dataset_folder", "build_backend", "main"]


def build_parser() -> argparse.ArgumentParser:
    head, tail = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="extract_masks.py", description=head, epilog=tail,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="dataset root: every image below it (the masks/ folder excluded)")
    src.add_argument("--dataset", help="a registered dataset name (train+query+gallery under $FASTREID_DATASETS)")
    p.add_argument("--backend", default="mediapipe", choices=["mediapipe", "torchvision", "import"])
    p.add_argument("--out", default=None, help="mask root (default: <root>/masks)")
    p.add_argument("--overwrite", action="store_true", help="recompute masks that exist")
    p.add_argument("--threshold", type=float, default=0.5, help="binarisation threshold of soft masks")
    p.add_argument("--batch-size", type=int, default=0, help="images per backend call (0: backend default)")
    p.add_argument("--limit", type=int, default=0, help="compute at most N new masks (0: all)")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("mediapipe")
    g.add_argument("--mp-model", default="auto", choices=["auto", "pose", "selfie"],
                   help="pose segmentation, selfie segmentation, or pose with selfie fallback")
    g = p.add_argument_group("torchvision")
    g.add_argument("--checkpoint", default=None, help="maskrcnn_resnet50_fpn state dict (required)")
    g.add_argument("--num-classes", type=int, default=91)
    g.add_argument("--person-label", type=int, default=1)
    g.add_argument("--score-threshold", type=float, default=0.5)
    g.add_argument("--device", default="cpu")
    g = p.add_argument_group("import")
    g.add_argument("--source", default=None, help="folder of existing PNG/NPY masks")
    g = p.add_argument_group("masked copies (plain FastReID)")
    g.add_argument("--write-masked", default=None, metavar="OUT",
                   help="also write background-removed copies of the images (and copy the other files): with "
                        "--root DIR, OUT is the copy of DIR; with --dataset NAME, OUT is a new datasets root "
                        "(FASTREID_DATASETS=OUT) holding the dataset's folder under its usual name")
    g.add_argument("--fill", default="zero", choices=["zero", "mean", "blur"])
    g.add_argument("--on-missing", default="copy", choices=["copy", "error"],
                   help="--write-masked for an image without mask (no person found): copy it unmasked, counted "
                        "and warned (default), or stop with an error")
    return p


def dataset_images(name: str) -> Tuple[List[str], str]:
    """``(image paths, dataset folder)`` of a registered dataset: every image FastReID's class loads (train,
    query, gallery, and what ``combineall`` adds, e.g. MSMT17's ``list_val``) and :func:`dataset_folder`."""
    from ..data.build import build_dataset

    data = build_dataset(name, combineall=True)
    paths = sorted({it[0] for it in list(data.train) + list(data.query) + list(data.gallery)})
    if not paths:
        raise SystemExit(f"dataset {name} has no images")
    return paths, dataset_folder(data, paths)


def dataset_folder(data, paths: Sequence[str], datasets_root: Optional[str] = None) -> str:
    """The folder of a dataset under ``datasets_root`` (default ``$FASTREID_DATASETS``) that holds all its images:
    the deepest of the dataset object's ``data_dir`` / ``dataset_dir`` strictly below the root that contains every
    image (Market-1501-v15.09.15, cuhk03, DukeMTMC-reID, ...), else the root's child on the way to the images
    (MSMT17_V2: FastReID's MSMT17 keeps the root itself as ``dataset_dir``), else the images' common folder."""
    from ..data.build import datasets_root as default_root

    root = os.path.abspath(datasets_root or default_root())
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])

    def below_root(d):
        return d != root and d.startswith(root + os.sep)

    cands = [os.path.abspath(d) for d in (getattr(data, "data_dir", None), getattr(data, "dataset_dir", None))
             if isinstance(d, str) and d]
    cands = [d for d in cands if below_root(d) and (common == d or common.startswith(d + os.sep))]
    if cands:
        return max(cands, key=len)
    if below_root(common):
        return os.path.join(root, os.path.relpath(common, root).split(os.sep)[0])
    return common


def build_backend(args: argparse.Namespace, image_root: str):
    """The segmentation backend the parsed options ask for."""
    from .backends import build_segmenter

    if args.backend == "mediapipe":
        return build_segmenter("mediapipe", model=args.mp_model)
    if args.backend == "torchvision":
        return build_segmenter("torchvision", checkpoint=args.checkpoint, num_classes=args.num_classes,
                               person_label=args.person_label, score_threshold=args.score_threshold,
                               device=args.device)
    if not args.source:
        raise SystemExit("--backend import needs --source FOLDER (existing PNG/NPY masks)")
    return build_segmenter("import", source=args.source, image_root=image_root, threshold=args.threshold)


def main(argv: Optional[Sequence[str]] = None):
    """Extract (and optionally apply) the masks; returns the :class:`~fastreid_ext.segmentation.ExtractStats`."""
    from ..utils.extraction import list_images
    from .extract import extract_masks, write_masked_dataset

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.root:
        root = os.path.abspath(args.root)
        if not os.path.isdir(root):
            raise SystemExit(f"--root {root} is not a folder")
        images = list_images(root)
    else:
        images, root = dataset_images(args.dataset)
    print(f"{len(images)} images under {root}", flush=True)
    try:
        backend = build_backend(args, root)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise SystemExit(f"error: {e}")
    from .extract import ResumeError

    try:
        with backend:
            stats = extract_masks(images, root, backend, out_root=args.out, overwrite=args.overwrite,
                                  threshold=args.threshold, batch_size=args.batch_size or None,
                                  progress=not args.no_progress, limit=args.limit)
    except ResumeError as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:  # every mask written so far is complete on disk (atomic writes)
        print("\ninterrupted: the masks written so far are kept; rerun the same command to resume", file=sys.stderr,
              flush=True)
        raise SystemExit(130) from None
    print(stats, flush=True)
    if args.write_masked:
        mask_root = Path(args.out) if args.out else Path(root) / "masks"
        out = os.path.abspath(args.write_masked)
        if args.dataset:  # OUT is a datasets root: the dataset's folder keeps its name and place under it
            from ..data.build import datasets_root

            base = os.path.abspath(datasets_root())
            rel = os.path.relpath(root, base)
            out = os.path.join(out, rel if not rel.startswith("..") else os.path.basename(root))
        try:
            copy_stats = write_masked_dataset(images, root, out, mask_root, fill=args.fill,
                                              on_missing=args.on_missing, progress=not args.no_progress)
        except FileNotFoundError as e:
            raise SystemExit(f"error: {e}")
        print(f"{copy_stats} -> {out}", flush=True)
        if args.dataset:
            print(f"a plain FastReID reads it with FASTREID_DATASETS={os.path.abspath(args.write_masked)}", flush=True)
        stats.masked_copy = copy_stats
    return stats


if __name__ == "__main__":
    main()
