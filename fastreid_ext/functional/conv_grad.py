"""A faster input gradient for stride-2 convolutions with few input channels (a ResNet stem on an image).

Plain torch, no FastReID import. RBNet's backbone 2 runs on the masked image ``x * M(x)``, so unlike a plain
re-id model it needs the gradient of the loss with respect to its *input image* (that is how L_id2 / L_tri2
reach the mask). For the ResNet stem (7x7, stride 2, 3 input channels) oneDNN's backward-data kernel is slow
on CPU: 67-77 ms against 15 ms for the stem's forward (16 x 3 x 256 x 128 and 64 x 3 x 128 x 64, 2 threads).

The transposed convolution of a stride-2 kernel splits into 2 x 2 phases (polyphase decomposition): the input
pixel ``(2a + r, 2b + s)`` only receives kernel taps ``u = r + p - 2e`` (and likewise for columns) from the
output pixels ``a + e``. Writing the four phases' sub-kernels as the 4 * C output channels of one ordinary
stride-1 convolution of the (padded) output gradient, and interleaving them with ``pixel_shuffle``, gives the
exact input gradient with a fast forward-convolution kernel: 26-29 ms there (2.6x faster), same values up
to float rounding (tests/test_conv_grad.py).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["polyphase_kernel", "conv2d_input_grad_stride2", "conv2d_fast_input_grad", "fast_input_grad_applies"]


def _taps(k: int, p: int) -> Tuple[int, int]:
    """Offsets ``e`` (output pixel ``a + e`` feeds input pixel ``2a + r``) over both phases ``r``."""
    e_min = min(math.ceil((r + p - k + 1) / 2) for r in (0, 1))
    e_max = max((r + p) // 2 for r in (0, 1))
    return e_min, e_max


def polyphase_kernel(weight: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """The ``(4 C, O, T_h, T_w)`` stride-1 kernel whose output channel ``4 c + 2 r + s`` is the gradient of input
    channel ``c`` at rows ``2a + r`` and columns ``2b + s`` (``pixel_shuffle`` order), for a stride-2
    convolution with ``weight`` (O, C, k_h, k_w) and ``padding`` (p_h, p_w)."""
    o, c, kh, kw = weight.shape
    (eh0, eh1), (ew0, ew1) = _taps(kh, padding[0]), _taps(kw, padding[1])
    th, tw = eh1 - eh0 + 1, ew1 - ew0 + 1
    rows, cols = [], []  # (phase, tap) -> kernel index, only the valid ones
    for r in (0, 1):
        for t in range(th):
            u = r + padding[0] - 2 * (t + eh0)
            if 0 <= u < kh:
                rows.append((r, t, u))
        for t in range(tw):
            v = r + padding[1] - 2 * (t + ew0)
            if 0 <= v < kw:
                cols.append((r, t, v))
    out = weight.new_zeros(c, 2, 2, o, th, tw)
    wt = weight.transpose(0, 1)  # (C, O, kh, kw)
    for r, t, u in rows:
        for s, q, v in cols:
            out[:, r, s, :, t, q] = wt[:, :, u, v]
    return out.reshape(4 * c, o, th, tw)


def conv2d_input_grad_stride2(grad_out: torch.Tensor, weight: torch.Tensor, padding: Sequence[int],
                              input_size: Sequence[int]) -> torch.Tensor:
    """``d loss / d input`` of ``conv2d(input, weight, stride=2, padding=padding)`` (dilation 1, groups 1) from
    ``grad_out`` (B, O, H_out, W_out), by the polyphase decomposition (module docstring)."""
    if grad_out.dim() != 4 or weight.dim() != 4 or grad_out.shape[1] != weight.shape[0]:
        raise ValueError(f"grad_out {tuple(grad_out.shape)} does not match weight {tuple(weight.shape)}")
    h, w = int(input_size[0]), int(input_size[1])
    (eh0, eh1), (ew0, ew1) = _taps(weight.shape[2], padding[0]), _taps(weight.shape[3], padding[1])
    ah, aw = (h + 1) // 2, (w + 1) // 2  # rows / columns per phase
    ho, wo = grad_out.shape[-2:]
    # phase row a reads gradient rows a + e_min .. a + e_max: a stride-1 conv with symmetric zero padding P
    # (no padded copy) puts that at its output row a + e_min + P; P covers both ends
    ph = max(0, -eh0, ah + eh1 - ho)
    pw = max(0, -ew0, aw + ew1 - wo)
    g = F.conv2d(grad_out, polyphase_kernel(weight, padding), padding=(ph, pw))
    g = g[..., eh0 + ph:eh0 + ph + ah, ew0 + pw:ew0 + pw + aw]
    return F.pixel_shuffle(g, 2)[..., :h, :w].contiguous()


def fast_input_grad_applies(conv: torch.nn.Conv2d) -> bool:
    """Whether :func:`conv2d_fast_input_grad` can stand in for ``conv``."""
    return (isinstance(conv, torch.nn.Conv2d) and tuple(conv.stride) == (2, 2) and tuple(conv.dilation) == (1, 1)
            and conv.groups == 1 and isinstance(conv.padding, tuple) and conv.padding_mode == "zeros")


class _FastInputGradConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = tuple(padding)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride=2, padding=padding)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = conv2d_input_grad_stride2(grad_out, weight, ctx.padding, x.shape[-2:]).to(x.dtype)
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, x, weight, [weight.shape[0]] if ctx.has_bias else None, [2, 2], list(ctx.padding),
                [1, 1], False, [0, 0], 1, [False, bool(ctx.needs_input_grad[1]),
                                           bool(ctx.has_bias and ctx.needs_input_grad[2])])
        return gx, gw, gb, None


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def conv2d_fast_input_grad(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a stride-2 ``conv`` (see :func:`fast_input_grad_applies`), whose backward computes the
    input gradient by :func:`conv2d_input_grad_stride2`. Same forward, same gradients; not twice differentiable.
    Falls back to ``conv(x)`` where it does not apply, where no input gradient is needed, off the CPU (the slow
    kernel is oneDNN's; cuDNN's is fine) and under autocast (mixed dtypes in the backward)."""
    if not (x.requires_grad and torch.is_grad_enabled() and x.device.type == "cpu" and not _autocast_on("cpu")
            and fast_input_grad_applies(conv)):
        return conv(x)
    return _FastInputGradConv2d.apply(x, conv.weight, conv.bias, conv.padding)
