"""The polyphase input gradient of stride-2 convolutions (functional/conv_grad.py), its use for backbone 2's
stem, and glibc's keep-freed-memory setting (utils/malloc.py)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fastreid_ext.functional.conv_grad import (conv2d_fast_input_grad, conv2d_input_grad_stride2,
                                               fast_input_grad_applies)


@pytest.mark.parametrize("cin,cout,k,p,h,w,bias", [
    (3, 16, 7, 3, 64, 32, False),   # the ResNet stem
    (3, 8, 7, 3, 33, 17, True),     # odd sizes
    (4, 5, 3, 1, 9, 10, True),
    (6, 8, 1, 0, 8, 7, False),      # a stride-2 1x1 shortcut
    (3, 4, 5, 2, 11, 12, False),
    (3, 4, 4, 1, 10, 10, True),     # even kernel
    (2, 3, 3, 0, 12, 9, False),     # no padding: some input pixels get no gradient from the last rows
])
def test_polyphase_input_gradient_equals_autograd(cin, cout, k, p, h, w, bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(cin, cout, k, stride=2, padding=p, bias=bias).double()
    x = torch.randn(2, cin, h, w, dtype=torch.double, requires_grad=True)
    y = conv(x)
    g = torch.randn_like(y)
    ref = torch.autograd.grad(y, [x, *conv.parameters()], g)
    gx = conv2d_input_grad_stride2(g, conv.weight.detach(), conv.padding, (h, w))
    torch.testing.assert_close(gx, ref[0], rtol=0, atol=1e-12)
    y2 = conv2d_fast_input_grad(x, conv)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    for a, b in zip(torch.autograd.grad(y2, [x, *conv.parameters()], g), ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_fast_path_only_where_it_applies():
    conv = torch.nn.Conv2d(3, 4, 3, stride=1, padding=1)
    assert not fast_input_grad_applies(conv)
    assert fast_input_grad_applies(torch.nn.Conv2d(3, 4, 7, stride=2, padding=3))
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    assert conv2d_fast_input_grad(x, conv).grad_fn.name() == "ConvolutionBackward0"   # plain conv
    big = torch.nn.Conv2d(3, 4, 7, stride=2, padding=3)
    assert conv2d_fast_input_grad(x.detach(), big).grad_fn.name() == "ConvolutionBackward0"  # no input grad
    assert "FastInputGrad" in conv2d_fast_input_grad(x, big).grad_fn.name()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes: the plain path
        assert "FastInputGrad" not in conv2d_fast_input_grad(x, big).grad_fn.name()
    with pytest.raises(ValueError, match="does not match"):
        conv2d_input_grad_stride2(torch.randn(1, 5, 4, 4), big.weight, (3, 3), (8, 8))


def test_multiscale_backbone_input_gradient_matches_fastreid_resnet():
    """Backbone 2 (an input that needs a gradient) takes the fast stem path: same features and gradients as
    FastReID's own ResNet forward."""
    import fastreid_ext
    from fastreid.modeling.backbones import build_backbone
    from fastreid_ext.modeling.backbones.multiscale import MultiScaleResNet

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.PRETRAIN", "False"])
    torch.manual_seed(0)
    resnet = build_backbone(cfg).double().train()
    ms = MultiScaleResNet(resnet)
    x = torch.randn(2, 3, 64, 32, dtype=torch.double)
    grads = []
    for forward in (resnet.forward, ms.forward):
        xi = x.clone().requires_grad_()
        out = forward(xi)
        out.square().sum().backward()
        grads.append((out.detach(), xi.grad, resnet.conv1.weight.grad.clone()))
        resnet.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def _page_faults_per_relu(mode):
    code = textwrap.dedent("""
        import resource, torch
        from fastreid_ext.utils.malloc import keep_freed_memory
        applied = keep_freed_memory()
        x = torch.ones(64, 68, 64, 32)  # 35 MB, above glibc's largest mmap threshold
        # Warm up to the steady state: PyTorch allocates with posix_memalign, which asks for a little more than
        # the freed 35 MB chunk, so the kept heap grows for the first few calls (one tensor each, page-faulting)
        # until freed neighbours coalesce into a block that fits; 3 warm-up calls were sometimes too few.
        for _ in range(20):
            torch.relu(x)
        faults = []
        for _ in range(10):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.relu(x)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        print(applied, sorted(faults)[5])  # the median call: a one-off heap growth does not count
    """)
    env = dict(os.environ, FASTREID_EXT_MALLOC=mode, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    applied, faults = out.stdout.split()
    return applied == "True", float(faults)


def _thp_always():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="glibc mallopt: Linux only")
@pytest.mark.skipif(_thp_always(), reason="transparent huge pages 'always': fresh mappings fault 2 MiB at a time, "
                                          "so page counts do not show the difference")
def test_keep_freed_memory_stops_page_faults_on_large_tensors():
    applied, kept = _page_faults_per_relu("keep")
    opted_out, system = _page_faults_per_relu("system")
    assert applied and not opted_out
    # glibc's default maps every 35 MB output afresh (~8,700 4 KiB pages); kept memory is reused
    assert system > 4000, system
    assert kept < system / 20, (kept, system)
