"""ONNX export of any registered re-id meta-architecture's test feature, checked before it is declared a success.

What is exported is the model's eval-mode forward (FastReID's ``model(batched_inputs)`` in eval mode returns the
test feature; see :mod:`fastreid_ext.modeling.multi_branch`) on a dict of tensors, wrapped in
:class:`EvalForward`, a small module taking positional tensors (``images`` and, for a model with a mask input such as
``JointIBN`` with background removal, ``masks``). Nothing here knows a method: the model decides its test feature
(RBNet's ``MODEL.RBNET.TEST_FEATURE`` including the mask path, HPLF's global or global+local feature, MMT's
``MODEL.MMT.EVAL_NET``, a torchreid network through the backbone bridge, ...).

The export uses PyTorch's ``torch.export``-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``, the
default since PyTorch 2.9, https://docs.pytorch.org/docs/stable/onnx_export.html) at :data:`DEFAULT_OPSET` with a
dynamic batch axis; a model that ``torch.export`` cannot trace (e.g. an exception raised by a forward hook to stop a
backbone early) goes through PyTorch's TorchScript-based tracer instead (``exporter="auto"``; the same checks
follow, and the metadata records which exporter wrote the file). It never falls back to ATen operators (FastReID's ``tools/deploy/onnx_export.py`` used
``OperatorExportTypes.ONNX_ATEN_FALLBACK``, which onnxruntime cannot run): every node must be a standard ONNX operator
(:func:`check_onnx_graph`). Before success is declared:

1. ``onnx.checker.check_model(full_check=True)`` (https://onnx.ai/onnx/api/checker.html);
2. onnxruntime loads the file on the CPU (an operator it lacks is reported with the node's PyTorch module);
3. parity (:func:`verify_parity`): onnxruntime vs PyTorch on real-looking inputs at batch 1 and 4: cosine similarity
   >= ``min_cosine`` (0.9999) for every sample, and the same ranking of a small gallery for every query.

A model that cannot be exported raises :class:`OnnxExportError` naming the operator and the module (path and class)
it comes from. The file carries its provenance in ONNX metadata (:data:`META_KEYS`): meta-architecture, inputs,
input size, feature dimension, a digest of the weights and the parity figures, so that an embedder can refuse an
ONNX file that belongs to another model (:func:`check_same_model`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OPSET", "EvalForward", "ExportResult", "OnnxExportError", "ParityReport", "check_onnx_graph",
           "check_same_model", "export_onnx", "model_input_names", "read_metadata", "synthetic_person_inputs",
           "feature_signature", "verify_parity", "weights_digest"]

#: ONNX opset of the export (opset 20: ONNX 1.15+, onnxruntime 1.16+, TensorRT 10)
DEFAULT_OPSET = 20
#: ``export_onnx(exporter=...)``
EXPORTERS = ("auto", "dynamo", "torchscript")
#: ONNX domains allowed in an exported graph: the standard operator set only (no ATen, no custom domains)
STANDARD_DOMAINS = ("", "ai.onnx")
#: metadata keys written into the ONNX file (``metadata_props``)
META_KEYS = ("format", "meta_architecture", "inputs", "input_size", "feature_dim", "weights_sha256", "opset",
             "exporter", "pixel_mean", "parity", "fastreid_ext_version", "input_convention", "test_feature")
META_PREFIX = "fastreid_ext."
FORMAT = "fastreid_ext.reid_embedder/1"
INPUT_CONVENTION = ("images: float32 (N, 3, H, W) RGB in 0..255 (FastReID's loader range; the model's pixel "
                    "normalization is inside the graph); masks: float32 (N, 1, H, W) person masks in [0, 1]")


class OnnxExportError(RuntimeError):
    """A model that cannot be exported, or an export that fails its checks (the message says which and where)."""


class EvalForward(nn.Module):
    """The eval-mode forward of a re-id model on positional tensors: ``forward(images[, masks])`` calls
    ``model({"images": images, "masks": masks})`` and returns its test feature ``(N, D)``."""

    def __init__(self, model: nn.Module, input_names: Sequence[str] = ("images",)):
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if len(tensors) != len(self.input_names):
            raise TypeError(f"expected {len(self.input_names)} input tensor(s) {self.input_names}, got {len(tensors)}")
        # copies: some models normalize their input in place (FastReID's MGN.preprocess_image: images.sub_().div_()),
        # which would change the caller's tensors (and the graph would mutate its inputs)
        return self.model({k: t.clone() for k, t in zip(self.input_names, tensors)})


def model_input_names(model: nn.Module) -> Tuple[str, ...]:
    """``("images",)``, plus ``"masks"`` when the model (or a sub-model, e.g. an MMT mean net) declares
    ``requires_masks`` (a background-removal stage that takes person masks with the images)."""
    needs_masks = any(bool(getattr(m, "requires_masks", False)) for m in model.modules())
    return ("images", "masks") if needs_masks else ("images",)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict (names, dtypes, shapes, values in key order): the identity of a model's weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.uint8, torch.bool):
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# inputs for the checks
def synthetic_person_inputs(n: int, size_hw: Tuple[int, int], seed: int = 0, num_ids: int = 0
                            ) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n`` rendered pedestrians (SynthPed's renderer, :mod:`fastreid_ext.data.synthped`; no dataset needed) as
    ``images`` (n, 3, H, W) RGB 0..255, their person ``masks`` (n, 1, H, W) and identity labels: ``num_ids``
    identities (default n // 2) each seen by alternating cameras, i.e. a tiny query / gallery set."""
    from ..data.synthped import render_person, sample_identity

    h, w = size_hw
    rng = np.random.default_rng(seed)
    k = num_ids or max(1, n // 2)
    idents = [sample_identity(rng) for _ in range(k)]
    imgs, masks, labels = [], [], []
    for i in range(n):
        pid = i % k
        img, _, mask = render_person(idents[pid], 1 + (i // k) % 2, rng, height=h, width=w)
        imgs.append(img[:, :, ::-1])  # BGR -> RGB
        masks.append(mask.astype(np.float32) / 255.0)
        labels.append(pid)
    x = torch.from_numpy(np.stack(imgs).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    m = torch.from_numpy(np.stack(masks))[:, None].contiguous()
    return x, m, np.asarray(labels)


def load_images(paths: Sequence[str], size_hw: Tuple[int, int]) -> torch.Tensor:
    """Image files (or folders of them) as ``(n, 3, H, W)`` RGB 0..255, bicubic-resized like FastReID's test
    transform; for parity checks on a user's own crops."""
    from PIL import Image

    files: List[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")))
        else:
            files.append(p)
    if not files:
        raise FileNotFoundError(f"no images in {list(paths)}")
    h, w = size_hw
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(np.asarray(im.convert("RGB").resize((w, h), Image.BICUBIC), np.float32))
        except OSError as e:
            raise OSError(f"cannot read check image {f}: {e}") from e
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------------------------------------------
# errors: which operator, which module
def _module_of_fx_node(ep, node_name: str) -> Optional[str]:
    for n in ep.graph.nodes:
        if n.name == node_name:
            return _describe_stack(n.meta.get("nn_module_stack") or {})
    return None


def _describe_stack(stack: dict) -> Optional[str]:
    if not stack:
        return None
    path, cls = list(stack.values())[-1]
    path = re.sub(r"^model\.?", "", str(path)) or "(the model itself)"
    cls = cls.__qualname__ if isinstance(cls, type) else str(cls)
    return f"module `{path}` ({cls})"


def _explain_conversion_error(e: BaseException, ep, opset: int) -> str:
    text = str(e)
    node = re.search(r"translating node %(\w+) : .*?target=([\w.:]+)", text)
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)", text)
    op_name = f"{op.group(1)}.{op.group(2)}" if op else (node.group(2).replace("torch.ops.", "") if node else None)
    where = _module_of_fx_node(ep, node.group(1)) if node else None
    if op_name is None:  # find the first node whose operator the message names
        for n in ep.graph.nodes:
            if n.op == "call_function" and str(n.target) in text:
                op_name, where = str(n.target), _describe_stack(n.meta.get("nn_module_stack") or {})
                break
    summary = next((ln.strip() for ln in text.splitlines() if "DispatchError" in ln or "No ONNX function" in ln),
                   text.strip().splitlines()[0] if text.strip() else type(e).__name__)
    return (f"operator `{op_name or '?'}` in {where or 'an unknown module'} has no ONNX translation at opset {opset} "
            f"(PyTorch's exporter: {summary[:400]}). Rewrite that module with standard operators, or register an ONNX "
            f"translation (torch.onnx.export(custom_translation_table=...))")


def _onnx_node_origin(model_proto, node_name: str) -> str:
    for n in model_proto.graph.node:
        if n.name == node_name:
            props = {p.key: p.value for p in n.metadata_props}
            scopes = props.get("pkg.torch.onnx.name_scopes")
            classes = props.get("pkg.torch.onnx.class_hierarchy")
            try:
                scope_list = [s for s in json.loads(scopes.replace("'", '"'))[:-1] if s] if scopes else []
                class_list = json.loads(classes.replace("'", '"'))[:-1] if classes else []
            except ValueError:
                scope_list, class_list = [], []
            path = re.sub(r"^model\.?", "", scope_list[-1]) if scope_list else ""
            cls = class_list[-1] if class_list else "?"
            return f"ONNX node `{n.name}` ({n.op_type}) from module `{path or '(the model itself)'}` ({cls})"
    return f"ONNX node `{node_name}`"


# ----------------------------------------------------------------------------------------------------------------
def check_onnx_graph(model_proto) -> None:
    """``onnx.checker`` (full check, with shape inference) and no operator outside the standard domains (no ATen
    fallback, no custom domain); raises :class:`OnnxExportError`."""
    import onnx

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as e:  # onnx.checker.ValidationError, shape inference errors
        raise OnnxExportError(f"onnx.checker rejected the exported graph: {e}") from e
    bad = [(n.name, n.domain, n.op_type) for n in model_proto.graph.node
           if n.domain not in STANDARD_DOMAINS or n.op_type == "ATen"]
    bad += [(f.name, f.domain, "function") for f in model_proto.functions]
    if bad:
        name, dom, op = bad[0]
        raise OnnxExportError(f"the exported graph has {len(bad)} non-standard node(s), e.g. {op} in domain "
                              f"{dom!r} ({_onnx_node_origin(model_proto, name)}); only standard ONNX operators are "
                              f"accepted (no ATen fallback)")


def make_session(path_or_bytes, threads: int = 0, providers: Optional[Sequence[str]] = None, spin: bool = False):
    """An onnxruntime ``InferenceSession`` (CPU unless ``providers``); an operator onnxruntime lacks is reported
    with the PyTorch module its node came from. ``spin``: onnxruntime's worker threads busy-wait for the next run
    (its default; faster back-to-back runs, but they take the CPU from PyTorch or a decoding thread in between,
    https://onnxruntime.ai/docs/performance/tune-performance/threading.html), off by default here."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(path_or_bytes, sess_options=so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:
        text = str(e)
        m = re.search(r"node with name '([^']+)'", text) or re.search(r"Node \(([^)]+)\)", text)
        where = ""
        if m is not None:
            import onnx

            proto = onnx.load(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) \
                else onnx.load_from_string(path_or_bytes)
            where = "; " + _onnx_node_origin(proto, m.group(1))
        raise OnnxExportError(f"onnxruntime cannot load the model: {text.strip().splitlines()[0][:500]}{where}") from e


@dataclass
class ParityReport:
    """onnxruntime vs PyTorch: the smallest per-sample cosine similarity and the largest absolute difference per
    batch size, and whether every query ranks the gallery identically."""

    min_cosine: Dict[int, float] = field(default_factory=dict)
    max_abs_diff: Dict[int, float] = field(default_factory=dict)
    ranking_identical: bool = False
    num_query: int = 0
    num_gallery: int = 0
    threshold: float = 0.9999
    #: PyTorch against itself: smallest cosine between its features at the first and at the other batch sizes
    torch_batch_cosine: float = 1.0

    @property
    def ok(self) -> bool:
        return self.ranking_identical and all(c >= self.threshold for c in self.min_cosine.values())

    def summary(self) -> str:
        cos = ", ".join(f"batch {b}: min cosine {c:.6f} (max |diff| {self.max_abs_diff[b]:.2e})"
                        for b, c in self.min_cosine.items())
        rank = "identical" if self.ranking_identical else "DIFFERENT"
        text = f"{cos}; ranking of {self.num_gallery} gallery items for {self.num_query} queries: {rank}"
        if self.torch_batch_cosine < self.threshold:
            text += (f". PyTorch itself gives other features at another batch size (min cosine "
                     f"{self.torch_batch_cosine:.6f}): the model is numerically unstable on these inputs (e.g. "
                     f"BatchNorm statistics that do not match the activations of an untrained network), not the export")
        return text


def _ranking(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return np.argsort(-(qn @ gn.T), axis=1, kind="stable")


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    return np.where(both_zero, 1.0, cos)


def verify_parity(wrapper: EvalForward, session, inputs: Sequence[torch.Tensor], batch_sizes: Sequence[int] = (1, 4),
                  min_cosine: float = 0.9999) -> ParityReport:
    """Run PyTorch (``wrapper``) and onnxruntime (``session``) on the same ``inputs`` (each ``(n, ...)``) in chunks
    of every batch size; the first half of the samples ranks the second half (query / gallery)."""
    n = int(inputs[0].shape[0])
    names = [i.name for i in session.get_inputs()]
    rep = ParityReport(threshold=min_cosine)
    feats_t = feats_o = None
    rep.torch_batch_cosine = 1.0
    for bs in batch_sizes:
        ft, fo = [], []
        for s in range(0, n, bs):
            chunk = [t[s:s + bs] for t in inputs]
            with torch.no_grad():
                ft.append(wrapper(*chunk).float().cpu().numpy())
            fo.append(session.run(None, {k: v.numpy() for k, v in zip(names, chunk)})[0])
        ft, fo = np.concatenate(ft), np.concatenate(fo)
        if ft.shape != fo.shape:
            raise OnnxExportError(f"onnxruntime returns features of shape {fo.shape} at batch {bs}, PyTorch {ft.shape}")
        rep.min_cosine[bs] = float(_cosine_rows(ft.astype(np.float64), fo.astype(np.float64)).min())
        rep.max_abs_diff[bs] = float(np.abs(ft - fo).max())
        if feats_t is None:
            feats_t, feats_o = ft, fo
        else:
            rep.torch_batch_cosine = min(rep.torch_batch_cosine, float(_cosine_rows(
                feats_t.astype(np.float64), ft.astype(np.float64)).min()))
    half = max(1, n // 2)
    rep.num_query, rep.num_gallery = half, n - half
    if n - half > 0:
        rep.ranking_identical = bool(np.array_equal(_ranking(feats_t[:half], feats_t[half:]),
                                                    _ranking(feats_o[:half], feats_o[half:])))
    return rep


# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: str
    input_names: Tuple[str, ...]
    input_size: Tuple[int, int]
    feature_dim: int
    opset: int
    parity: ParityReport
    metadata: Dict[str, str]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["parity"]["ok"] = self.parity.ok
        return d


def read_metadata(path_or_proto) -> Dict[str, str]:
    """The ``fastreid_ext.*`` metadata of an ONNX file (keys without the prefix); empty for a foreign file."""
    import onnx

    proto = path_or_proto if not isinstance(path_or_proto, (str, os.PathLike)) else \
        onnx.load(str(path_or_proto), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def feature_signature(model: nn.Module) -> str:
    """The model's own name for its configured test feature, for a model whose config chooses among test features of
    the same width (e.g. MMT's ``MODEL.MMT.EVAL_NET`` mean1 / mean2 / net1 / net2): the return value of its
    ``feature_signature()`` method, "" for a model without one. Stored in the file (metadata ``test_feature``)
    so that evaluating it under a config that picks another feature is refused (:func:`check_same_model`)."""
    m = getattr(model, "module", model)
    fn = getattr(m, "feature_signature", None)
    return str(fn()) if callable(fn) else ""


def check_same_model(onnx_meta: Dict[str, str], model: Optional[nn.Module] = None, cfg=None,
                     onnx_path: str = "the ONNX file", check_weights: bool = True) -> None:
    """Raise ``ValueError`` when an ONNX file's metadata says it was exported from another model than ``model`` /
    ``cfg`` (meta-architecture, input size, test feature (:func:`feature_signature`) and, with
    ``check_weights``, weights digest; give ``check_weights=False`` for a ``model`` built from the config without
    its trained weights)."""
    if not onnx_meta:
        return
    problems = []
    if cfg is not None:
        arch = cfg.MODEL.META_ARCHITECTURE
        if onnx_meta.get("meta_architecture") not in (None, arch):
            problems.append(f"meta-architecture {onnx_meta['meta_architecture']} (config: {arch})")
        size = ",".join(str(int(v)) for v in cfg.INPUT.SIZE_TEST)
        if onnx_meta.get("input_size") not in (None, size):
            problems.append(f"input size {onnx_meta['input_size'].replace(',', 'x')} (config INPUT.SIZE_TEST: "
                            f"{size.replace(',', 'x')})")
    if model is not None and onnx_meta.get("test_feature") and feature_signature(model):
        if onnx_meta["test_feature"] != feature_signature(model):
            problems.append(f"test feature {onnx_meta['test_feature']} (config: {feature_signature(model)})")
    if model is not None and check_weights and onnx_meta.get("weights_sha256"):
        digest = weights_digest(model)
        if digest != onnx_meta["weights_sha256"]:
            problems.append(f"weights {onnx_meta['weights_sha256'][:12]}... (the PyTorch model's: {digest[:12]}...)")
    if problems:
        raise ValueError(f"{onnx_path} was exported from another model: " + "; ".join(problems) +
                         ". Export this model with tools/export_onnx.py, or give the config and weights it came from")


class _TraceError(Exception):
    """torch.export could not trace the model (as opposed to an operator without ONNX translation)."""


def _explain_trace_error(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    m = re.search(r"Unexpected key _export_root\.model\.?([\w.]*), expected _export_root\.model\.?([\w.]*)", text)
    if m:  # torch.export's module-stack bookkeeping: a module call did not return normally
        return (f"the call of module `{m.group(1) or '(the model)'}` did not return normally while "
                f"`{m.group(2) or '(the model)'}` was running (an exception or hook used for control flow, e.g. a forward "
                f"pre-hook that raises to stop a backbone early, cannot be traced by torch.export)")
    return f"{type(e).__name__}: {first[:600]}"


def _export_dynamo(wrapper, example, names, opset: int, arch: str):
    """PyTorch's torch.export-based exporter (``dynamo=True``), https://docs.pytorch.org/docs/stable/onnx_export.html."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        ep = torch.export.export(wrapper, example, dynamic_shapes=(tuple({0: batch} for _ in names),))
    except Exception as e:
        raise _TraceError(f"torch.export cannot trace {arch}'s eval forward with a dynamic batch axis: "
                          f"{_explain_trace_error(e)}") from e
    try:
        program = torch.onnx.export(ep, example, None, dynamo=True, opset_version=opset, input_names=list(names),
                                    output_names=["features"], verbose=False, optimize=True)
    except Exception as e:
        raise OnnxExportError(f"cannot export {arch} to ONNX: " + _explain_conversion_error(e, ep, opset)) from e
    return program.model_proto


def _export_torchscript(wrapper, example, names, opset: int, arch: str):
    """PyTorch's TorchScript-based exporter (``dynamo=False``, tracing), with ``OperatorExportTypes.ONNX``: an
    operator without ONNX symbolic is an error, never an ATen fallback node. Used for models torch.export cannot
    trace (the checks that follow are the same)."""
    import io
    import warnings

    import onnx

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notice and tracer warnings
            torch.onnx.export(wrapper, example, buf, dynamo=False, opset_version=opset, input_names=list(names),
                              output_names=["features"], dynamic_axes={n: {0: "batch"} for n in (*names, "features")},
                              do_constant_folding=True, operator_export_type=torch.onnx.OperatorExportTypes.ONNX)
    except Exception as e:
        text = str(e).strip()
        op = re.search(r"operator '([\w:]+)'", text)
        raise OnnxExportError(f"cannot export {arch} to ONNX with the TorchScript-based exporter: "
                              f"{('operator `' + op.group(1) + '`: ') if op else ''}"
                              f"{text.splitlines()[0][:500] if text else type(e).__name__}") from e
    return onnx.load_from_string(buf.getvalue())


def export_onnx(model: nn.Module, path: str, input_size: Tuple[int, int], input_names: Optional[Sequence[str]] = None,
                opset: int = DEFAULT_OPSET, check_inputs: Optional[Sequence[torch.Tensor]] = None,
                meta_architecture: str = "", extra_metadata: Optional[Dict[str, str]] = None,
                min_cosine: float = 0.9999, batch_sizes: Sequence[int] = (1, 4), seed: int = 0,
                exporter: str = "auto") -> ExportResult:
    """Export ``model``'s eval forward to ``path`` and check it (module docstring); the file is written only when
    every check passes. ``check_inputs``: tensors matching ``input_names`` (default: 8 rendered pedestrians and
    their masks, :func:`synthetic_person_inputs`). ``exporter``: ``auto`` (torch.export-based, and PyTorch's
    TorchScript-based tracer for a model torch.export cannot trace), ``dynamo`` or ``torchscript`` only.
    Raises :class:`OnnxExportError`."""
    import onnx

    model = model.eval()
    names = tuple(input_names or model_input_names(model))
    unknown = set(names) - {"images", "masks"}
    if unknown:
        raise ValueError(f"unsupported model inputs {sorted(unknown)} (images, masks)")
    h, w = int(input_size[0]), int(input_size[1])
    arch = meta_architecture or type(model).__name__
    wrapper = EvalForward(model, names).eval()

    if check_inputs is None:
        imgs, masks, _ = synthetic_person_inputs(8, (h, w), seed=seed)
        check_inputs = [imgs if n == "images" else masks for n in names]
    check_inputs = [t.float().cpu() for t in check_inputs]
    if len(check_inputs) != len(names):
        raise ValueError(f"check_inputs: expected {len(names)} tensors {names}, got {len(check_inputs)}")
    example = tuple(t[:2] for t in check_inputs)
    with torch.no_grad():
        try:
            out = wrapper(*example)
        except Exception as e:
            raise OnnxExportError(f"{arch}'s eval forward fails on inputs {names} of size {h}x{w}: "
                                  f"{type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise OnnxExportError(f"{arch}'s eval forward returns {type(out).__name__}"
                              f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}; a re-id test feature "
                              f"(N, D) tensor is needed")
    feat_dim = int(out.shape[1])

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    used = "dynamo"
    if exporter == "torchscript":
        proto, used = _export_torchscript(wrapper, example, names, int(opset), arch), "torchscript"
    else:
        try:
            proto = _export_dynamo(wrapper, example, names, int(opset), arch)
        except _TraceError as e:
            if exporter == "dynamo":
                raise OnnxExportError(str(e)) from e.__cause__
            logger.warning("%s; trying PyTorch's TorchScript-based exporter (tracing)", e)
            try:
                proto, used = _export_torchscript(wrapper, example, names, int(opset), arch), "torchscript"
            except OnnxExportError as e2:
                raise OnnxExportError(f"{e}; the TorchScript-based exporter failed too: {e2}") from e2

    from .. import __version__

    meta = {"format": FORMAT, "meta_architecture": arch, "inputs": ",".join(names), "input_size": f"{h},{w}",
            "feature_dim": str(feat_dim), "weights_sha256": weights_digest(model), "opset": str(int(opset)),
            "exporter": used,
            "fastreid_ext_version": __version__, "input_convention": INPUT_CONVENTION}
    signature = feature_signature(model)
    if signature:
        meta["test_feature"] = signature
    pixel_mean = next((m.pixel_mean for m in model.modules() if isinstance(getattr(m, "pixel_mean", None),
                                                                            torch.Tensor)), None)
    if pixel_mean is not None:  # the "mean" background fill of an embedder needs it
        meta["pixel_mean"] = ",".join(f"{float(v):g}" for v in pixel_mean.flatten())
    meta.update(extra_metadata or {})
    check_onnx_graph(proto)
    session = make_session(proto.SerializeToString())
    parity = verify_parity(wrapper, session, check_inputs, batch_sizes, min_cosine)
    if not parity.ok:
        raise OnnxExportError(f"onnxruntime's output differs from PyTorch's for {arch} (nothing written): "
                              f"{parity.summary()} (needed: cosine >= {min_cosine}, identical ranking)")
    meta["parity"] = json.dumps({"min_cosine": parity.min_cosine, "ranking_identical": parity.ranking_identical})
    for k, v in meta.items():
        p = proto.metadata_props.add()
        p.key, p.value = META_PREFIX + k, str(v)
    proto.producer_name = "fastreid_ext"

    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out_dir)  # written next to the target, then moved into place
    os.close(fd)
    try:
        large = proto.ByteSize() > 2_000_000_000  # protobuf's 2 GB limit: weights go to an external file
        onnx.save_model(proto, tmp, save_as_external_data=large, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data" if large else None)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    logger.info("exported %s to %s: %s", arch, path, parity.summary())
    return ExportResult(path=str(path), input_names=names, input_size=(h, w), feature_dim=feat_dim, opset=int(opset),
                        parity=parity, metadata=meta)
