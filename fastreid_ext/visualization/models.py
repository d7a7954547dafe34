"""Models for the visualization tools: built from a config (+ checkpoint), reached only through the multi-branch
interface (:mod:`fastreid_ext.modeling.multi_branch`): ``feature_maps`` / ``layer_maps`` for activation maps,
``pooled_maps`` + ``retrieval_feature`` for the similarity decomposition, ``branch_features`` /
``retrieval_feature`` for ranked lists. A wrapper that is not itself an interface model (MMT) is shown through the
interface models it holds (:func:`fastreid_ext.modeling.multi_branch.multi_branch_members`: ``net1``, ``net2``,
``mean1``, ``mean2``); a FastReID ``Baseline``-like model gets the interface with
:func:`fastreid_ext.modeling.multi_branch.with_multi_branch`.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.multi_branch import MultiBranchModel, multi_branch_members, with_multi_branch
from .similarity import (NotDecomposable, PairDecomposition, affine_terms, check_affine, combine_branches,
                         cosine_decomposition, pooling_contributions)

__all__ = ["ModelSpec", "parse_model_tokens", "load_model", "interface_models", "named_maps", "input_images",
           "pooling_of", "branch_terms", "decompose_pair", "retrieval_features", "RETRIEVAL", "INPUT",
           "INPUT_MASK"]

logger = logging.getLogger(__name__)

#: pseudo layer: the map(s) each retrieval branch's feature is pooled from (``pooled_maps``)
RETRIEVAL = "retrieval"
#: pseudo layer: the image the model sees (its normalised input mapped back to 0..255)
INPUT = "input"
#: pseudo layer: the person masks the batch carries (``batched_inputs["masks"]``, loaded when the model's config sets
#: ``DATASETS.ANNOTATIONS.LOAD_MASKS``, e.g. JointIBN's background removal)
INPUT_MASK = "input_mask"


@dataclass
class ModelSpec:
    """``NAME CONFIG [WEIGHTS] [layers=a,b] [member=m] [KEY=VALUE ...]`` of a ``--model`` option."""

    name: str
    config: str
    weights: str = ""
    layers: List[str] = field(default_factory=list)
    member: str = ""
    opts: List[str] = field(default_factory=list)


def parse_model_tokens(tokens: Sequence[str]) -> ModelSpec:
    """Parse ``NAME CONFIG [WEIGHTS] [layers=a,b] [member=m] [KEY=VALUE ...]`` (KEY=VALUE: config overrides)."""
    pos = [t for t in tokens if "=" not in t]
    kv = [t for t in tokens if "=" in t]
    if not 2 <= len(pos) <= 3:
        raise ValueError(f"--model takes NAME CONFIG [WEIGHTS] [layers=a,b] [member=m] [KEY=VALUE ...], got "
                         f"{' '.join(tokens)}")
    spec = ModelSpec(pos[0], pos[1], pos[2] if len(pos) > 2 else "")
    for t in kv:
        k, v = t.split("=", 1)
        if k == "layers":
            spec.layers = [x for x in v.split(",") if x]
        elif k == "member":
            spec.member = v
        else:
            spec.opts += [k, v]
    return spec


def load_model(config_file: str, weights: str = "", opts: Sequence[str] = (), device: str = "cpu"):
    """``(cfg, model)``: fastreid_ext's config from ``config_file`` + ``opts``, the registered model of
    ``MODEL.META_ARCHITECTURE`` in eval mode, ``weights`` (a FastReID checkpoint; default ``MODEL.WEIGHTS``) loaded
    with FastReID's ``Checkpointer``. With a checkpoint the backbone's own pre-training is not loaded (the
    checkpoint holds the backbone), except for the torchreid bridge, whose "pre-training" is the model itself."""
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    from ..video.embed import load_cfg

    cfg = load_cfg(config_file, opts, weights or None, device)
    cfg.defrost()
    if cfg.MODEL.HEADS.NUM_CLASSES == 0:
        cfg.MODEL.HEADS.NUM_CLASSES = 1  # inference only; the checkpoint's classifier shape does not matter
    if cfg.MODEL.WEIGHTS and "torchreid" not in cfg.MODEL.BACKBONE.NAME:
        cfg.MODEL.BACKBONE.PRETRAIN = False
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        if not os.path.isfile(cfg.MODEL.WEIGHTS):
            raise FileNotFoundError(f"checkpoint not found: {cfg.MODEL.WEIGHTS}")
        Checkpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        b = cfg.MODEL.BACKBONE
        logger.warning("%s: no checkpoint (MODEL.WEIGHTS): the model as the config builds it (backbone PRETRAIN %s%s)",
                       config_file, b.PRETRAIN, f", {b.PRETRAIN_PATH}" if b.PRETRAIN and b.PRETRAIN_PATH else "")
    return cfg, model.eval()


def interface_models(model: nn.Module, name: str, member: str = "") -> List[Tuple[str, MultiBranchModel]]:
    """``[(label, interface model)]`` for ``model``: itself (equipped with the interface's defaults when it is a
    FastReID ``Baseline``-like class), or the interface models a wrapper holds (all, or ``member``), labelled
    ``name/member``."""
    members = multi_branch_members(model)
    if not members:
        try:
            original = type(model)
            model.__class__ = with_multi_branch(original)
            if model.__class__ is not original:
                model._vis_original_class = original  # its own forward, when the defaults do not fit it
        except TypeError as e:
            raise TypeError(f"{name}: {type(model).__name__} neither implements the multi-branch interface nor holds "
                            f"models that do ({e})") from None
        members = {"": model}
    if member:
        if member not in members:
            raise KeyError(f"{name}: no member {member!r}; {type(model).__name__} holds {', '.join(members) or '-'}")
        members = {member: members[member]}
    return [(name if not k else f"{name}/{k}", m) for k, m in members.items()]


# ------------------------------------------------------------------------------------------------------ maps
@torch.no_grad()
def input_images(model: MultiBranchModel, batch: dict) -> Optional[torch.Tensor]:
    """What the model sees, (B, 3, H, W) in 0..255: its ``preprocess_image`` (e.g. JointIBN's background removal)
    mapped back through ``pixel_std`` / ``pixel_mean``; ``None`` for a model without them."""
    if not all(hasattr(model, a) for a in ("preprocess_image", "pixel_mean", "pixel_std")):
        return None
    x = model.preprocess_image(batch)
    return (x * model.pixel_std + model.pixel_mean).clamp(0, 255)


@torch.no_grad()
def named_maps(model: MultiBranchModel, batch: dict, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """``{label: (B, C, h, w)}`` for ``layers``: ``retrieval`` (the map of every retrieval branch, labelled by
    branch), ``input_mask`` (the batch's person masks, what a masking model such as JointIBN is given), or any name
    :meth:`MultiBranchModel.layer_maps` accepts (a ``feature_maps`` key or a submodule)."""
    out: Dict[str, torch.Tensor] = {}
    names = [n for n in layers if n not in (RETRIEVAL, INPUT, INPUT_MASK)]
    if INPUT_MASK in layers:
        masks = batch.get("masks") if isinstance(batch, dict) else None
        if masks is None:
            raise ValueError(f"layer {INPUT_MASK!r}: the batch has no person masks; the model's config does not load "
                             f"them (set DATASETS.ANNOTATIONS.LOAD_MASKS True; masks/ at the dataset root)")
        out[INPUT_MASK] = torch.as_tensor(masks).float()
    if RETRIEVAL in layers:
        try:
            pooled = {b: pm.map for b, pm in model.pooled_maps(batch).items()}
            single = len(pooled) == 1
        except Exception as e:  # noqa: BLE001 - the interface's defaults do not fit every model (e.g. no heads)
            logger.warning("%s: no pooled maps (%s: %s); showing feature_maps() instead", type(model).__name__,
                           type(e).__name__, e)
            pooled = {k: v for k, v in model.feature_maps(batch).items() if torch.is_tensor(v) and v.dim() == 4}
            single = False
        for b, fmap in pooled.items():
            out[RETRIEVAL if single else b] = fmap
    if names:
        got = model.layer_maps(batch, names)
        for n in names:
            v = got[n]
            if not torch.is_tensor(v) or v.dim() != 4:
                raise ValueError(f"layer {n!r} gives {type(v).__name__} {tuple(getattr(v, 'shape', ()))}, not a "
                                 f"(B, C, h, w) map")
            out[n] = v
    return out


# ------------------------------------------------------------------------------------------------------ similarity
def pooling_of(head: Optional[nn.Module]) -> Tuple[str, float, float]:
    """``(kind, p, eps)`` of the pooling layer of a FastReID-style head (``head.pool_layer``); ``None`` (a feature
    pooled without a head) is taken as GAP and checked against the feature later."""
    from fastreid.layers import pooling as P

    if head is None:
        return "avg", 1.0, 0.0
    pool = getattr(head, "pool_layer", None)
    if pool is None:
        raise NotDecomposable(f"{type(head).__name__} has no pool_layer: its pooling is unknown, so no "
                              f"per-location decomposition is offered")
    if isinstance(pool, P.ClipGlobalAvgPool):
        raise NotDecomposable("ClipGlobalAvgPool clamps the average to [0, 1]: not a sum of per-location terms")
    if isinstance(pool, P.AdaptiveAvgMaxPool):
        return "avgmax", 1.0, 0.0
    if isinstance(pool, P.GeneralizedMeanPooling):  # also GeneralizedMeanPoolingP (trainable p)
        return "gem", float(torch.as_tensor(pool.p).detach().reshape(-1)[0]), float(pool.eps)
    if isinstance(pool, (P.GlobalAvgPool, P.FastGlobalAvgPool)) or \
            (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))):
        return "avg", 1.0, 0.0
    if isinstance(pool, (P.GlobalMaxPool, nn.AdaptiveMaxPool2d)) and pool.output_size in (1, (1, 1)):
        return "max", 1.0, 0.0
    raise NotDecomposable(f"pooling {type(pool).__name__} is not one of GAP, max, GAP+max, GeM: no exact "
                          f"per-location decomposition is known for it")


def _post_pool(head: Optional[nn.Module], channels: int):
    """The layers between the pooled vector and the branch feature as a float64 function (M, C) -> (M, D):
    FastReID's ``bottleneck`` (optional 1x1 embedding conv, BN-neck; eval mode), checked to be affine."""
    if head is None:
        return None
    neck = getattr(head, "bottleneck", None)
    if neck is None or len(list(neck.children())) == 0 and not list(neck.parameters()):
        return None
    neck = copy.deepcopy(neck).double().eval()

    def g(v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return neck(v.double()[:, :, None, None]).flatten(1)

    check_affine(g, channels, what=f"{type(head).__name__}.bottleneck ({', '.join(type(m).__name__ for m in neck)})")
    return g


def branch_terms(pm, name: str = "") -> Tuple[torch.Tensor, str]:
    """Per-location terms (B, N, D) of one retrieval branch (a :class:`PooledMap`) and a note on the pooling; the
    terms must add up to the branch feature, else :class:`NotDecomposable`."""
    fmap = pm.map
    if fmap.dim() != 4:
        raise NotDecomposable(f"branch {name!r}: the pooled map is {tuple(fmap.shape)}, not (B, C, h, w)")
    if fmap.shape[-2] * fmap.shape[-1] == 1:
        raise NotDecomposable(
            f"branch {name!r}: the map its head pools is already 1 x 1 {tuple(fmap.shape)}: the model pools inside "
            f"its backbone (e.g. the torchreid bridge's OUTPUT embedding = fc(GAP(map)), whose fc ends in a ReLU). "
            f"Use a backbone that returns its spatial map (MODEL.BACKBONE.TORCHREID.OUTPUT featuremap)")
    kind, p, eps = pooling_of(pm.head)
    contrib = pooling_contributions(fmap, kind, p=p, eps=eps or 1e-6)
    terms = affine_terms(contrib, _post_pool(pm.head, fmap.shape[1]))
    feat = pm.feature.detach().double().reshape(terms.shape[0], -1)
    total = terms.sum(1)
    if total.shape != feat.shape:
        raise NotDecomposable(f"branch {name!r}: the decomposed feature has shape {tuple(total.shape)}, the branch "
                              f"feature {tuple(feat.shape)}: its head does more than pooling + affine layers")
    err = float((total - feat).abs().max())
    tol = 1e-4 * float(feat.abs().max()) + 1e-6
    if err > tol:
        what = "GAP of the map" if pm.head is None else f"{type(pm.head).__name__}'s pooling + affine layers"
        raise NotDecomposable(f"branch {name!r}: the {what} does not reproduce the branch feature (max deviation "
                              f"{err:.3g}): the feature is computed otherwise, no exact decomposition")
    note = {"avg": "GAP", "max": "max pooling (each channel at its arg-max)", "avgmax": "GAP + max pooling",
            "gem": f"GeM p={p:.2f}: each location's share of f^p (a convention, see the docs)"}[kind]
    return terms, note


@torch.no_grad()
def retrieval_features(model: MultiBranchModel, batch: dict) -> torch.Tensor:
    """The model's test feature through the interface: ``retrieval_feature(branch_features(batch))``; the model's
    eval forward when the interface's defaults do not fit it (a class equipped by ``with_multi_branch`` whose
    branches are not ``backbone`` + ``heads``, e.g. FastReID's MGN), with a warning."""
    try:
        return model.retrieval_feature(model.branch_features(batch))
    except (AttributeError, KeyError, NotImplementedError, TypeError) as e:
        if not getattr(model, "_vis_warned_inference", False):
            logger.warning("%s: retrieval_feature(branch_features()) failed (%s: %s); using its eval forward",
                           type(model).__name__, type(e).__name__, e)
            model._vis_warned_inference = True
        original = getattr(model, "_vis_original_class", None)
        return original.forward(model, batch) if original is not None else model(batch)


@torch.no_grad()
def decompose_pair(model: MultiBranchModel, batch: dict) -> Tuple[PairDecomposition, Dict[str, PairDecomposition]]:
    """Decompose the cosine similarity of the model's test features of the two images of ``batch`` (B = 2):
    ``(decomposition of the retrieval feature, {branch: decomposition})``. Raises :class:`NotDecomposable` with the
    reason when no exact decomposition holds."""
    if batch["images"].shape[0] != 2:
        raise ValueError("decompose_pair needs a batch of exactly two images")
    try:
        pooled = model.pooled_maps(batch)
    except NotDecomposable:
        raise
    except Exception as e:  # the interface's defaults do not fit the model (e.g. no heads)
        raise NotDecomposable(f"{type(model).__name__}: pooled_maps() failed ({type(e).__name__}: {e}); the model "
                              f"does not expose the map its feature is pooled from") from None
    parts: Dict[str, PairDecomposition] = {}
    for b, pm in pooled.items():
        terms, note = branch_terms(pm, b)
        parts[b] = cosine_decomposition(terms[0], terms[1], pm.map.shape[-2:], pm.map.shape[-2:], note)
    combined = combine_branches(list(parts.values()))
    # the test feature's cosine must be the decomposed one
    f = model.retrieval_feature({b: pm.feature for b, pm in pooled.items()})
    s = float(F.cosine_similarity(f[0:1].double(), f[1:2].double()))
    if abs(s - combined.similarity) > 1e-4:
        raise NotDecomposable(
            f"{type(model).__name__}.retrieval_feature() is not {'the branch feature' if len(parts) == 1 else 'the concatenation of the L2-normalised branch features'} "
            f"(cosine {s:.5f} vs {combined.similarity:.5f} decomposed): no exact decomposition of its similarity")
    try:
        out = model(batch)
        if torch.is_tensor(out) and (out.shape != f.shape or not torch.allclose(out, f, rtol=1e-4, atol=1e-5)):
            combined.note = (combined.note + "; " if combined.note else "") + \
                f"the model's inference() returns another feature {tuple(out.shape)} than retrieval_feature()"
    except Exception:  # noqa: BLE001 - the comparison is informative only
        pass
    return combined, parts
