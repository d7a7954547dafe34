"""One interface for multi-branch re-id models, used by wrappers (MMT, pose transfer, analysis tools).

A re-id model here is a set of named *branches*: each branch ends in an embedding head with a classifier
(FastReID's ``EmbeddingHead``: BN-neck feature + linear classifier). FastReID's ``Baseline`` has one branch
(``plain``); RBNet has two (``plain``: backbone 1 on the image, ``masked``: backbone 2 on the masked image).
A wrapper needs a few public operations from its base model, and the base model's own ``forward`` uses the same
operations, so that there is one training step per model:

* :meth:`MultiBranchModel.branch_outputs`: the training-mode pass, ``BranchOutputs(heads, context)`` with the
  head outputs of every branch (``cls_outputs``, ``pred_class_logits``, ``features``) and what the model needs
  later in the step (keypoint heatmaps, the masked input, local stripe features, ...);
* :meth:`MultiBranchModel.teacher_outputs`: the pass of a temporal-mean (teacher) copy of the model on the same
  view, given the student's outputs (RBNet's mean net sees the input masked by its student's mask);
* :meth:`MultiBranchModel.loss_terms`: the model's configured identity / metric loss weights per branch, and
  :meth:`MultiBranchModel.aux_losses`: its other, already weighted, losses (RBNet's heatmap MSE, HPLF's local
  triplet). :meth:`MultiBranchModel.model_losses` combines them with the model's own ID / metric losses (what
  ``forward`` returns in training); a wrapper can combine the same terms with its own ID / metric losses (MMT's
  label-smoothed CE and softmax triplet on pseudo labels) and keep every weight;
* :meth:`MultiBranchModel.branch_features` (eval-mode BN-neck feature of each branch: the classifier's input
  space, e.g. for cluster centres) and :meth:`MultiBranchModel.retrieval_feature` (the model's test feature:
  the ``retrieval_branches``, each L2-normalized and concatenated when there are several);
* :meth:`MultiBranchModel.classifiers`: the classifier of each branch (a wrapper re-initialises them);
* :meth:`MultiBranchModel.feature_maps`: named spatial maps for visualization; :meth:`MultiBranchModel.layer_maps`:
  the maps of chosen layers (a ``feature_maps`` key or any submodule, by a forward hook);
  :meth:`MultiBranchModel.pooled_maps`: the map each retrieval branch's feature is pooled from, with its head
  (similarity decomposition); :func:`multi_branch_members`: the interface models inside a wrapper (MMT's nets).

The defaults implement all of it for any FastReID ``Baseline``-like model (``preprocess_image``, ``backbone``,
``heads``, ``losses``, ``loss_kwargs``); :func:`with_multi_branch` equips such a class (FastReID's own
``Baseline``, a user's subclass) with the interface without changing its computation.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BranchOutputs", "LossTerm", "MultiBranchModel", "PooledMap", "build_multi_branch_model",
           "multi_branch_members", "record_module_calls", "with_multi_branch"]


@dataclass
class BranchOutputs:
    """Training-mode outputs: ``heads[branch]`` = that branch's head outputs; ``context`` = everything else the
    model's losses or a teacher pass need (model specific, e.g. ``masked_input``, ``heatmaps``, ``local``)."""

    heads: Dict[str, dict]
    context: Dict[str, object] = field(default_factory=dict)


class LossTerm(NamedTuple):
    """One configured loss of a branch: ``kind`` is ``"id"`` (classification of the branch's logits) or
    ``"metric"`` (triplet loss on the branch's features), or FastReID's pairwise ``"circle"`` / ``"cosface"``
    losses on the features; ``weight`` its configured scale."""

    name: str
    branch: str
    kind: str
    weight: float


class MultiBranchModel:
    """Mixin: the multi-branch interface (module docstring). Put it first in the bases of a FastReID
    ``Baseline`` subclass, e.g. ``class HPLF(MultiBranchModel, Baseline)``."""

    #: names of the branches; each has a classifier (``classifiers()``)
    branch_names: Tuple[str, ...] = ("plain",)
    #: (student branch, teacher branch) compared by a mutual-teaching ID loss and metric loss
    mutual_id_pair: Tuple[str, str] = ("plain", "plain")
    mutual_metric_pair: Tuple[str, str] = ("plain", "plain")

    # ------------------------------------------------------------------------------------------------------
    @property
    def retrieval_branches(self) -> Tuple[str, ...]:
        """Branches that make the test feature (several: each L2-normalized, concatenated in this order)."""
        return ("plain",)

    def classifiers(self) -> Dict[str, nn.Module]:
        """The classifier module of every branch (FastReID's ``EmbeddingHead``: 2-d ``weight``)."""
        return {"plain": self.heads}

    def branch_outputs(self, batched_inputs, targets=None) -> BranchOutputs:
        """Training-mode pass of every branch. ``targets``: person ids (the heads' margin-based classifiers
        need them); ``None`` for a pass whose logits are not used."""
        feats = self.backbone(self.preprocess_image(batched_inputs))
        return BranchOutputs({"plain": self.heads(feats, targets)}, {"backbone_features": feats})

    def teacher_outputs(self, batched_inputs, targets, student: BranchOutputs) -> Dict[str, dict]:
        """Head outputs of this model used as the teacher (temporal mean) of ``student`` on the same view."""
        return self.branch_outputs(batched_inputs, targets).heads

    def loss_terms(self) -> List[LossTerm]:
        """The configured ID / metric losses of every branch (FastReID's ``MODEL.LOSSES``: ``NAME`` and the
        ``CE.SCALE`` / ``TRI.SCALE`` weights)."""
        kw = self.loss_kwargs
        names = kw.get("loss_names", ())
        terms = []
        if "CrossEntropyLoss" in names:
            terms.append(LossTerm("loss_cls", "plain", "id", float(kw["ce"]["scale"])))
        if "TripletLoss" in names:
            terms.append(LossTerm("loss_triplet", "plain", "metric", float(kw["tri"]["scale"])))
        if "CircleLoss" in names:
            terms.append(LossTerm("loss_circle", "plain", "circle", float(kw["circle"]["scale"])))
        if "Cosface" in names:
            terms.append(LossTerm("loss_cosface", "plain", "cosface", float(kw["cosface"]["scale"])))
        return terms

    def aux_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """The model's other losses, already weighted (none for a Baseline)."""
        return {}

    def id_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The model's own identity loss (FastReID's cross entropy with ``MODEL.LOSSES.CE``), unweighted."""
        from fastreid.modeling.losses import cross_entropy_loss

        ce = self.loss_kwargs["ce"]
        return cross_entropy_loss(logits, targets, ce["eps"], ce["alpha"])

    def metric_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The model's own metric loss (FastReID's triplet loss with ``MODEL.LOSSES.TRI``), unweighted."""
        from fastreid.modeling.losses import triplet_loss

        tri = self.loss_kwargs["tri"]
        return triplet_loss(features, targets, tri["margin"], tri["norm_feat"], tri["hard_mining"])

    def pairwise_loss(self, kind: str, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """FastReID's pairwise circle / cosface loss (``MODEL.LOSSES.CIRCLE`` / ``COSFACE``), unweighted."""
        from fastreid.modeling.losses import pairwise_circleloss, pairwise_cosface

        kw = self.loss_kwargs[kind]
        fn = pairwise_circleloss if kind == "circle" else pairwise_cosface
        return fn(features, targets, kw["margin"], kw["gamma"])

    def model_losses(self, outputs: BranchOutputs, batched_inputs, targets) -> Dict[str, torch.Tensor]:
        """Weighted losses of supervised training: every :meth:`loss_terms` entry with the model's own ID /
        metric / pairwise loss, plus :meth:`aux_losses`. Terms with weight 0 are skipped."""
        losses = {}
        for t in self.loss_terms():
            if not t.weight:
                continue
            out = outputs.heads[t.branch]
            if t.kind == "id":
                losses[t.name] = self.id_loss(out["cls_outputs"], targets) * t.weight
            elif t.kind == "metric":
                losses[t.name] = self.metric_loss(out["features"], targets) * t.weight
            else:
                losses[t.name] = self.pairwise_loss(t.kind, out["features"], targets) * t.weight
        losses.update(self.aux_losses(outputs, batched_inputs, targets))
        return losses

    # ------------------------------------------------------------------------------------------------------
    def forward(self, batched_inputs):
        """Training: :meth:`model_losses` of :meth:`branch_outputs`; evaluation: :meth:`inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        if not isinstance(batched_inputs, dict) or "targets" not in batched_inputs:
            raise KeyError(f"{type(self).__name__} training needs batched_inputs['targets'] (person ids)")
        targets = batched_inputs["targets"].to(self.device)
        precise_bn = bool(targets.sum() < 0)  # FastReID's PreciseBN pass on another dataset: labels are all -1
        if precise_bn:
            targets = torch.zeros_like(targets)
        outputs = self.branch_outputs(batched_inputs, targets)
        outputs.context["precise_bn"] = precise_bn
        _log_accuracy(outputs.heads[self.branch_names[0]], targets)
        return self.model_losses(outputs, batched_inputs, targets)

    def inference(self, batched_inputs) -> torch.Tensor:
        """The test feature (eval mode)."""
        return self.retrieval_feature(self.branch_features(batched_inputs))

    # ------------------------------------------------------------------------------------------------------
    def branch_features(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Eval-mode BN-neck feature of every branch (the input space of its classifier)."""
        return {"plain": self.heads(self.backbone(self.preprocess_image(batched_inputs)))}

    def retrieval_feature(self, branch_feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The test feature from :meth:`branch_features`' output (see ``retrieval_branches``)."""
        names = self.retrieval_branches
        if len(names) == 1:
            return branch_feats[names[0]]
        return torch.cat([F.normalize(branch_feats[b], dim=1) for b in names], dim=1)

    def feature_maps(self, batched_inputs) -> Dict[str, torch.Tensor]:
        """Named spatial feature maps (B, C, h, w) of an eval-mode pass, for visualization."""
        return {"backbone": self.backbone(self.preprocess_image(batched_inputs))}

    def layer_maps(self, batched_inputs, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        """The maps of chosen layers in an eval-mode pass (for visualization), by name: a key of
        :meth:`feature_maps`, or the dotted name of any submodule (``self.get_submodule(name)``), whose output a
        forward hook records while :meth:`feature_maps` runs (and :meth:`branch_features` when the module does not
        run there). ``name@k`` is the module's k-th call (0-based) in that pass, e.g. a backbone shared by two
        branches; a bare module name that is also a ``feature_maps`` key means the key."""
        return _layer_maps(self, batched_inputs, names)

    def pooled_maps(self, batched_inputs) -> Dict[str, "PooledMap"]:
        """For every branch of :attr:`retrieval_branches` (eval mode): the spatial map its feature is pooled from,
        the module that pools it and the branch feature (:class:`PooledMap`). Default: forward hooks on the branch's
        head (:meth:`classifiers`) during :meth:`branch_features` (the head's input is the map); a branch whose
        head does not run there gets ``self.backbone``'s output and ``head=None`` (a feature pooled without a head,
        to be checked by the caller)."""
        return _pooled_maps(self, batched_inputs)


class PooledMap(NamedTuple):
    """One retrieval branch, eval mode: ``map`` (B, C, h, w) is what ``head`` turns into ``feature`` (B, D);
    ``head`` is ``None`` when the feature is pooled from the map outside any head module."""

    map: torch.Tensor
    head: Optional[nn.Module]
    feature: torch.Tensor


@contextmanager
def record_module_calls(modules: Dict[str, nn.Module], keep_inputs: bool = True):
    """Forward hooks on ``modules`` (name -> module) for the duration of the block; yields ``{name: [(inputs,
    output), ...]}``, one entry per call in order (detached tensors; inputs ``()`` unless ``keep_inputs``)."""
    calls: Dict[str, list] = {name: [] for name in modules}
    handles = []

    def hook(name):
        def fn(module, inputs, output):
            det = tuple(x.detach() if torch.is_tensor(x) else x for x in inputs) if keep_inputs else ()
            calls[name].append((det, output.detach() if torch.is_tensor(output) else output))
        return fn

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(hook(name)))
        yield calls
    finally:
        for h in handles:
            h.remove()


def _split_call(name: str) -> Tuple[str, int]:
    base, sep, k = name.rpartition("@")
    if sep and k.isdigit():
        return base, int(k)
    return name, 0


def _last_of(module: nn.Module) -> nn.Module:
    while isinstance(module, nn.Sequential) and len(module):  # containers whose children are called one by one
        module = module[-1]  # (FastReID's ResNet loops over layer3[i]): their output is the last child's
    return module


def _layer_maps(model: nn.Module, batched_inputs, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    # a module may not run through its forward (a Sequential whose blocks are called one by one, a backbone run
    # through another method such as forward_features): its output is then taken as that of its last child
    # that ran (children in registration order; a Sequential child through its last element)
    hooked: Dict[str, nn.Module] = {}
    children: Dict[str, List[str]] = {}
    for name in names:
        base, _ = _split_call(name)
        try:
            module = model.get_submodule(base)
        except AttributeError:
            continue
        hooked[base] = module
        if _last_of(module) is not module:
            hooked[base + "#last"] = _last_of(module)
        children[base] = []
        for cname, child in module.named_children():
            key = f"{base}#{cname}"
            hooked[key] = _last_of(child)
            children[base].append(key)
    with record_module_calls(hooked, keep_inputs=False) as calls:
        maps = model.feature_maps(batched_inputs)
        out: Dict[str, torch.Tensor] = {}
        ran_features = False
        for name in names:
            if name in maps:
                out[name] = maps[name]
                continue
            base, k = _split_call(name)
            if base not in hooked:
                raise KeyError(f"{type(model).__name__} has no layer {name!r}: not a feature_maps() key "
                               f"({', '.join(maps)}) nor a submodule (see model.named_modules())")
            if len(calls[base]) <= k and not ran_features:
                model.branch_features(batched_inputs)  # modules that only the retrieval pass runs
                ran_features = True
            key = base
            if not calls[base]:
                ran = [c for c in [base + "#last"] + children[base][::-1] if calls.get(c)]
                key = ran[0] if ran else base
            if len(calls[key]) <= k:
                raise KeyError(f"{type(model).__name__}: module {base!r} ran {len(calls[key])} time(s) in "
                               f"feature_maps() / branch_features(), call {k} was asked for")
            value = calls[key][k][1]
            if not torch.is_tensor(value):
                raise TypeError(f"{type(model).__name__}: module {base!r} returns {type(value).__name__}, not a "
                                f"tensor; pick one of its submodules")
            out[name] = value
    return out


def _pooled_maps(model: nn.Module, batched_inputs) -> Dict[str, PooledMap]:
    branches = tuple(model.retrieval_branches)
    heads = model.classifiers()
    hooked = {f"head:{b}": heads[b] for b in branches if b in heads}
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        hooked["backbone"] = backbone
    with record_module_calls(hooked) as calls:
        feats = model.branch_features(batched_inputs)
    out: Dict[str, PooledMap] = {}
    used: Dict[int, int] = {}
    for b in branches:
        head = heads.get(b)
        k = used.get(id(head), 0)
        hc = [c for key, c in calls.items() if key.startswith("head:") and hooked[key] is head]
        if head is not None and hc and len(hc[0]) > k:
            used[id(head)] = k + 1
            out[b] = PooledMap(hc[0][k][0][0], head, feats[b])
        elif calls.get("backbone"):
            out[b] = PooledMap(calls["backbone"][0][1], None, feats[b])
        else:
            raise RuntimeError(f"{type(model).__name__}: the feature of branch {b!r} goes through neither its head "
                               f"nor self.backbone; override pooled_maps()")
    return out


def multi_branch_members(model: nn.Module) -> Dict[str, "MultiBranchModel"]:
    """The models of the interface in ``model``: ``{"": model}`` when it implements it, else its direct
    submodules that do, by attribute name (a wrapper's networks, e.g. MMT's ``net1``, ``net2``, ``mean1``,
    ``mean2``); empty when there are none."""
    if isinstance(model, MultiBranchModel):
        return {"": model}
    return {name: m for name, m in model.named_children() if isinstance(m, MultiBranchModel)}


def _log_accuracy(head_outputs: dict, targets: torch.Tensor) -> None:
    from fastreid.modeling.losses import log_accuracy
    from fastreid.utils.events import get_event_storage

    try:
        get_event_storage()
    except AssertionError:  # outside a trainer (tests, scripts)
        return
    log_accuracy(head_outputs["pred_class_logits"].detach(), targets)


_EQUIPPED: Dict[type, type] = {}


def with_multi_branch(cls: type) -> type:
    """``cls`` itself when it implements :class:`MultiBranchModel`, else a subclass of it that does with the
    defaults (for FastReID ``Baseline``-like classes: same modules, same state dict, same forward)."""
    if issubclass(cls, MultiBranchModel):
        return cls
    for attr in ("preprocess_image", "losses"):
        if not hasattr(cls, attr):
            raise TypeError(f"{cls.__name__} is not a FastReID Baseline-like model (no {attr}); implement "
                            f"fastreid_ext.modeling.multi_branch.MultiBranchModel for it")
    if cls not in _EQUIPPED:
        _EQUIPPED[cls] = type(cls.__name__, (MultiBranchModel, cls), {"__module__": cls.__module__,
                                                                       "__doc__": cls.__doc__})
    return _EQUIPPED[cls]


def build_multi_branch_model(cfg, meta_arch: str = ""):
    """FastReID's ``build_model`` for ``meta_arch`` (default ``cfg.MODEL.META_ARCHITECTURE``), the class equipped
    with the multi-branch interface (:func:`with_multi_branch`); on ``cfg.MODEL.DEVICE``."""
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    name = meta_arch or cfg.MODEL.META_ARCHITECTURE
    model = with_multi_branch(META_ARCH_REGISTRY.get(name))(cfg)
    model.to(torch.device(cfg.MODEL.DEVICE))
    return model
