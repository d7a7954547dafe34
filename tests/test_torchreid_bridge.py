"""The torchreid bridge (fastreid_ext/modeling/backbones/torchreid_bridge.py) for every model-zoo family a user would
load: its features equal torchreid's own forward (torchreid.reid.models.build_model) to 1e-5 with random weights, its
checkpoint loading is strict, its feature maps reach the visualization tools, and on real Market-1501 crops with the
OSNet x0.25 Market-1501 weights it reproduces torchreid (skipped when ../shared/realdata is absent)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import fastreid_ext  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata"
SAMPLES = REAL / "market_samples"
OSNET = REAL / "weights" / "osnet_x0_25_market1501.pth"
NO_REAL = "../shared/realdata (real Market-1501 crops and torchreid weights) is not available on this machine"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def torchreid_models():
    pytest.importorskip("torchreid")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchreid.reid.models import build_model  # torchreid's own factory (its package __init__ runs)
    return build_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomise_bn(net, seed=0):
    """Random running statistics and affine parameters, so that eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def _bridge_cfg(arch, weights, output, feat_dim, size=(64, 32)):
    from fastreid_ext.video.embed import TORCHREID_OSNET_CONFIG, load_cfg

    return load_cfg(TORCHREID_OSNET_CONFIG, ["MODEL.BACKBONE.NAME", "build_torchreid_backbone",
                                             "MODEL.BACKBONE.TORCHREID.ARCH", arch,
                                             "MODEL.BACKBONE.TORCHREID.OUTPUT", output,
                                             "MODEL.BACKBONE.FEAT_DIM", str(feat_dim),
                                             "MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", str(weights),
                                             "INPUT.SIZE_TEST", str(list(size))])


@pytest.mark.parametrize("arch", ["osnet_x0_25", "osnet_x0_5", "osnet_x0_75", "osnet_x1_0", "osnet_ain_x1_0",
                                  "resnet50", "mobilenetv2_x1_0"])
def test_bridge_features_equal_torchreids_forward_for_every_family(arch, torchreid_models, tmp_path):
    from fastreid.modeling import build_model

    from fastreid_ext.modeling.backbones.torchreid_bridge import TESTED_ARCHS, build_torchreid
    from fastreid_ext.visualization.models import interface_models, named_maps

    assert arch in TESTED_ARCHS
    torch.manual_seed(0)
    ref = _randomise_bn(torchreid_models(arch, num_classes=11, loss="softmax", pretrained=False)).eval()
    ckpt = tmp_path / f"{arch}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, ckpt)  # DataParallel-style

    x = torch.rand(2, 3, 64, 32, generator=torch.Generator().manual_seed(1)) * 255
    xn = (x / 255 - MEAN) / STD
    emb = build_torchreid(arch, str(ckpt), "embedding").eval()
    fmap = build_torchreid(arch, str(ckpt), "featuremap").eval()
    with torch.no_grad():
        want_v, want_map = ref(xn), ref.featuremaps(xn)
        got_v, got_map = emb(xn), fmap(xn)
    assert got_v.shape == (2, ref.feature_dim, 1, 1)
    assert torch.allclose(got_v.flatten(1), want_v, atol=1e-5, rtol=1e-5), float((got_v.flatten(1) - want_v).abs().max())
    assert torch.equal(got_map, want_map)
    assert fmap.out_channels == want_map.shape[1] and emb.out_channels == want_v.shape[1]

    # the same through a FastReID Baseline (normalisation, GAP + a fresh BN-neck: x / sqrt(1 + eps) in eval)
    cfg = _bridge_cfg(arch, ckpt, "embedding", ref.feature_dim)
    model = build_model(cfg).eval()
    with torch.no_grad():
        f = model({"images": x})
    err = float(((f * (1 + 1e-5) ** 0.5 - want_v).abs() / (want_v.abs().max() + 1e-12)).max())
    assert err < 1e-5, err  # relative to the largest component (FastReID normalises with 255-scaled constants)
    # the last feature map is reachable for the tools under one name, whatever the family
    (label, m), = interface_models(model, arch)
    got = named_maps(m, {"images": x}, ["backbone.featuremap"])["backbone.featuremap"]
    assert torch.allclose(got, want_map, rtol=0, atol=1e-5 * float(want_map.abs().max()))


def test_bridge_loading_is_strict_and_names_the_families(tmp_path):
    from fastreid_ext.modeling.backbones.torchreid_bridge import build_torchreid, build_torchreid_network

    torch.manual_seed(0)
    sd = build_torchreid_network("osnet_x0_25", num_classes=5).state_dict()
    torch.save(sd, tmp_path / "a.pth")
    with pytest.raises(RuntimeError, match="does not load strictly"):
        build_torchreid("osnet_x0_5", str(tmp_path / "a.pth"))
    sd.pop("conv5.conv.weight")
    torch.save(sd, tmp_path / "b.pth")
    with pytest.raises(RuntimeError, match="does not load strictly"):
        build_torchreid("osnet_x0_25", str(tmp_path / "b.pth"))
    with pytest.raises(ValueError, match="OSNet-AIN"):
        build_torchreid("densenet121")
    with pytest.raises(ValueError, match="no 'osnet_x2_0'"):
        build_torchreid("osnet_x2_0")


@pytest.mark.skipif(not (SAMPLES.is_dir() and OSNET.is_file()), reason=NO_REAL)
def test_bridge_reproduces_torchreid_osnet_x0_25_market_on_real_market_crops(torchreid_models):
    from fastreid.modeling import build_model
    from PIL import Image

    from fastreid_ext.modeling.backbones.torchreid_bridge import load_torchreid_state_dict

    files = sorted(SAMPLES.glob("*.jpg"))
    assert len(files) >= 7
    x = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB").resize((128, 256), Image.BICUBIC))
                                   for f in files]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    ref = torchreid_models("osnet_x0_25", num_classes=751, loss="softmax", pretrained=False)
    ref.load_state_dict(load_torchreid_state_dict(str(OSNET)), strict=True)
    ref.eval()
    cfg = _bridge_cfg("osnet_x0_25", OSNET, "embedding", 512, (256, 128))
    model = build_model(cfg).eval()
    with torch.no_grad():
        want = ref((x / 255 - MEAN) / STD)
        got = model.backbone(model.preprocess_image({"images": x})).flatten(1)
        feat = model({"images": x})
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())
    # the trained weights re-identify: the nearest other crop of 0001 (camera 1) is 0001 on camera 6
    f = torch.nn.functional.normalize(feat, dim=1)
    sim = f @ f.T
    sim.fill_diagonal_(-1)
    names = [p.name for p in files]
    i = names.index("0001_c1s1_001051_00.jpg")
    assert names[int(sim[i].argmax())] == "0001_c6s1_009601_00.jpg"
