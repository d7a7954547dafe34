"""Per-loss-term gradient norms (fastreid_ext/functional/grad_norms.py, tools/loss_gradients.py)."""
import math

import pytest
import torch

from fastreid_ext.functional.grad_norms import loss_gradient_norms, mean_norms

pytestmark = pytest.mark.usefixtures("one_thread")


def test_norms_per_term_and_group_by_hand():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    v = torch.nn.Parameter(torch.tensor([3.0]))
    losses = {"a": 3 * w.sum(), "b": (v ** 2).sum() + 0 * w.sum()}
    n = loss_gradient_norms(losses, {"w": [w], "v": [v]})
    # d a / d w = (3, 3): sqrt(18); a does not reach v; d b / d v = 2 v = 6; b reaches w with a zero gradient
    assert n["a"]["w"] == pytest.approx(math.sqrt(18)) and n["a"]["v"] == 0.0
    assert n["b"]["v"] == pytest.approx(6.0) and n["b"]["w"] == 0.0
    assert n["total"]["w"] == pytest.approx(math.sqrt(18)) and n["total"]["v"] == pytest.approx(6.0)
    assert w.grad is None and v.grad is None  # nothing accumulated into .grad
    m = mean_norms([n, {t: {g: 3 * x for g, x in row.items()} for t, row in n.items()}])
    assert m["b"]["v"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="not a scalar"):
        loss_gradient_norms({"c": w * 2}, {"w": [w]})


def test_tool_on_rbnet_reports_every_term_and_the_detached_mask_path(datasets_root, tmp_path):
    """RBNet's five terms all reported; with MODEL.RBNET.MASK_DETACH the identity losses of the masked pass no
    longer reach the shared backbone through the mask and the reverse backbone, so L_tri2's gradient on it is
    that of backbone 2 alone: it must shrink (the mask path only adds a component to it on the same batch)."""
    import fastreid_ext
    from fastreid_ext.engine.loss_gradients import build, main, measure_model

    tiny = ["INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "INPUT.PADDING.SIZE", "2",
            "DATASETS.SYNTHPED.PRESET", "tiny", "SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.NUM_INSTANCE", "4", "MODEL.RBNET.HEATMAP.SIGMA", "1.0", "SEED", "3"]
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file("projects/RBNet/configs/SynthPed/rbnet_R18.yml")
    cfg.merge_from_list(tiny + ["OUTPUT_DIR", str(tmp_path / "run")])
    model, it = build(cfg)
    batch = next(it)
    full = measure_model(model, [batch])
    assert set(full) == {"loss_cls", "loss_triplet", "loss_heatmap", "loss_cls2", "loss_triplet2", "total"}
    assert all(math.isfinite(x) and x >= 0 for row in full.values() for x in row.values())
    assert full["loss_heatmap"]["backbone"] > 0  # L_MSE trains the shared backbone through the reverse backbone
    model.mask_detach = True  # what MODEL.RBNET.MASK_DETACH True builds
    det = measure_model(model, [batch])
    # same weights, same batch: the plain-branch terms are unchanged, L_tri2 loses its mask-path component
    assert det["loss_cls"]["backbone"] == pytest.approx(full["loss_cls"]["backbone"], rel=1e-5)
    assert det["loss_triplet2"]["backbone"] < full["loss_triplet2"]["backbone"]
    with pytest.raises(SystemExit):
        main(["--config-file", "projects/RBNet/configs/SynthPed/rbnet_R18.yml", "--batches", "0"])
