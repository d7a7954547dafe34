"""Visualization tools (fastreid_ext.visualization): torchreid's activation-map recipe, the exact similarity
decomposition (Stylianou et al., WACV 2019) on non-square maps, ranked lists with the Market-1501 protocol, every
registered meta-architecture through the multi-branch interface, and Market-sized splits streamed in bounded memory.
"""
import json
import os
import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import fastreid_ext

fastreid_ext.register()  # every meta-architecture is registered before the parametrisation below

from fastreid.modeling.meta_arch import META_ARCH_REGISTRY  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_CFG = os.path.join(ROOT, "configs", "Base-SynthPed.yml")
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "8", "DATASETS.SYNTHPED.PRESET", "tiny", "DATALOADER.NUM_WORKERS", "0",
        "TEST.IMS_PER_BATCH", "16"]
#: what a meta-architecture needs beyond the tiny Baseline config to be built (a new one builds with none, or is
#: skipped with a reason pointing here)
ARCH_OPTS = {
    "JointIBN": ["DATASETS.ANNOTATIONS.LOAD_MASKS", "True"],
    "MGN": ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048", "INPUT.SIZE_TEST", "[96, 32]"],  # 3 stripes
    "MoCoV2": ["MODEL.LOSSES.NAME", "()"],
    "PoseGAN": ["MODEL.POSE_TRANSFER.VARIANT", "none"],  # FD-GAN stage: E_I + C_v, no additional encoder
}
#: meta-architectures whose test feature is GAP (or GAP + BN-neck) of a spatial map: the decomposition must hold
DECOMPOSABLE = {"Baseline", "Distiller", "HPLF", "JointIBN", "MMT", "MoCo", "MoCoV2", "PoseTransfer", "RBNet"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------- activation maps
def test_the_numeric_modules_import_without_fastreid():
    import subprocess
    import sys

    code = ("import sys\nimport fastreid_ext.visualization.actmap, fastreid_ext.visualization.similarity, "
            "fastreid_ext.visualization.ranked\nassert 'fastreid' not in sys.modules, 'FastReID was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-2000:]


def torchreid_recipe(features: np.ndarray, image_rgb: np.ndarray):
    """torchreid's tools/visualize_actmap.py, step by step (numpy + OpenCV), with RGB colours."""
    b, c, h, w = features.shape
    height, width = image_rgb.shape[:2]
    out = (features ** 2).sum(1).reshape(b, h * w)
    out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    out = out.reshape(b, h, w)
    maps, heats, overlays = [], [], []
    for j in range(b):
        am = cv2.resize(out[j].astype(np.float32), (width, height))
        am = (am - am.min()) / (am.max() - am.min() + 1e-12)
        maps.append(am)
        heat = cv2.applyColorMap(np.uint8(np.floor(255 * am)), cv2.COLORMAP_JET)[..., ::-1]
        over = image_rgb * 0.3 + heat * 0.7
        over[over > 255] = 255
        heats.append(heat)
        overlays.append(over.astype(np.uint8))
    return np.stack(maps), heats, overlays


def test_actmap_is_torchreids_recipe_computed_by_hand():
    from fastreid_ext.visualization.actmap import GRID_SPACING, actmap, actmap_panels, actmap_strip

    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 4, 2, generator=g)  # a tiny, non-square map
    image = (torch.rand(3, 16, 8, generator=g) * 255).round()
    img = image.permute(1, 2, 0).numpy().astype(np.uint8)
    ref_maps, ref_heats, ref_over = torchreid_recipe(feats.numpy(), img)
    maps = actmap(feats, (16, 8))
    assert maps.shape == (2, 16, 8)
    np.testing.assert_allclose(maps, ref_maps, atol=1e-5)
    for j in range(2):
        heat, over = actmap_panels(img, maps[j])
        # floor(255 m) of maps equal to 1e-5 can differ by one grey level where 255 m is an integer
        assert np.abs(heat.astype(int) - ref_heats[j].astype(int)).max() <= 4
        assert (heat != ref_heats[j]).any(-1).mean() < 0.02
        assert np.abs(over.astype(int) - ref_over[j].astype(int)).max() <= 3
    strip = actmap_strip(image, [("m", maps[0])], labels=False)
    assert strip.shape == (16, 3 * 8 + 2 * GRID_SPACING, 3)  # torchreid's image | map | overlay
    assert (strip[:, 8:8 + GRID_SPACING] == 255).all()
    np.testing.assert_array_equal(strip[:, :8], img)


#: a fixed 1x1 convolution (5 output channels) after 8x8 average pooling: a backbone whose map is easy to compute
#: by hand in numpy
_POOL_CONV_W = np.array([[0.9, -0.4, 0.3], [-0.2, 0.8, 0.5], [0.6, 0.1, -0.7], [0.05, -0.9, 0.4], [0.3, 0.3, 0.3]])
_POOL_CONV_B = np.array([0.1, -0.2, 0.05, 0.3, -0.1])


def _register_pool_conv_backbone():
    from fastreid.modeling.backbones.build import BACKBONE_REGISTRY

    if "build_vis_test_pool_conv_backbone" not in BACKBONE_REGISTRY._obj_map:
        @BACKBONE_REGISTRY.register()
        def build_vis_test_pool_conv_backbone(cfg):
            conv = nn.Conv2d(3, 5, 1)
            with torch.no_grad():
                conv.weight.copy_(torch.tensor(_POOL_CONV_W, dtype=torch.float32)[:, :, None, None])
                conv.bias.copy_(torch.tensor(_POOL_CONV_B, dtype=torch.float32))
            return nn.Sequential(nn.AvgPool2d(8), conv)


def test_the_tools_actmap_of_a_model_is_the_recipe_computed_by_hand(tmp_path):
    """The whole path of tools/visualize_actmap.py (image file -> the model's test transform and normalisation ->
    the layer's map -> recipe -> PNG strip) against numpy on a model whose 8 x 4 map is known in closed form."""
    from fastreid_ext.visualization import actmap_cli

    _register_pool_conv_backbone()
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = np.random.default_rng(5).integers(0, 256, (64, 32, 3), dtype=np.uint8)  # RGB, already the test size
    img[:24, 8:20] = 250  # a bright block, so that the map has a clear peak
    cv2.imwrite(str(folder / "0001_c1s1_000001_00.png"), img[..., ::-1])
    out = actmap_cli.main(["--config-file", BASE_CFG, "--folder", str(folder), "--layers", "backbone", "--ext", "png",
                           "--scale", "1", "--overview", "0", "--output", str(tmp_path / "out"), "--no-progress",
                           *TINY, "MODEL.BACKBONE.NAME", "build_vis_test_pool_conv_backbone",
                           "MODEL.BACKBONE.FEAT_DIM", "5"])
    assert out["images"] == 1
    strip = cv2.imread(str(tmp_path / "out" / "00000_0001_c1s1_000001_00.png"))[..., ::-1]
    # by hand: FastReID's normalisation, 8 x 8 means, the 1x1 convolution, then torchreid's recipe
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    x = (img.astype(np.float64) - mean) / std  # (64, 32, 3)
    pooled = x.reshape(8, 8, 4, 8, 3).mean((1, 3))  # (8, 4, 3)
    fmap = pooled @ _POOL_CONV_W.T + _POOL_CONV_B  # (8, 4, 5)
    ref_maps, ref_heats, ref_over = torchreid_recipe(fmap.transpose(2, 0, 1)[None], img)
    grid = strip[-64:]  # under the label bar: image | gap | map | gap | overlay
    assert grid.shape == (64, 3 * 32 + 2 * 10, 3)
    np.testing.assert_array_equal(grid[:, :32], img)
    heat, over = grid[:, 42:74].astype(int), grid[:, 84:116].astype(int)
    # floor(255 m) flips by one grey level where 255 m is within float error of an integer
    assert np.abs(heat - ref_heats[0].astype(int)).max() <= 4
    assert (heat != ref_heats[0]).any(-1).mean() < 0.02
    assert np.abs(over - ref_over[0].astype(int)).max() <= 3
    # the map peaks where the bright block is (a check on the hand computation itself)
    assert np.unravel_index(ref_maps[0].argmax(), (64, 32))[0] < 24


def test_one_channel_maps_are_shown_as_they_are():
    from fastreid_ext.visualization.actmap import display_maps

    mask = torch.zeros(1, 1, 4, 2)
    mask[..., 1:3, :] = 0.6
    shown = display_maps(mask, (4, 2))
    np.testing.assert_allclose(shown[0], mask[0, 0].numpy())  # a [0, 1] mask is not rescaled
    wide = display_maps(mask * 10 - 3, (4, 2))
    assert wide.min() == 0.0 and wide.max() == 1.0


# ------------------------------------------------------------------------------------------------- similarity
def _head(pool: str, embedding_dim: int = 0, seed: int = 0):
    """A FastReID EmbeddingHead in eval mode with random BN statistics (an affine BN-neck)."""
    from fastreid.modeling.heads.embedding_head import EmbeddingHead

    torch.manual_seed(seed)
    head = EmbeddingHead(feat_dim=6, embedding_dim=embedding_dim, num_classes=3, neck_feat="after", pool_type=pool,
                         cls_type="Linear", scale=1, margin=0.0, with_bnneck=True, norm_type="BN")
    bn = head.bottleneck[-1]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    return head.eval()


@pytest.mark.parametrize("pool,emb", [("GlobalAvgPool", 0), ("FastGlobalAvgPool", 4), ("GlobalMaxPool", 0),
                                      ("AdaptiveAvgMaxPool", 0), ("GeneralizedMeanPoolingP", 0),
                                      ("GeneralizedMeanPooling", 5)])
def test_similarity_maps_sum_to_the_cosine_similarity_on_random_non_square_maps(pool, emb):
    from fastreid_ext.modeling.multi_branch import PooledMap
    from fastreid_ext.visualization.models import branch_terms
    from fastreid_ext.visualization.similarity import cosine_decomposition

    head = _head(pool, emb)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 6, 7, 3, generator=g) * 2 - 0.3  # two grids, neither square nor equal
    b = torch.rand(1, 6, 5, 4, generator=g) * 2 - 0.3
    with torch.no_grad():
        fa, fb = head(a), head(b)
    ta, note = branch_terms(PooledMap(a, head, fa), "plain")
    tb, _ = branch_terms(PooledMap(b, head, fb), "plain")
    assert ta.shape[1] == 21 and tb.shape[1] == 20
    d = cosine_decomposition(ta[0], tb[0], (7, 3), (5, 4), note)
    cos = float(torch.nn.functional.cosine_similarity(fa.double(), fb.double()))
    assert d.map_a.shape == (7, 3) and d.map_b.shape == (5, 4) and d.pairs.shape == (21, 20)
    assert d.similarity == pytest.approx(cos, abs=1e-6)
    assert d.map_a.sum() == pytest.approx(cos, abs=1e-6)
    assert d.map_b.sum() == pytest.approx(cos, abs=1e-6)
    assert d.pairs.sum() == pytest.approx(cos, abs=1e-6)
    np.testing.assert_allclose(d.pairs.sum(1), d.map_a.ravel(), atol=1e-9)  # the maps are the marginals
    np.testing.assert_allclose(d.pairs.sum(0), d.map_b.ravel(), atol=1e-9)
    if pool == "GlobalAvgPool":  # Stylianou et al.'s terms: <A_i, u_b> / (N_a |u_a| |u_b|) before the BN-neck
        assert "GAP" in note


def test_heads_without_an_exact_decomposition_say_why():
    from fastreid_ext.modeling.multi_branch import PooledMap
    from fastreid_ext.visualization.models import branch_terms
    from fastreid_ext.visualization.similarity import NotDecomposable

    a = torch.rand(2, 6, 4, 2)
    head = _head("GlobalAvgPool")
    head.bottleneck.append(nn.ReLU())  # torchreid's fc ends like this
    with pytest.raises(NotDecomposable, match="not affine"):
        branch_terms(PooledMap(a, head, head(a)), "plain")
    clip = _head("ClipGlobalAvgPool")
    with pytest.raises(NotDecomposable, match="clamps"):
        branch_terms(PooledMap(a, clip, clip(a)), "plain")
    flat = torch.rand(2, 6, 1, 1)
    with pytest.raises(NotDecomposable, match="1 x 1"):
        branch_terms(PooledMap(flat, _head("GlobalAvgPool"), torch.rand(2, 6)), "plain")
    with pytest.raises(NotDecomposable, match="does not reproduce"):
        branch_terms(PooledMap(a, None, a.amax((2, 3))), "plain")  # a head-less feature that is not GAP


def test_concatenated_normalised_branches_decompose_into_the_mean_of_the_branch_maps():
    from fastreid_ext.visualization.similarity import (affine_terms, combine_branches, cosine_decomposition,
                                                       pooling_contributions)

    g = torch.Generator().manual_seed(2)
    maps = [torch.randn(2, 5, 6, 3, generator=g) for _ in range(2)]  # two branches, two images each
    parts = []
    for m in maps:
        t = affine_terms(pooling_contributions(m, "avg"))
        parts.append(cosine_decomposition(t[0], t[1], (6, 3), (6, 3)))
    d = combine_branches(parts)
    f = torch.cat([torch.nn.functional.normalize(m.double().mean((2, 3)), dim=1) for m in maps], 1)
    cos = float(torch.nn.functional.cosine_similarity(f[0:1].double(), f[1:2].double()))
    assert d.similarity == pytest.approx(cos, abs=1e-9)
    assert d.map_a.sum() == pytest.approx(cos, abs=1e-9) and d.map_b.sum() == pytest.approx(cos, abs=1e-9)


# ------------------------------------------------------------------------------------------------- ranked lists
def test_ranked_list_marks_exactly_the_true_matches_and_skips_same_camera_same_id():
    from fastreid_ext.visualization.ranked import rank_chunk

    # one query (id 7, camera 0); gallery sorted by distance:
    #   0: id 7 cam 0 (junk)  1: id 3  2: id 7 cam 1  3: id 7 cam 0 (junk)  4: id 5  5: id 7 cam 2 (tied with 4:
    #   the lower gallery index first, as a stable sort)
    dist = np.array([[0.1, 0.2, 0.3, 0.35, 0.4, 0.4]])
    g_pids, g_cams = np.array([7, 3, 7, 7, 5, 7]), np.array([0, 1, 1, 0, 2, 2])
    r = rank_chunk(dist, [7], [0], g_pids, g_cams, topk=4)
    assert r.topk[0].tolist() == [1, 2, 4, 5]  # 0 and 3 skipped
    assert r.topk_match[0].tolist() == [False, True, False, True]
    assert r.first[0] == 1 and r.num_pos[0] == 2
    assert r.ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_chunked_ranking_equals_fastreids_evaluator_and_the_roc_is_exact_at_bin_resolution():
    from fastreid.evaluation.rank import eval_market1501

    from fastreid_ext.visualization.ranked import DistanceHistogram, distances, query_order, rank_chunk

    rng = np.random.default_rng(0)
    nq, ng = 37, 211
    q_pids, g_pids = rng.integers(0, 15, nq), rng.integers(0, 15, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    q_pids[0] = 99  # a query without any true match
    qf, gf = rng.normal(size=(nq, 16)), rng.normal(size=(ng, 16))
    qf[1:] += 2 * np.eye(16)[q_pids[1:] % 16]
    gf += 2 * np.eye(16)[g_pids % 16]
    from fastreid.utils.compute_dist import build_dist

    for metric in ("cosine", "euclidean"):  # FastReID's distances
        ref = build_dist(torch.from_numpy(qf).float(), torch.from_numpy(gf).float(), metric)
        np.testing.assert_allclose(distances(qf, gf, metric), ref, rtol=1e-5, atol=1e-4)
    dist = distances(qf, gf, "cosine")
    cmc, all_ap, _ = eval_market1501(dist, q_pids, g_pids, q_cams, g_cams, 10)
    hist = DistanceHistogram(0.0, 2.0, 4000)
    aps, firsts = [], []
    for s in range(0, nq, 8):  # chunks of 8 queries
        r = rank_chunk(dist[s:s + 8], q_pids[s:s + 8], q_cams[s:s + 8], g_pids, g_cams, topk=5)
        hist.add(dist[s:s + 8], q_pids[s:s + 8], q_cams[s:s + 8], g_pids, g_cams)
        aps.append(r.ap)
        firsts.append(r.first)
    ap, first = np.concatenate(aps), np.concatenate(firsts)
    assert np.isnan(ap[0]) and first[0] == -1
    np.testing.assert_allclose(ap[~np.isnan(ap)], all_ap, rtol=1e-9)
    valid = first >= 0
    for k in (1, 5, 10):
        assert np.mean(first[valid] < k) == pytest.approx(cmc[k - 1], abs=1e-6)
    # pairs: positive = same id, other camera; negative = other id
    same = q_pids[:, None] == g_pids[None, :]
    pos = dist[same & (q_cams[:, None] != g_cams[None, :])]
    neg = dist[~same]
    assert hist.pos.sum() == len(pos) and hist.neg.sum() == len(neg)
    exact_auc = (np.mean(pos[:, None] < neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :]))
    assert hist.auc() == pytest.approx(exact_auc, abs=2e-3)
    order = query_order(ap, "worst")
    assert order[-1] == 0 and np.all(np.diff(ap[order[:-1]]) >= 0)


# ------------------------------------------------------------------------------------------------- every model
def tiny_pair_and_opts(arch):
    return TINY + ["MODEL.META_ARCHITECTURE", arch] + ARCH_OPTS.get(arch, [])


def _buildable(arch):
    from fastreid_ext.visualization.models import load_model

    try:
        load_model(BASE_CFG, "", tiny_pair_and_opts(arch))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{arch} does not build from the tiny Baseline config ({type(e).__name__}: {e}); add what it "
                    f"needs to ARCH_OPTS in tests/test_visualization.py")


@pytest.mark.parametrize("arch", sorted(META_ARCH_REGISTRY._obj_map))
def test_the_tools_run_for_every_registered_meta_architecture(arch, datasets_root, tmp_path):
    from fastreid_ext.visualization import actmap_cli, ranked_cli, similarity_cli
    from fastreid_ext.video.embed import load_cfg
    from fastreid_ext.visualization.inputs import dataset_items
    from fastreid_ext.visualization.similarity_cli import pair_items

    _buildable(arch)
    opts = tiny_pair_and_opts(arch)
    layers = ["retrieval", "backbone"] + (["input_mask"] if arch == "JointIBN" else [])  # the mask it is given
    out = actmap_cli.main(["--config-file", BASE_CFG, "--layers", *layers, "--num-images", "2",
                           "--show-input", "--output", str(tmp_path / "act"), "--no-progress", *opts])
    assert out["images"] == 2 and len(list((tmp_path / "act").glob("0000*.jpg"))) == 2
    if arch == "JointIBN":
        assert "JointIBN: input_mask" in out["columns"]
    assert (tmp_path / "act" / "overview.png").is_file()
    if arch == "MMT":  # a wrapper: every interface model it holds, as a column
        assert {c.split(":")[0] for c in out["columns"]} == {"MMT/net1", "MMT/net2", "MMT/mean1", "MMT/mean2"}

    cfg = load_cfg(BASE_CFG, opts)
    a, b = pair_items(dataset_items("SynthPedA", cfg, "test"), dataset_items("SynthPedA", cfg, "query")[0][1])
    rows = similarity_cli.main(["--config-file", BASE_CFG, "--images", a[0], b[0], "--member", "mean1" if arch == "MMT"
                                else "", "--output", str(tmp_path / "sim" / "pair.png"), *opts])
    assert (tmp_path / "sim" / "pair.png").is_file() and (tmp_path / "sim" / "pair.json").is_file()
    for r in rows:
        if "error" in r:
            assert arch not in DECOMPOSABLE, r["error"]
            assert len(r["error"]) > 40  # a reason, not a bare failure
        else:
            assert r["sum_a"] == pytest.approx(r["similarity"], abs=1e-5)
            assert r["sum_b"] == pytest.approx(r["similarity"], abs=1e-5)
    if arch in DECOMPOSABLE:
        assert rows and all("error" not in r for r in rows)

    res = ranked_cli.main(["--config-file", BASE_CFG, "--num-vis", "2", "--topk", "3", "--grid", "2", "--output",
                           str(tmp_path / "rank"), "--no-progress", *(["--member", "mean2"] if arch == "MMT" else []),
                           *opts])
    (label, summary), = res.items()
    assert summary["written"] == 2 and 0 <= summary["mAP"] <= 100
    for f in ("grid.png", "distances.png", "roc.png", "per_query.csv", "summary.json"):
        assert (tmp_path / "rank" / f).is_file(), f


def test_rbnet_concat_similarity_is_exact_and_any_layer_is_reachable(datasets_root, tmp_path):
    from fastreid_ext.visualization.inputs import batches, dataset_items, model_dataset
    from fastreid_ext.visualization.models import decompose_pair, interface_models, load_model, named_maps

    cfg, model = load_model(BASE_CFG, "", TINY + ["MODEL.META_ARCHITECTURE", "RBNet",
                                                  "MODEL.RBNET.TEST_FEATURE", "concat"])
    (label, m), = interface_models(model, "RBNet")
    items = dataset_items("SynthPedA", cfg, "query")[:2]
    (batch,) = next(batches([model_dataset(cfg, items)], 2))
    total, parts = decompose_pair(m, batch)
    assert set(parts) == {"plain", "masked"}
    with torch.no_grad():
        f = m(batch)
    cos = float(torch.nn.functional.cosine_similarity(f[0:1].double(), f[1:2].double()))
    assert total.similarity == pytest.approx(cos, abs=1e-5) and total.map_a.sum() == pytest.approx(cos, abs=1e-5)
    assert total.similarity == pytest.approx(np.mean([p.similarity for p in parts.values()]), abs=1e-9)
    # any layer: feature_maps keys, a submodule, and the second call of the backbone shared by both branches
    maps = named_maps(m, batch, ["mask", "heatmaps", "backbone.layer2", "backbone.layer2@1", "retrieval"])
    assert maps["mask"].shape[1] == 1 and maps["heatmaps"].shape[1] == 17
    assert maps["backbone.layer2"].dim() == 4 and {"plain", "masked"} <= set(maps)
    assert not torch.equal(maps["backbone.layer2"], maps["backbone.layer2@1"])  # image vs masked image
    with pytest.raises(KeyError, match="no layer"):
        named_maps(m, batch, ["no_such_layer"])


# ------------------------------------------------------------------------------------------------- Market-sized
def _register_tiny_backbone():
    from fastreid.modeling.backbones.build import BACKBONE_REGISTRY

    if "build_vis_test_tiny_backbone" not in BACKBONE_REGISTRY._obj_map:
        @BACKBONE_REGISTRY.register()
        def build_vis_test_tiny_backbone(cfg):  # a 2-conv net: the test is about streaming, not the model
            return nn.Sequential(nn.Conv2d(3, 8, 3, 4, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1))


def _few_images(folder, n=12):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"src_{i:02d}.jpg")
        cv2.imwrite(p, rng.integers(0, 255, (64, 32, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def test_actmap_streams_a_market_sized_query_split_with_a_progress_bar_in_bounded_memory(tmp_path, capsys):
    from fastreid_ext.visualization import actmap_cli

    _register_tiny_backbone()
    src = _few_images(str(tmp_path / "src"))
    folder = tmp_path / "query"
    folder.mkdir()
    n = 3368  # Market-1501's query split; links to a few files: no image is held by the test
    for i in range(n):
        os.symlink(src[i % len(src)], folder / f"{i // 6:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg")
    tracemalloc.start()
    out = actmap_cli.main(["--config-file", BASE_CFG, "--folder", str(folder), "--output", str(tmp_path / "out"),
                           "--batch-size", "64", "--scale", "1", "--overview", "4", *TINY,
                           "MODEL.BACKBONE.NAME", "build_vis_test_tiny_backbone", "MODEL.BACKBONE.FEAT_DIM", "16"])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out["images"] == n and len(os.listdir(tmp_path / "out")) == n + 1
    strip = cv2.imread(str(tmp_path / "out" / "00000_0000_c1s1_000000_00.jpg"))
    held = n * strip.nbytes  # what keeping every strip would take (~90 MB)
    with capsys.disabled():  # the README's numbers (pytest -s)
        print(f"\nactmap: {n} strips, tracemalloc peak {peak / 2**20:.1f} MiB (every strip held: "
              f"{held / 2**20:.1f} MiB)")
    assert peak < 0.25 * held, (peak, held)
    assert "3368/3368" in capsys.readouterr().err  # tqdm's progress bar


def test_ranked_lists_of_a_market_sized_split_stream_in_bounded_memory(tmp_path, capsys):
    from fastreid_ext.visualization.ranked_cli import rank_and_draw

    src = _few_images(str(tmp_path / "src"), 20)
    nq, ng, d = 3368, 15913, 32  # Market-1501's query / gallery split
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 751, nq), rng.integers(0, 751, ng)
    q_items = [(src[i % 20], int(p), int(i % 6)) for i, p in enumerate(q_pids)]
    g_items = [(src[i % 20], int(p), int((i + 1) % 6)) for i, p in enumerate(g_pids)]
    centres = rng.normal(size=(751, d)).astype(np.float32)
    qf = centres[q_pids] + rng.normal(size=(nq, d)).astype(np.float32)
    gf = centres[g_pids] + rng.normal(size=(ng, d)).astype(np.float32)
    tracemalloc.start()
    s = rank_and_draw(qf, gf, q_items, g_items, str(tmp_path / "out"), topk=5, num_vis=300, grid=4, size=(32, 16))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # every query ranked (per_query.csv), the 300 worst drawn (any number can be: pictures read their images)
    assert s["written"] == 300 and len(os.listdir(tmp_path / "out" / "ranked")) == 300
    assert len((tmp_path / "out" / "per_query.csv").read_text().splitlines()) == nq + 1
    full = nq * ng * 4  # the float32 distance matrix alone: 214 MB
    with capsys.disabled():  # the README's numbers (pytest -s)
        print(f"\nranked: {nq} x {ng}, tracemalloc peak {peak / 2**20:.1f} MiB (distance matrix: "
              f"{full / 2**20:.1f} MiB)")
    assert peak < 0.5 * full, (peak, full)
    err = capsys.readouterr().err
    assert "ranking: 100%" in err and "300/300" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_query"] == nq and summary["mAP"] > 5 and summary["roc_auc"] > 0.9
