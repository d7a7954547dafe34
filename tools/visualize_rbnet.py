#!/usr/bin/env python
"""RBNet attention strips (the paper's Figures 3 and 4) for query images of a dataset.

    python tools/visualize_rbnet.py --config-file projects/RBNet/configs/SynthPed/rbnet_R18.yml \
        --weights logs/SynthPed/rbnet_R18/model_final.pth --num-images 8 --output vis/rbnet [KEY VALUE ...]

One PNG per query image (plus ``overview.png`` with the first strips under each other):
image (ground-truth keypoints as white dots when the dataset has them) | predicted keypoint heatmaps (max over
the 17 channels, jet overlay) | generated mask M(x) (white = kept) | backbone-1 conv1 | backbone-1 layer4 |
backbone-2 conv1 | backbone-2 layer4. Activation maps are torchreid's: sum of squared activations over
channels, min-max normalized, jet overlay. ``--dataset`` picks another test set (cross-domain, Fig. 4).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import fastreid_ext  # noqa: E402  (compat + registrations, before anything of fastreid)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS; none: untrained model)")
    p.add_argument("--dataset", default="", help="test dataset (default: the first of DATASETS.TESTS)")
    p.add_argument("--num-images", type=int, default=8, help="query images to draw")
    p.add_argument("--output", default="vis/rbnet", help="folder for the PNGs")
    p.add_argument("--scale", type=int, default=2, help="upscaling of every panel")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def main(argv=None):
    import cv2
    import torch
    from fastreid.utils.checkpoint import Checkpointer
    from tqdm import tqdm

    from fastreid_ext.data.build import build_test_loader
    from fastreid_ext.engine import Trainer
    from fastreid_ext.engine.trainer import prepare_cfg
    from fastreid_ext.utils.visualize import rbnet_strip, vstack_panels

    args = parse_args(argv)
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
    prepare_cfg(cfg)
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
