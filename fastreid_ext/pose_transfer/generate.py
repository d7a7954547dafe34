"""Pose grids and reconstruction errors of a trained generator, and the command line behind
``tools/generate_poses.py``.

The pose-transfer paper ("Person re-identification based on transfer learning of pose-invariant domain-dependent
features", Fig. 3) shows, for query images, the person re-rendered in several target poses by FD-GAN's generator
(Ge et al., NeurIPS 2018) fed by each model's encoder, to argue that Model B keeps E_I's pose-invariant features
while fine-tuning E_I's last block loses them. This module draws that grid: one row per query,
``input | generated in pose 1 | ... | generated in pose P``, under a header row with the target poses (skeletons of
other test images' keypoints), for a PoseGAN checkpoint (``--weights``), optionally with E_I taken from another
checkpoint (``--encoder-weights``: e.g. a part-1 transfer of that E_I, to see whether its features still drive the
generator). CPU by default, tqdm progress bar.

    python tools/generate_poses.py --config-file projects/PoseTransfer/configs/SynthPed-GAN/stage2_gan.yml \\
        --weights logs/PoseTransfer/SynthPed-GAN/stage2_gan/model_final.pth --num-queries 4 --num-poses 4 \\
        --output projects/PoseTransfer/pictures/pose_grid.png
    # reconstruction errors (own pose; another image of the same person as the target) on the test set, and how
    # much the output moves with the pose / identity / noise input
    python tools/generate_poses.py --config-file ... --weights ... --output '' --recon 200 --sensitivity 16

``--weights init`` uses the configuration's initial model (``TRANSFER.SOURCE_WEIGHTS`` in E_I, the generator as
initialised with ``SEED``): the reference for "lower than at initialisation".
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["build_generator_model", "pose_test_set", "draw_pose", "pose_grid", "reconstruction_errors",
           "input_sensitivity", "build_parser", "main"]


def build_generator_model(cfg, weights: str, encoder_weights: str = ""):
    """The PoseGAN of ``cfg`` in eval mode, with E_I, C_v, E_P and G from ``weights`` (``"init"``: the configuration's
    initial model) and, with ``encoder_weights``, E_I from that checkpoint (any prefix PoseTransfer accepts)."""
    from fastreid.modeling.meta_arch import build_model

    from .checkpoint import read_encoder_state

    if cfg.MODEL.META_ARCHITECTURE != "PoseGAN":
        raise ValueError(f"MODEL.META_ARCHITECTURE is {cfg.MODEL.META_ARCHITECTURE!r}: the pose tool needs a PoseGAN "
                         f"configuration (e.g. projects/PoseTransfer/configs/SynthPed-GAN/stage2_gan.yml)")
    model = build_model(cfg)
    if weights == "init":
        if cfg.TRANSFER.SOURCE_WEIGHTS:
            model.load_source(cfg.TRANSFER.SOURCE_WEIGHTS, cfg.TRANSFER.SOURCE_PREFIX, cfg.TRANSFER.LOAD_EA)
    else:
        model.load_generator(weights, "--weights")
    if encoder_weights:
        model.backbone.load_state_dict(read_encoder_state(encoder_weights, model.backbone.state_dict(),
                                                          "--encoder-weights"))
    return model.eval()


def pose_test_set(cfg, dataset_name: str):
    """``(query set, gallery set)`` of ``dataset_name`` with keypoints (test transforms, no relabelling). An image
    without keypoints raises when it is read, naming the image (``DATASETS.ANNOTATIONS.ON_MISSING error``)."""
    from ..data.build import annotation_index, build_dataset
    from ..data.common import AnnotatedDataset
    from ..data.transforms import build_joint_transforms

    data = build_dataset(dataset_name, cfg)
    t = build_joint_transforms(cfg, is_train=False)
    idx = annotation_index(cfg)
    mk = [AnnotatedDataset(items, t, relabel=False, annotations=idx, load_keypoints=True, load_masks=False,
                           on_missing="error") for items in (data.query, data.gallery)]
    return mk[0], mk[1]


def draw_pose(keypoints: np.ndarray, size: Sequence[int], score_thresh: float = 0.3) -> np.ndarray:
    """A COCO-17 skeleton (x, y, score in input pixels) on a black (H, W, 3) uint8 picture (left limbs orange, right
    limbs blue)."""
    import cv2

    from ..functional.keypoints import COCO17_LEFT, COCO17_RIGHT, COCO17_SKELETON

    h, w = int(size[0]), int(size[1])
    img = np.zeros((h, w, 3), np.uint8)
    kp = np.asarray(keypoints, np.float32)
    for a, b in COCO17_SKELETON:
        if kp[a, 2] >= score_thresh and kp[b, 2] >= score_thresh:
            col = (255, 150, 0) if a in COCO17_LEFT and b in COCO17_LEFT else (
                (0, 150, 255) if a in COCO17_RIGHT and b in COCO17_RIGHT else (200, 200, 200))
            cv2.line(img, (int(round(kp[a, 0])), int(round(kp[a, 1]))), (int(round(kp[b, 0])), int(round(kp[b, 1]))),
                     col, 1, cv2.LINE_AA)
    for x, y, s in kp:
        if s >= score_thresh:
            cv2.circle(img, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    return img


def _unit_to_uint8(x: torch.Tensor) -> np.ndarray:
    return np.clip(np.round((x.detach().cpu().float().numpy().transpose(1, 2, 0) + 1) * 127.5), 0, 255).astype(
        np.uint8)


@torch.no_grad()
def pose_grid(model, queries: List[dict], poses: List[np.ndarray], seed: int = 0, scale: int = 2,
              title: str = "") -> np.ndarray:
    """The grid (module docstring) as an (H, W, 3) uint8 RGB picture; one noise vector per query (seeded)."""
    from tqdm import tqdm

    from ..utils.visualize import hstack_panels, label_panel, to_uint8_rgb, vstack_panels

    h, w = model.pose_encoder.size
    maps = model.pose_maps(torch.as_tensor(np.stack(poses)).float())
    header = [label_panel(np.full((h, w, 3), 255, np.uint8), "input", scale)]
    header += [label_panel(draw_pose(p, (h, w), model.score_thresh), f"pose {k + 1}", scale)
               for k, p in enumerate(poses)]
    rows = [hstack_panels(header)]
    g = torch.Generator().manual_seed(seed)
    for q in tqdm(queries, desc="pose grid", unit="query"):
        img = torch.as_tensor(q["images"]).float()[None]
        ident = model.identity_features({"images": img})
        noise = torch.randn(1, model.generator.noise_dim, generator=g).expand(len(poses), -1).to(ident.device)
        fake = model.generate(ident.expand(len(poses), -1), maps, noise)
        panels = [label_panel(to_uint8_rgb(q["images"]), f"id {q['targets']}", scale)]
        panels += [label_panel(_unit_to_uint8(f), "", scale) for f in fake]
        rows.append(hstack_panels(panels))
    return vstack_panels(rows, title=title or None)


@torch.no_grad()
def reconstruction_errors(model, dataset, max_images: int = 200, seed: int = 0, batch: int = 32) -> Dict[str, float]:
    """Mean L1 (images in [-1, 1]) between G's output and the real image, for the first ``max_images`` images of
    ``dataset`` whose person has another image in that subset: ``own_pose`` (target = the image itself) and
    ``other_pose`` (target = the next image of the same person: its pose, its pixels). Two references that ignore
    the pose: ``shuffled_pose`` (G given the pose of an image of another person, compared with the image itself: a
    pose-driven G does worse than with its own pose) and ``constant_median`` / ``constant_mean`` (one image for
    every target: the per-pixel median / mean of these images, the best constant under L1 / L2). Noise seeded by
    ``seed``."""
    from tqdm import tqdm

    items = [dataset[i] for i in tqdm(range(min(max_images, len(dataset))), desc="reading", unit="img")]
    by_pid: Dict[int, List[int]] = {}
    for i, it in enumerate(items):
        by_pid.setdefault(int(it["targets"]), []).append(i)
    idx = [i for i in range(len(items)) if len(by_pid[int(items[i]["targets"])]) > 1]
    if not idx:
        raise ValueError("no person has two images among the first max_images test images: raise max_images")
    other = {}
    for ids in by_pid.values():
        for a, b in zip(ids, ids[1:] + ids[:1]):
            other[a] = b
    pid_of = [int(items[i]["targets"]) for i in idx]
    shuffled = {}  # the first image after i (cyclically, in idx) of another person
    for n, i in enumerate(idx):
        k = next(idx[(n + d) % len(idx)] for d in range(1, len(idx) + 1)
                 if pid_of[(n + d) % len(idx)] != pid_of[n] or d == len(idx))
        shuffled[i] = k
    g = torch.Generator().manual_seed(seed)
    sums = {"own_pose": 0.0, "other_pose": 0.0, "shuffled_pose": 0.0}
    for s in tqdm(range(0, len(idx), batch), desc="reconstruction", unit="batch"):
        src = idx[s:s + batch]
        imgs = torch.stack([torch.as_tensor(items[i]["images"]).float() for i in src])
        ident = model.identity_features({"images": imgs})
        noise = torch.randn(len(src), model.generator.noise_dim, generator=g).to(ident.device)
        for name, pose_of, pixels_of in (("own_pose", src, src), ("other_pose", [other[i] for i in src],
                                                                  [other[i] for i in src]),
                                         ("shuffled_pose", [shuffled[i] for i in src], src)):
            kp = torch.stack([torch.as_tensor(items[i]["keypoints"]).float() for i in pose_of])
            real = model.to_unit(torch.stack([torch.as_tensor(items[i]["images"]).float() for i in pixels_of]))
            fake = model.generate(ident, model.pose_maps(kp), noise)
            sums[name] += float((fake - real).abs().mean(dim=(1, 2, 3)).sum())
    out = {k: v / len(idx) for k, v in sums.items()}
    real = model.to_unit(torch.stack([torch.as_tensor(items[i]["images"]).float() for i in idx]))
    out["constant_median"] = float((real - real.median(0, keepdim=True).values).abs().mean())
    out["constant_mean"] = float((real - real.mean(0, keepdim=True)).abs().mean())
    out["images"] = float(len(idx))
    return out


@torch.no_grad()
def input_sensitivity(model, dataset, num_images: int = 16, seed: int = 0) -> Dict[str, float]:
    """How much G's output (mean |change|, images in [-1, 1]) moves when, for ``num_images`` images spread over
    ``dataset``, the target pose (``pose``), the identity feature (``identity``: another image's) or the noise
    (``noise``: a new draw) is replaced: a generator driven by the pose moves most with the pose."""
    n = min(num_images, len(dataset))
    step = max(1, len(dataset) // n)
    items = [dataset[i] for i in range(0, step * n, step)]
    g = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.as_tensor(it["keypoints"]).float() for it in items])
    ident = model.identity_features({"images": torch.stack([torch.as_tensor(it["images"]).float() for it in items])})
    maps = model.pose_maps(kp)
    z = torch.randn(n, model.generator.noise_dim, generator=g).to(ident.device)
    z2 = torch.randn(n, model.generator.noise_dim, generator=g).to(ident.device)
    other = torch.roll(torch.arange(n), 1)
    base = model.generate(ident, maps, z)
    return {"pose": float((model.generate(ident, maps[other], z) - base).abs().mean()),
            "identity": float((model.generate(ident[other], maps, z) - base).abs().mean()),
            "noise": float((model.generate(ident, maps, z2) - base).abs().mean()), "images": float(n)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Pose grid (input | generated in several target poses) and "
                                            "reconstruction errors of a PoseGAN checkpoint")
    p.add_argument("--config-file", required=True, help="a PoseGAN config (projects/PoseTransfer/configs/...)")
    p.add_argument("--weights", required=True, help="PoseGAN checkpoint (with generator weights), or 'init'")
    p.add_argument("--encoder-weights", default="", help="take E_I from this checkpoint (e.g. a part-1 transfer)")
    p.add_argument("--dataset", default="", help="test set of the queries and target poses (default: "
                                                 "DATASETS.TESTS[0])")
    p.add_argument("--num-queries", type=int, default=4)
    p.add_argument("--num-poses", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=2, help="upscaling of every panel (nearest)")
    p.add_argument("--output", default="pose_grid.png", help="PNG of the grid ('' to skip the grid)")
    p.add_argument("--recon", type=int, default=0, help="also report reconstruction errors on this many test images")
    p.add_argument("--sensitivity", type=int, default=0, help="also report how much G's output moves with the pose, "
                                                               "the identity and the noise, on this many images")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    import cv2

    import fastreid_ext

    args = build_parser().parse_args(argv)
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts) + ["MODEL.DEVICE", "cpu"] if "MODEL.DEVICE" not in args.opts else args.opts)
    torch.manual_seed(args.seed)
    model = build_generator_model(cfg, args.weights, args.encoder_weights)
    name = args.dataset or cfg.DATASETS.TESTS[0]
    query, gallery = pose_test_set(cfg, name)
    out: Dict[str, object] = {}
    if args.output:
        rng = np.random.RandomState(args.seed)
        qi = rng.choice(len(query), min(args.num_queries, len(query)), replace=False)
        queries = [query[int(i)] for i in qi]
        qpids = {int(q["targets"]) for q in queries}
        cand = [i for i in rng.permutation(len(gallery))]
        poses = []
        for i in cand:
            if len(poses) >= args.num_poses:
                break
            it = gallery[int(i)]
            if int(it["targets"]) not in qpids:
                poses.append(np.asarray(it["keypoints"], np.float32))
        grid = pose_grid(model, queries, poses, args.seed, args.scale,
                         title=f"{os.path.basename(args.weights)}"
                               f"{' + E_I ' + os.path.basename(args.encoder_weights) if args.encoder_weights else ''}")
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        cv2.imwrite(args.output, grid[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"pose grid ({len(queries)} queries x {len(poses)} poses) -> {args.output}")
        out["grid"] = args.output
    if args.recon:
        err = reconstruction_errors(model, gallery, args.recon, args.seed)
        print(f"reconstruction L1 (images in [-1, 1]) on {int(err['images'])} {name} gallery images: own pose "
              f"{err['own_pose']:.4f}, other pose of the same person {err['other_pose']:.4f}; ignoring the pose: "
              f"shuffled target pose {err['shuffled_pose']:.4f}, constant image (median / mean) "
              f"{err['constant_median']:.4f} / {err['constant_mean']:.4f}")
        out["recon"] = err
    if args.sensitivity:
        sens = input_sensitivity(model, gallery, args.sensitivity, args.seed)
        print(f"G's output change (mean |.|, images in [-1, 1]) on {int(sens['images'])} {name} gallery images when "
              f"replacing the target pose {sens['pose']:.4f}, the identity feature {sens['identity']:.4f}, the noise "
              f"{sens['noise']:.4f}")
        out["sensitivity"] = sens
    return out
