"""Command line of ``tools/reid_video.py``: detect-then-re-id on MOTChallenge sequences, with timings (the
real-time path of Zhang & Wu, "Person re-identification based on multiple deep learning methods", Sec. 4.5).

    # ground-truth boxes, torchreid OSNet x0.25 (Market-1501 weights) through the backbone bridge
    python tools/reid_video.py --seq ../shared/realdata/mot17_mini/MOT17-02-FRCNN \\
        ../shared/realdata/mot17_mini/MOT17-04-FRCNN --boxes gt \\
        --torchreid-weights ../shared/realdata/weights/osnet_x0_25_market1501.pth --out logs/reid_video
    # any FastReID model: a config + its weights (KEY VALUE overrides at the end)
    python tools/reid_video.py --seq SEQ --config-file projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml \\
        MODEL.WEIGHTS logs/synthped/joint_R18-ibn/model_final.pth
    # a detector instead of the box files: OpenCV's HOG people detector (no weights; the default of --detector),
    # a torchvision / mmdet model from your checkpoint, or module:function / file.py:function (frame -> boxes)
    python tools/reid_video.py --seq SEQ --detector --min-height 60 --torchreid-weights W
    python tools/reid_video.py --seq SEQ --detector torchvision:fasterrcnn_resnet50_fpn --det-checkpoint frcnn.pth ...
    python tools/reid_video.py --seq SEQ --detector mmdet --det-config yolox_s.py --det-checkpoint yolox_s.pth ...
    # tracking (DeepSORT on our embeddings + motion), MOTChallenge results + motmetrics vs gt/gt.txt, an exported
    # ONNX model through onnxruntime (tools/export_onnx.py), an annotated video
    python tools/reid_video.py --seq SEQ --boxes gt --track --n-init 1 --onnx osnet_x0_25.onnx --video out/seq.mp4
    # background removal of each crop with mediapipe's person segmentation
    python tools/reid_video.py ... --remove-background

For each crop it writes ``assignments.csv`` / ``assignments.json`` (sequence, frame, box, score, gt id,
assigned id, cosine distance to the matched gallery entry; empty for a new identity), ``summary.json``
(identity accuracy = IDF1 with the given boxes, purity, id counts, timings) and annotated pictures (boxes
coloured by assigned id, or track id with --track). With --track it writes ``mot/SEQ.txt`` (MOTChallenge
format, appended frame by frame: after a crash it holds every frame completed before it) and reports MOTA, IDF1 and
ID switches (motmetrics) where the sequence has ``gt/gt.txt``. It prints frames/s (waiting for the decoded frame +
boxes + crops + segmentation + embedding + matching + tracking; frames are decoded in a background thread; drawing
and writing not counted) and crops/s.
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
    p.add_argument("--detector", nargs="?", const="hog", default=None,
                   help="hog (the default when no value is given) | torchvision:NAME | mmdet | module:function | "
                   "file.py:function (frame -> boxes); replaces --boxes")
    p.add_argument("--det-checkpoint", default=None, help="torchvision / mmdet detector weights (never downloaded)")
    p.add_argument("--det-config", default=None, help="mmdet config file")
    p.add_argument("--person-label", type=int, default=None, help="the detector's person class (torchvision COCO: 1)")
    p.add_argument("--hog-resize", type=float, default=1.0, help="HOG: scale frames by this first")
    p.add_argument("--hog-scale", type=float, default=1.05, help="HOG: pyramid step")
    p.add_argument("--min-visibility", type=float, default=0.0, help="gt boxes: minimum visibility")
    p.add_argument("--min-score", type=float, default=float("-inf"), help="det boxes / detectors: minimum score")
    p.add_argument("--min-height", type=float, default=0.0, help="boxes: minimum height in pixels")
    p.add_argument("--min-width", type=float, default=0.0, help="boxes: minimum width in pixels")
    p.add_argument("--max-frames", type=int, default=0, help="first N frames of each sequence (0: all)")
    m = p.add_argument_group("model")
    m.add_argument("--config-file", default=None, help="a FastReID / fastreid_ext config")
    m.add_argument("--weights", default=None, help="MODEL.WEIGHTS (a FastReID checkpoint)")
    m.add_argument("--torchreid-weights", default=None, help="a torchreid OSNet checkpoint (uses the bridge)")
    m.add_argument("--torchreid-arch", default="osnet_x0_25")
    m.add_argument("--onnx", default=None, help="embed with this exported ONNX file through onnxruntime "
                   "(tools/export_onnx.py); with --config-file / --torchreid-weights it must come from that model")
    m.add_argument("--device", default="cpu")
    m.add_argument("--batch-size", type=int, default=64, help="crops per forward (a frame's crops go together, "
                   "in chunks of this size)")
    m.add_argument("--resize", default="pil", choices=["pil", "fast"],
                   help="crop resizing: pil (FastReID's test transform) | fast (OpenCV bicubic for upscaled crops)")
    m.add_argument("--threads", type=int, default=0, help="torch / onnxruntime CPU threads (0: their default)")
    b = p.add_argument_group("background removal")
    b.add_argument("--remove-background", action="store_true", help="mediapipe person masks on each crop")
    b.add_argument("--fill", default="zero", choices=["zero", "mean", "blur"])
    g = p.add_argument_group("matching")
    g.add_argument("--threshold", type=float, default=0.35, help="cosine distance threshold for a gallery match")
    g.add_argument("--gallery-update", default="first", choices=["first", "mean"],
                   help="gallery entry: first-seen crop, or running mean of the assigned crops")
    g.add_argument("--shared-gallery", action="store_true", help="one gallery for all sequences (cross-camera)")
    t = p.add_argument_group("tracking (DeepSORT, deep-sort-realtime, on our embeddings)")
    t.add_argument("--track", action="store_true", help="track per sequence; MOTChallenge results + motmetrics")
    t.add_argument("--max-age", type=int, default=30, help="frames a track survives unmatched")
    t.add_argument("--n-init", type=int, default=3, help="detections before a track is confirmed (reported)")
    t.add_argument("--max-cosine-distance", type=float, default=0.2, help="appearance gate")
    t.add_argument("--max-iou-distance", type=float, default=0.7, help="IoU gate (1 - IoU)")
    t.add_argument("--nn-budget", type=int, default=100, help="features kept per track")
    o = p.add_argument_group("output")
    o.add_argument("--out", default="logs/reid_video", help="output folder")
    o.add_argument("--draw", default="last", choices=["last", "all", "none"])
    o.add_argument("--draw-scale", type=float, default=0.5)
    o.add_argument("--video", default=None, help="write an annotated video (.mp4 / .avi)")
    o.add_argument("--prefetch", type=int, default=2, help="frames decoded ahead in a thread (0: inline)")
    o.add_argument("--no-fsync", action="store_true", help="do not fsync the MOT results file after every frame")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def main(argv: Optional[Sequence[str]] = None):
    """Run the sequences; returns the :class:`~fastreid_ext.video.RunResult`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from .detect import build_detector
    from .embed import build_embedder
    from .pipeline import run_sequences

    if not args.config_file and not args.torchreid_weights and not args.onnx:
        raise SystemExit("error: give --torchreid-weights PATH, --config-file CFG (+ --weights / MODEL.WEIGHTS) or "
                         "--onnx FILE")
    try:
        # the detector first: its errors (e.g. mmdet without the full mmcv) come before a re-id model is loaded
        detector = build_detector(args.detector, args.det_checkpoint, args.det_config, args.device, args.hog_resize,
                                  args.hog_scale, args.person_label) if args.detector else None
        embedder = build_embedder(args.config_file, args.opts, args.weights, args.torchreid_weights,
                                  args.torchreid_arch, args.device, args.batch_size, args.fill, onnx=args.onnx,
                                  threads=args.threads, resize=args.resize)
    except (FileNotFoundError, ValueError, KeyError, ImportError, AttributeError) as e:
        raise SystemExit(f"error: {e}")
    tracker_factory = None
    if args.track:
        from .track import DeepSortTracker

        def tracker_factory():
            return DeepSortTracker(max_age=args.max_age, n_init=args.n_init,
                                   max_cosine_distance=args.max_cosine_distance,
                                   max_iou_distance=args.max_iou_distance, nn_budget=args.nn_budget or None)
    segmenter = None
    if args.remove_background:
        from ..segmentation import MediaPipeSegmenter

        segmenter = MediaPipeSegmenter()
    try:
        res = run_sequences(args.seq, embedder, boxes=args.boxes, detector=detector, segmenter=segmenter,
                            threshold=args.threshold, gallery_update=args.gallery_update,
                            shared_gallery=args.shared_gallery, max_frames=args.max_frames,
                            min_visibility=args.min_visibility, min_score=args.min_score, out_dir=args.out,
                            draw=args.draw, draw_scale=args.draw_scale, min_height=args.min_height,
                            min_width=args.min_width, tracker_factory=tracker_factory, prefetch=args.prefetch,
                            video=args.video, fsync=not args.no_fsync)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        raise SystemExit(f"error: {e}")
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
          + json.dumps({k: round(t[k], 3) for k in ('read', 'detect', 'crop', 'segment', 'resize', 'embed', 'match',
                                                     'track', 'decode_thread')}))
    if res.mot:
        print("| sequence | MOTA | IDF1 | ID switches | precision | recall | gt boxes | results |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, mm in res.mot.items():
            print(f"| {name} | {mm['mota']:.3f} | {mm['idf1']:.3f} | {int(mm['num_switches'])} | {mm['precision']:.3f} | "
                  f"{mm['recall']:.3f} | {int(mm['num_objects'])} | {int(mm['num_predictions'])} |")
    if res.mot_files:
        print("MOTChallenge results: " + ", ".join(res.mot_files.values()))
    if res.video:
        print(f"video: {res.video}")
    print(f"results: {os.path.join(args.out, 'assignments.csv')}, {os.path.join(args.out, 'summary.json')}, "
          f"{len(res.pictures)} annotated picture(s)")
    return res


if __name__ == "__main__":
    main()
