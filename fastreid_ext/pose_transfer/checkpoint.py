"""Loading a source-trained encoder into E_I (and, when present, E_A / C_v). Plain torch: no FastReID import.

A source checkpoint may come from this method (``backbone.*``, ``ea.*``, ``verifier.*``, ``heads.*``), from
FastReID's ``Baseline`` or any of our Baseline-like models (``backbone.*``), from MMT (``net1.backbone.*``), from
the pose-invariant E_I of the generator stage (any prefix, ``TRANSFER.SOURCE_PREFIX``) or be a bare backbone
state dict. FastReID checkpoints keep the weights under ``"model"``; ``module.`` (DataParallel) is stripped.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Dict, Iterable, List, Optional, Tuple

import torch

logger = logging.getLogger(__name__)

__all__ = ["read_state_dict", "match_prefix", "load_matching", "SOURCE_PREFIXES"]

#: prefixes tried for E_I with ``TRANSFER.SOURCE_PREFIX auto``, in order
SOURCE_PREFIXES = ("backbone.", "net1.backbone.", "mean1.backbone.", "")


def read_state_dict(path: str, key: str = "TRANSFER.SOURCE_WEIGHTS") -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (``"model"`` / ``"state_dict"`` unwrapped, ``module.`` stripped)."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"{key} {path!r} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError) as e:
        logger.warning("%s %s does not load with weights_only=True (%s); loading it as a full pickle", key, path,
                       str(e).splitlines()[0] if str(e) else type(e).__name__)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    for k in ("model", "state_dict"):
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict):
            obj = obj[k]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{key} {path}: expected a state dict (or a FastReID checkpoint), got {type(obj).__name__}")
    sd = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            sd[k[len("module."):] if k.startswith("module.") else k] = v
    return sd


def _fit(sd: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], prefix: str
         ) -> Tuple[List[str], List[str], List[str]]:
    """``(missing, shape mismatches, unexpected)`` of ``sd`` under ``prefix`` for ``target``. Unexpected: tensors
    under a non-empty prefix that ``target`` lacks (a ResNet-34 checkpoint holds every ResNet-18 tensor plus
    more blocks); for the empty prefix (a bare backbone state dict) every tensor of ``sd``."""
    missing, bad = [], []
    for k, v in target.items():
        src = sd.get(prefix + k)
        if src is None:
            if k.endswith("num_batches_tracked"):
                continue
            missing.append(k)
        elif tuple(src.shape) != tuple(v.shape):
            bad.append(f"{prefix + k} {tuple(src.shape)} vs {tuple(v.shape)}")
    extra = [k for k in sd if k.startswith(prefix) and k[len(prefix):] not in target]
    return missing, bad, extra


def match_prefix(sd: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor], prefix: str = "auto",
                 key: str = "TRANSFER.SOURCE_WEIGHTS", path: str = "", describe: str = "E_I") -> str:
    """The prefix under which ``sd`` holds exactly the tensors of ``target`` (a module's state dict) with the same
    shapes (nothing missing, nothing more under that prefix); ``prefix`` ``"auto"`` tries :data:`SOURCE_PREFIXES`. A
    ValueError naming ``key`` explains the closest miss."""
    cands: Iterable[str] = SOURCE_PREFIXES if prefix == "auto" else (prefix,)
    report = []
    for p in cands:
        missing, bad, extra = _fit(sd, target, p)
        if not missing and not bad and not extra:
            return p
        report.append((len(missing) + len(bad) + len(extra), p, missing, bad, extra))
    report.sort(key=lambda r: r[0])
    n, p, missing, bad, extra = report[0]
    details = []
    if bad:
        details.append(f"{len(bad)} shape mismatch(es), e.g. {'; '.join(bad[:3])}")
    if missing:
        details.append(f"{len(missing)} missing tensor(s), e.g. {', '.join(p + m for m in missing[:3])}")
    if extra:
        details.append(f"{len(extra)} tensor(s) {describe} does not have, e.g. {', '.join(extra[:3])}")
    tried = ", ".join(repr(c) for c in cands)
    raise ValueError(
        f"{key} {path} does not fit {describe}: closest prefix {p!r} has {' and '.join(details)} (prefixes tried: "
        f"{tried}; the checkpoint has {len(sd)} tensors, e.g. {', '.join(list(sd)[:3])}). Check that the source "
        f"model used the same MODEL.BACKBONE (NAME, DEPTH, WITH_IBN, ...) or set TRANSFER.SOURCE_PREFIX.")


def read_encoder_state(path: str, target: Dict[str, torch.Tensor], key: str, prefix: str = "auto"
                       ) -> Dict[str, torch.Tensor]:
    """E_I's tensors (the names of ``target``, a module's state dict) from the checkpoint at ``path``, under the
    prefix :func:`match_prefix` finds; errors name ``key`` (e.g. ``--encoder-weights``) and the file."""
    sd = read_state_dict(path, key)
    pre = match_prefix(sd, target, prefix, key=key, path=path)
    return {k: sd[pre + k] for k in target}


def load_matching(module: torch.nn.Module, sd: Dict[str, torch.Tensor], prefix: str,
                  skip: Optional[Iterable[str]] = ()) -> Tuple[List[str], List[str]]:
    """Copy the tensors ``sd[prefix + name]`` whose shapes match into ``module`` (not strict), except the names in
    ``skip``; returns ``(loaded, left)`` names of ``module``'s state dict."""
    own = module.state_dict()
    skip = set(skip or ())
    sub = {k: sd[prefix + k] for k, v in own.items()
           if prefix + k in sd and tuple(sd[prefix + k].shape) == tuple(v.shape) and k not in skip}
    if sub:
        module.load_state_dict(sub, strict=False)
    return sorted(sub), sorted(k for k in own if k not in sub)
