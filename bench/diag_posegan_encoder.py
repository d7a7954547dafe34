#!/usr/bin/env python
"""Does FD-GAN's stage III (Ge et al., "FD-GAN: Pose-guided Feature Distilling GAN for Robust Person
Re-identification", NeurIPS 2018, Sec. 3.3) move the identity encoder E_I differently from supervised training?

The diagnostic behind the ``posegan`` / ``posegan_cpu`` comparisons (projects/PoseTransfer/README.md, part 2):

* ``--stage2 CKPT``: at the shared stage-II checkpoint (where every arm's stage III starts), the gradient that each
  term of stage III's generator loss sends into E_I: FD-GAN's adversarial terms (D_p, and D_i as stage III
  initialises it: a copy of E_I + C_v), the L1 reconstruction, the same-pose L1 and C_v's verification BCE, each with
  its weight of ``stage3_joint.yml``; root-mean-square over E_I's parameters, averaged over ``--batches`` training
  batches in training mode (as the trainer sees them).
* ``--stage3 NAME=CKPT ...``: how far each arm's stage III moved E_I from stage II: relative weight change
  ``||W3 - W2|| / ||W2||`` over E_I's parameters, and the cosine between E_I's features before and after on the
  query images of ``--test-set`` (SynthPedB: the transfer's target), and between the arms.

* ``--chance N``: FastReID's Rank-1 / mAP of N random rankings of ``--test-set`` (the floor of its scores).

    python bench/diag_posegan_encoder.py --stage2 logs/experiments/stages/stage2_gan_s0_<hash>/model_final.pth \\
        --stage3 gan=logs/.../stage3_joint_s0_<h1>/model_final.pth sup=logs/.../stage3_joint_s0_<h2>/model_final.pth
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CFG = "projects/PoseTransfer/configs/SynthPed-GAN/stage3_joint.yml"


def _rms_grad(params):
    g = [p.grad.flatten() for p in params if p.grad is not None]
    if not g:
        return 0.0
    g = torch.cat(g)
    return float(g.pow(2).mean().sqrt())


def gradient_shares(cfg, stage2: str, batches: int, seed: int = 0):
    """Per loss term: mean over ``batches`` of the rms gradient it sends into E_I (weighted as configured)."""
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.pose_transfer.gan_trainer import PoseGANTrainer, step_seed

    torch.manual_seed(seed)
    model = build_model(cfg)
    model.load_source(stage2, cfg.TRANSFER.SOURCE_PREFIX, cfg.TRANSFER.LOAD_EA)
    model.train()
    enc = [p for p in model.backbone.parameters() if p.requires_grad]
    for p in model.discriminator_parameters():  # as in the generator step: D takes no gradient
        p.requires_grad_(False)
    it = iter(PoseGANTrainer.build_train_loader(cfg))
    sums = {}
    for b in range(batches):
        data = next(it)
        gen = torch.Generator().manual_seed(step_seed(seed, b))
        st = model.gan_forward(data, gen)
        losses = model.generator_losses(st, data)
        for k, v in losses.items():
            model.zero_grad(set_to_none=True)
            v.backward(retain_graph=True)
            sums.setdefault(k, []).append(_rms_grad(enc))
    return {k: sum(v) / len(v) for k, v in sums.items()}


@torch.no_grad()
def _features(model, loader, n: int):
    out, seen = [], 0
    for data in loader:
        out.append(torch.nn.functional.normalize(model(data), dim=1))
        seen += len(out[-1])
        if seen >= n:
            break
    return torch.cat(out)[:n]


def encoder_shift(cfg, stage2: str, stage3: dict, test_set: str, num_images: int):
    """Relative weight change of E_I per arm and feature cosines (stage II vs each arm; between arms)."""
    from fastreid.data import build_reid_test_loader
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.pose_transfer.checkpoint import read_encoder_state

    model = build_model(cfg)
    model.load_source(stage2, cfg.TRANSFER.SOURCE_PREFIX, cfg.TRANSFER.LOAD_EA)
    model.eval()
    own = model.backbone.state_dict()
    w2 = {k: v.clone().float() for k, v in own.items()}
    weights = [k for k, v in own.items() if v.dtype.is_floating_point and "running" not in k]
    loader, _ = build_reid_test_loader(cfg, dataset_name=test_set)
    f2 = _features(model, loader, num_images)
    out, feats = {}, {}
    for name, path in stage3.items():
        w3 = {k: v.float() for k, v in read_encoder_state(path, own, "--stage3").items()}
        num = sum(float((w3[k] - w2[k]).pow(2).sum()) for k in weights)
        den = sum(float(w2[k].pow(2).sum()) for k in weights)
        model.backbone.load_state_dict({k: w3[k].to(own[k].dtype) for k in own})
        feats[name] = _features(model, loader, num_images)
        out[name] = {"relative_weight_change": (num / den) ** 0.5,
                     "feature_cosine_to_stage2": float((feats[name] * f2).sum(1).mean())}
    names = list(stage3)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out[f"{a}_vs_{b}"] = {"feature_cosine": float((feats[a] * feats[b]).sum(1).mean())}
    return out


def chance_scores(cfg, test_set: str, repeats: int):
    """Rank-1 / mAP (mean, std over ``repeats``) of random query-gallery distances, FastReID's evaluation."""
    import numpy as np
    from fastreid.evaluation.rank import evaluate_rank

    from fastreid_ext.data.build import build_dataset

    d = build_dataset(test_set, cfg)
    q, g = (np.array([x[1] for x in d.query]), np.array([x[2] for x in d.query])), \
        (np.array([x[1] for x in d.gallery]), np.array([x[2] for x in d.gallery]))
    r1, ap = [], []
    for s in range(repeats):
        dist = np.random.default_rng(s).random((len(q[0]), len(g[0])))
        cmc, all_ap, _ = evaluate_rank(dist, q[0], g[0], q[1], g[1], max_rank=50, use_cython=False)
        r1.append(100 * cmc[0])
        ap.append(100 * float(np.mean(all_ap)))
    return {"queries": len(q[0]), "gallery": len(g[0]), "Rank-1": [float(np.mean(r1)), float(np.std(r1))],
            "mAP": [float(np.mean(ap)), float(np.std(ap))]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage2", default="", help="the shared stage-II PoseGAN checkpoint")
    ap.add_argument("--chance", type=int, default=0, help="also score this many random rankings of --test-set")
    ap.add_argument("--stage3", nargs="*", default=[], help="NAME=CKPT of each arm's stage III")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--test-set", default="SynthPedB")
    ap.add_argument("--num-images", type=int, default=256)
    ap.add_argument("--output", default="", help="also write the numbers to this JSON file")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(CFG)
    # every term on (D_i too: stage III initialises it from E_I + C_v), the weights of stage3_joint.yml
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", 0, "TRANSFER.SOURCE_WEIGHTS", a.stage2,
                         "MODEL.POSE_TRANSFER.GAN.LOSS.ADV_ID", 1.0] + list(a.opts))
    res = {}
    if a.chance:
        res["chance"] = chance_scores(cfg, a.test_set, a.chance)
    if a.stage2:
        res["gradient_rms_into_E_I"] = gradient_shares(cfg, a.stage2, a.batches)
    if a.stage3 and a.stage2:
        res["encoder_shift"] = encoder_shift(cfg, a.stage2, dict(s.split("=", 1) for s in a.stage3), a.test_set,
                                             a.num_images)
    print(json.dumps(res, indent=1))
    if a.output:
        with open(a.output, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
