"""Command line of ``tools/extract_keypoints.py`` (see ``docs/keypoints.md``)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

logger = logging.getLogger("fastreid_ext.pose")

EPILOG = """examples:
  # HRNet-w48 (the paper's shortlist: HRNet-w48 / w48+UDP) on Market-1501, checkpoint downloaded beforehand
  %(prog)s datasets/Market-1501-v15.09.15 --backend mmpose --device cuda \\
      --checkpoint td-hm_hrnet-w48_8xb32-210e_coco-256x192-0e67c616_20220913.pth \\
      --subdirs bounding_box_train bounding_box_test query
  # BlazePose (bundled with mediapipe, offline, CPU)
  %(prog)s datasets/Market-1501-v15.09.15 --backend mediapipe --subdirs bounding_box_train bounding_box_test query
  # convert an OpenPose output folder / a COCO keypoint json
  %(prog)s datasets/Market-1501-v15.09.15 --backend import --source openpose_json/
  # which images lack keypoints?
  %(prog)s datasets/Market-1501-v15.09.15 --check --subdirs bounding_box_train bounding_box_test query
Interrupted runs resume: rerun the same command (results are kept in <output>.partial.jsonl)."""


def _attempts(text: str):
    try:
        out = []
        for a in filter(None, text.split(",")):
            p, s, *ops = a.split(":")
            out.append((float(p), int(s), *ops))
        return tuple(out)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected PAD:SIZE[:clahe][,...], e.g. 0.3:384,0.15:512,0.3:384:clahe; got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="extract_keypoints.py", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Extract COCO-17 keypoints for every image of a dataset folder (recursively), import "
                    "existing keypoint files, or check a keypoint file's coverage. Writes the fastreid_ext "
                    "keypoint file (keypoints.json at the dataset root by default).")
    p.add_argument("root", help="dataset folder (e.g. Market-1501-v15.09.15) or any folder of images")
    p.add_argument("--backend", choices=("mmpose", "mediapipe", "import"), default=None,
                   help="mmpose: HRNet top-down; mediapipe: BlazePose; import: convert --source")
    p.add_argument("--check", action="store_true",
                   help="report the coverage of the dataset by the keypoint file (exit 1 if images are missing)")
    p.add_argument("-o", "--output", "--keypoints", dest="output", default=None,
                   help="keypoint file to write / check (default ROOT/keypoints.json; keys are relative to "
                        "its folder)")
    p.add_argument("--subdirs", nargs="+", default=None,
                   help="only these subfolders of ROOT (default: everything under ROOT except masks/)")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute everything: ignore a partial file and replace an existing output")
    p.add_argument("--batch-size", type=int, default=None, help="images per backend call and per flush")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = p.add_argument_group("mmpose backend")
    g.add_argument("--config", default=None,
                   help="mmpose config file, or a path relative to the configs shipped in mmpose "
                        "(default: body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w48_8xb32-210e_coco-256x192.py, "
                        "HRNet-w48; the paper's other shortlisted HRNet is "
                        "td-hm_hrnet-w48_udp-8xb32-210e_coco-256x192.py)")
    g.add_argument("--checkpoint", default=None,
                   help="model weights; without it the model has RANDOM weights (meaningless keypoints)")
    g.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    g.add_argument("--no-flip-test", action="store_true",
                   help="no test-time flip averaging (half the cost; the HRNet config flips by default)")
    g = p.add_argument_group("mediapipe backend")
    g.add_argument("--model-complexity", type=int, default=None, choices=(0, 1, 2),
                   help="BlazePose lite/full/heavy (default 1: the only one bundled with the wheel)")
    g.add_argument("--attempts", type=_attempts, default=None,
                   help="preprocessing attempts PAD:SIZE[:clahe],... tried in order "
                        "(default 0.3:384,0.15:512,0.6:384,0.3:384:clahe)")
    g.add_argument("--min-detection-confidence", type=float, default=None)
    g = p.add_argument_group("import")
    g.add_argument("--source", default=None, help="COCO json, OpenPose folder / file / name mapping, or a "
                                                  "fastreid_ext keypoint file")
    g.add_argument("--source-format", choices=("auto", "coco", "openpose", "fastreid"), default="auto")
    g.add_argument("--coco-occluded-score", type=float, default=0.0,
                   help="score of COCO points with v=1 (labelled, not visible); default 0")
    g = p.add_argument_group("check")
    g.add_argument("--check-bounds", action="store_true", help="also flag scored points outside their image")
    g.add_argument("--compare", default=None, metavar="REF_JSON",
                   help="also compare the keypoint file with reference keypoints (e.g. SynthPed's exact ones)")
    g.add_argument("--max-list", type=int, default=20, help="names listed per category")
    g.add_argument("--missing-list", default=None, help="write all missing image names to this file")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .extract import ResumeError

    try:
        return _main(argv)
    except (FileExistsError, FileNotFoundError, ResumeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(levelname)s: %(message)s",
                            datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    if args.check == (args.backend is not None):
        print("give either --backend (extract / import) or --check", file=sys.stderr)
        return 2

    from .extract import check_coverage, compare_keypoints, extract_keypoints

    if args.check:
        report = check_coverage(args.root, args.output, subdirs=args.subdirs, check_bounds=args.check_bounds)
        print(report.summary(max_list=args.max_list))
        if args.missing_list:
            Path(args.missing_list).write_text("".join(f"{n}\n" for n in report.missing))
            print(f"missing image names written to {args.missing_list}")
        if args.compare:
            from ..data.annotations import load_keypoint_file

            pred = load_keypoint_file(report.keypoint_file)
            ref_file = Path(args.compare)
            ref = load_keypoint_file(ref_file)
            # keys of both files relative to their own folders: compare on absolute paths
            from .extract import list_images

            dataset = {str(p.resolve()) for p in list_images(args.root, args.subdirs)}
            pred = {str((report.keypoint_file.resolve().parent / k).resolve()): v for k, v in pred.items()}
            pred = {k: v for k, v in pred.items() if k in dataset}  # only the checked images
            ref = {str((ref_file.resolve().parent / k).resolve()): v for k, v in ref.items()}
            from PIL import Image

            heights = {}
            for k in set(pred) & set(ref):
                with Image.open(k) as im:
                    heights[k] = im.size[1]
            stats = compare_keypoints(pred, ref, image_heights=heights)
            print("comparison with", ref_file, "(distances in units of the image height):")
            print(json.dumps(stats, indent=1))
        return 0 if report.ok else 1

    if args.backend == "import":
        if not args.source:
            print("--backend import needs --source", file=sys.stderr)
            return 2
        from .convert import import_keypoints

        res = import_keypoints(args.root, args.source, args.output, fmt=args.source_format,
                               subdirs=args.subdirs, overwrite=args.overwrite,
                               occluded_score=args.coco_occluded_score)
        print(res.summary(max_list=args.max_list))
        return 0

    from .backends import build_backend

    if args.backend == "mmpose":
        opts = dict(config=args.config, checkpoint=args.checkpoint, device=args.device,
                    flip_test=False if args.no_flip_test else None)
    else:
        opts = dict(model_complexity=args.model_complexity, attempts=args.attempts,
                    min_detection_confidence=args.min_detection_confidence)
    backend = build_backend(args.backend, **opts)
    try:
        res = extract_keypoints(args.root, backend, args.output, subdirs=args.subdirs,
                                batch_size=args.batch_size, overwrite=args.overwrite,
                                progress=not args.no_progress)
    except KeyboardInterrupt:
        from .extract import partial_path

        out = Path(args.output) if args.output else Path(args.root) / "keypoints.json"
        print(f"\ninterrupted: results so far are kept in {partial_path(out)}; rerun the same command to "
              "resume", file=sys.stderr)
        return 130
    finally:
        backend.close()
    print(f"{res.output}: {res.num_images} images, {res.num_computed} computed "
          f"({res.ms_per_image:.1f} ms/image), {res.num_reused} reused, {len(res.undetected)} without a "
          f"detected person, {len(res.unreadable)} unreadable")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
