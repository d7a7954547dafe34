"""The multi-scale interface (fastreid_ext/modeling/backbones/multiscale.py): the five documented levels (strides
and channels) of FastReID ResNet-18, ResNet-18-IBN, MobileNetV2 1.0x and torchreid's OSNet x0.25 through the bridge
(random weights), the wrapped forward is the backbone's own, and RBNet builds and trains one step on each (64 x 32)."""
import pytest
import torch

import fastreid_ext
from fastreid.modeling.backbones import build_backbone
from fastreid.utils.events import EventStorage
from fastreid_ext.engine import Trainer
from fastreid_ext.modeling.backbones.multiscale import LEVELS, as_multiscale, level_table, split_levels


pytestmark = pytest.mark.usefixtures("one_thread_module")


OSNET = ["MODEL.BACKBONE.NAME", "build_torchreid_backbone", "MODEL.BACKBONE.TORCHREID.ARCH", "osnet_x0_25",
         "MODEL.BACKBONE.TORCHREID.OUTPUT", "featuremap", "MODEL.BACKBONE.FEAT_DIM", "128"]
#: backbone -> (config keys, documented (stride, channels) of conv1, layer1..layer4)
BACKBONES = {
    # FastReID's default LAST_STRIDE is 1: layer4 stays at stride 16
    "resnet18": (["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512"],
                 [(2, 64), (4, 64), (8, 128), (16, 256), (16, 512)]),
    "resnet18_ibn": (["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.WITH_IBN", "True"],
                     [(2, 64), (4, 64), (8, 128), (16, 256), (16, 512)]),
    # Sandler et al. 2018, Table 2: 16 @ /2, 24 @ /4, 32 @ /8, 96 @ /16, 1280 @ /32
    "mobilenetv2": (["MODEL.BACKBONE.NAME", "build_mobilenetv2_imagenet_backbone", "MODEL.BACKBONE.DEPTH", "1.0x",
                     "MODEL.BACKBONE.FEAT_DIM", "1280"],
                    [(2, 16), (4, 24), (8, 32), (16, 96), (32, 1280)]),
    # Zhou et al. 2019, Table 1 at x0.25: conv1 16 @ /2, conv2 64 @ /4, conv3 96 @ /8, conv4 128 @ /16, conv5 128
    "osnet_x0_25": (OSNET, [(2, 16), (4, 64), (8, 96), (16, 128), (16, 128)]),
}


def cfg_for(name, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False"] + BACKBONES[name][0] + list(opts))
    return cfg


@pytest.mark.parametrize("name", list(BACKBONES))
def test_five_documented_levels_and_the_backbones_own_forward(name):
    if name.startswith("osnet"):
        pytest.importorskip("torchreid")
    torch.manual_seed(0)
    bb = build_backbone(cfg_for(name)).eval()
    ms = as_multiscale(bb)
    assert not any(m.training for m in bb.modules())  # wrapping (and its dry run) keeps the backbone in eval mode
    assert [(s, c) for _, s, c in level_table(ms)] == BACKBONES[name][1]
    assert set(ms.state_dict()) == set(bb.state_dict())  # same keys: checkpoints move between Baseline and RBNet
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feats = ms.forward_features(x)
        ref = bb(x)
    assert list(feats) == list(LEVELS)
    for lvl, (stride, ch) in zip(LEVELS, BACKBONES[name][1]):
        assert tuple(feats[lvl].shape) == (2, ch, 64 // stride, 32 // stride)
    torch.testing.assert_close(feats["layer4"], ref)
    assert as_multiscale(ms) is ms


def test_split_levels_by_stride_on_hand_made_chains():
    # five strides: one level per stride
    assert split_levels(list("abcdef"), [2, 2, 4, 8, 16, 32]) == [2, 3, 4, 5, 6]
    # four strides (OSNet-like): the deepest group splits before its last top-level module
    units = ["c1", "mp", "c2.0", "c3.0", "c4.0", "c4.1", "c5"]
    assert split_levels(units, [2, 4, 4, 8, 16, 16, 16]) == [1, 3, 4, 6, 7]
    # six strides: the finest groups merge into level 0
    assert split_levels(list("abcdef"), [1, 2, 4, 8, 16, 32]) == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="cannot split"):
        split_levels(["a", "b"], [2, 4])
    with pytest.raises(ValueError, match="decrease"):
        split_levels(["a", "b"], [4, 2])


def test_unsupported_backbone_is_refused_with_the_list():
    with pytest.raises(TypeError, match="MobileNetV2"):
        as_multiscale(torch.nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize("name", list(BACKBONES))
def test_rbnet_builds_from_the_reported_levels_and_trains_one_step(name):
    if name.startswith("osnet"):
        pytest.importorskip("torchreid")
    cfg = cfg_for(name)
    cfg.merge_from_file("projects/RBNet/configs/SynthPed/rbnet_mnv2.yml")
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.RBNET.LOSS.MSE",
                         "10.0"] + BACKBONES[name][0])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).train()
    channels = [c for _, c in BACKBONES[name][1]]
    assert model.reverse.in_channels == dict(zip(LEVELS, channels))
    assert model.reverse.widths == dict(zip(LEVELS, channels))  # GROUPING heads, WIDTH_MULT 1: the backbone's widths
    assert model.reverse.strides == dict(zip(LEVELS, [s for s, _ in BACKBONES[name][1]]))
    g = torch.Generator().manual_seed(0)
    kps = torch.rand(8, 17, 3, generator=g) * torch.tensor([31.0, 63.0, 1.0])
    batch = {"images": torch.rand(8, 3, 64, 32, generator=g) * 255, "targets": torch.arange(8) % 4, "keypoints": kps}
    before = {n: p.detach().clone() for n, p in model.named_parameters()
              if n.startswith(("reverse.re_conv1", "mask_generator"))}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_cls", "loss_triplet", "loss_cls2", "loss_triplet2", "loss_heatmap"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert any(n.startswith("reverse.re_conv1") for n in changed) and any(n.startswith("mask_generator") for n in changed)
    model.eval()
    with torch.no_grad():
        maps = model.inference_maps(batch["images"][:2])
    assert tuple(maps["heatmaps"].shape) == (2, 17, 32, 16)  # level 0 (stride 2) resolution
    assert tuple(maps["mask"].shape) == (2, 1, 64, 32)
