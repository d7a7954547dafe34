"""ONNX export (fastreid_ext.deploy): every meta-architecture registered at test time exports on a tiny model with a
dynamic batch axis and standard operators only, and onnxruntime matches PyTorch at batch 1 and 4 (cosine >= 0.9999
per sample, identical ranking of a tiny query / gallery); the onnxruntime embedder / eval model; clear errors for an
operator without ONNX translation, a foreign ONNX file and a file from another model; the command line."""
import glob
import os

import numpy as np
import pytest
import torch

import fastreid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALDATA = os.path.join(ROOT, "..", "shared", "realdata")
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "8"]
BASE = os.path.join(ROOT, "configs/Base-SynthPed.yml")

onnx = pytest.importorskip("onnx", reason="onnx not installed (bash tools/install.sh)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (bash tools/install.sh)")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def registered_meta_archs():
    fastreid_ext.register()
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    return sorted(META_ARCH_REGISTRY._obj_map)


def tiny_cfg(config=BASE, *opts):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(TINY + list(opts))
    return cfg


def calibrate_bn(model, inputs):
    """BatchNorm statistics from ``inputs`` (as after training) through the model's own eval forward: a randomly
    initialised network with BN's default statistics (mean 0, var 1) blows activations up layer after layer, and
    PyTorch's own features then change with the batch size (e.g. MGN on ResNet-50 at 0.994 cosine)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    with torch.no_grad():
        model({k: v.clone() for k, v in inputs.items()})  # clones: MGN normalizes its input in place
    for m in bns:
        m.eval()
    return model


def _build(cfg):
    from fastreid.modeling import build_model

    torch.manual_seed(0)
    return build_model(cfg)


def _mmt(tmp_path):
    m = _build(tiny_cfg(os.path.join(ROOT, "projects/MMT/configs/SynthPedA-SynthPedB/mmt_R18.yml")))
    g = torch.Generator().manual_seed(1)
    m.reset_classifiers({b: torch.randn(4, 512, generator=g) for b in m.net1.branch_names})
    return m


def _distiller(tmp_path):
    """FastReID's Distiller: a tiny teacher config (FastReID's own keys) and checkpoint; its eval forward is the
    student's."""
    from fastreid.config import get_cfg as fastreid_cfg
    from fastreid.modeling import build_model

    t = fastreid_cfg()
    t.merge_from_list(TINY)
    (tmp_path / "teacher.yml").write_text(t.dump())
    torch.manual_seed(1)
    torch.save({"model": build_model(t).state_dict()}, tmp_path / "teacher.pth")
    return _build(tiny_cfg(BASE, "MODEL.META_ARCHITECTURE", "Distiller", "KD.MODEL_CONFIG",
                           f"['{tmp_path / 'teacher.yml'}']", "KD.MODEL_WEIGHTS", f"['{tmp_path / 'teacher.pth'}']"))


#: case -> (meta-architecture, builder(tmp_path) -> model, input size)
CASES = {
    "Baseline": ("Baseline", lambda p: _build(tiny_cfg()), (64, 32)),
    "Baseline-torchreid-osnet_x0_25": ("Baseline", lambda p: _build(tiny_cfg(
        os.path.join(ROOT, "fastreid_ext/video/configs/torchreid_osnet_x0_25.yml"), "MODEL.BACKBONE.PRETRAIN",
        "False", "MODEL.BACKBONE.FEAT_DIM", "512")), (64, 32)),
    "HPLF-global": ("HPLF", lambda p: _build(tiny_cfg(os.path.join(ROOT, "projects/HPLF/configs/SynthPed/hplf_R18.yml"),
                                                      "MODEL.HPLF.TEST_LOCAL", "False")), (64, 32)),
    "HPLF-global+local": ("HPLF", lambda p: _build(tiny_cfg(
        os.path.join(ROOT, "projects/HPLF/configs/SynthPed/hplf_R18.yml"), "MODEL.HPLF.TEST_LOCAL", "True")), (64, 32)),
    # the configured test feature (backbone2): backbone 1 -> reverse backbone -> mask -> backbone 2 on x * M(x)
    "RBNet": ("RBNet", lambda p: _build(tiny_cfg(os.path.join(ROOT, "projects/RBNet/configs/SynthPed/rbnet_R18.yml"))),
              (64, 32)),
    "JointIBN-masks": ("JointIBN", lambda p: _build(tiny_cfg(
        os.path.join(ROOT, "projects/JointIBN/configs/SynthPed/joint_R18-ibn.yml"),
        "DATASETS.ANNOTATIONS.LOAD_MASKS", "True")), (64, 32)),
    "MMT": ("MMT", _mmt, (64, 32)),
    "MoCo": ("MoCo", lambda p: _build(tiny_cfg(BASE, "MODEL.META_ARCHITECTURE", "MoCo", "MODEL.QUEUE_SIZE", "64")),
             (64, 32)),
    # FastReID's MGN copies ResNet-50 bottlenecks and splits the map in 2 and 3 stripes: ResNet-50, 96 x 32
    "MGN": ("MGN", lambda p: _build(tiny_cfg(BASE, "MODEL.META_ARCHITECTURE", "MGN", "MODEL.BACKBONE.DEPTH", "50x",
                                             "MODEL.BACKBONE.FEAT_DIM", "2048", "INPUT.SIZE_TEST", "[96, 32]")),
            (96, 32)),
    "Distiller": ("Distiller", _distiller, (64, 32)),
    "PoseTransfer": ("PoseTransfer", lambda p: _build(tiny_cfg(
        os.path.join(ROOT, "projects/PoseTransfer/configs/Base-PoseTransfer.yml"))), (64, 32)),
}


def _fallback_case(arch):
    """A meta-architecture without a case above: the first project config that names it, else Base-SynthPed."""
    configs = sorted(glob.glob(os.path.join(ROOT, "projects/*/configs/**/*.yml"), recursive=True))
    named = [c for c in configs if f"META_ARCHITECTURE: {arch}" in open(c).read()]
    cfg_file = named[0] if named else BASE
    return arch, lambda p: _build(tiny_cfg(cfg_file, "MODEL.META_ARCHITECTURE", arch)), (64, 32)


def all_cases():
    archs = registered_meta_archs()
    cases = {k: v for k, v in CASES.items() if v[0] in archs}
    for a in archs:
        if not any(v[0] == a for v in cases.values()):
            cases[f"{a}-default"] = _fallback_case(a)
    return cases


ALL_CASES = all_cases()


def test_every_registered_meta_architecture_has_an_export_case():
    covered = {v[0] for v in ALL_CASES.values()}
    assert covered == set(registered_meta_archs())


@pytest.mark.parametrize("case", sorted(ALL_CASES))
def test_export_every_meta_architecture_with_onnxruntime_parity(case, tmp_path):
    from fastreid_ext.deploy.onnx_export import DEFAULT_OPSET, export_onnx, model_input_names, synthetic_person_inputs
    from fastreid_ext.deploy.ort_embedder import OnnxEvalModel

    arch, builder, size = ALL_CASES[case]
    model = builder(tmp_path).eval()
    names = model_input_names(model)
    imgs, masks, labels = synthetic_person_inputs(8, size, seed=3)
    inputs = [imgs if n == "images" else masks for n in names]
    calibrate_bn(model, dict(zip(names, inputs)))
    if case == "JointIBN-masks":
        assert names == ("images", "masks")
    path = tmp_path / f"{case}.onnx"
    res = export_onnx(model, str(path), size, check_inputs=inputs, meta_architecture=arch)

    # parity at batch 1 and 4 (export_onnx refuses otherwise; asserted here as the issue states it)
    assert set(res.parity.min_cosine) == {1, 4}
    assert all(c >= 0.9999 for c in res.parity.min_cosine.values()), res.parity.summary()
    assert res.parity.ranking_identical and res.parity.num_query == 4 and res.parity.num_gallery == 4

    # the file: opset, dynamic batch axis, standard operators only, provenance
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == DEFAULT_OPSET
    assert all(n.domain in ("", "ai.onnx") and n.op_type != "ATen" for n in proto.graph.node)
    assert [i.name for i in proto.graph.input] == list(names)
    for i in proto.graph.input:
        d0 = i.type.tensor_type.shape.dim[0]
        assert d0.dim_param and not d0.dim_value, f"batch axis of {i.name} is not dynamic"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["fastreid_ext.meta_architecture"] == arch and meta["fastreid_ext.input_size"] == f"{size[0]},{size[1]}"

    # a batch size never seen during export (3), through the evaluator's interface
    ev = OnnxEvalModel(str(path)).eval()
    batch = dict(zip(names, [t[:3] for t in inputs]))
    with torch.no_grad():
        ref = model({k: v.clone() for k, v in batch.items()})
    got = ev(dict(batch))
    assert got.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(got, ref.float()).min() >= 0.9999
    if "masks" in names:  # FastReID's flip test mirrors the images in place and calls again; masks must follow
        flipped = {k: v.flip(3) for k, v in batch.items()}
        with torch.no_grad():
            ref_flip = model({k: v.clone() for k, v in flipped.items()})
        batch["images"] = batch["images"].flip(3)  # what inference_on_dataset does (masks left as they are)
        got_flip = ev(batch)
        assert torch.nn.functional.cosine_similarity(got_flip, ref_flip.float()).min() >= 0.9999


def _custom_op_model():
    @torch.library.custom_op("fastreid_ext_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)

    class Twice(torch.nn.Module):
        def forward(self, x):
            return twice(x)

    m = _build(tiny_cfg())
    m.backbone.layer2[0].relu = Twice()
    return m


def test_an_operator_without_onnx_translation_is_named_with_its_module(tmp_path):
    from fastreid_ext.deploy.onnx_export import OnnxExportError, export_onnx

    with pytest.raises(OnnxExportError) as e:
        export_onnx(_custom_op_model(), str(tmp_path / "x.onnx"), (64, 32))
    msg = str(e.value)
    assert "fastreid_ext_test.twice" in msg and "backbone.layer2.0.relu" in msg and "Twice" in msg, msg
    assert not (tmp_path / "x.onnx").exists()


def test_unstable_pytorch_model_is_diagnosed_not_blamed_on_the_export(tmp_path):
    """A parity failure that PyTorch shows by itself (features change with the batch size) says so."""
    from fastreid_ext.deploy.onnx_export import ParityReport

    rep = ParityReport(min_cosine={1: 0.99, 4: 0.999}, max_abs_diff={1: 1.0, 4: 0.1}, ranking_identical=True,
                       num_query=4, num_gallery=4, torch_batch_cosine=0.99)
    assert not rep.ok and "numerically unstable" in rep.summary()


@pytest.fixture(scope="module")
def exported_baseline(tmp_path_factory):
    from fastreid_ext.deploy.onnx_export import export_onnx

    d = tmp_path_factory.mktemp("onnx")
    model = _build(tiny_cfg())
    imgs, _, _ = synthetic_person_inputs_cached()
    calibrate_bn(model, {"images": imgs})
    path = d / "baseline.onnx"
    export_onnx(model, str(path), (64, 32), check_inputs=[imgs], meta_architecture="Baseline")
    return model, path


def synthetic_person_inputs_cached():
    from fastreid_ext.deploy.onnx_export import synthetic_person_inputs

    return synthetic_person_inputs(8, (64, 32), seed=5)


def test_ort_embedder_matches_the_pytorch_embedder_on_crops(exported_baseline):
    from fastreid_ext.deploy.ort_embedder import OrtEmbedder
    from fastreid_ext.video.embed import ReidEmbedder

    model, path = exported_baseline
    ref = ReidEmbedder.__new__(ReidEmbedder)  # the PyTorch embedder around this very model
    ref.model, ref.device, ref.size_hw, ref.batch_size, ref.fill = model.eval(), torch.device("cpu"), (64, 32), 32, "zero"
    ref.model_masks, ref.pixel_mean, ref._warned = False, [123.675, 116.28, 103.53], False
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (int(h), int(h) // 2, 3), dtype=np.uint8) for h in (80, 120, 200, 64, 150)]
    emb = OrtEmbedder(str(path), batch_size=64)
    a, b = emb.embed(crops), ref.embed(crops)
    assert a.shape == b.shape == (5, 512)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(1).min() >= 0.9999
    assert emb.embed([]).shape[0] == 0


def test_config_key_model_deploy_onnx_builds_the_onnxruntime_model(exported_baseline):
    from fastreid_ext.deploy.ort_embedder import OnnxEvalModel, build_deploy_model

    model, path = exported_baseline
    cfg = tiny_cfg(BASE, "MODEL.DEPLOY.ONNX", str(path), "MODEL.DEPLOY.THREADS", "1")
    m = build_deploy_model(cfg)
    assert isinstance(m, OnnxEvalModel) and not m.training
    x = synthetic_person_inputs_cached()[0][:2]
    with torch.no_grad():
        ref = model({"images": x.clone()})
    assert torch.nn.functional.cosine_similarity(m({"images": x}), ref).min() >= 0.9999
    assert build_deploy_model(tiny_cfg()) is None  # key unset: the PyTorch model is used
    with pytest.raises(ValueError, match="exported from another model"):
        build_deploy_model(tiny_cfg(BASE, "MODEL.DEPLOY.ONNX", str(path), "MODEL.META_ARCHITECTURE", "HPLF"))


def test_onnx_file_of_another_model_or_not_a_reid_model_is_refused(exported_baseline, tmp_path):
    from fastreid_ext.deploy.onnx_export import check_same_model, read_metadata
    from fastreid_ext.deploy.ort_embedder import OnnxReidModel

    model, path = exported_baseline
    other = _build(tiny_cfg())  # same architecture, other weights
    with pytest.raises(ValueError, match="exported from another model.*weights"):
        check_same_model(read_metadata(path), model=other, onnx_path=str(path))
    check_same_model(read_metadata(path), model=model)  # its own model passes
    with pytest.raises(ValueError, match="meta-architecture HPLF.*config: Baseline|exported from another model"):
        check_same_model({"meta_architecture": "HPLF"}, cfg=tiny_cfg())
    with pytest.raises(ValueError, match=r"input size 64x32 \(config INPUT.SIZE_TEST: 128x64\)"):
        OnnxReidModel(str(path)).check_matches(tiny_cfg(BASE, "INPUT.SIZE_TEST", "[128, 64]"))

    # an ONNX model that is not a re-id embedder (a 1-channel classifier-like graph)
    class NotReid(torch.nn.Module):
        def forward(self, x):
            return x.mean((2, 3, 1))

    bad = tmp_path / "not_reid.onnx"
    torch.onnx.export(NotReid().eval(), (torch.rand(1, 1, 8, 8),), str(bad), dynamo=True, verbose=False)
    with pytest.raises(ValueError, match="is not a re-id embedder"):
        OnnxReidModel(str(bad))
    # the video tool's path: --onnx with a config whose model (fresh weights) is not the exported one
    from fastreid_ext.video.embed import build_embedder

    with pytest.raises(ValueError, match="was exported from another model: weights"):
        build_embedder(BASE, TINY, onnx=str(path))

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not protobuf")
    with pytest.raises((ValueError, Exception), match="not an ONNX model|onnxruntime cannot load"):
        OnnxReidModel(str(junk))
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        OnnxReidModel(str(tmp_path / "missing.onnx"))


def _quantized_weight_types(proto):
    """The element types of the quantized weights (initializers read by DequantizeLinear; biases, int32, left out)."""
    inits = {t.name: t.data_type for t in proto.graph.initializer}
    return {inits[n.input[0]] for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            } - {onnx.TensorProto.INT32}


def test_int8_quantization_keeps_the_model_identity_and_reports_its_loss(exported_baseline, tmp_path):
    """fastreid_ext.deploy.quantize (onnxruntime's static QDQ quantization): 8-bit convolutions, uint8 weights by
    default (U8U8: no VPMADDUBSW saturation on CPUs without VNNI), the file still recognised as this model's,
    features close to the float file's and the PyTorch model's (cosine >= 0.95 on held-out images); ``weights``
    int8 gives int8 weights, an unknown type is refused."""
    from fastreid_ext.deploy.onnx_export import read_metadata, synthetic_person_inputs
    from fastreid_ext.deploy.ort_embedder import OnnxReidModel
    from fastreid_ext.deploy.quantize import quantize_onnx

    model, path = exported_baseline
    calib = synthetic_person_inputs(8, (64, 32), seed=11)[0].numpy()
    held = synthetic_person_inputs(8, (64, 32), seed=12)[0].numpy()
    dst = tmp_path / "int8.onnx"
    # measured on 2026-12-01 (AMD EPYC, AVX2 without VNNI): uint8 weights min cosine 0.95+; int8 weights 0.942
    rep = quantize_onnx(str(path), str(dst), calib, heldout=held, method="minmax")  # quickest; refuses under 0.95
    assert 0.95 <= rep.min_cosine <= rep.mean_cosine <= 1.0 and rep.heldout_images == 8
    proto = onnx.load(str(dst))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert _quantized_weight_types(proto) == {onnx.TensorProto.UINT8}
    meta = read_metadata(proto)
    assert meta["weights_sha256"] == read_metadata(str(path))["weights_sha256"] and "minmax" in meta["quantization"]
    assert '"weights": "uint8"' in meta["quantization"]
    net = OnnxReidModel(str(dst))
    net.check_matches(tiny_cfg(), model)  # still this model's file
    f = net.run(held[:3])
    ref = model({"images": torch.from_numpy(held[:3]).clone()}).detach().numpy()
    cos = (f * ref).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.95
    # int8 weights on request (no quality floor: saturation-prone on CPUs without VNNI)
    dst8 = tmp_path / "int8_s8.onnx"
    quantize_onnx(str(path), str(dst8), calib, heldout=held, method="minmax", min_cosine=0.0, weights="int8")
    assert _quantized_weight_types(onnx.load(str(dst8))) == {onnx.TensorProto.INT8}
    with pytest.raises(ValueError, match="weight type must be one of"):
        quantize_onnx(str(path), str(tmp_path / "x.onnx"), calib, weights="int4")


def test_train_net_eval_only_with_model_deploy_onnx_gives_the_pytorch_metrics(exported_baseline, datasets_root,
                                                                             tmp_path, monkeypatch):
    """``tools/train_net.py --eval-only MODEL.DEPLOY.ONNX file`` (the package CLI's run(), in process): FastReID's
    evaluator scores the onnxruntime model; its metrics equal the PyTorch model's within 0.01 points (features at
    cosine >= 0.9999 can only swap near-ties); a file of another model is refused before any evaluation."""
    from fastreid.engine import default_argument_parser

    from fastreid_ext.engine.cli import run
    from fastreid_ext.engine.reliability import ConfigError

    model, path = exported_baseline
    ckpt = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    common = ["--config-file", BASE, "--eval-only", *TINY, "DATASETS.SYNTHPED.PRESET", "tiny", "DATASETS.TESTS",
              "('SynthPedA',)", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64"]

    def eval_only(*opts):
        return run(default_argument_parser().parse_args(common + list(opts)))

    from fastreid_ext.deploy.ort_embedder import OnnxReidModel

    ort_batches = []
    run_ort = OnnxReidModel.run
    monkeypatch.setattr(OnnxReidModel, "run", lambda self, *a, **k: ort_batches.append(1) or run_ort(self, *a, **k))
    pt = eval_only("MODEL.WEIGHTS", str(ckpt), "OUTPUT_DIR", str(tmp_path / "pt"))
    assert not ort_batches
    ox = eval_only("MODEL.WEIGHTS", str(ckpt), "MODEL.DEPLOY.ONNX", str(path), "OUTPUT_DIR", str(tmp_path / "ox"))
    assert ort_batches  # the features came from onnxruntime
    for k in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert ox[k] == pytest.approx(pt[k], abs=0.01), (k, pt[k], ox[k])
    print("eval-only PyTorch / onnxruntime:", {k: (round(pt[k], 3), round(ox[k], 3)) for k in ("Rank-1", "mAP")})

    # another model's file: wrong input size, wrong feature dimension (no MODEL.WEIGHTS: the file holds them),
    # other weights, not a file at all
    with pytest.raises(ConfigError, match=r"MODEL.DEPLOY.ONNX: .*exported from another model: input size 64x32 "
                                          r"\(config INPUT.SIZE_TEST: 128x64\)"):
        eval_only("INPUT.SIZE_TEST", "[128, 64]", "MODEL.DEPLOY.ONNX", str(path), "OUTPUT_DIR", str(tmp_path / "e1"))
    with pytest.raises(ConfigError, match=r"gives 512-dimensional features but the config's model \(Baseline\) gives "
                                          r"128: it was exported from another model"):
        eval_only("MODEL.HEADS.EMBEDDING_DIM", "128", "MODEL.DEPLOY.ONNX", str(path),
                  "OUTPUT_DIR", str(tmp_path / "e2"))
    other = tmp_path / "other.pth"
    torch.save({"model": _build(tiny_cfg()).state_dict()}, other)
    with pytest.raises(ConfigError, match=r"exported from another model: weights"):
        eval_only("MODEL.WEIGHTS", str(other), "MODEL.DEPLOY.ONNX", str(path), "OUTPUT_DIR", str(tmp_path / "e3"))
    with pytest.raises(ConfigError, match="ONNX file not found"):
        eval_only("MODEL.DEPLOY.ONNX", str(tmp_path / "none.onnx"), "OUTPUT_DIR", str(tmp_path / "e4"))


def test_export_cli_exports_and_evaluates_with_fastreids_evaluator(datasets_root, tmp_path, capsys):
    """tools/export_onnx.py over fastreid_ext.deploy.cli: export + FastReID's evaluation of both, same numbers."""
    from fastreid_ext.deploy import cli

    out = tmp_path / "m.onnx"
    res = cli.main(["--config-file", BASE, "--output", str(out), "--evaluate", *TINY, "DATASETS.SYNTHPED.PRESET", "tiny",
                    "DATASETS.TESTS", "('SynthPedA',)", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "64",
                    "OUTPUT_DIR", str(tmp_path / "logs")])
    text = capsys.readouterr().out
    assert out.is_file() and res["export"]["parity"]["ok"]
    assert "| metric | PyTorch | onnxruntime | difference |" in text
    pt, ox = res["evaluation"]["pytorch"], res["evaluation"]["onnxruntime"]
    for k in ("Rank-1", "mAP"):
        assert abs(pt[k] - ox[k]) < 0.5, (k, pt[k], ox[k])

    # an existing file, evaluated against a config of another input size: refused with a clear message
    with pytest.raises(SystemExit, match=r"exported from another model: input size 64x32 \(config INPUT.SIZE_TEST: "
                                         r"128x64\)"):
        cli.main(["--config-file", BASE, "--onnx", str(out), "--evaluate", *TINY, "INPUT.SIZE_TEST", "[128, 64]"])
