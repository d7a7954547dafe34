"""RBNet attention strips, as in Yu & Piao, "Reverse backbone net for unsupervised person re-identification"
(2024), Figs. 3 and 4, and the command line behind ``tools/visualize_rbnet.py``.

    python tools/visualize_rbnet.py --config-file projects/RBNet/configs/SynthPed/rbnet_R18.yml \\
        --weights logs/SynthPed/rbnet_R18/model_final.pth --num-images 8 --output vis/rbnet [KEY VALUE ...]

One PNG per query image (plus ``overview.png`` with the first strips under each other):
image (ground-truth keypoints as white dots when the dataset has them) | predicted keypoint heatmaps (max over
the 17 channels, jet overlay) | generated mask M(x) (white = kept) | backbone-1 conv1 | backbone-1 layer4 |
backbone-2 conv1 | backbone-2 layer4. Activation maps are torchreid's: sum of squared activations over
channels, min-max normalized, jet overlay (:mod:`fastreid_ext.utils.visualize`). ``--dataset`` picks another
test set (cross-domain, Fig. 4).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["STRIP_PANELS", "rbnet_strip", "build_parser", "main"]

#: the panels of a strip, left to right
STRIP_PANELS = ("image", "heatmaps", "mask", "b1 conv1", "b1 layer4", "b2 conv1", "b2 layer4")


def rbnet_strip(image, maps: dict, index: int, alpha: float = 0.5, scale: int = 2,
                keypoints: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[str]]:
    """One image's strip (RBNet Figs. 3/4): image | keypoint heatmaps (max over the 17 channels) |
    generated mask | backbone-1 conv1 | backbone-1 layer4 | backbone-2 conv1 | backbone-2 layer4.

    ``maps``: the dict of ``RBNet.inference_maps`` (batched); ``index``: which image of the batch.
    ``keypoints``: optional (17, 3) ground truth drawn as small white dots on the first panel.
    Returns ``(strip (H', W', 3) uint8 RGB, panel names)``."""
    import cv2
    import torch.nn.functional as F

    from ..utils.visualize import activation_maps, gray_panel, hstack_panels, label_panel, overlay, to_uint8_rgb

    img = to_uint8_rgb(image)
    h, w = img.shape[:2]
    first = img.copy()
    if keypoints is not None:
        for x, y, s in np.asarray(keypoints):
            if s > 0:
                cv2.circle(first, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    heat = maps["heatmaps"][index:index + 1].detach().float().amax(1, keepdim=True)
    heat = F.interpolate(heat, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(min=0).cpu().numpy()
    heat = heat / max(float(heat.max()), 1e-6)
    mask = maps["mask"][index, 0].detach().float().cpu().numpy()
    panels = [first, overlay(img, heat, alpha), gray_panel(mask)]
    for key in ("b1_conv1", "b1_layer4", "b2_conv1", "b2_layer4"):
        am = activation_maps(maps[key][index:index + 1], (h, w))[0]
        panels.append(overlay(img, am, alpha))
    names = list(STRIP_PANELS)
    labelled = [label_panel(p, n, scale) for p, n in zip(panels, names)]
    return hstack_panels(labelled), names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize_rbnet.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS; none: untrained model)")
    p.add_argument("--dataset", default="", help="test dataset (default: the first of DATASETS.TESTS)")
    p.add_argument("--num-images", type=int, default=8, help="query images to draw")
    p.add_argument("--output", default="vis/rbnet", help="folder for the PNGs")
    p.add_argument("--scale", type=int, default=2, help="upscaling of every panel")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Draw the strips of ``--num-images`` query images; returns the number drawn."""
    import cv2
    import torch
    from fastreid.utils.checkpoint import Checkpointer
    from tqdm import tqdm

    import fastreid_ext

    from ..data.build import build_test_loader
    from ..engine import Trainer
    from ..utils.visualize import vstack_panels

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.MODEL.META_ARCHITECTURE != "RBNet":
        raise SystemExit(f"{args.config_file} builds {cfg.MODEL.META_ARCHITECTURE}, not RBNet")
    cfg.MODEL.BACKBONE.PRETRAIN = False
    # ground-truth keypoints are drawn when available; images without them are drawn without dots
    cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = True
    cfg.DATASETS.ANNOTATIONS.ON_MISSING = "empty"
    model = Trainer.build_model(cfg)
    weights = args.weights or cfg.MODEL.WEIGHTS
    if weights:
        Checkpointer(model).load(weights)
    else:
        print("no --weights / MODEL.WEIGHTS: drawing the untrained model", file=sys.stderr)
    model.eval()

    dataset = args.dataset or cfg.DATASETS.TESTS[0]
    loader, num_query = build_test_loader(cfg, dataset)
    n = min(args.num_images, num_query)
    os.makedirs(args.output, exist_ok=True)
    strips, done = [], 0
    with tqdm(total=n, desc=f"RBNet maps ({dataset})", unit="img") as bar:
        for batch in loader:
            if done >= n:
                break
            take = min(n - done, batch["images"].shape[0])
            imgs = batch["images"][:take]
            with torch.no_grad():
                maps = model.inference_maps(imgs)
            for i in range(take):
                kps = batch["keypoints"][i].numpy() if "keypoints" in batch else None
                strip, _ = rbnet_strip(imgs[i], maps, i, scale=args.scale, keypoints=kps)
                name = os.path.splitext(os.path.basename(batch["img_paths"][i]))[0]
                cv2.imwrite(os.path.join(args.output, f"{done:04d}_{name}.png"), strip[..., ::-1])
                if len(strips) < 8:
                    strips.append(strip)
                done += 1
                bar.update(1)
    if strips:
        title = f"RBNet ({cfg.MODEL.RBNET.MASK_SOURCE} mask) on {dataset}: " + os.path.basename(weights or "untrained")
        cv2.imwrite(os.path.join(args.output, "overview.png"), vstack_panels(strips, title=title)[..., ::-1])
    print(f"wrote {done} strips to {os.path.abspath(args.output)}")
    return done


if __name__ == "__main__":
    main()
