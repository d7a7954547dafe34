#!/usr/bin/env python
"""Why was the pose-guided generator (FD-GAN, Ge et al., NeurIPS 2018, Sec. 3.2) not pose-dependent on CPU?

Two diagnostics on SynthPedA at 128 x 64, one torch thread (projects/PoseTransfer/README.md, "Part 2"):

* ``--grad-weights CKPT``: at a trained PoseGAN checkpoint, the L1 reconstruction gradient reaching G's three
  inputs (identity, pose vector, noise) and E_P / G, and the error with the target pose shuffled;
* otherwise a short ablation: E_P + G trained with FD-GAN's 100 x L1 + 10 x same-pose L1 only (no discriminator) on
  E_I features computed once (frozen E_I, as in FD-GAN's stage II), for ``--iters`` iterations of 16 images
  (4 persons x 4, each pair rendered in the pose of another image of its person), then the test errors: own pose,
  another image of the same person, the own image with a *shuffled* target pose (another person's) and with a
  shuffled identity feature, beside the best constant image. ``--connect`` is FD-GAN's ``--connect-layers``.

    python bench/diag_pose_gan.py --grad-weights logs/PoseTransfer/SynthPed-GAN/stage2_gan_demo_cont/model_final.pth
    python bench/diag_pose_gan.py --connect 0 --iters 300
    python bench/diag_pose_gan.py --connect 5 --iters 300
"""
import argparse
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

CFG = "projects/PoseTransfer/configs/SynthPed-GAN/stage2_gan.yml"
S1 = "logs/PoseTransfer/SynthPed-GAN/stage1_from_baseline/model_final.pth"


def unit(x):
    return x.float() / 127.5 - 1


def load_sets(model, cfg, cache):
    """Train images (test transforms) and the first 300 gallery images, with keypoints and E_I features."""
    if os.path.exists(cache):
        return torch.load(cache)
    from fastreid_ext.data.build import annotation_index, build_dataset
    from fastreid_ext.data.common import AnnotatedDataset
    from fastreid_ext.data.transforms import build_joint_transforms
    from fastreid_ext.pose_transfer.generate import pose_test_set

    data = build_dataset("SynthPedA", cfg)
    tr = AnnotatedDataset(data.train, build_joint_transforms(cfg, is_train=False), relabel=True,
                          annotations=annotation_index(cfg), load_keypoints=True, load_masks=False, on_missing="error")
    _, gal = pose_test_set(cfg, "SynthPedA")
    out = {}
    for name, ds, n in (("train", tr, len(tr)), ("gal", gal, 300)):
        its = [ds[i] for i in range(n)]
        imgs = torch.stack([torch.as_tensor(it["images"]).float() for it in its])
        with torch.no_grad():
            f = torch.cat([model.identity_features({"images": imgs[s:s + 64]}) for s in range(0, n, 64)])
        out[name] = dict(img=imgs.to(torch.uint8), pid=torch.tensor([int(it["targets"]) for it in its]), f=f,
                         kp=torch.stack([torch.as_tensor(it["keypoints"]).float() for it in its]))
    torch.save(out, cache)
    return out


def grad_check(model, ga):
    n = 32
    idx = list(range(0, 10 * n, 10))
    imgs, real = ga["img"][idx].float(), unit(ga["img"][idx])
    maps = model.pose_maps(ga["kp"][idx])
    ident = model.identity_features({"images": imgs}).detach().requires_grad_(True)
    model.generator.train()
    model.pose_encoder.train()
    pose = model.pose_encoder(maps)
    pose.retain_grad()
    noise = torch.randn(n, model.generator.noise_dim, requires_grad=True)
    fake = model.generator(ident, pose, noise, model.encode_pose(maps)[1])
    (fake - real).abs().mean().backward()
    for name, t in (("identity", ident), ("pose", pose), ("noise", noise)):
        print(f"{name:8s} input rms {float(t.detach().pow(2).mean().sqrt()):.3f}  dL/dinput rms "
              f"{float(t.grad.pow(2).mean().sqrt()):.2e}")
    for name, mod in (("E_P", model.pose_encoder), ("G", model.generator)):
        g = sum(float(p.grad.pow(2).sum()) for p in mod.parameters() if p.grad is not None) ** 0.5
        print(f"grad norm {name} {g:.2e}")
    w = model.generator.stem[1].weight.detach()
    a, b = model.generator.id_dim, model.generator.id_dim + model.generator.pose_dim
    print("G's first layer weight rms (init 0.02): identity %.4f pose %.4f noise %.4f" % (
        w[:a].pow(2).mean().sqrt(), w[a:b].pow(2).mean().sqrt(), w[b:].pow(2).mean().sqrt()))
    model.eval()
    with torch.no_grad():
        z = torch.zeros(n, model.generator.noise_dim)
        own = model.generate(ident, maps, z)
        shuf = model.generate(ident, maps[torch.roll(torch.arange(n), 1)], z)
    print("eval L1: own pose %.4f, shuffled pose %.4f, mean image %.4f" % (
        (own - real).abs().mean(), (shuf - real).abs().mean(), (real.mean(0, keepdim=True) - real).abs().mean()))


def ablation(model, D, a):
    from fastreid_ext.pose_transfer.gan_modules import PoseEncoder, PoseGenerator

    tr, ga = D["train"], D["gal"]
    torch.manual_seed(1)
    random.seed(1)
    ep = PoseEncoder(18, (128, 64), 128, a.ngf)
    G = PoseGenerator(512, 128, 256, (128, 64), a.ngf, a.dropout, connect_layers=a.connect, skip_channels=ep.channels)
    opt = torch.optim.Adam(list(ep.parameters()) + list(G.parameters()), lr=a.lr, betas=(0.5, 0.999))

    def gen(f, kp, z):
        v, sk = ep.forward_maps(model.pose_maps(kp))
        return G(f, v, z, sk)

    by, gb = {}, {}
    for i, p in enumerate(tr["pid"].tolist()):
        by.setdefault(p, []).append(i)
    for i, p in enumerate(ga["pid"].tolist()):
        gb.setdefault(p, []).append(i)
    pids = [p for p in by if len(by[p]) >= 2]
    idx = [i for i in range(len(ga["pid"])) if len(gb[int(ga["pid"][i])]) > 1]  # as generate.reconstruction_errors
    other = {}
    for ids in gb.values():
        for x, y in zip(ids, ids[1:] + ids[:1]):
            other[x] = y
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(len(idx), 256, generator=g)
    shuf = []
    for i in idx:  # a target pose of another person
        while True:
            k = idx[int(torch.randint(len(idx), (1,), generator=g))]
            if int(ga["pid"][k]) != int(ga["pid"][i]):
                break
        shuf.append(k)
    real = unit(ga["img"][idx])
    print("constant image: median %.4f, mean %.4f" % ((real.median(0, keepdim=True).values - real).abs().mean(),
                                                       (real.mean(0, keepdim=True) - real).abs().mean()))

    @torch.no_grad()
    def evaluate(it):
        ep.eval()
        G.eval()
        f, oth = ga["f"][idx], [other[i] for i in idx]
        r = {"own": (gen(f, ga["kp"][idx], zs) - real).abs().mean(),
             "other": (gen(f, ga["kp"][oth], zs) - unit(ga["img"][oth])).abs().mean(),
             "shuffled_pose": (gen(f, ga["kp"][shuf], zs) - real).abs().mean(),
             "shuffled_identity": (gen(f[torch.roll(torch.arange(len(idx)), 1)], ga["kp"][idx], zs) - real).abs().mean()}
        print(f"[it {it}] " + " ".join(f"{k} {float(v):.4f}" for k, v in r.items()), flush=True)
        ep.train()
        G.train()

    evaluate(0)
    t0 = time.time()
    for it in range(1, a.iters + 1):
        src, tgt, grp = [], [], []
        for p in random.sample(pids, 4):
            ims = random.sample(by[p], min(4, len(by[p])))
            for c in range(0, len(ims), 2):  # pairs (a single image when a person has 3)
                pair = ims[c:c + 2]
                rest = [j for j in by[p] if j not in pair]
                t = random.choice(rest or pair)
                for s in pair:
                    src.append(s)
                    tgt.append(t)
                    grp.append((len(src) - 1) // 2)
        z = torch.randn(len(src), 256)[grp]  # consecutive images share a noise vector
        fake = gen(tr["f"][src], tr["kp"][tgt], z)
        loss = 100 * (fake - unit(tr["img"][tgt])).abs().mean() + 10 * (fake[0::2] - fake[1::2]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % a.eval_every == 0:
            print(f"  {(time.time() - t0) / it:.2f} s/it", end=" ")
            evaluate(it)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grad-weights", default="", help="gradient diagnostic at this PoseGAN checkpoint")
    ap.add_argument("--source-weights", default=S1, help="E_I (stage I)")
    ap.add_argument("--connect", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--cache", default="/tmp/diag_pose_gan_cache.pt")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import fastreid_ext
    from fastreid_ext.pose_transfer.generate import build_generator_model

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(CFG)
    opts = ["MODEL.DEVICE", "cpu", "TRANSFER.SOURCE_WEIGHTS", a.source_weights, "MODEL.POSE_TRANSFER.GAN.LOSS.ADV_ID",
            "0.0"]
    if a.grad_weights:  # the checkpoint's own generator layout
        ck = torch.load(a.grad_weights, map_location="cpu", weights_only=False)["model"]
        connect = 0 if ck["generator.up.1.weight"].shape[0] == ck["generator.stem.1.weight"].shape[1] else 5
        opts += ["MODEL.POSE_TRANSFER.GAN.G.CONNECT_LAYERS", str(connect)]
    cfg.merge_from_list(opts)
    torch.manual_seed(0)
    model = build_generator_model(cfg, a.grad_weights or "init")
    if a.grad_weights:
        from fastreid_ext.pose_transfer.generate import pose_test_set

        _, gal = pose_test_set(cfg, "SynthPedA")
        its = [gal[i] for i in range(320)]
        grad_check(model, {"img": torch.stack([torch.as_tensor(i["images"]) for i in its]).to(torch.uint8),
                           "kp": torch.stack([torch.as_tensor(i["keypoints"]).float() for i in its])})
    else:
        ablation(model, load_sets(model, cfg, a.cache), a)


if __name__ == "__main__":
    main()
