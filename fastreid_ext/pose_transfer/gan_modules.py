"""The generator side and the discriminators of the pose-guided generator stage. Plain torch: no FastReID import.

FD-GAN (Ge et al., "FD-GAN: Pose-guided feature distilling GAN for robust person re-identification", NeurIPS 2018,
Sec. 3 and its public code), as the pose-transfer paper uses it ("Person re-identification based on transfer
learning of pose-invariant domain-dependent features", Sec. 3, Fig. 1):

* :class:`PoseEncoder` E_P: pose heatmaps (one channel per joint) -> five stride-2 4x4 convolutions (LeakyReLU 0.2,
  norm) -> one convolution over the remaining (H/32, W/32) map -> a 128-d pose feature;
* :class:`PoseGenerator` G: ``[identity (512), pose (128), noise (256)]`` -> a transposed convolution to an
  (H/32, W/32) map -> five stride-2 4x4 transposed convolutions (ReLU, norm, dropout) -> tanh image in [-1, 1];
  the same code serves 128 x 64 and 256 x 128 (any size divisible by 32); optionally (FD-GAN's
  ``--connect-layers``) E_P's intermediate maps are concatenated into the decoder layers of the same size;
* :class:`IdentityDiscriminator` D_i: a Siamese encoder (its own copy of E_I's architecture) + FD-GAN's
  ``(f1 - f2)^2 -> BatchNorm -> Linear`` head: "is the second image the same person as the first?";
* :class:`PoseDiscriminator` D_p: pix2pix's PatchGAN (Isola et al., CVPR 2017) on the image concatenated with the
  target pose heatmaps: "does this image show a person in this pose?".

Weights start from N(0, 0.02) (BatchNorm weights N(1, 0.02)), FD-GAN's / pix2pix's initialisation
(:func:`gan_init`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .verifier import VerificationClassifier

__all__ = ["NORMS", "gan_init", "bottleneck_size", "PoseEncoder", "PoseGenerator", "IdentityDiscriminator",
           "PoseDiscriminator"]

NORMS = ("BN", "IN", "none")
LEVELS = 5  # stride-2 layers of E_P and G (FD-GAN: 256 x 128 -> 8 x 4)


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "BN":
        return nn.BatchNorm2d(c)
    if kind == "IN":
        return nn.InstanceNorm2d(c, affine=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"MODEL.POSE_TRANSFER.GAN norm must be one of {NORMS}, got {kind!r}")


def gan_init(module: nn.Module) -> nn.Module:
    """FD-GAN's ``weights_init_normal``: conv / linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


def bottleneck_size(size, key: str = "INPUT.SIZE_TRAIN") -> Tuple[int, int]:
    """(H / 32, W / 32) for an input ``size`` (H, W); a ValueError naming ``key`` unless both divide by 32."""
    h, w = (int(s) for s in size)
    f = 2 ** LEVELS
    if h <= 0 or w <= 0 or h % f or w % f:
        raise ValueError(f"{key} {[h, w]}: the pose encoder and generator halve the size {LEVELS} times, so height "
                         f"and width must be multiples of {f} (e.g. [128, 64] or [256, 128])")
    return h // f, w // f


class PoseEncoder(nn.Module):
    """E_P: ``(B, joints, H, W)`` pose heatmaps -> ``(B, dim)`` (module docstring)."""

    def __init__(self, joints: int, size, dim: int = 128, ngf: int = 64, norm: str = "BN"):
        super().__init__()
        self.joints, self.dim, self.size = int(joints), int(dim), tuple(int(s) for s in size)
        bh, bw = bottleneck_size(size)
        ch = [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8]
        layers = [nn.Conv2d(self.joints, ch[0], 4, 2, 1, bias=norm != "BN")]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.LeakyReLU(0.2), nn.Conv2d(a, b, 4, 2, 1, bias=norm != "BN"), _norm(norm, b)]
        # the last norm acts on a 1 x 1 map: instance norm would zero it, so IN configurations use none there
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(ch[-1], self.dim, (bh, bw), bias=norm != "BN"),
                   _norm(norm if norm == "BN" else "none", self.dim)]
        self.net = nn.Sequential(*layers)
        # indices of the modules whose outputs are the intermediate maps (conv 1, then each norm of convs 2-5)
        self._skip_at = (0,) + tuple(3 * k for k in range(1, LEVELS))
        self.channels = tuple(ch)
        gan_init(self)

    def _check(self, maps: torch.Tensor) -> None:
        if maps.dim() != 4 or maps.shape[1] != self.joints or tuple(maps.shape[-2:]) != self.size:
            raise ValueError(f"E_P expects (B, {self.joints}, {self.size[0]}, {self.size[1]}) pose maps "
                             f"(MODEL.POSE_TRANSFER.GAN.POSE.JOINTS, INPUT.SIZE_TRAIN), got {tuple(maps.shape)}")

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        self._check(maps)
        return self.net(maps).flatten(1)

    def forward_maps(self, maps: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """``(pose feature (B, dim), [the five intermediate maps at H/2, H/4, ..., H/32]``) (each after its conv and
        norm, before the next activation): the maps FD-GAN's generator concatenates into its decoder
        (``--connect-layers``, :class:`PoseGenerator`)."""
        self._check(maps)
        x, skips = maps, []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in self._skip_at:
                skips.append(x)
        return x.flatten(1), skips


class PoseGenerator(nn.Module):
    """G: ``(identity (B, id_dim), pose (B, pose_dim), noise (B, noise_dim))`` -> ``(B, 3, H, W)`` in [-1, 1].

    ``connect_layers`` (FD-GAN's ``--connect-layers``, 0-5; its default 0): the first ``connect_layers`` decoder
    layers, counted from the bottleneck, read their input concatenated with E_P's intermediate map of the same size
    (``pose_skips`` from :meth:`PoseEncoder.forward_maps`, channels ``skip_channels``), a U-Net between E_P and G: the
    target pose reaches the decoder at full resolution instead of only through the 128-d vector."""

    def __init__(self, id_dim: int, pose_dim: int, noise_dim: int, size, ngf: int = 64, dropout: float = 0.2,
                 norm: str = "BN", out_channels: int = 3, connect_layers: int = 0,
                 skip_channels: Optional[Sequence[int]] = None):
        super().__init__()
        self.id_dim, self.pose_dim, self.noise_dim = int(id_dim), int(pose_dim), int(noise_dim)
        self.size = tuple(int(s) for s in size)
        self.connect_layers = int(connect_layers)
        if not 0 <= self.connect_layers <= LEVELS:
            raise ValueError(f"MODEL.POSE_TRANSFER.GAN.G.CONNECT_LAYERS must be in 0..{LEVELS}, got {connect_layers}")
        skip_channels = list(skip_channels) if skip_channels is not None else [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8]
        if len(skip_channels) != LEVELS:
            raise ValueError(f"skip_channels must list E_P's {LEVELS} map widths, got {skip_channels}")
        # decoder layer k (0 = next to the bottleneck) gets E_P's map of the same size: E_P's map LEVELS - 1 - k
        self.skip_channels = [skip_channels[LEVELS - 1 - k] if k < self.connect_layers else 0 for k in range(LEVELS)]
        bh, bw = bottleneck_size(size)
        bias = norm != "BN"
        cin = self.id_dim + self.pose_dim + self.noise_dim
        self.stem = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, ngf * 8, (bh, bw), bias=bias),
                                  _norm(norm, ngf * 8), nn.Dropout(dropout))
        ch = [ngf * 8, ngf * 8, ngf * 4, ngf * 2, ngf]
        ups = []
        for k, (a, b) in enumerate(zip(ch[:-1], ch[1:])):
            ups += [nn.ReLU(), nn.ConvTranspose2d(a + self.skip_channels[k], b, 4, 2, 1, bias=bias), _norm(norm, b),
                    nn.Dropout(dropout)]
        ups += [nn.ReLU(), nn.ConvTranspose2d(ch[-1] + self.skip_channels[-1], out_channels, 4, 2, 1), nn.Tanh()]
        self.up = nn.Sequential(*ups)
        gan_init(self)

    def forward(self, identity: torch.Tensor, pose: torch.Tensor, noise: torch.Tensor,
                pose_skips: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        for name, t, d in (("identity", identity, self.id_dim), ("pose", pose, self.pose_dim),
                           ("noise", noise, self.noise_dim)):
            if t.dim() != 2 or t.shape[1] != d or t.shape[0] != identity.shape[0]:
                raise ValueError(f"G's {name} input must be (B, {d}), got {tuple(t.shape)}")
        if self.connect_layers and (pose_skips is None or len(pose_skips) != LEVELS):
            raise ValueError(f"G with CONNECT_LAYERS {self.connect_layers} needs E_P's {LEVELS} intermediate maps "
                             f"(PoseEncoder.forward_maps), got {None if pose_skips is None else len(pose_skips)}")
        z = torch.cat([identity, pose, noise], 1)[..., None, None]
        x = self.stem(z)
        for i, layer in enumerate(self.up):
            k = i // 4  # decoder layer: [ReLU, ConvTranspose, norm, dropout] each, the last [ReLU, ConvTranspose, tanh]
            if i % 4 == 0 and k < self.connect_layers:
                x = torch.cat([x, pose_skips[LEVELS - 1 - k]], 1)
            x = layer(x)
        return x


class IdentityDiscriminator(nn.Module):
    """D_i: ``forward(x1, x2)`` (normalized images) -> ``(B,)`` logits "x2 shows the person of x1"; a Siamese
    ``encoder`` (any module returning a (B, C, h, w) map, e.g. a copy of E_I), global average pooling and FD-GAN's
    squared-difference head. With ``fix_bn`` (FD-GAN's ``set_bn_fix``) its BatchNorm layers stay in eval mode."""

    def __init__(self, encoder: nn.Module, dim: int, fix_bn: bool = True, bn_min_batch: int = 8):
        super().__init__()
        self.encoder = encoder
        self.head = VerificationClassifier(dim, outputs=1, batch_norm=True, bn_min_batch=bn_min_batch)
        self.fix_bn = bool(fix_bn)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.fix_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=(2, 3))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        f = self.features(torch.cat([x1, x2], 0))
        return self.head(f[:len(x1)], f[len(x1):])


class PoseDiscriminator(nn.Module):
    """D_p: PatchGAN on ``cat(image, pose maps)`` -> ``(B, 1, h, w)`` patch logits (FD-GAN's ``NLayerDiscriminator``,
    3 stride-2 layers, then two stride-1 ones)."""

    def __init__(self, in_channels: int, ndf: int = 64, layers: int = 3, norm: str = "BN"):
        super().__init__()
        self.in_channels = int(in_channels)
        bias = norm != "BN"
        seq = [nn.Conv2d(self.in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2 ** n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=bias), _norm(norm, ndf * mult), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2 ** layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=bias), _norm(norm, ndf * mult), nn.LeakyReLU(0.2),
                nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.net = nn.Sequential(*seq)
        gan_init(self)

    def forward(self, image: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        x = torch.cat([image, maps.to(image.dtype)], 1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"D_p expects 3 + joints = {self.in_channels} channels, got {tuple(image.shape)} image "
                             f"and {tuple(maps.shape)} pose maps")
        return self.net(x)
