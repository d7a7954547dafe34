"""The image encoder E_I split at its last block, for any backbone. Plain torch: no FastReID import.

Model A reads E_I's output (after its last block), Model B the input of the last block, and the fine-tuning
baseline trains only the last block (pose-transfer paper, Sec. 4 and 4.2). Backbones differ in how they run their
blocks (FastReID's ResNet calls ``layer4[i]`` one block at a time, with non-local blocks in between; MobileNetV2
runs ``features`` then ``conv``), so nothing here re-implements a backbone's ``forward``:

* the **branch point** is a module path inside the backbone (``MODEL.POSE_TRANSFER.BRANCH_POINT``; empty: found by
  :func:`default_branch_point`: ``layer4`` (ResNet, ResNeXt, ResNeSt, IBN), ``s4`` (RegNet), ``stage4`` (RepVGG),
  ``conv4`` (OSNet), else the last downsampling child of the backbone or of a ``Sequential`` child, e.g.
  MobileNetV2's ``features.14``);
* one probe pass (eval mode, no gradient) records the order in which modules run; the **entry** is the first module
  of the branch point's subtree to run, and everything that runs from the entry on is the **last block** (for
  MobileNetV2: ``features.14`` to ``features.17`` and ``conv``);
* :func:`run_encoder` runs the backbone's own ``forward`` with a temporary pre-hook on the entry that captures its
  input (the "mid" map); in training, when the output is not needed, the hook stops the pass there.

The backbone's parameters keep their names, so a checkpoint of FastReID's ``Baseline`` (``backbone.*``) loads
into E_I as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["EncoderSplit", "default_branch_point", "probe_split", "run_encoder"]

#: module names of the last stage in common backbone families, tried in this order
KNOWN_LAST_STAGES = ("layer4", "s4", "stage4", "conv4")


@dataclass
class EncoderSplit:
    """Where E_I is split (module docstring)."""

    branch_point: str
    entry: str  # first module of the branch point's subtree to run
    last_block_modules: Tuple[str, ...]  # modules that run from the entry on (and their descendants)
    trunk_roots: Tuple[str, ...]  # maximal subtrees that run before the entry (everything frozen by "trunk")
    mid_channels: int
    out_channels: int
    mid_stride: int
    out_stride: int

    def is_last_block(self, module_name: str) -> bool:
        return any(module_name == m or module_name.startswith(m + ".") for m in self.last_block_modules)

    def last_block_parameters(self, backbone: nn.Module) -> List[str]:
        return [n for n, _ in backbone.named_parameters() if self.is_last_block(n.rsplit(".", 1)[0])]


class _Stop(Exception):
    pass


def _spatial(x) -> Optional[Tuple[int, int]]:
    return tuple(x.shape[-2:]) if isinstance(x, torch.Tensor) and x.dim() == 4 else None


def _trace(backbone: nn.Module, size: Tuple[int, int]):
    """Run order, input and output spatial sizes and channels of every module on a zero image of ``size``."""
    order: List[str] = []
    shapes: Dict[str, tuple] = {}
    handles = []
    for name, m in backbone.named_modules():
        if not name:
            continue

        def pre(mod, args, name=name):
            if name not in shapes:
                order.append(name)
                x = args[0] if args else None
                shapes[name] = (_spatial(x), int(x.shape[1]) if isinstance(x, torch.Tensor) and x.dim() >= 2 else 0,
                                None, 0)

        def post(mod, args, out, name=name):
            s = shapes[name]
            if s[2] is None:
                shapes[name] = (s[0], s[1], _spatial(out), int(out.shape[1]) if isinstance(out, torch.Tensor) and
                                out.dim() >= 2 else 0)

        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    was = backbone.training
    p = next(backbone.parameters(), None)
    x = torch.zeros(1, 3, *size, device=p.device if p is not None else "cpu",
                    dtype=p.dtype if p is not None else torch.float32)
    try:
        backbone.eval()
        with torch.no_grad():
            out = backbone(x)
    finally:
        backbone.train(was)
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise TypeError(f"E_I ({type(backbone).__name__}) must return a (B, C, h, w) feature map, got "
                        f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    return order, shapes, out


def default_branch_point(backbone: nn.Module, size: Tuple[int, int] = (128, 64)) -> str:
    """The module path of E_I's last block (module docstring); a TypeError naming the key when none is found."""
    names = dict(backbone.named_modules())
    for cand in KNOWN_LAST_STAGES:
        if cand in names:
            return cand
    order, shapes, _ = _trace(backbone, size)
    roots = [n for n in order if "." not in n]
    seq_children = [n for n in order if n.count(".") == 1 and isinstance(names[n.split(".")[0]], nn.Sequential)]
    cands = [n for n in order if n in set(roots) | set(seq_children)]
    down = [n for n in cands if shapes[n][0] and shapes[n][2] and shapes[n][2][0] < shapes[n][0][0]]
    if not down:
        raise TypeError(
            f"cannot find the last block of E_I ({type(backbone).__name__}): set MODEL.POSE_TRANSFER.BRANCH_POINT to "
            f"the module path whose input Model B branches from (top-level children: {roots})")
    return down[-1]


def probe_split(backbone: nn.Module, branch_point: str = "", size: Tuple[int, int] = (128, 64)) -> EncoderSplit:
    """Split ``backbone`` at ``branch_point`` (empty: :func:`default_branch_point`); see the module docstring."""
    bp = branch_point or default_branch_point(backbone, size)
    names = dict(backbone.named_modules())
    if bp not in names or not bp:
        raise ValueError(f"MODEL.POSE_TRANSFER.BRANCH_POINT {bp!r} is not a module of E_I "
                         f"({type(backbone).__name__}); top-level children: {[n for n in names if n and '.' not in n]}")
    order, shapes, out = _trace(backbone, size)
    in_sub = [n for n in order if n == bp or n.startswith(bp + ".")]
    if not in_sub:
        raise ValueError(f"MODEL.POSE_TRANSFER.BRANCH_POINT {bp!r}: that module never runs in E_I's forward")
    entry = in_sub[0]
    idx = order.index(entry)
    ancestors = {entry.rsplit(".", k)[0] for k in range(1, entry.count(".") + 1)}
    after = [n for n in order[idx:]]
    before = [n for n in order[:idx] if n not in ancestors]
    # maximal subtrees: drop names whose parent is in the same list
    def roots_of(ns):
        s = set(ns)
        return tuple(n for n in ns if not any(n.startswith(o + ".") for o in s if o != n))

    mid_shape, mid_c = shapes[entry][0], shapes[entry][1]
    if mid_shape is None or mid_c <= 0:
        raise TypeError(f"the input of E_I's branch point {entry!r} is not a (B, C, h, w) map")
    h, w = size
    return EncoderSplit(branch_point=bp, entry=entry, last_block_modules=roots_of(after), trunk_roots=roots_of(before),
                        mid_channels=int(mid_c), out_channels=int(out.shape[1]), mid_stride=h // mid_shape[0],
                        out_stride=h // int(out.shape[2]))


def _tracing() -> bool:
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting())


def run_encoder(backbone: nn.Module, split: EncoderSplit, x: torch.Tensor, need_out: bool = True,
                stop_early: bool = False) -> Dict[str, torch.Tensor]:
    """Run E_I on normalized images: ``{"mid": input of the last block, "out": E_I's output}`` (``"out"`` only with
    ``need_out``). Without ``need_out`` and with ``stop_early`` (the model passes it in training) the pass stops at
    the branch point, saving E_I's last block; otherwise, and always under ``torch.jit.trace`` / ``torch.compile`` /
    ``torch.export``, the whole backbone runs (no exception inside a hook, so exporters can follow it)."""
    box: Dict[str, torch.Tensor] = {}
    entry = backbone.get_submodule(split.entry)
    stop = not need_out and stop_early and not _tracing()

    def grab(mod, args):
        box["mid"] = args[0]
        if stop:
            raise _Stop()

    h = entry.register_forward_pre_hook(grab)
    try:
        out = backbone(x)
        if need_out:
            box["out"] = out
    except _Stop:
        pass
    finally:
        h.remove()
    if "mid" not in box:
        raise RuntimeError(f"E_I's branch point {split.entry!r} did not run")
    return box
