"""The Additional Encoder E_A. Plain torch: no FastReID import.

Pose-transfer paper, Sec. 3: "E_A takes a feature map obtained from an intermediate output of E_I and produces the
re-id feature through several convolution layers with skip connections"; Sec. 4: Model A adds 4 convolution layers
after E_I's last convolution block, Model B branches before the last block and adds 5. Kernel size, width,
normalization, where the skips go and the initialisation are not given; ours (all configurable,
``MODEL.POSE_TRANSFER.EA``):

* layer 1: ``first_kernel x first_kernel`` conv (default ``kernel``; stride ``first_stride``) from the input's
  channels to ``width`` + norm, added to a skip (identity when the shapes agree, else a 1x1 conv + norm projection,
  as in ResNet; a 1x1 first layer that changes the shape is itself that projection and has no second one), then
  ReLU. ``first_kernel 1`` keeps a wide input cheap (MobileNetV2's 1280 channels for Model A);
* layers 2..depth: ``x <- ReLU(x + norm(conv_k x k(x)))`` (``skip="residual"``), or ``ReLU(norm(conv(x)))``
  (``skip="none"``: a plain stack, for ablation);
* the last norm of every residual branch starts at zero (``zero_init=True``, Goyal et al., "Accurate, large
  minibatch SGD", 2017): E_A starts as its skip path, so Model A (same width as E_I's output) starts out returning
  E_I's own feature map and only moves away from it as the target asks.
"""
from __future__ import annotations

from torch import nn

from .norm import make_norm2d

__all__ = ["AdditionalEncoder", "SKIPS"]

SKIPS = ("residual", "none")


class _ConvLayer(nn.Module):
    def __init__(self, cin, cout, kernel, stride, norm, min_batch, skip, zero_init):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=(norm == "none"))
        self.norm = make_norm2d(norm, cout, min_batch)
        if kernel == 1 and (cin != cout or stride != 1):
            skip = "none"  # the layer is the projection
        self.skip = skip
        self.proj = None
        if skip == "residual" and (cin != cout or stride != 1):
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm2d(norm, cout, min_batch))
        self.relu = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if skip == "residual" and zero_init and getattr(self.norm, "weight", None) is not None:
            nn.init.zeros_(self.norm.weight)

    def forward(self, x):
        y = self.norm(self.conv(x))
        if self.skip == "residual":
            y = y + (x if self.proj is None else self.proj(x))
        return self.relu(y)


class AdditionalEncoder(nn.Module):
    """E_A: ``depth`` conv layers with skip connections from ``in_channels`` to ``width`` channels (module
    docstring); ``forward(feature map) -> feature map`` (B, width, h', w')."""

    def __init__(self, in_channels: int, width: int, depth: int, kernel: int = 3, norm: str = "BN",
                 skip: str = "residual", first_stride: int = 1, zero_init: bool = True, bn_min_batch: int = 8,
                 first_kernel: int = 0):
        super().__init__()
        first_kernel = int(first_kernel) or int(kernel)
        if depth < 1:
            raise ValueError(f"MODEL.POSE_TRANSFER.EA.DEPTH must be >= 1, got {depth}")
        if width < 1 or min(kernel, first_kernel) < 1 or kernel % 2 == 0 or first_kernel % 2 == 0:
            raise ValueError(f"MODEL.POSE_TRANSFER.EA.WIDTH must be >= 1 and EA.KERNEL / EA.FIRST_KERNEL odd, got "
                             f"{width}, {kernel}, {first_kernel}")
        if skip not in SKIPS:
            raise ValueError(f"MODEL.POSE_TRANSFER.EA.SKIP must be one of {SKIPS}, got {skip!r}")
        if first_stride not in (1, 2):
            raise ValueError(f"MODEL.POSE_TRANSFER.EA.FIRST_STRIDE must be 1 or 2, got {first_stride}")
        self.in_channels, self.width, self.depth = int(in_channels), int(width), int(depth)
        layers = []
        cin = in_channels
        for i in range(depth):
            layers.append(_ConvLayer(cin, width, first_kernel if i == 0 else kernel, first_stride if i == 0 else 1,
                                     norm, bn_min_batch, skip, zero_init))
            cin = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
