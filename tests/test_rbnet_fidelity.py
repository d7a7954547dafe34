"""RBNet read against the paper (Yu & Piao, "Reverse backbone net for unsupervised person re-identification", 2024):
the paper configs build Table 1's reverse widths, the heatmap size of Table 1 vs Eq. 3, the paper's summed part
masks, and the Section 1.1 step 3 fusion of same-level features into backbone 2."""
import glob
import math
import os

import pytest
import torch

import fastreid_ext
from fastreid.utils.events import EventStorage
from fastreid_ext.engine import Trainer
from fastreid_ext.rbnet.masking import combine_part_masks
from fastreid_ext.rbnet.reverse_backbone import MaskGenerator, ReverseBackbone, reverse_widths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = ("conv1", "layer1", "layer2", "layer3", "layer4")
TABLE1 = dict(zip(LEVELS, (64, 256, 512, 1024, 2048)))  # Table 1, ResNet-50
TINY = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
        "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "4"]


pytestmark = pytest.mark.usefixtures("one_thread_module")


def cfg_of(path, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, path))
    cfg.merge_from_list(list(opts))
    return cfg


def build(*opts, config="projects/RBNet/configs/SynthPed/rbnet_R18.yml"):
    torch.manual_seed(0)
    return Trainer.build_model(cfg_of(config, *TINY, *opts))


def fake_batch(b=8, h=64, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    kps = torch.rand(b, 17, 3, generator=g) * torch.tensor([w - 1.0, h - 1.0, 1.0])
    kps[..., 2] = (kps[..., 2] > 0.2).float()
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b) % 4, "keypoints": kps}


# ---------------------------------------------------------------------------------------------- Table 1's widths
PAPER_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "projects/RBNet/configs/*/rbnet_R50*.yml")))


def test_every_paper_config_asks_for_table1_widths():
    assert len(PAPER_CONFIGS) >= 9  # Market1501, DukeMTMC, MSMT17 x (re_layer1, conv1, re_layer2 masks) [+ fusion]
    for path in PAPER_CONFIGS:
        r = cfg_of(path).MODEL.RBNET
        assert cfg_of(path).MODEL.BACKBONE.DEPTH == "50x", path
        assert (r.GROUPING, r.WIDTH_MULT) == ("heads", 1.0), path
        assert reverse_widths(list(TABLE1.values()), r.GROUPING, r.WIDTH_MULT) == list(TABLE1.values()), path
    # the SynthPed config keeps the reduced, 17-grouped path (labelled in the file)
    r = cfg_of("projects/RBNet/configs/SynthPed/rbnet_R18.yml").MODEL.RBNET
    assert (r.GROUPING, r.WIDTH_MULT) == ("all", 0.25)


def test_paper_config_builds_table1_channels_at_every_reverse_level_for_256x128():
    """Table 1's rows (C x H x W for a 256 x 128 input) at every reverse level of the shipped Market-1501 config;
    re_conv1's output at Eq. 3's 128 x 64 (SIZE [], the configs' default) or at Table 1's 256 x 128."""
    cfg = cfg_of("projects/RBNet/configs/Market1501/rbnet_R50.yml", "MODEL.BACKBONE.PRETRAIN", "False",
                 "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", "4")
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    assert model.reverse.widths == TABLE1 and model.heatmap_size is None
    with torch.no_grad():
        feats = model.backbone.forward_features(torch.randn(1, 3, 256, 128))
        rev = model.reverse(feats, heatmap_size=model.heatmap_size)
        table1_heat = model.reverse(feats, heatmap_size=(256, 128))["heatmaps"]  # MODEL.RBNET.HEATMAP.SIZE [256, 128]
    assert tuple(table1_heat.shape[1:]) == (17, 256, 128)
    shapes = {k: tuple(v.shape[1:]) for k, v in rev.items()}
    assert shapes == {
        "cc_conv1": (64, 128, 64),          # conv1 output
        "re_layer4_in": (2048, 16, 8),      # layer4 output = re-layer 4 input
        "re_layer4": (1024, 16, 8),         # re-layer 4 output = layer4 input (last stride 1)
        "re_layer3_in": (1024, 16, 8),
        "re_layer3": (512, 32, 16),         # re-layer 3 output = layer3 input
        "re_layer2_in": (512, 32, 16),
        "re_layer2": (256, 64, 32),         # re-layer 2 output = layer2 input
        "re_layer1_in": (256, 64, 32),
        "re_layer1": (64, 64, 32),          # re-layer 1 output = layer1 input (after the max-pool)
        "re_conv1_in": (64, 128, 64),       # upsample (mirrors the max-pool) = conv1 output
        "heatmaps": (17, 128, 64),          # re-conv 1 output: Eq. 3 (Table 1: 256 x 128, above)
    }
    counts = [len(model.reverse.re_layer1), len(model.reverse.re_layer2), len(model.reverse.re_layer3),
              len(model.reverse.re_layer4)]
    assert counts == [2, 3, 5, 2]


def test_table1_model_trains_and_the_17_groups_start_at_the_heads():
    model = build("MODEL.RBNET.GROUPING", "heads", "MODEL.RBNET.WIDTH_MULT", "1.0")
    assert model.reverse.widths == dict(zip(LEVELS, (64, 64, 128, 256, 512)))  # ResNet-18's own widths
    assert all(seq[0].out_channels == 68 for seq in model.mask_generator.part_logits.values())  # 1x1 align
    model.train()
    with EventStorage(0):
        losses = model(fake_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    grads = torch.autograd.grad(losses["loss_heatmap"], [model.reverse.re_conv1.align[0].weight,
                                                         model.reverse.re_layer2[0].dw.weight])
    assert all(float(g.abs().sum()) > 0 for g in grads)


# ---------------------------------------------------------------------------------------------- heatmap size
def test_heatmap_size_key_gives_eq3_or_table1_resolution():
    """The paper's 256 x 128 input: re_conv1's heatmaps at Eq. 3's 128 x 64 (``HEATMAP.SIZE []``) or at Table 1's
    256 x 128 (``HEATMAP.SIZE [256, 128]``), through the config key and the loss."""
    b = fake_batch(b=2, h=256, w=128)
    sizes = {}
    for size in ([], [256, 128]):
        model = build("MODEL.RBNET.HEATMAP.SIZE", str(size), "INPUT.SIZE_TRAIN", "[256, 128]")
        model.train()
        with EventStorage(0):
            out = model.branch_outputs(b, b["targets"])
            aux = model.aux_losses(out, b, b["targets"])
        hw = out.context["heatmaps"].shape[-2:]
        sizes[str(size)] = (tuple(hw), model.mse_weight(hw))
        assert torch.isfinite(aux["loss_heatmap"])
    assert sizes["[]"][0] == (128, 64) and sizes["[256, 128]"][0] == (256, 128)  # Eq. 3 vs Table 1
    assert sizes["[256, 128]"][1] == pytest.approx(4 * sizes["[]"][1])  # automatic l3 follows the heatmap area


# ---------------------------------------------------------------------------------------------- summed part masks
def test_sum_reduction_is_the_clipped_sum_and_starts_unsaturated():
    parts = torch.zeros(1, 17, 2, 2)
    parts[0, 0, 0, 0], parts[0, 1, 0, 0] = 0.3, 0.4    # two parts overlap: 0.7 (max: 0.4)
    parts[0, :, 1, 1] = 0.5                            # all parts: 8.5 -> 1
    s = combine_part_masks(parts, "sum")[0, 0]
    assert s[0, 0] == pytest.approx(0.7) and s[1, 1] == 1.0 and s[0, 1] == 0.0
    assert combine_part_masks(parts, "max")[0, 0, 0, 0] == pytest.approx(0.4)
    assert combine_part_masks(parts, "mean")[0, 0, 0, 0] == pytest.approx(0.7 / 17)
    with pytest.raises(ValueError, match="unknown mask reduction"):
        combine_part_masks(parts, "prod")
    # with zero features the 17 parts start at sigmoid(-ln 17) = 1/18 each: the sum at 17/18, not saturated
    rev = ReverseBackbone((64, 64, 128, 256, 512))
    gen = MaskGenerator("re_layer1", rev.output_channels(), reduce="sum", align=rev.head_width).eval()
    zeros = {"cc_conv1": torch.zeros(1, 64, 8, 4), "re_layer1": torch.zeros(1, 64, 4, 2)}
    mask, p = gen(zeros, (16, 8))
    assert torch.allclose(p, torch.full_like(p, 1 / 18)) and torch.allclose(mask, torch.full_like(mask, 17 / 18))
    bias = sum(float(c[-1].bias.detach().sum()) for c in gen.part_logits.values())
    assert math.isclose(bias / 17, -math.log(17), rel_tol=1e-6)


def test_model_with_summed_masks_trains_the_mask():
    model = build("MODEL.RBNET.MASK_REDUCE", "sum")
    model.train()
    with EventStorage(0):
        losses = model(fake_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    g = torch.autograd.grad(losses["loss_cls2"], [p for p in model.mask_generator.parameters()], allow_unused=True)
    assert any(x is not None and float(x.abs().sum()) > 0 for x in g)
    with pytest.raises(ValueError, match="MASK_REDUCE"):
        build("MODEL.RBNET.MASK_REDUCE", "union")


# ---------------------------------------------------------------------------------------------- fusion (step 3)
FUSE = ["MODEL.RBNET.FUSION.LEVELS", "['conv1', 'layer1']"]


def _reaches(model, loss, module):
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_fusion_starts_as_the_plain_masked_pass_and_changes_backbone2s_input_path():
    plain = build("MODEL.RBNET.MASK_SOURCE", "conv1")
    fused = build("MODEL.RBNET.MASK_SOURCE", "conv1", *FUSE)
    assert plain.fusion is None and fused.fusion.levels == ("conv1", "layer1")
    missing, unexpected = fused.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("fusion.") for k in missing)
    imgs = fake_batch(4)["images"]
    plain.eval(), fused.eval()
    with torch.no_grad():
        assert torch.allclose(plain(imgs), fused(imgs), atol=1e-5)  # zero-initialised fusion scale
        for bn in (fused.fusion.proj[lvl][1] for lvl in fused.fusion.levels):
            bn.weight.fill_(0.5)
        assert not torch.allclose(plain(imgs), fused(imgs), atol=1e-3)
    # the backbone-2 pass now reads the reverse path at conv1 (re_conv1_in) and layer1 (re_layer1_in): with a
    # conv1 mask, L_id2 reaches re_layer1 / re_layer2 / change_channel(layer1) only through the fusion
    batch = fake_batch()
    for model, expect in ((plain, False), (fused, True)):
        model.train()
        with EventStorage(0):
            losses = model(batch)
        for name in ("re_layer1", "re_layer2"):
            assert _reaches(model, losses["loss_cls2"], getattr(model.reverse, name)) == expect, name
        assert _reaches(model, losses["loss_cls2"], model.reverse.change_channel["layer1"]) == expect
        assert not _reaches(model, losses["loss_cls"], model.reverse)  # backbone 1's losses stay plain
    assert _reaches(fused, losses["loss_cls2"], fused.fusion)


@pytest.mark.parametrize("share,freeze", [(True, False), (True, True)])
def test_fusion_trains(share, freeze):
    model = build(*FUSE, "MODEL.RBNET.SHARE_BACKBONE", str(share), "MODEL.RBNET.FREEZE_BACKBONE2", str(freeze))
    model.train()
    batch = fake_batch(8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = fusion_start = None
    with EventStorage(0):
        for _ in range(5):
            losses = model(batch)
            masked = float((losses["loss_cls2"] + losses["loss_triplet2"]).detach())
            start = masked if start is None else start
            opt.zero_grad()
            sum(losses.values()).backward()
            if fusion_start is None:
                fusion_start = [p.detach().clone() for p in model.fusion.parameters()]
                assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.fusion.parameters())
                if freeze:  # backbone 2's pass runs on detached copies of the shared weights, the fusion trains
                    out = model.branch_outputs(batch, batch["targets"])
                    fin = {k: v.detach() for k, v in out.context["fusion_inputs"].items()}
                    y = model._backbone2_features(model._normalize(out.context["masked_input"]), "layer4", fin)
                    params = list(model.backbone.parameters()) + list(model.fusion.parameters())
                    g = torch.autograd.grad(y["layer4"].square().sum(), params, allow_unused=True)
                    n = len(list(model.backbone.parameters()))
                    assert all(x is None for x in g[:n]) and any(x is not None for x in g[n:])
            opt.step()
        final = model(batch)
    assert float((final["loss_cls2"] + final["loss_triplet2"]).detach()) < start
    assert any(not torch.equal(a, b) for a, b in zip(fusion_start, model.fusion.parameters()))


def test_fused_teacher_pass_uses_the_students_reverse_features():
    import copy

    model = build(*FUSE)
    model.train()
    teacher = copy.deepcopy(model)
    batch = fake_batch(4)
    with EventStorage(0):
        student = model.branch_outputs(batch, batch["targets"])
        fin = student.context["fusion_inputs"]
        assert set(fin) == {"re_conv1_in", "re_layer1_in"} and not any(v.requires_grad for v in fin.values())
        out = teacher.teacher_outputs(batch, batch["targets"], student)
    assert out["masked"]["features"].shape == (4, 512)


def test_bad_fusion_levels_are_refused():
    with pytest.raises(ValueError, match="fusion levels"):
        build("MODEL.RBNET.FUSION.LEVELS", "['layer5']")
