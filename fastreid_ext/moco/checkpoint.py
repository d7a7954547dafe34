"""MoCo-format checkpoints into FastReID's ResNet backbone, and our ``MoCoV2`` written in that format.

MoCo's reference code (He et al., CVPR 2020; Chen et al. 2020) saves ``{"epoch", "arch", "state_dict",
"optimizer"}`` of a ``DistributedDataParallel`` model: the query encoder is a torchvision ResNet under
``module.encoder_q.`` whose ``fc`` is the projection head, the key encoder under ``module.encoder_k.``, and the
queue as ``module.queue`` / ``module.queue_ptr``. LUPerson's released ResNet-50 (Fu et al., "Unsupervised
pre-training for person re-identification", CVPR 2021) uses this format. FastReID's ResNet names its layers as
torchvision does (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``downsample.0``), so the backbone is
``encoder_q`` minus ``fc``.

* :func:`load_moco_checkpoint`: maps ``<prefix><key>`` onto the backbone's keys (the prefix is found: the one under
  which most backbone keys exist, ``module.encoder_q.`` for MoCo files), checks every shape, refuses a checkpoint
  that leaves a backbone key unset, and reports what it skipped (projection head, key encoder, queue, anything
  else) in a :class:`MoCoLoadReport` and the log.
* ``MODEL.BACKBONE.NAME build_moco_resnet_backbone``: FastReID's ResNet initialised from the MoCo checkpoint at
  ``MODEL.BACKBONE.PRETRAIN_PATH`` (when ``PRETRAIN``); e.g. a ``Baseline`` fine-tuned from LUPerson's weights, or
  the analysis tool's ``feature=gap`` embedding of such a checkpoint without any training.
* :func:`export_moco_checkpoint`: our ``MoCoV2`` (ResNet backbone) in MoCo's format, so the loader is tested on a
  checkpoint written by our own training.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Union

import torch
from fastreid.modeling.backbones import BACKBONE_REGISTRY
from fastreid.modeling.backbones.resnet import build_resnet_backbone
from torch import nn

__all__ = ["MoCoCheckpointError", "MoCoLoadReport", "read_state_dict", "map_moco_state", "load_moco_checkpoint",
           "export_moco_checkpoint", "build_moco_resnet_backbone", "PREFIXES"]

logger = logging.getLogger(__name__)

#: prefixes tried for the query encoder (the first of the best-matching ones wins)
PREFIXES = ("module.encoder_q.", "encoder_q.", "module.backbone.", "backbone.", "module.", "")


class MoCoCheckpointError(ValueError):
    """The checkpoint does not fit the backbone (missing keys, shape mismatch, nothing recognised)."""


@dataclass
class MoCoLoadReport:
    """What :func:`load_moco_checkpoint` did: backbone keys ``loaded`` (from ``prefix``), ``skipped`` checkpoint
    keys by group, backbone keys ``missing``."""

    prefix: str
    loaded: List[str]
    skipped: Dict[str, List[str]] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} backbone tensors from '{self.prefix}*'"]
        for group, keys in self.skipped.items():
            ex = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
            parts.append(f"skipped {len(keys)} {group} key(s) ({ex})")
        if self.missing:
            parts.append(f"{len(self.missing)} backbone key(s) missing ({', '.join(self.missing[:5])})")
        return "; ".join(parts)


def read_state_dict(path_or_state: Union[str, os.PathLike, Mapping]) -> "OrderedDict[str, torch.Tensor]":
    """The tensors of a checkpoint: ``state_dict`` (MoCo), ``model`` (FastReID) or the mapping itself. Files are
    read with ``torch.load(weights_only=True)`` (no code from the file runs)."""
    if isinstance(path_or_state, Mapping):
        ckpt = path_or_state
    else:
        path = str(path_or_state)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MoCo checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle with other objects than tensors / containers / numbers / strings
            raise MoCoCheckpointError(f"cannot read {path} with torch.load(weights_only=True): {e}. Re-save its "
                                      f"state_dict alone (torch.save(ckpt['state_dict'], ...)) where you trust it")
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            break
    state = OrderedDict((k, v) for k, v in ckpt.items() if torch.is_tensor(v))
    if not state:
        raise MoCoCheckpointError("the checkpoint holds no tensors (expected MoCo's state_dict or a plain state dict)")
    return state


def _group(key: str, prefix: str) -> str:
    if "encoder_k." in key or key.startswith(("backbone_k.", "projector_k.")):
        return "key encoder"
    if key.rsplit(".", 1)[-1] in ("queue", "queue_ptr") or key in ("queue", "queue_ptr"):
        return "queue"
    rest = key[len(prefix):] if key.startswith(prefix) else key
    if rest.startswith(("fc.", "projector.")) or ".fc." in key:
        return "projection head"
    return "unexpected"


def map_moco_state(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                   prefix: Optional[str] = None):
    """``(mapped state for target, report)``: ``target`` is the backbone's ``state_dict()``."""
    tkeys = set(target)
    if prefix is None:
        scores = [(sum(1 for k in state if k.startswith(p) and k[len(p):] in tkeys), -i, p)
                  for i, p in enumerate(PREFIXES)]
        best = max(scores)
        if best[0] == 0:
            raise MoCoCheckpointError(
                f"no backbone key found in the checkpoint under any of the prefixes {PREFIXES}; its keys start with "
                f"{sorted({k.split('.')[0] for k in state})[:8]}, the backbone's with {sorted(tkeys)[:3]}")
        prefix = best[2]
    mapped, skipped = OrderedDict(), {}
    for k, v in state.items():
        rest = k[len(prefix):] if k.startswith(prefix) else None
        if rest is not None and rest in tkeys:
            if tuple(v.shape) != tuple(target[rest].shape):
                raise MoCoCheckpointError(f"shape mismatch for {k}: checkpoint {tuple(v.shape)}, backbone {rest} "
                                          f"{tuple(target[rest].shape)} (another ResNet depth / variant?)")
            mapped[rest] = v
        else:
            skipped.setdefault(_group(k, prefix), []).append(k)
    missing = sorted(k for k in tkeys - set(mapped) if not k.endswith("num_batches_tracked"))
    return mapped, MoCoLoadReport(prefix, list(mapped), skipped, missing)


def load_moco_checkpoint(backbone: nn.Module, path_or_state, prefix: Optional[str] = None,
                         strict: bool = True) -> MoCoLoadReport:
    """Load a MoCo-format checkpoint (module docstring) into ``backbone``; raises :class:`MoCoCheckpointError` when
    a backbone key is left unset (``strict``), and logs what was skipped."""
    state = read_state_dict(path_or_state)
    mapped, report = map_moco_state(state, backbone.state_dict(), prefix)
    if report.missing and strict:
        raise MoCoCheckpointError(f"the checkpoint leaves {len(report.missing)} backbone key(s) unset: "
                                  f"{report.missing[:10]} ({report.summary()})")
    backbone.load_state_dict(mapped, strict=False)
    level = logging.WARNING if report.skipped.get("unexpected") else logging.INFO
    logger.log(level, "MoCo checkpoint: %s", report.summary())
    return report


def export_moco_checkpoint(model, path, arch: str = "") -> str:
    """Write a ``MoCoV2`` model in MoCo's format: ``module.encoder_q.<backbone key>``, the projection head as
    ``module.encoder_q.fc.*``, the key encoder under ``module.encoder_k.``, ``module.queue`` / ``queue_ptr``."""
    sd = OrderedDict()
    for enc, bb, head in (("encoder_q", model.backbone, model.projector), ("encoder_k", model.backbone_k,
                                                                           model.projector_k)):
        for k, v in bb.state_dict().items():
            sd[f"module.{enc}.{k}"] = v.detach().cpu().clone()
        for k, v in head.state_dict().items():
            sd[f"module.{enc}.fc.{k}"] = v.detach().cpu().clone()
    sd["module.queue"] = model.queue.detach().cpu().clone()
    sd["module.queue_ptr"] = model.queue_ptr.detach().cpu().reshape(1).clone()
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"epoch": 0, "arch": arch or type(model.backbone).__name__.lower(), "state_dict": sd}, path)
    return path


@BACKBONE_REGISTRY.register()
def build_moco_resnet_backbone(cfg):
    """FastReID's ResNet (``MODEL.BACKBONE.DEPTH`` etc.) initialised from the MoCo checkpoint
    ``MODEL.BACKBONE.PRETRAIN_PATH`` when ``MODEL.BACKBONE.PRETRAIN``."""
    c = cfg.clone()
    c.defrost()
    c.MODEL.BACKBONE.PRETRAIN = False
    model = build_resnet_backbone(c)
    if cfg.MODEL.BACKBONE.PRETRAIN:
        if not cfg.MODEL.BACKBONE.PRETRAIN_PATH:
            raise ValueError("build_moco_resnet_backbone with MODEL.BACKBONE.PRETRAIN needs "
                             "MODEL.BACKBONE.PRETRAIN_PATH (a MoCo-format checkpoint, e.g. LUPerson's ResNet-50)")
        load_moco_checkpoint(model, cfg.MODEL.BACKBONE.PRETRAIN_PATH)
    return model
