"""RBNet attention strips, as in Yu & Piao, "Reverse backbone net for unsupervised person re-identification"
(2024), Section 2.2.2, Figs. 3 and 4, and the command line behind ``tools/visualize_rbnet.py``.

    python tools/visualize_rbnet.py --config-file projects/RBNet/configs/SynthPed/rbnet_R18.yml \\
        --weights logs/SynthPed/rbnet_R18/model_final.pth --num-images 8 --output vis/rbnet [KEY VALUE ...]
    # Fig. 4: Baseline (a) and RBNet (b) side by side, on another domain's query images
    python tools/visualize_rbnet.py --config-file projects/RBNet/configs/SynthPed/rbnet_R18.yml \\
        --weights logs/SynthPed/rbnet_R18/model_final.pth \\
        --baseline projects/RBNet/configs/SynthPed/baseline_R18.yml logs/SynthPed/baseline_R18/model_final.pth \\
        --dataset SynthPedB --num-images 8 --output vis/rbnet_vs_baseline

One PNG per query image (plus ``overview.png`` with the first strips under each other):
image (ground-truth keypoints as white dots when the dataset has them) | predicted keypoint heatmaps (max over
the 17 channels, jet overlay) | generated mask M(x) (white = kept) | backbone-1 conv1 | backbone-1 layer4 |
backbone-2 conv1 | backbone-2 layer4 (Fig. 3), then, with ``--baseline CONFIG [WEIGHTS]``, that model's conv1 and
layer4 on the same images (Fig. 4 (a) next to (b)). A config of another meta-architecture (e.g. FastReID's
``Baseline``) is accepted too and shows only what that model has: image | conv1 | layer4 of its backbone (no
heatmaps, mask or backbone 2). Activation maps are torchreid's (the tool the paper used): sum of squared
activations over channels, min-max normalized, jet overlay (:mod:`fastreid_ext.utils.visualize`). ``--dataset``
picks another test set (cross-domain, Fig. 4). Any layer of any registered model, several models side by side:
``tools/visualize_actmap.py``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["STRIP_PANELS", "rbnet_strip", "backbone_maps", "model_strip", "write_strips", "build_parser", "main"]

#: the panels of a strip, left to right
STRIP_PANELS = ("image", "heatmaps", "mask", "b1 conv1", "b1 layer4", "b2 conv1", "b2 layer4")


def _with_keypoints(img: np.ndarray, keypoints: Optional[np.ndarray]) -> np.ndarray:
    """A copy of ``img`` with the visible ``keypoints`` ((K, 3): x, y, score > 0) drawn as small white dots."""
    import cv2

    first = img.copy()
    if keypoints is not None:
        for x, y, s in np.asarray(keypoints):
            if s > 0:
                cv2.circle(first, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1)
    return first


def rbnet_strip(image, maps: dict, index: int, alpha: float = 0.5, scale: int = 2,
                keypoints: Optional[np.ndarray] = None, extra: Optional[Dict[str, "torch.Tensor"]] = None
                ) -> Tuple[np.ndarray, List[str]]:
    """One image's strip (RBNet Figs. 3/4): image | keypoint heatmaps (max over the 17 channels) |
    generated mask | backbone-1 conv1 | backbone-1 layer4 | backbone-2 conv1 | backbone-2 layer4.

    ``maps``: the dict of ``RBNet.inference_maps`` (batched); ``index``: which image of the batch.
    ``keypoints``: optional (17, 3) ground truth drawn as small white dots on the first panel.
    ``extra``: more ``{panel name: (B, C, h, w) features}`` drawn as activation maps after them (another model's,
    e.g. :func:`backbone_maps` of a Baseline for Fig. 4).
    Returns ``(strip (H', W', 3) uint8 RGB, panel names)``."""
    import torch.nn.functional as F

    from ..utils.visualize import activation_maps, gray_panel, hstack_panels, label_panel, overlay, to_uint8_rgb

    img = to_uint8_rgb(image)
    h, w = img.shape[:2]
    first = _with_keypoints(img, keypoints)
    heat = maps["heatmaps"][index:index + 1].detach().float().amax(1, keepdim=True)
    heat = F.interpolate(heat, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(min=0).cpu().numpy()
    heat = heat / max(float(heat.max()), 1e-6)
    mask = maps["mask"][index, 0].detach().float().cpu().numpy()
    panels = [first, overlay(img, heat, alpha), gray_panel(mask)]
    names = list(STRIP_PANELS)
    feats = [maps[key] for key in ("b1_conv1", "b1_layer4", "b2_conv1", "b2_layer4")]
    for name, f in (extra or {}).items():
        names.append(name)
        feats.append(f)
    for f in feats:
        am = activation_maps(f[index:index + 1], (h, w))[0]
        panels.append(overlay(img, am, alpha))
    labelled = [label_panel(p, n, scale) for p, n in zip(panels, names)]
    return hstack_panels(labelled), names


def backbone_maps(model, images, prefix: str = "") -> Dict[str, "torch.Tensor"]:
    """Backbone activations of any FastReID-style model (``model.backbone``, ``model.preprocess_image``) for raw
    ``(B, 3, H, W)`` images in 0..255: ``{prefix + "conv1": stem output after its ReLU (a multi-scale backbone's
    finest level, :func:`fastreid_ext.modeling.backbones.multiscale.as_multiscale`), prefix + "layer4": the
    backbone's output}`` (``"backbone"`` instead of ``"layer4"`` when the backbone has no ``layer4``; no
    ``conv1`` when it has no ``bn1`` stem). What Fig. 4 (a) shows for the Baseline."""
    import torch

    from ..modeling.backbones.multiscale import as_multiscale

    bb = model.backbone
    device = next(model.parameters()).device
    try:  # any backbone with a multi-scale form (ResNet, MobileNetV2, torchreid's): its finest and last levels
        ms = as_multiscale(bb)
    except TypeError:
        ms = None
    if ms is not None:
        with torch.no_grad():
            feats = ms.forward_features(model.preprocess_image(images.detach().clone().float().to(device)))
        return {prefix + "conv1": feats["conv1"], prefix + "layer4": feats["layer4"]}
    grabbed: Dict[str, torch.Tensor] = {}
    hooks = []
    stem = getattr(bb, "bn1", None)
    if isinstance(stem, torch.nn.Module):
        hooks.append(stem.register_forward_hook(lambda m, i, o: grabbed.setdefault("conv1", torch.relu(o))))
    try:
        with torch.no_grad():
            out = bb(model.preprocess_image(images.detach().clone().float().to(device)))
    finally:
        for hook in hooks:
            hook.remove()
    if isinstance(out, (list, tuple)):
        out = out[-1]
    if isinstance(out, dict):
        out = out.get("layer4", list(out.values())[-1])
    result = {}
    if "conv1" in grabbed:
        result[prefix + "conv1"] = grabbed["conv1"]
    if torch.is_tensor(out) and out.dim() == 4:
        result[prefix + ("layer4" if hasattr(bb, "layer4") else "backbone")] = out
    if not result:
        raise ValueError(f"{type(model).__name__}'s backbone ({type(bb).__name__}) gives no spatial map to draw; "
                         f"tools/visualize_actmap.py draws any named layer")
    return result


def model_strip(image, maps: Dict[str, "torch.Tensor"], index: int, alpha: float = 0.5, scale: int = 2,
                keypoints: Optional[np.ndarray] = None) -> Tuple[np.ndarray, List[str]]:
    """A strip for a model without RBNet's maps: image | activation map of each ``maps`` entry (e.g.
    :func:`backbone_maps`). Returns ``(strip, panel names)``."""

    from ..utils.visualize import activation_maps, hstack_panels, label_panel, overlay, to_uint8_rgb

    img = to_uint8_rgb(image)
    h, w = img.shape[:2]
    first = _with_keypoints(img, keypoints)
    names = ["image"] + list(maps)
    panels = [first] + [overlay(img, activation_maps(f[index:index + 1], (h, w))[0], alpha) for f in maps.values()]
    return hstack_panels([label_panel(p, n, scale) for p, n in zip(panels, names)]), names


def write_strips(model, cfg, path: str, num_images: int = 6, dataset: str = "", scale: int = 2) -> int:
    """The strips (:func:`rbnet_strip`) of the first ``num_images`` query images of ``dataset`` (default: the first of
    ``cfg.DATASETS.TESTS``, loaded with keypoints where it has them) stacked into one PNG at ``path``; ``model``: an
    RBNet (its ``inference_maps``). Returns the number of strips."""
    import cv2
    import torch

    from ..data.build import build_test_loader
    from ..utils.visualize import vstack_panels

    c = cfg.clone()
    c.defrost()
    c.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS = True
    c.DATASETS.ANNOTATIONS.ON_MISSING = "empty"
    dataset = dataset or c.DATASETS.TESTS[0]
    loader, num_query = build_test_loader(c, dataset)
    n = min(int(num_images), num_query)
    strips = []
    for batch in loader:
        if len(strips) >= n:
            break
        imgs = batch["images"][:n - len(strips)]
        with torch.no_grad():
            maps = model.inference_maps(imgs)
        for i in range(imgs.shape[0]):
            kps = batch["keypoints"][i].numpy() if "keypoints" in batch else None
            strips.append(rbnet_strip(imgs[i], maps, i, scale=scale, keypoints=kps)[0])
    if strips:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        title = f"RBNet ({cfg.MODEL.RBNET.MASK_SOURCE} mask, {cfg.MODEL.BACKBONE.NAME}) on {dataset}"
        cv2.imwrite(path, vstack_panels(strips, title=title)[..., ::-1])
    return len(strips)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="visualize_rbnet.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="checkpoint (default: MODEL.WEIGHTS; none: untrained model)")
    p.add_argument("--dataset", default="", help="test dataset (default: the first of DATASETS.TESTS)")
    p.add_argument("--num-images", type=int, default=8, help="query images to draw")
    p.add_argument("--output", default="vis/rbnet", help="folder for the PNGs")
    p.add_argument("--scale", type=int, default=2, help="upscaling of every panel")
    p.add_argument("--baseline", nargs="+", default=None, metavar="ARG",
                   help="CONFIG [WEIGHTS]: another model (e.g. projects/RBNet/configs/SynthPed/baseline_R18.yml) "
                        "whose conv1 / layer4 maps are drawn next to RBNet's on the same images (Fig. 4)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Draw the strips of ``--num-images`` query images; returns the number drawn."""
    import cv2
    import torch
    import torch.nn.functional as F
    from fastreid.utils.checkpoint import Checkpointer
    from tqdm import tqdm

    import fastreid_ext

    from ..data.build import build_test_loader
    from ..engine import Trainer
    from ..utils.visualize import vstack_panels

    args = build_parser().parse_args(argv)
    if args.baseline is not None and not 1 <= len(args.baseline) <= 2:
        raise SystemExit(f"--baseline takes CONFIG [WEIGHTS], got {args.baseline}")
    logging.basicConfig(level=logging.WARNING)

    def load(config_file, weights, opts):
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(list(opts))
        cfg.MODEL.BACKBONE.PRETRAIN = False
        model = Trainer.build_model(cfg)
        weights = weights or cfg.MODEL.WEIGHTS
        if weights:
            Checkpointer(model).load(weights)
        else:
            print(f"{config_file}: no weights / MODEL.WEIGHTS: drawing the untrained model", file=sys.stderr)
        return cfg, model.eval(), weights

    # ground-truth keypoints are drawn when available; images without them are drawn without dots
    opts = list(args.opts) + ["DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "True", "DATASETS.ANNOTATIONS.ON_MISSING", "empty"]
    cfg, model, weights = load(args.config_file, args.weights, opts)
    is_rbnet = hasattr(model, "inference_maps")
    arch = cfg.MODEL.META_ARCHITECTURE
    other = None
    if args.baseline:
        bcfg, bmodel, bweights = load(args.baseline[0], args.baseline[1] if len(args.baseline) > 1 else "", [])
        other = (bcfg.MODEL.META_ARCHITECTURE, bmodel, tuple(bcfg.INPUT.SIZE_TEST), bweights)

    dataset = args.dataset or cfg.DATASETS.TESTS[0]
    loader, num_query = build_test_loader(cfg, dataset)
    n = min(args.num_images, num_query)
    os.makedirs(args.output, exist_ok=True)
    strips, done = [], 0
    with tqdm(total=n, desc=f"{arch} maps ({dataset})", unit="img") as bar:
        for batch in loader:
            if done >= n:
                break
            take = min(n - done, batch["images"].shape[0])
            imgs = batch["images"][:take]
            extra = {}
            if other is not None:
                size = other[2]
                seen = imgs if tuple(imgs.shape[-2:]) == size else F.interpolate(
                    imgs.float(), size=size, mode="bilinear", align_corners=False)
                extra = backbone_maps(other[1], seen, prefix=f"{other[0]} ")
            with torch.no_grad():
                maps = model.inference_maps(imgs) if is_rbnet else backbone_maps(model, imgs)
            for i in range(take):
                kps = batch["keypoints"][i].numpy() if "keypoints" in batch else None
                if is_rbnet:
                    strip, _ = rbnet_strip(imgs[i], maps, i, scale=args.scale, keypoints=kps, extra=extra)
                else:
                    both = dict(maps, **{k: v for k, v in extra.items() if k not in maps})
                    strip, _ = model_strip(imgs[i], both, i, scale=args.scale, keypoints=kps)
                name = os.path.splitext(os.path.basename(batch["img_paths"][i]))[0]
                cv2.imwrite(os.path.join(args.output, f"{done:04d}_{name}.png"), strip[..., ::-1])
                if len(strips) < 8:
                    strips.append(strip)
                done += 1
                bar.update(1)
    if strips:
        what = f"RBNet ({cfg.MODEL.RBNET.MASK_SOURCE} mask)" if is_rbnet else arch
        title = f"{what} on {dataset}: " + os.path.basename(weights or "untrained")
        if other is not None:
            title += f"; right: {other[0]} " + os.path.basename(other[3] or "untrained")
        cv2.imwrite(os.path.join(args.output, "overview.png"), vstack_panels(strips, title=title)[..., ::-1])
    print(f"wrote {done} strips to {os.path.abspath(args.output)}")
    return done

if __name__ == "__main__":
    main()
