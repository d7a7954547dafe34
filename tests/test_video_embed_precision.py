"""ReidEmbedder's ``precision``: the network under ``torch.autocast`` (bf16 on the CPU here; fp16 on a GPU) gives
float32 unit features close to the float32 ones but not bit-identical (so autocast really ran); a wrong name is
refused. Tiny ResNet-18 at 64x32, BatchNorm statistics taken from the crops first (as after training)."""
import os

import numpy as np
import pytest
import torch

import fastreid_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512", "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.HEADS.NUM_CLASSES", "8"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _embedder(precision):
    from fastreid_ext.video.embed import ReidEmbedder

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/Base-SynthPed.yml"))
    cfg.merge_from_list(TINY)
    torch.manual_seed(0)
    return ReidEmbedder(cfg, batch_size=8, precision=precision)


def test_bf16_autocast_features_are_close_to_fp32_but_computed_in_bf16():
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (int(h), int(h) // 2, 3), dtype=np.uint8) for h in (80, 120, 64, 150, 96, 70)]
    ref, low = _embedder("fp32"), _embedder("bf16")
    x, _ = ref.preprocess(crops)
    # BN statistics from the crops (a random network with BN's default statistics blows activations up)
    bns = [m for m in ref.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    ref.model.train()
    with torch.no_grad():
        ref.model.backbone(ref.model.preprocess_image({"images": x.clone()}))
    ref.model.eval()
    low.model.load_state_dict(ref.model.state_dict())
    a, b = ref.embed(crops), low.embed(crops)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (6, 512)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert (a * b).sum(1).min() >= 0.99
    assert not np.array_equal(a, b)  # bf16 rounding shows: the autocast really ran


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        _embedder("int4")
