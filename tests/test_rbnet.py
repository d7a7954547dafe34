"""RBNet: reverse-backbone shapes, mask, heatmap rendering/decoding/loss, gradient routing of the five loss
terms, bad inputs, multi-scale wrapper, and a tiny train + eval + visualization through our Trainer."""
import os

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid.utils.events import EventStorage
from fastreid_ext.functional.keypoints import COCO17_FLIP_PAIRS, flip_permutation
from fastreid_ext.data.transforms import hflip
from fastreid_ext.engine import Trainer, build_trainer
from fastreid_ext.functional.heatmaps import (decode_heatmaps, heatmap_mse_loss, mean_keypoint_error,
                                              render_heatmaps, render_heatmaps_np)
from fastreid_ext.rbnet.masking import apply_mask
from fastreid_ext.modeling.backbones.multiscale import MultiScaleResNet
from fastreid_ext.rbnet.reverse_backbone import MASK_SOURCES, MaskGenerator, ReverseBackbone

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small (grouped/depthwise) convolutions: with 2 OpenMP threads on a busy 2-core machine they run
    10-30x slower than with 1 (spin-waiting), so this module runs single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_MODEL = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
              "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "4"]


def rb_cfg(*opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("projects/RBNet/configs/SynthPed/rbnet_R18.yml")
    cfg.merge_from_list(TINY_MODEL + list(opts))
    return cfg


def build(*opts):
    torch.manual_seed(0)
    return Trainer.build_model(rb_cfg(*opts))


def fake_batch(b=8, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kps = torch.rand(b, 17, 3, generator=g) * torch.tensor([w - 1.0, h - 1.0, 1.0])
    kps[..., 2] = (kps[..., 2] > 0.2).float()
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b) % 4, "keypoints": kps}


def resnet(depth="18x", ibn=False, nl=False):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", depth, "MODEL.BACKBONE.PRETRAIN", "False",
                         "MODEL.BACKBONE.WITH_IBN", str(ibn), "MODEL.BACKBONE.WITH_NL", str(nl)])
    from fastreid.modeling.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone(cfg).eval()


# ---------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("depth,ibn,nl", [("18x", False, False), ("50x", True, True)])
def test_multiscale_wrapper_is_the_fastreid_resnet(depth, ibn, nl):
    r = resnet(depth, ibn, nl)
    ms = MultiScaleResNet(r).eval()
    assert list(ms.state_dict()) == list(r.state_dict())  # same keys: checkpoints move freely
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feats = ms.forward_features(x)
        assert torch.allclose(feats["layer4"], r(x), atol=1e-5)
    assert feats["conv1"].shape[-2:] == (32, 16)  # stem before the max-pool: stride 2
    assert ms.strides == {"conv1": 2, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 16}
    c4 = 2048 if depth == "50x" else 512
    assert ms.out_channels["layer4"] == c4


@pytest.mark.parametrize("h,w,grouping", [(256, 128, "heads"), (64, 32, "all")])
def test_reverse_backbone_shapes_at_every_layer(h, w, grouping):
    ms = MultiScaleResNet(resnet("18x")).eval()
    rev = ReverseBackbone(ms.out_channels, grouping=grouping, width_mult=1.0 if grouping == "heads" else 0.25).eval()
    assert all(v % 17 == 0 for v in rev.widths.values()) == (grouping == "all")
    with torch.no_grad():
        feats = ms.forward_features(torch.randn(2, 3, h, w))
        out = rev(feats)
    wd = rev.widths
    expected = {
        "cc_conv1": (2, wd["conv1"], h // 2, w // 2),
        "re_layer4_in": (2, wd["layer4"], h // 16, w // 16),
        "re_layer4": (2, wd["layer3"], h // 16, w // 16),  # layer4 (last stride 1) keeps layer3's size
        "re_layer3_in": (2, wd["layer3"], h // 16, w // 16),
        "re_layer3": (2, wd["layer2"], h // 8, w // 8),
        "re_layer2_in": (2, wd["layer2"], h // 8, w // 8),
        "re_layer2": (2, wd["layer1"], h // 4, w // 4),
        "re_layer1_in": (2, wd["layer1"], h // 4, w // 4),
        "re_layer1": (2, wd["conv1"], h // 4, w // 4),
        "re_conv1_in": (2, wd["conv1"], h // 2, w // 2),
        "heatmaps": (2, 17, h // 2, w // 2),  # B x 17 x 128 x 64 for 256 x 128
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert {k: v[1] for k, v in expected.items()} == rev.output_channels()


def test_channels_last_reverse_path_gives_the_same_values_and_gradients():
    ms = MultiScaleResNet(resnet("18x")).train()
    torch.manual_seed(0)
    fast = ReverseBackbone(ms.out_channels, channels_last=True).train()
    plain = ReverseBackbone(ms.out_channels, channels_last=False).train()
    plain.load_state_dict(fast.state_dict())
    feats = {k: v.detach() for k, v in ms.forward_features(torch.randn(4, 3, 64, 32)).items()}
    outs = []
    for rev in (fast, plain):
        f = {k: v.clone().requires_grad_() for k, v in feats.items()}
        heat = rev(f)["heatmaps"]
        heat.square().sum().backward()
        outs.append((heat.detach(), f["layer1"].grad, rev.re_conv1.out.weight.grad))
    assert outs[0][0].is_contiguous()  # handed back in the usual layout
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


R50 = (64, 256, 512, 1024, 2048)


def _convs_after_change_channel(rev):
    cc = [c[0] for c in rev.change_channel.values()]
    return [m for m in rev.modules() if isinstance(m, torch.nn.Conv2d) and m not in cc]


def test_widths_scale_with_the_backbone_and_the_paper_layout():
    # grouping "all" (reduced, 17-grouped): widths are multiples of 17 and follow the backbone's channels
    r50 = ReverseBackbone(R50, grouping="all", width_mult=0.25)
    r18 = ReverseBackbone((64, 64, 128, 256, 512), grouping="all", width_mult=0.25)
    assert r50.widths == {"conv1": 68, "layer1": 68, "layer2": 136, "layer3": 255, "layer4": 510}
    assert r50.widths["layer4"] > r18.widths["layer4"] and r50.widths["layer2"] > r18.widths["layer2"]
    full = ReverseBackbone(R50, grouping="all", width_mult=1.0)
    assert full.widths == {"conv1": 68, "layer1": 255, "layer2": 510, "layer3": 1020, "layer4": 2040}
    for m in _convs_after_change_channel(full):  # every conv after change_channel is grouped (17) or depthwise
        assert m.groups in (17, m.in_channels)
    # grouping "heads" (default): exactly Table 1's widths; blocks full or channel-wise; 17 groups at the head only
    for pointwise in ("full", "channel"):
        t1 = ReverseBackbone(R50, pointwise=pointwise)
        assert t1.widths == dict(zip(("conv1", "layer1", "layer2", "layer3", "layer4"), R50))
        assert [len(t1.re_layer1), len(t1.re_layer2), len(t1.re_layer3), len(t1.re_layer4)] == [2, 3, 5, 2]
        pw = [b.pw for lay in (t1.re_layer4, t1.re_layer3, t1.re_layer2, t1.re_layer1) for b in lay]
        if pointwise == "full":
            assert all(c.groups == 1 for c in pw)
        else:  # no mixing: a width change reads cin / cout adjacent inputs (gcd groups); else no 1x1 at all
            assert [c.groups for c in pw if isinstance(c, torch.nn.Conv2d)] == [1024, 512, 256, 64]
            assert sum(isinstance(c, torch.nn.Identity) for c in pw) == 12 - 4
        assert t1.re_conv1.align[0].out_channels == 68 and t1.re_conv1.out.groups == 17


@pytest.mark.parametrize("source", MASK_SOURCES)
def test_mask_in_unit_range_and_input_sized(source):
    ms = MultiScaleResNet(resnet("18x")).eval()
    rev = ReverseBackbone(ms.out_channels)
    gen = MaskGenerator(source, rev.output_channels(), init_bias=3.0, align=rev.head_width)
    for h, w in [(256, 128), (64, 32)]:
        with torch.no_grad():
            out = rev(ms.forward_features(torch.randn(3, 3, h, w)), upto=gen.reverse_upto)
            mask, parts = gen(out, (h, w))
        assert mask.shape == (3, 1, h, w) and parts.shape == (3, 17, h // 2, w // 2)
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
        assert float(mask.mean()) > 0.9  # a positive initial bias starts near the unmasked image
    assert source == "conv1" or source in out


# ---------------------------------------------------------------------------------------------- heatmaps
def test_heatmaps_peak_at_keypoints_and_follow_a_flip():
    from PIL import Image

    h, w, hs = 128, 64, (64, 32)
    rng = np.random.default_rng(0)
    kps = np.stack([rng.uniform(2, w - 3, 17), rng.uniform(2, h - 3, 17), np.ones(17)], 1).astype(np.float32)
    kps[4, 2] = 0.0  # one invisible keypoint: empty channel
    sample = {"image": Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)), "keypoints": kps,
              "mask": None}
    heat, wts = render_heatmaps_np(kps, (h, w), hs, sigma=1.5)
    assert heat.shape == (17, 64, 32) and wts[4] == 0 and heat[4].max() == 0 and wts.sum() == 16
    dec = decode_heatmaps(torch.from_numpy(heat)[None], (h, w))[0].numpy()
    vis = kps[:, 2] > 0
    assert np.abs(dec[vis, :2] - kps[vis, :2]).max() <= 1.0 + 1e-4  # within one heatmap pixel (2 input px)/2
    assert np.allclose(dec[vis, 2], heat[vis].max((1, 2)))
    # flip: heatmaps of the flipped sample = mirrored heatmaps with left/right channels swapped
    f = hflip(sample)
    heat_f, wts_f = render_heatmaps_np(f["keypoints"], (h, w), hs, sigma=1.5)
    perm = flip_permutation(17, COCO17_FLIP_PAIRS)
    assert np.allclose(heat_f, heat[perm][:, :, ::-1], atol=1e-5)
    assert np.array_equal(wts_f, wts[perm])
    assert f["keypoints"][3, 2] == 0  # the invisible left ear became the right ear slot (index 3)


def test_renderer_matches_mmpose_msra_heatmap():
    mmpose_codecs = pytest.importorskip("mmpose.codecs", reason="mmpose (pose extra) not installed")
    h, w, (hh, hw), sigma = 256, 128, (64, 32), 2.0
    rng = np.random.default_rng(1)
    kps = np.stack([rng.uniform(0, w - 1, 17), rng.uniform(0, h - 1, 17), np.ones(17)], 1).astype(np.float32)
    kps[[2, 9], 2] = 0.0
    ours, wts = render_heatmaps_np(kps, (h, w), (hh, hw), sigma)
    codec = mmpose_codecs.MSRAHeatmap(input_size=(w, h), heatmap_size=(hw, hh), sigma=sigma, unbiased=True)
    # mmpose maps x_hm = x * s; ours (x + .5) * s - .5: shift the keypoints so that both mean the same point
    shifted = kps[None, :, :2] + 0.5 - 0.5 * np.array([w / hw, h / hh], np.float32)
    enc = codec.encode(shifted, kps[None, :, 2])
    assert np.allclose(ours, enc["heatmaps"], atol=1e-5)
    assert np.array_equal(wts, enc["keypoint_weights"][0].astype(np.float32))


def test_mean_keypoint_error_and_mse_loss():
    kps = fake_batch(4, 128, 64)["keypoints"]
    heat, wts = render_heatmaps(kps, (128, 64), (64, 32), 1.5)
    assert mean_keypoint_error(heat, kps, (128, 64)) < 1.0
    shifted = kps.clone()
    shifted[..., 0] += 6.0
    assert mean_keypoint_error(heat, shifted, (128, 64)) > 5.0
    assert float(heatmap_mse_loss(heat, heat, wts)) == 0.0
    assert float(heatmap_mse_loss(torch.zeros_like(heat), heat, wts)) > 0
    assert float(heatmap_mse_loss(torch.zeros_like(heat), heat, torch.zeros_like(wts))) == 0.0  # invisible


def test_wrong_sizes_raise_clear_errors():
    heat = torch.zeros(2, 17, 64, 32)
    with pytest.raises(ValueError, match="heatmap shapes differ"):
        heatmap_mse_loss(heat, torch.zeros(2, 17, 32, 16))
    with pytest.raises(ValueError, match="heatmap shapes differ"):
        heatmap_mse_loss(heat, torch.zeros(1, 17, 64, 32))  # would broadcast silently
    with pytest.raises(ValueError, match="weights"):
        heatmap_mse_loss(heat, heat, torch.ones(2, 16))
    with pytest.raises(ValueError, match=r"\(B, K, 3\)"):
        render_heatmaps(torch.zeros(2, 17, 2), (128, 64), (64, 32))
    with pytest.raises(ValueError, match="does not fit"):
        apply_mask(torch.zeros(2, 3, 64, 32), torch.ones(2, 1, 32, 16))


# ---------------------------------------------------------------------------------------------- the model
def test_bad_batches_give_clear_errors():
    model = build()
    model.train()
    batch = fake_batch()
    no_kps = {k: v for k, v in batch.items() if k != "keypoints"}
    # the config sets LOAD_KEYPOINTS True: the error blames the loader, never asks to set the key that is set
    with pytest.raises(KeyError, match="LOAD_KEYPOINTS is already True") as err:
        model(no_kps)
    assert "Set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS" not in str(err.value)
    unset = build("DATASETS.ANNOTATIONS.LOAD_KEYPOINTS", "False")
    unset.train()
    with pytest.raises(KeyError, match="Set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True"):
        unset(no_kps)
    with pytest.raises(ValueError, match="predicts"):
        model(dict(batch, heatmaps=torch.zeros(8, 17, 16, 8)))  # re_conv1 predicts 32 x 16 for 64 x 32
    with pytest.raises(ValueError, match="keypoints"):
        model(dict(batch, keypoints=torch.zeros(8, 16, 3)))
    model(dict(batch, heatmaps=torch.zeros(8, 17, 32, 16)))  # right size: fine


def test_mse_falls_when_training_only_the_reverse_backbone():
    model = build()
    model.train()
    batch = fake_batch(8, 64, 32)
    with torch.no_grad():
        feats = {k: v.detach() for k, v in model.backbone.forward_features(model._normalize(batch["images"])).items()}
    tgt, wts = render_heatmaps(batch["keypoints"], (64, 32), (32, 16), 1.0)
    opt = torch.optim.Adam(model.reverse.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = heatmap_mse_loss(model.reverse(feats)["heatmaps"], tgt, wts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def _grad_groups(model, loss):
    groups = {
        "backbone.conv1": model.backbone.conv1, "backbone.layer4": model.backbone.layer4, "heads": model.heads,
        "heads2": model.heads2, "reverse.cc_conv1": model.reverse.change_channel["conv1"],
        "reverse.re_layer1": model.reverse.re_layer1, "reverse.re_conv1": model.reverse.re_conv1,
        "mask": model.mask_generator,
    }
    if model.backbone2 is not None:
        groups["backbone2"] = model.backbone2
    params = {n: [p for p in m.parameters() if p.requires_grad] for n, m in groups.items()}
    flat = [p for ps in params.values() for p in ps]
    grads = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for n, ps in params.items():
        g = grads[i:i + len(ps)]
        i += len(ps)
        out[n] = any(x is not None and float(x.abs().sum()) > 0 for x in g)
    return {n for n, hit in out.items() if hit}


@pytest.mark.parametrize("share,freeze", [(True, False), (True, True), (False, False), (False, True)])
def test_five_loss_terms_are_finite_and_reach_the_right_parameters(share, freeze):
    # conv1 mask: L_*2 reach backbone layer4 only through backbone 2 itself (not through the mask)
    model = build("MODEL.RBNET.MASK_SOURCE", "conv1", "MODEL.RBNET.SHARE_BACKBONE", str(share),
                  "MODEL.RBNET.FREEZE_BACKBONE2", str(freeze))
    model.train()
    with EventStorage(0):
        losses = model(fake_batch())
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_heatmap", "loss_cls2", "loss_triplet2"}
    assert all(torch.isfinite(v) for v in losses.values())
    b1 = {"backbone.conv1", "backbone.layer4"}
    assert _grad_groups(model, losses["loss_cls"]) == b1 | {"heads"}
    assert _grad_groups(model, losses["loss_triplet"]) == b1  # NECK_FEAT before: the head is not involved
    assert _grad_groups(model, losses["loss_heatmap"]) == b1 | {"reverse.cc_conv1", "reverse.re_layer1",
                                                                 "reverse.re_conv1"}
    # backbone 2 pass: mask path (mask generator, conv1 change_channel, backbone conv1) and backbone 2
    b2 = set() if freeze else ({"backbone.layer4"} if share else {"backbone2"})
    mask_path = {"mask", "reverse.cc_conv1", "backbone.conv1"}
    assert _grad_groups(model, losses["loss_cls2"]) == mask_path | b2 | {"heads2"}
    assert _grad_groups(model, losses["loss_triplet2"]) == mask_path | b2
    if freeze and not share:
        assert not any(p.requires_grad for p in model.backbone2.parameters())
        assert not model.backbone2.training  # BN statistics of the frozen copy stay fixed


def test_re_layer1_mask_routes_through_the_reverse_backbone():
    model = build("MODEL.RBNET.MASK_SOURCE", "re_layer1")
    model.train()
    with EventStorage(0):
        losses = model(fake_batch())
    hit = _grad_groups(model, losses["loss_cls2"])
    assert {"mask", "reverse.re_layer1", "reverse.cc_conv1", "heads2"} <= hit
    assert "reverse.re_conv1" not in hit and "heads" not in hit


def test_detached_mask_trains_only_the_mask_and_backbone_2():
    model = build("MODEL.RBNET.MASK_DETACH", "True", "MODEL.RBNET.SHARE_BACKBONE", "False")
    model.train()
    with EventStorage(0):
        losses = model(fake_batch())
    assert _grad_groups(model, losses["loss_cls2"]) == {"mask", "heads2", "backbone2"}
    assert _grad_groups(model, losses["loss_heatmap"]) == {"backbone.conv1", "backbone.layer4", "reverse.cc_conv1",
                                                           "reverse.re_layer1", "reverse.re_conv1"}


def test_inference_features_and_maps():
    model = build("MODEL.RBNET.TEST_FEATURE", "concat")
    model.eval()
    imgs = fake_batch(2)["images"]
    with torch.no_grad():
        feat = model(imgs)
    assert feat.shape == (2, 1024)
    maps = model.inference_maps({"images": imgs})
    assert maps["heatmaps"].shape == (2, 17, 32, 16) and maps["mask"].shape == (2, 1, 64, 32)
    assert maps["b1_conv1"].shape == maps["b2_conv1"].shape == (2, 64, 32, 16)
    assert maps["b2_layer4"].shape == (2, 512, 4, 2)
    assert torch.allclose(maps["features"], feat, atol=1e-5)
    assert not model.training
    # a conv1 mask stops backbone 1 after conv1 at test time: same feature as the full pass
    model = build("MODEL.RBNET.MASK_SOURCE", "conv1")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(imgs), model.inference_maps(imgs)["features"], atol=1e-5)


# ---------------------------------------------------------------------------------------------- map quality
class _KnownMaps:
    """Stands in for RBNet: every heatmap peaks at (x=1, y=2) of an 8 x 4 input; the mask is 1 on the top half
    and 0.25 on the bottom half."""

    def inference_maps(self, images):
        b = images.shape[0]
        heat = torch.zeros(b, 17, 8, 4)
        heat[:, :, 2, 1] = 1.0
        mask = torch.full((b, 1, 8, 4), 0.25)
        mask[:, :, :4] = 1.0
        return {"heatmaps": heat, "mask": mask}


def test_map_quality_numbers_on_known_maps():
    from fastreid_ext.rbnet.evaluation import map_quality_on_batches

    kps = torch.zeros(2, 17, 3)
    kps[..., 0], kps[..., 1] = 1.0, 5.0  # 3 px below every predicted peak
    kps[:, :10, 2] = 1.0  # 10 of 17 visible per image; the rest are below the score threshold
    kps[1, 0, :2] = torch.tensor([4.0, 6.0])  # one keypoint 5 px away: (3, 4) from the peak
    person = torch.zeros(2, 1, 8, 4)
    person[:, :, 2:6] = 1.0  # rows 2-5: half of them under mask 1, half under mask 0.25
    batch = {"images": torch.zeros(2, 3, 8, 4), "keypoints": kps, "masks": person}
    q = map_quality_on_batches(_KnownMaps(), [batch, batch], score_thresh=0.5)
    assert q["images"] == 4
    assert q["kpt_err"] == pytest.approx((19 * 3 + 5) / 20)
    assert q["mask_person"] == pytest.approx((1 + 0.25) / 2)
    assert q["mask_bg"] == pytest.approx((1 + 0.25) / 2)  # rows 0-1 (mask 1) and 6-7 (0.25)
    assert map_quality_on_batches(_KnownMaps(), [batch, batch], 0.5, max_images=1)["images"] == 2
    with pytest.raises(KeyError, match="masks"):
        map_quality_on_batches(_KnownMaps(), [{"images": batch["images"], "keypoints": kps}])


def test_map_quality_of_a_tiny_rbnet():
    from fastreid_ext.rbnet.evaluation import map_quality_on_batches

    model = build()
    model.train()
    batch = fake_batch(4)
    person = torch.zeros(4, 1, 64, 32)
    person[:, :, 8:56, 8:24] = 1.0
    batch["masks"] = person
    q = map_quality_on_batches(model, [batch], score_thresh=0.5)
    assert q["images"] == 4 and model.training  # inference_maps restores the training mode
    valid = int((batch["keypoints"][..., 2] >= 0.5).sum())
    assert valid > 0 and 0.0 <= q["kpt_err"] <= (64 ** 2 + 32 ** 2) ** 0.5
    assert 0.0 <= q["mask_person"] <= 1.0 and 0.0 <= q["mask_bg"] <= 1.0
    # the same numbers as from the maps directly
    from fastreid_ext.functional.heatmaps import keypoint_errors

    maps = model.inference_maps(batch["images"])
    err, ok = keypoint_errors(maps["heatmaps"], batch["keypoints"], (64, 32), 0.5)
    assert q["kpt_err"] == pytest.approx(float(err[ok].mean()), rel=1e-5)
    assert q["mask_person"] == pytest.approx(float(maps["mask"][person >= 0.5].mean()), rel=1e-5)


# ---------------------------------------------------------------------------------------------- end to end
def test_tiny_train_eval_and_visualize_through_trainer(datasets_root, tmp_path, capsys, batch_losses):
    import json

    out = tmp_path / "run"
    os.makedirs(out, exist_ok=True)
    tiny = ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
            "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.NUM_INSTANCE", "4", "SOLVER.WARMUP_ITERS", "5", "TEST.IMS_PER_BATCH", "64",
            "MODEL.RBNET.HEATMAP.SIGMA", "1.0", "SOLVER.MAX_EPOCH", "2", "SOLVER.STEPS", "[1]",
            "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2"]
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("projects/RBNet/configs/SynthPed/rbnet_R18.yml")
    cfg.merge_from_list(tiny + ["OUTPUT_DIR", str(out), "SEED", "1", "TEST.EVAL_INIT", "True"])
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    batch = next(iter(trainer.data_loader))
    before = batch_losses(trainer.model, batch)
    results = trainer.train()
    after = batch_losses(trainer.model, batch)
    init = trainer.init_results
    with capsys.disabled():
        print(f"\n[RBNet tiny e2e] untrained -> trained: R1 {init['Rank-1']:.1f} -> {results['Rank-1']:.1f} mAP "
              f"{init['mAP']:.1f} -> {results['mAP']:.1f} | losses on a fixed batch: "
              + ", ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before))
    # the model learned: it beats the untrained one (TEST.EVAL_INIT) on the same split, and its training losses on
    # a fixed batch fall (measured, SEED 1: mAP 24.6 -> 34.6; summed losses 10.6 -> 5.7)
    assert results["mAP"] > init["mAP"] + 5.0, (init, results)
    assert sum(after.values()) < 0.8 * sum(before.values()), (before, after)
    rows = [json.loads(line) for line in open(out / "metrics.json")]
    terms = [r for r in rows if "loss_heatmap" in r]
    assert terms and all(np.isfinite(r[k]) for r in terms for k in
                         ("loss_cls", "loss_triplet", "loss_heatmap", "loss_cls2", "loss_triplet2"))
    assert os.path.isfile(out / "model_final.pth")

    # the visualization command line (tools/visualize_rbnet.py), in process (same argv as on the command line)
    from fastreid_ext.rbnet.visualize import main as visualize_main

    n = visualize_main(["--config-file", "projects/RBNet/configs/SynthPed/rbnet_R18.yml", "--weights",
                  str(out / "model_final.pth"), "--num-images", "3", "--output", str(tmp_path / "vis"), *tiny])
    assert n == 3
    pngs = sorted(os.listdir(tmp_path / "vis"))
    assert len([p for p in pngs if p.endswith(".png")]) == 4 and "overview.png" in pngs


def test_visualization_accepts_a_baseline_alone_and_beside_rbnet(datasets_root, tmp_path):
    """Fig. 4: Baseline (a) next to RBNet (b). A Baseline config is drawn with what it has (image | conv1 |
    layer4); ``--baseline`` appends its conv1 / layer4 maps to RBNet's strip on the same images."""
    import cv2

    from fastreid_ext.rbnet.visualize import STRIP_PANELS, main as visualize_main

    tiny = ["INPUT.SIZE_TEST", "[64, 32]", "DATASETS.SYNTHPED.PRESET", "tiny", "DATALOADER.NUM_WORKERS", "0",
            "TEST.IMS_PER_BATCH", "8", *TINY_MODEL]
    base = "projects/RBNet/configs/SynthPed/baseline_R18.yml"
    assert visualize_main(["--config-file", base, "--num-images", "2", "--scale", "1", "--output",
                           str(tmp_path / "base"), *tiny]) == 2
    # 64 x 32 panels, scale 1, 4 px gaps: image | conv1 | layer4 = 3 panels
    strip = cv2.imread(str(tmp_path / "base" / sorted(os.listdir(tmp_path / "base"))[0]))
    assert strip.shape[1] == 3 * 32 + 2 * 4
    # RBNet with the Baseline beside it (the options above are RBNet's only: the Baseline keeps its config's
    # 128 x 64 and sees the 64 x 32 images resized; its maps are drawn at the strip's size)
    assert visualize_main(["--config-file", "projects/RBNet/configs/SynthPed/rbnet_R18.yml", "--baseline", base,
                           "--num-images", "2", "--scale", "1", "--output", str(tmp_path / "both"), *tiny]) == 2
    strip = cv2.imread(str(tmp_path / "both" / sorted(os.listdir(tmp_path / "both"))[0]))
    n_panels = len(STRIP_PANELS) + 2
    assert strip.shape[1] == n_panels * 32 + (n_panels - 1) * 4


def test_backbone_maps_are_the_stem_and_the_backbone_output():
    from fastreid_ext.rbnet.visualize import backbone_maps

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("projects/RBNet/configs/SynthPed/baseline_R18.yml")
    cfg.merge_from_list(TINY_MODEL)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    raw = torch.rand(2, 3, 64, 32) * 255
    maps = backbone_maps(model, raw, prefix="Baseline ")
    assert list(maps) == ["Baseline conv1", "Baseline layer4"]
    bb = model.backbone
    x = (raw - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        stem = torch.relu(bb.bn1(bb.conv1(x)))
        out = bb.layer4(bb.layer3(bb.layer2(bb.layer1(bb.maxpool(stem)))))
    assert torch.allclose(maps["Baseline conv1"], stem, atol=1e-5)
    assert torch.allclose(maps["Baseline layer4"], out, atol=1e-5)
    assert raw.max() > 1.0  # the raw images were not normalized in place
