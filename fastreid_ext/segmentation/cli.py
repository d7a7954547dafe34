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
    # background-removed copies of the images for a plain FastReID (no fastreid_ext mask path)
    python tools/extract_masks.py --root DIR --backend mediapipe --write-masked OUT_ROOT/Market-1501-v15.09.15

Masks are written one by one and atomically: interrupt it at any time; rerunning skips every mask
already written (``--overwrite`` recomputes). Images with no person found get no mask and are listed in
``masks/_no_person.txt``; at training time ``DATASETS.ANNOTATIONS.ON_MISSING`` decides (``error``: clear
error naming the image; ``empty``: logged, image used unmasked). SynthPed ships exact masks: nothing to do.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["build_parser", "dataset_images", "build_backend", "main"]


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
    g.add_argument("--write-masked", default=None, metavar="OUT_DIR",
                   help="also write background-removed copies of the images (and copy the other files)")
    g.add_argument("--fill", default="zero", choices=["zero", "mean", "blur"])
    g.add_argument("--on-missing", default="error", choices=["error", "copy"],
                   help="--write-masked for an image without mask: fail, or copy it unmasked")
    return p


def dataset_images(name: str) -> Tuple[List[str], str]:
    """``(image paths, common root)`` of a registered dataset (train + query + gallery)."""
    from ..data.build import build_dataset

    data = build_dataset(name)
    paths = sorted({it[0] for it in list(data.train) + list(data.query) + list(data.gallery)})
    if not paths:
        raise SystemExit(f"dataset {name} has no images")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return paths, root


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
    with backend:
        stats = extract_masks(images, root, backend, out_root=args.out, overwrite=args.overwrite,
                              threshold=args.threshold, batch_size=args.batch_size or None,
                              progress=not args.no_progress, limit=args.limit)
    print(stats, flush=True)
    if args.write_masked:
        mask_root = Path(args.out) if args.out else Path(root) / "masks"
        n, copied = write_masked_dataset(images, root, args.write_masked, mask_root, fill=args.fill,
                                         on_missing=args.on_missing, progress=not args.no_progress)
        print(f"{n} background-removed images written to {args.write_masked} ({copied} other files copied)")
    return stats


if __name__ == "__main__":
    main()
