"""Angular-margin heads (``fastreid_ext.angular``): Eq. (1)'s combined margin reduces to FastReID's ArcSoftmax /
CosSoftmax, SphereFace's psi is monotonic and its lambda anneals, the head builds and trains with every margin layer,
and the ConditionAnalysis margin configs build."""
import math
import os

import pytest
import torch

import fastreid_ext
from fastreid_ext.angular.margins import (CombinedMarginSoftmax, SphereSoftmax, combined_margin_logits,
                                          monotonic_margin_cos, sphere_lambda)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cos_targets(seed=0, n=6, c=5):
    g = torch.Generator().manual_seed(seed)
    cos = torch.rand(n, c, generator=g, dtype=torch.float64) * 1.8 - 0.9
    t = torch.randint(0, c, (n,), generator=g)
    t[0] = -1  # "no target" rows keep plain logits (FastReID's convention)
    return cos, t


def test_combined_margin_equals_fastreid_arc_and_cos():
    fastreid_ext.register()
    from fastreid.layers.any_softmax import ArcSoftmax, CosSoftmax

    cos, t = _cos_targets()
    arc = ArcSoftmax(5, 30.0, 0.5)(cos.clone(), t)
    assert torch.allclose(combined_margin_logits(cos, t, 1.0, 0.5, 0.0, 30.0), arc, atol=1e-6)  # theta + m <= pi here
    cosf = CosSoftmax(5, 30.0, 0.35)(cos.clone(), t)
    assert torch.allclose(combined_margin_logits(cos, t, 1.0, 0.0, 0.35, 30.0), cosf, atol=1e-9)
    plain = combined_margin_logits(cos, t, 1.0, 0.0, 0.0, 30.0)
    assert torch.allclose(plain, cos * 30.0, atol=1e-6)
    assert torch.allclose(CombinedMarginSoftmax(5, 30.0, 0.0, (1.0, 0.5, 0.0))(cos, t), arc, atol=1e-6)


def test_sphereface_psi_is_monotonic_and_matches_cos_m_theta():
    theta = torch.linspace(0, math.pi, 721, dtype=torch.float64)
    for m in (1.0, 1.35, 2.0, 4.0):
        psi = monotonic_margin_cos(torch.cos(theta), m)
        assert (psi[1:] <= psi[:-1] + 1e-9).all(), m  # decreasing on [0, pi]
        inside = m * theta <= math.pi
        assert torch.allclose(psi[inside], torch.cos(m * theta[inside]), atol=1e-6)
    psi4 = monotonic_margin_cos(torch.cos(theta), 4.0)
    assert abs(float(psi4[-1]) - (1 - 2 * 4)) < 1e-5  # psi(pi) = -(2m - 1) for an integer m
    assert sphere_lambda(0) == 1000.0 and sphere_lambda(10 ** 6) == 5.0
    assert sphere_lambda(100) == pytest.approx(1000.0 / (1 + 0.12 * 100))


def test_sphere_softmax_target_logit_and_lambda_counter():
    cos, t = _cos_targets(1)
    layer = SphereSoftmax(5, 10.0, 4.0)
    layer.train()
    out = layer(cos, t)
    assert int(layer.step) == 1
    lam = 1000.0
    for i in range(1, len(t)):
        c = cos[i, t[i]]
        want = (lam * c + monotonic_margin_cos(c, 4.0)) / (1 + lam) * 10.0
        assert torch.allclose(out[i, t[i]], want)
        others = [j for j in range(5) if j != t[i]]
        assert torch.allclose(out[i, others], cos[i, others] * 10.0)
    assert torch.allclose(out[0], cos[0] * 10.0)
    layer.eval()
    layer(cos, t)
    assert int(layer.step) == 1  # eval passes do not anneal


@pytest.mark.parametrize("cls_layer,margin", [("ArcSoftmax", 0.5), ("CosSoftmax", 0.35), ("CircleSoftmax", 0.35),
                                              ("SphereSoftmax", 4.0), ("CombinedMarginSoftmax", 0.0)])
def test_angular_head_builds_and_trains_one_step(cls_layer, margin):
    from fastreid.modeling import build_model

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/ConditionAnalysis/configs/SynthPed/arcface_mnv2.yml"))
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.BACKBONE.DEPTH", "18x",
                         "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
                         "MODEL.HEADS.NUM_CLASSES", "4", "MODEL.HEADS.CLS_LAYER", cls_layer,
                         "MODEL.HEADS.MARGIN", str(margin), "MODEL.HEADS.EMBEDDING_DIM", "32"])
    model = build_model(cfg)
    assert type(model.heads).__name__ == "AngularEmbeddingHead"
    assert type(model.heads.cls_layer).__name__ == cls_layer
    model.train()
    batch = {"images": torch.rand(8, 3, 64, 32) * 255, "targets": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])}
    from fastreid.utils.events import EventStorage

    with EventStorage():  # FastReID's Baseline logs its accuracy
        losses = model(batch)
    assert set(losses) == {"loss_cls"} and torch.isfinite(losses["loss_cls"])
    losses["loss_cls"].backward()
    assert model.heads.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert model(batch).shape == (8, 32)  # the 512-d (here 32-d) embedding after the BN neck


def test_condition_configs_build():
    from fastreid.modeling import build_model

    for name in ("arcface_mnv2", "cosface_mnv2", "circle_mnv2", "sphereface_mnv2"):
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(os.path.join(ROOT, f"projects/ConditionAnalysis/configs/SynthPed/{name}.yml"))
        assert cfg.MODEL.HEADS.NAME == "AngularEmbeddingHead" and cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss",)
    for name in ("arcface_R50", "cosface_R50", "circle_R50", "sphereface_R50", "moco_R50", "lup_moco_R50"):
        cfg = fastreid_ext.get_cfg()
        cfg.merge_from_file(os.path.join(ROOT, f"projects/ConditionAnalysis/configs/Market1501/{name}.yml"))
        assert cfg.MODEL.BACKBONE.DEPTH == "50x"
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects/ConditionAnalysis/configs/SynthPed/sphereface_mnv2.yml"))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "3"])
    assert type(build_model(cfg).heads.cls_layer).__name__ == "SphereSoftmax"
