"""Command line of ``tools/reid_video.py``: detect-then-re-id on MOTChallenge sequences, with timings (the
real-time path of Zhang & Wu, "Person re-identification based on multiple deep learning methods", Sec. 4.5).

    # ground-truth boxes, torchreid OSNet x0.25 (Market-1501 weights) through the backbone bridge
    python tools/reid_video.py --seq ../shared/realdata/mot17_mini/MOT17-02-FRCNN \\
        ../shared/realdata/mot17_mini/MOT17-04-FRCNN --boxes gt \\
        --torchreid-weights ../shared/realdata/weights/osnet_x0_25_market1501.pth --out logs/reid_video
    # any FastReID model: a config + its weights (KEY VALUE overrides at the end)
    python tools/reid_video.py --seq SEQ --config-file projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml \\
        MODEL.WEIGHTS logs/synthped/joint_R18-ibn/model_final.pth
    # a detector instead of the box files: module:function or file.py:function, frame (RGB) -> boxes
    python tools/reid_video.py --seq SEQ --detector my_detector.py:detect --torchreid-weights W
    # background removal of each crop with mediapipe's person segmentation
    python tools/reid_video.py ... --remove-background

For each crop it writes ``assignments.csv`` / ``assignments.json`` (sequence, frame, box, score, gt id,
assigned id, cosine distance to the matched gallery entry; empty for a new identity), ``summary.json``
(identity accuracy = IDF1 with the given boxes, purity, id counts, timings) and annotated pictures (boxes
coloured by assigned id). It prints frames/s (reading + boxes + crops + segmentation + embedding +
matching; drawing and writing not counted) and crops/s.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Optional, Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    head, tail = __doc__.split("\n\n", 1)
    p = argparse.ArgumentParser(prog="reid_video.py", description=head, epilog=tail,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", nargs="+", required=True, help="MOTChallenge sequence folder(s) (img1/, gt/, det/)")
    p.add_argument("--boxes", default="gt", help="gt | det | path to a MOT box file (one sequence)")
    p.add_argument("--detector", default=None, help="module:function or file.py:function (frame -> boxes)")
    p.add_argument("--min-visibility", type=float, default=0.0, help="gt boxes: minimum visibility")
    p.add_argument("--min-score", type=float, default=float("-inf"), help="det boxes: minimum score")
    p.add_argument("--max-frames", type=int, default=0, help="first N frames of each sequence (0: all)")
    m = p.add_argument_group("model")
    m.add_argument("--config-file", default=None, help="a FastReID / fastreid_ext config")
    m.add_argument("--weights", default=None, help="MODEL.WEIGHTS (a FastReID checkpoint)")
    m.add_argument("--torchreid-weights", default=None, help="a torchreid OSNet checkpoint (uses the bridge)")
    m.add_argument("--torchreid-arch", default="osnet_x0_25")
    m.add_argument("--device", default="cpu")
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b = p.add_argument_group("background removal")
    b.add_argument("--remove-background", action="store_true", help="mediapipe person masks on each crop")
    b.add_argument("--fill", default="zero", choices=["zero", "mean", "blur"])
    g = p.add_argument_group("matching")
    g.add_argument("--threshold", type=float, default=0.35, help="cosine distance threshold for a gallery match")
    g.add_argument("--gallery-update", default="first", choices=["first", "mean"],
                   help="gallery entry: first-seen crop, or running mean of the assigned crops")
    g.add_argument("--shared-gallery", action="store_true", help="one gallery for all sequences (cross-camera)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="logs/reid_video", help="output folder")
    o.add_argument("--draw", default="last", choices=["last", "all", "none"])
    o.add_argument("--draw-scale", type=float, default=0.5)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Optional[Sequence[str]] = None):
    """Run the sequences; returns the :class:`~fastreid_ext.video.RunResult`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from .embed import build_embedder
    from .pipeline import load_detector, run_sequences

    if not args.config_file and not args.torchreid_weights:
        raise SystemExit("error: give --torchreid-weights PATH or --config-file CFG (+ --weights / MODEL.WEIGHTS)")
    try:
        embedder = build_embedder(args.config_file, args.opts, args.weights, args.torchreid_weights,
                                  args.torchreid_arch, args.device, args.batch_size, args.fill)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}")
    detector = load_detector(args.detector) if args.detector else None
    segmenter = None
    if args.remove_background:
        from ..segmentation import MediaPipeSegmenter

        segmenter = MediaPipeSegmenter()
    res = run_sequences(args.seq, embedder, boxes=args.boxes, detector=detector, segmenter=segmenter,
                        threshold=args.threshold, gallery_update=args.gallery_update,
                        shared_gallery=args.shared_gallery, max_frames=args.max_frames,
                        min_visibility=args.min_visibility, min_score=args.min_score, out_dir=args.out,
                        draw=args.draw, draw_scale=args.draw_scale)
    t = res.timing.as_dict()
    print(f"| sequence | frames | crops | id accuracy | purity | gt ids | assigned ids | fps | crops/s (embed) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in res.per_sequence.items():
        m, st = s["metrics"], s["timing"]
        print(f"| {name} | {st['frames']} | {st['crops']} | {m['id_accuracy']:.3f} | {m['purity']:.3f} | "
              f"{m['num_gt_ids']} | {m['num_pred_ids']} | {st['fps']:.2f} | {st['crops_per_s_embed']:.1f} |")
    m = res.metrics
    print(f"| all | {t['frames']} | {t['crops']} | {m['id_accuracy']:.3f} | {m['purity']:.3f} | {m['num_gt_ids']} | "
          f"{m['num_pred_ids']} | {t['fps']:.2f} | {t['crops_per_s_embed']:.1f} |")
    print(f"frames per second: {t['fps']:.2f}  crops per second: {t['crops_per_s_embed']:.1f} (embedding), "
          f"{t['crops_per_s_end_to_end']:.1f} (end to end)  time split (s): "
          + json.dumps({k: round(t[k], 3) for k in ('read', 'detect', 'crop', 'segment', 'embed', 'match')}))
    print(f"results: {os.path.join(args.out, 'assignments.csv')}, {os.path.join(args.out, 'summary.json')}, "
          f"{len(res.pictures)} annotated picture(s)")
    return res


if __name__ == "__main__":
    main()
