#!/usr/bin/env python
"""Person masks for a re-id dataset (background removal, seed 000), resumable.

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
import argparse
import logging
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
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
    return p.parse_args(argv)


def dataset_images(name):
    """(image paths, common root) of a registered dataset."""
    import fastreid_ext  # noqa: F401  (compat + registrations)
    from fastreid_ext.data.build import build_dataset

    data = build_dataset(name)
    paths = sorted({it[0] for it in list(data.train) + list(data.query) + list(data.gallery)})
    if not paths:
        raise SystemExit(f"dataset {name} has no images")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return paths, root


def build_backend(args, image_root):
    from fastreid_ext.segmentation import build_segmenter

    if args.backend == "mediapipe":
        return build_segmenter("mediapipe", model=args.mp_model)
    if args.backend == "torchvision":
        return build_segmenter("torchvision", checkpoint=args.checkpoint, num_classes=args.num_classes,
                               person_label=args.person_label, score_threshold=args.score_threshold,
                               device=args.device)
    if not args.source:
        raise SystemExit("--backend import needs --source FOLDER (existing PNG/NPY masks)")
    return build_segmenter("import", source=args.source, image_root=image_root, threshold=args.threshold)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from fastreid_ext.segmentation import extract_masks, list_images, write_masked_copies

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
        mask_root = args.out or os.path.join(root, "masks")
        n = write_masked_copies(images, root, args.write_masked, mask_root, fill=args.fill,
                                on_missing=args.on_missing, progress=not args.no_progress)
        copied = 0
        for dirpath, dirnames, files in os.walk(root):  # split files, lists, .mat: whatever is not an image
            dirnames[:] = [d for d in dirnames if d != "masks" and os.path.join(dirpath, d) != os.path.abspath(mask_root)]
            for f in files:
                if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")):
                    continue
                dst = os.path.join(args.write_masked, os.path.relpath(os.path.join(dirpath, f), root))
                if not os.path.exists(dst):
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copy2(os.path.join(dirpath, f), dst)
                    copied += 1
        print(f"{n} background-removed images written to {args.write_masked} ({copied} other files copied)")
    return stats


if __name__ == "__main__":
    main()
