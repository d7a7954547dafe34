"""fastreid_ext.mmt.evaluation: AdaBN (BatchNorm statistics of the target domain) and the source + AdaBN
evaluation next to MMT, on tiny SynthPed domains."""
import os

import pytest
import torch

import fastreid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
        "DATASETS.SYNTHPED.PRESET", "tiny", "DATALOADER.NUM_WORKERS", "0", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "4", "TEST.IMS_PER_BATCH", "512",
        "DATASETS.NAMES", '("SynthPedB",)', "DATASETS.TESTS", '("SynthPedB",)']


pytestmark = pytest.mark.usefixtures("one_thread")


def test_adabn_sets_target_statistics_and_evaluates_a_checkpoint(datasets_root, tmp_path):
    from fastreid_ext.data.build import build_dataset
    from fastreid_ext.data.common import AnnotatedDataset
    from fastreid_ext.data.transforms import build_joint_transforms
    from fastreid_ext.modeling.multi_branch import build_multi_branch_model
    from fastreid_ext.mmt.evaluation import adabn, adabn_evaluate

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml"))
    cfg.merge_from_list(TINY + ["OUTPUT_DIR", str(tmp_path)])
    torch.manual_seed(0)
    model = build_multi_branch_model(cfg)
    ckpt = tmp_path / "source.pth"
    torch.save({"model": model.state_dict()}, ckpt)

    # the whole tiny target train split is one batch: the stem BN's mean is that of conv1's outputs on it
    model.eval()
    n = adabn(model, cfg)
    assert n == 1 and not model.training
    ds = AnnotatedDataset(build_dataset("SynthPedB", cfg).train, build_joint_transforms(cfg, is_train=False),
                          relabel=False)
    imgs = torch.stack([ds[i]["images"] for i in range(len(ds))])
    with torch.no_grad():
        x = model.preprocess_image({"images": imgs})
        conv = model.backbone.conv1(x)
    bn = model.backbone.bn1
    assert torch.allclose(bn.running_mean, conv.mean((0, 2, 3)), atol=1e-4)
    assert bn.momentum == 0.1  # the layers' momentum is restored

    res = adabn_evaluate(cfg, str(ckpt), "SynthPedB")
    assert 0.0 <= res["Rank-1"] <= 100.0 and 0.0 <= res["mAP"] <= 100.0


def test_pseudo_labels_after_adabn_use_target_statistics(datasets_root, tmp_path, monkeypatch):
    """mmt_pseudo_labels_adabn clusters with the source models' BN statistics re-estimated on the target train split:
    the mean nets it clusters with carry the target batch's stem statistics (not the checkpoint's), and it reports
    pl_adabn/ clusters and ARI of that clustering."""
    from fastreid.modeling.meta_arch import build_model

    from fastreid_ext.data.build import build_dataset
    from fastreid_ext.data.common import AnnotatedDataset
    from fastreid_ext.data.transforms import build_joint_transforms
    from fastreid_ext.mmt import measures

    from .test_multi_branch import mmt_cfg

    src = fastreid_ext.get_cfg()
    src.merge_from_file(os.path.join(ROOT, "configs/SynthPed/bagtricks_R18.yml"))
    src.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False", "MODEL.HEADS.NUM_CLASSES", "24"])
    ck = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        ck.append(str(tmp_path / f"src{seed}.pth"))
        torch.save({"model": build_model(src).state_dict()}, ck[-1])
    source_bn = torch.load(ck[0], weights_only=True)["model"]["backbone.bn1.running_mean"]
    cfg = mmt_cfg("Baseline", "MODEL.HEADS.NUM_CLASSES", "0", "DATASETS.SYNTHPED.PRESET", "tiny",
                  "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "512", "UDA.CLUSTERING", "kmeans",
                  "UDA.NUM_CLUSTERS", "5", "MODEL.MMT.WEIGHTS_1", ck[0], "MODEL.MMT.WEIGHTS_2", ck[1],
                  "OUTPUT_DIR", str(tmp_path / "m"))
    seen = []
    real = measures._cluster_quality
    monkeypatch.setattr(measures, "_cluster_quality", lambda out, prefix, model, *a: (seen.append(model),
                                                                                       real(out, prefix, model, *a))[1])
    out = measures.mmt_pseudo_labels_adabn(cfg, "unused")
    assert out["pl_adabn/clusters"] == 5 and -1.0 <= out["pl_adabn/ARI"] <= 1.0
    mean1 = seen[0].mean1
    ds = AnnotatedDataset(build_dataset("SynthPedB", cfg).train, build_joint_transforms(cfg, is_train=False),
                          relabel=False)
    imgs = torch.stack([ds[i]["images"] for i in range(len(ds))])
    with torch.no_grad():
        conv = mean1.backbone.conv1(mean1.preprocess_image({"images": imgs}))
    assert torch.allclose(mean1.backbone.bn1.running_mean, conv.mean((0, 2, 3)), atol=1e-4)
    assert not torch.allclose(mean1.backbone.bn1.running_mean, source_bn, atol=1e-3)
