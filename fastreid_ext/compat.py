"""Compatibility layer: what ``fastreid==1.4.0`` needs to run on today's stack.

This module is our upstream patch list. ``import fastreid_ext`` calls :func:`apply` before it imports
FastReID. Every patch is

* guarded: it checks whether FastReID (or torch / numpy) still has the problem and is a no-op otherwise,
* idempotent: applying twice changes nothing the second time,
* documented by the one-line ``reason`` given to :func:`_patch`,
* stateless: a patch that depends on the device decides from ``torch.cuda.is_available()`` when it is called
  (:func:`_no_cuda`); nothing here holds a config value (fastreid_ext's loaders and trainer take
  ``cfg.MODEL.DEVICE`` from the config they are given).

``APPLIED`` lists the patches that actually changed something in this process; ``PATCHES`` lists them all
with their reasons (``python -m fastreid_ext.compat`` prints the table).
"""
from __future__ import annotations

import collections
import collections.abc
import functools
import logging
import os
import pickle
import sys
import types
import warnings
from typing import Callable, Dict, List, Tuple

logger = logging.getLogger(__name__)

#: name -> (stage, reason, function). Stage "early" runs before FastReID is imported.
PATCHES: Dict[str, Tuple[str, str, Callable[[], bool]]] = {}
#: names of the patches that changed something in this process, in order.
APPLIED: List[str] = []


def _patch(name: str, stage: str, reason: str):
    def deco(fn: Callable[[], bool]):
        PATCHES[name] = (stage, reason, fn)
        return fn

    return deco


def _no_cuda() -> bool:
    """The rule of the device-dependent patches below: they act when this process has no usable CUDA device.
    They hold no device setting of their own: fastreid_ext's loaders and trainer take ``cfg.MODEL.DEVICE``."""
    import torch

    return not torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------------
# Early patches: Python / numpy / torch removals that break ``import fastreid``
# ----------------------------------------------------------------------------------------------------
_ABC_NAMES = ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable", "Iterator",
              "Callable", "Set", "MutableSet", "Hashable", "Sized", "Container")


@_patch("collections_abc_aliases", "early",
        "Python 3.10 removed collections.Mapping & co.; fastreid.data.build and evaluation.testing import them")
def _collections_abc() -> bool:
    changed = False
    for n in _ABC_NAMES:
        if not hasattr(collections, n):
            setattr(collections, n, getattr(collections.abc, n))
            changed = True
    return changed


@_patch("torch_six", "early",
        "torch 2.x removed torch._six; fastreid.data.build imports torch._six.string_classes")
def _torch_six() -> bool:
    import torch

    try:
        import torch._six  # noqa: F401
        return False
    except ImportError:
        pass
    mod = types.ModuleType("torch._six")
    mod.string_classes = (str, bytes)
    mod.int_classes = int
    mod.container_abcs = collections.abc
    mod.inf = float("inf")
    mod.nan = float("nan")
    sys.modules["torch._six"] = mod
    torch._six = mod
    return True


_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "complex": complex, "object": object,
                  "str": str, "long": int}


@_patch("numpy_aliases", "early",
        "numpy 1.24 removed np.bool/np.int/np.float/np.object; fastreid's rank.py and datasets use them")
def _numpy_aliases() -> bool:
    import numpy as np

    changed = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, typ in _NUMPY_ALIASES.items():
            try:
                getattr(np, name)
            except AttributeError:
                setattr(np, name, typ)
                changed = True
    return changed


# ----------------------------------------------------------------------------------------------------
# FastReID patches (applied after ``import fastreid``)
# ----------------------------------------------------------------------------------------------------
def _make_plain_loader_factory(original):
    from torch.utils.data import DataLoader

    @functools.wraps(original, updated=())
    def data_loader_x(local_rank, **kwargs):
        if _no_cuda():
            kwargs["pin_memory"] = False
            return DataLoader(**kwargs)
        return original(local_rank, **kwargs)

    data_loader_x.__fastreid_ext_patched__ = True
    return data_loader_x


@_patch("cpu_data_loader", "fastreid",
        "FastReID's own build_reid_*_loader use DataLoaderX, which needs CUDA streams; without CUDA use a plain "
        "DataLoader (fastreid_ext.data.build picks its loader from MODEL.DEVICE)")
def _cpu_loader() -> bool:
    import fastreid.data.build as build

    if getattr(build.DataLoaderX, "__fastreid_ext_patched__", False):
        return False
    build.DataLoaderX = _make_plain_loader_factory(build.DataLoaderX)
    return True


@_patch("amp_on_cpu", "fastreid",
        "AMPTrainer asserts CUDA; on CPU fall back to full precision with a logged warning")
def _amp_cpu() -> bool:
    import fastreid.engine.defaults as defaults
    import fastreid.engine.train_loop as train_loop

    if getattr(defaults.AMPTrainer, "__fastreid_ext_patched__", False):
        return False
    original = train_loop.AMPTrainer

    class AMPTrainer(original):
        __fastreid_ext_patched__ = True

        def __init__(self, model, data_loader, optimizer, param_wrapper, grad_scaler=None):
            try:
                device = next(model.parameters()).device
            except StopIteration:  # pragma: no cover - a model without parameters
                device = None
            self._amp_disabled = device is None or device.type != "cuda"
            if self._amp_disabled:
                logging.getLogger("fastreid_ext").warning(
                    "SOLVER.AMP.ENABLED is True but the model is on %s: AMP needs CUDA, training in "
                    "full precision instead.", device)
                train_loop.SimpleTrainer.__init__(self, model, data_loader, optimizer, param_wrapper)
                self.grad_scaler = None
            else:
                super().__init__(model, data_loader, optimizer, param_wrapper, grad_scaler)

        def run_step(self):
            if self._amp_disabled:
                return train_loop.SimpleTrainer.run_step(self)
            return super().run_step()

    AMPTrainer.__qualname__ = original.__qualname__
    defaults.AMPTrainer = AMPTrainer
    train_loop.AMPTrainer = AMPTrainer
    return True


@_patch("cython_evaluator", "fastreid",
        "ReidEvaluator compiles Cython into site-packages at run time and sys.exit()s on failure; "
        "use a prebuilt cache or the vectorized evaluator")
def _cython_evaluator() -> bool:
    import fastreid.evaluation.rank as fr_rank
    import fastreid.evaluation.rank_cylib as rank_cylib
    import fastreid.evaluation.reid_evaluation as reid_evaluation

    from .evaluation import rank as ext_rank
    from .evaluation.cython_build import load_cython_evaluator

    if getattr(fr_rank.evaluate_rank, "__fastreid_ext_patched__", False):
        return False

    def compile_helper():
        raise RuntimeError(
            "fastreid_ext does not compile FastReID's Cython evaluator into site-packages. Build it into "
            "the user cache with `python -m fastreid_ext.evaluation.cython_build`; without it the "
            "vectorized evaluator (identical results) is used.")

    def _compile_dependencies(self):
        if load_cython_evaluator() is not None:
            logger.info("Using FastReID's Cython rank evaluator (prebuilt in the fastreid_ext cache).")
        else:
            logger.info("Cython rank evaluator not built; using fastreid_ext's vectorized evaluator "
                        "(identical results). Build it with `python -m fastreid_ext.evaluation.cython_build`.")

    @functools.wraps(ext_rank.evaluate_rank)
    def evaluate_rank(*args, **kwargs):
        return ext_rank.evaluate_rank(*args, **kwargs)

    evaluate_rank.__fastreid_ext_patched__ = True
    rank_cylib.compile_helper = compile_helper
    reid_evaluation.compile_helper = compile_helper
    reid_evaluation.ReidEvaluator._compile_dependencies = _compile_dependencies
    fr_rank.evaluate_rank = evaluate_rank
    fr_rank.IS_CYTHON_AVAI = load_cython_evaluator() is not None
    return True


@_patch("optimizer_not_contiguous", "fastreid",
        "torch 2's zero_grad() sets grads to None, cutting FastReID's contiguous parameter buffer off its "
        "gradients: DefaultTrainer would never change a weight; build per-parameter optimizers instead")
def _optimizer_not_contiguous() -> bool:
    import fastreid.engine.defaults as defaults
    import fastreid.solver as solver

    if getattr(defaults.build_optimizer, "__fastreid_ext_patched__", False):
        return False
    original = solver.build_optimizer

    @functools.wraps(original)
    def build_optimizer(cfg, model, contiguous=True):
        return original(cfg, model, contiguous=False)

    build_optimizer.__fastreid_ext_patched__ = True
    defaults.build_optimizer = build_optimizer
    return True


#: environment variable: ``1`` loads a checkpoint that holds other Python objects than tensors and the known-safe
#: types below with ``weights_only=False`` (full unpickling: only for files the user trusts)
TRUST_CHECKPOINTS_ENV = "FASTREID_EXT_TRUST_CHECKPOINTS"

#: globals a FastReID / fastreid_ext checkpoint may hold besides what torch's weights-only unpickler allows by
#: default: they rebuild plain data and run no code of the file's choosing (numpy arrays and scalars, e.g. in
#: FastReID model-zoo files and older checkpoints; the ``collections`` mappings of older torch's state dicts and
#: schedulers). Dict subclasses that need SETITEM (yacs ``CfgNode``, ``defaultdict``) cannot be rebuilt by
#: torch's weights-only unpickler at all: such a file needs the opt-in (fastreid_ext's checkpoints hold none).
SAFE_CHECKPOINT_GLOBALS = (
    "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar",
    "collections.OrderedDict", "collections.Counter",
)
_SAFE_GLOBAL_PATTERN = r"numpy\.dtypes\.\w+DType"  # numpy >= 1.25's dtype classes (Float32DType, ...)


class UntrustedCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds Python objects whose unpickling could run code: refused unless the user opts in."""


def _is_safe_global(name: str) -> bool:
    import re

    return name in SAFE_CHECKPOINT_GLOBALS or re.fullmatch(_SAFE_GLOBAL_PATTERN, name) is not None


def _resolve_global(name: str):
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        with warnings.catch_warnings():  # numpy 2 warns on numpy.core
            warnings.simplefilter("ignore", DeprecationWarning)
            return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def _names_in_error(error: Exception) -> List[str]:
    """The global or class torch's weights-only unpickler refused, as its error names it."""
    import re

    return [a or b for a, b in re.findall(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>", str(error))]


def _globals_in(f, error: Exception) -> List[str]:
    """The globals of checkpoint ``f`` that torch's weights-only unpickler does not allow: all of them from the
    archive when torch can list them, else the one its error names (legacy, non-zip files)."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # noqa: BLE001  (old torch, legacy format, file object)
        return _names_in_error(error)


def trusted_torch_load(f, map_location="cpu"):
    """``torch.load`` for checkpoints the user chose to load (``MODEL.WEIGHTS``, ``--resume``; FastReID's and ours).

    Always torch's weights-only unpickler (no code from the file runs): first with its defaults (tensors, plain
    containers, numbers, strings: all a fastreid_ext checkpoint holds); a file that also holds numpy arrays /
    scalars (or, with older torch, ``OrderedDict`` / ``Counter``) is loaded allowing exactly those globals
    (:data:`SAFE_CHECKPOINT_GLOBALS`) and a warning naming them. Any other global (a pickled class or function)
    is refused with :class:`UntrustedCheckpointError` naming the file and the globals, unless
    ``FASTREID_EXT_TRUST_CHECKPOINTS=1`` is set: then the file is fully unpickled (``weights_only=False``)."""
    import torch

    try:
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        last_error = e
    names = _globals_in(f, last_error)
    unsafe = [n for n in names if not _is_safe_global(n)]
    if names and not unsafe and hasattr(torch.serialization, "safe_globals"):  # torch >= 2.5
        allowed = [(obj, n) for n in names if (obj := _resolve_global(n)) is not None]
        for _ in range(len(SAFE_CHECKPOINT_GLOBALS) + 8):  # legacy files name one global per failure
            try:
                with torch.serialization.safe_globals(allowed):
                    obj = torch.load(f, map_location=map_location, weights_only=True)
                logging.getLogger("fastreid_ext").warning(
                    "%s is not a weights-only checkpoint: it holds %s; loaded with torch's weights-only unpickler "
                    "allowing exactly these known-safe types", f, ", ".join(n for _, n in allowed))
                return obj
            except pickle.UnpicklingError as e:
                last_error = e
                # classes the allowed ones build (numpy.dtypes.Int64DType) are named only by the error
                more = [n for n in _names_in_error(e) if n not in {x for _, x in allowed}]
                unsafe = [n for n in more if not _is_safe_global(n)]
                if unsafe or not more:
                    break
                allowed += [(obj, n) for n in more if (obj := _resolve_global(n)) is not None]
    trust = os.environ.get(TRUST_CHECKPOINTS_ENV, "") == "1"
    offending = ", ".join(unsafe or _names_in_error(last_error)) or "see torch's error above"
    if trust:
        logging.getLogger("fastreid_ext").warning(
            "%s holds Python objects beyond tensors (%s): fully unpickled (weights_only=False) because %s=1",
            f, offending, TRUST_CHECKPOINTS_ENV)
        return torch.load(f, map_location=map_location, weights_only=False)
    raise UntrustedCheckpointError(
        f"refusing to load {f}: it holds Python objects that unpickling could run code with ({offending}), not "
        f"only tensors and known-safe types. If you trust this file, set {TRUST_CHECKPOINTS_ENV}=1 to load it "
        f"anyway (fully unpickled), or re-save its tensors: torch.save({{'model': state_dict}}, path)")


@_patch("torch_load_weights_only", "fastreid",
        "FastReID's Checkpointer unpickles MODEL.WEIGHTS / --resume files fully (code can run), torch>=2.6 rejects "
        "their numpy objects: load weights-only with known-safe numpy globals, other objects only with an opt-in")
def _torch_load() -> bool:
    import inspect

    import fastreid.utils.checkpoint as ckpt
    import torch

    if "weights_only" not in inspect.signature(torch.load).parameters:  # torch < 1.13: no safe loader to use
        return False
    if getattr(ckpt.Checkpointer._load_file, "__fastreid_ext_patched__", False):
        return False

    def _load_file(self, f):
        return trusted_torch_load(f)

    _load_file.__fastreid_ext_patched__ = True
    ckpt.Checkpointer._load_file = _load_file
    return True


@_patch("jaccard_on_cpu", "fastreid",
        "compute_jaccard_distance (re-ranking) calls features.cuda() by default; use faiss on CPU without a GPU")
def _jaccard_cpu() -> bool:
    import fastreid.utils.compute_dist as cd

    if getattr(cd.compute_jaccard_distance, "__fastreid_ext_patched__", False):
        return False
    original = cd.compute_jaccard_distance

    @functools.wraps(original)
    def compute_jaccard_distance(features, k1=20, k2=6, search_option=0, fp16=False):
        if search_option < 3 and _no_cuda():
            search_option = 3
        return original(features, k1=k1, k2=k2, search_option=search_option, fp16=fp16)

    compute_jaccard_distance.__fastreid_ext_patched__ = True
    cd.compute_jaccard_distance = compute_jaccard_distance
    return True


@_patch("sparse_rerank", "fastreid",
        "TEST.RERANK's Jaccard distance is dense over (query + gallery)^2 with Python loops over every row; compute "
        "only query x gallery from sparse k-reciprocal weights (fastreid_ext.functional.rerank), same values")
def _sparse_rerank() -> bool:
    import fastreid.evaluation.reid_evaluation as reid_evaluation
    import fastreid.utils.compute_dist as cd

    if getattr(cd.build_dist, "__fastreid_ext_patched__", False):
        return False
    original = cd.build_dist

    @functools.wraps(original)
    def build_dist(feat_1, feat_2, metric: str = "euclidean", **kwargs):
        if metric != "jaccard":
            return original(feat_1, feat_2, metric, **kwargs)
        from .functional.rerank import jaccard_query_gallery

        return jaccard_query_gallery(feat_1, feat_2, k1=kwargs["k1"], k2=kwargs["k2"])

    build_dist.__fastreid_ext_patched__ = True
    cd.build_dist = build_dist
    if reid_evaluation.build_dist is original:
        reid_evaluation.build_dist = build_dist
    return True


def _distributed_worker_any_device(local_rank, main_func, world_size, num_gpus_per_machine,
                                   machine_rank, dist_url, args):
    """FastReID's ``_distributed_worker`` that also runs on CPU (gloo) when CUDA is unavailable."""
    import torch
    import torch.distributed as dist
    from fastreid.utils import comm

    use_cuda = not _no_cuda()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method=dist_url,
                            world_size=world_size, rank=global_rank)
    comm.synchronize()
    if use_cuda:
        assert num_gpus_per_machine <= torch.cuda.device_count()
        torch.cuda.set_device(local_rank)
    assert comm._LOCAL_PROCESS_GROUP is None
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        pg = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    main_func(*args)
    if not use_cuda and dist.is_initialized():
        # orderly teardown after a normal return (an exception ends the run through mp.spawn anyway): a process
        # exiting while its peers' gloo connections are open can die in std::terminate (SIGABRT)
        dist.barrier()
        dist.destroy_process_group()


@_patch("launch_on_cpu", "fastreid",
        "launch() asserts CUDA and uses NCCL; multi-process runs without a GPU need the gloo backend")
def _launch_cpu() -> bool:
    import fastreid.engine.launch  # noqa: F401  (the package re-exports a function named launch)

    launch = sys.modules["fastreid.engine.launch"]
    if launch._distributed_worker is _distributed_worker_any_device:
        return False
    launch._distributed_worker = _distributed_worker_any_device
    return True


@_patch("ddp_cpu_device_ids", "fastreid",
        "DefaultTrainer wraps the model in DistributedDataParallel with device_ids=[local_rank] even for CPU "
        "parameters (gloo), which DDP refuses with a ValueError; pass device_ids only for a CUDA model")
def _ddp_cpu_device_ids() -> bool:
    import inspect

    import fastreid.engine.defaults as defaults

    original = defaults.DistributedDataParallel
    if getattr(original, "__fastreid_ext_patched__", False):
        return False
    if "device_ids" not in inspect.getsource(defaults.DefaultTrainer.__init__):  # FastReID fixed it
        return False

    class DistributedDataParallel(original):
        __fastreid_ext_patched__ = True

        def __init__(self, module, *args, **kwargs):
            param = next(module.parameters(), None)
            if kwargs.get("device_ids") is not None and (param is None or param.device.type != "cuda"):
                kwargs["device_ids"] = None  # a CPU module: DDP takes no device_ids (and no output_device)
                kwargs.pop("output_device", None)
            super().__init__(module, *args, **kwargs)

    DistributedDataParallel.__qualname__ = original.__qualname__
    defaults.DistributedDataParallel = DistributedDataParallel
    return True


class _BasenamePattern:
    """A compiled file-name regex that searches only the base name and names the file it does not match."""

    def __init__(self, pattern):
        self._pattern = pattern

    def search(self, path, *args):
        import os

        m = self._pattern.search(os.path.basename(path), *args)
        if m is None:
            raise ValueError(f"file name {path} does not follow the dataset's convention (pattern "
                             f"{self._pattern.pattern!r} on the file name): rename or remove it")
        return m

    def __getattr__(self, name):
        return getattr(self._pattern, name)


class _BasenameRe:
    """Stand-in for the ``re`` module inside FastReID's dataset modules: ``compile`` gives a
    :class:`_BasenamePattern`, everything else is ``re``'s."""

    def __init__(self, original):
        self._re = original

    def compile(self, *args, **kwargs):
        return _BasenamePattern(self._re.compile(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._re, name)


@_patch("dataset_names_on_basename", "fastreid",
        "Market1501/DukeMTMC/VeRi/CUHK-SYSU run their id/camera regex on the whole path (a root such as "
        "/data/exp2_c1/ makes every image id 2, camera 1) and fail with AttributeError naming no file on an odd name")
def _dataset_names_on_basename() -> bool:
    import importlib
    import re

    changed = False
    for name in ("market1501", "dukemtmcreid", "veri", "cuhk_sysu"):
        try:
            mod = importlib.import_module(f"fastreid.data.datasets.{name}")
        except ImportError:
            continue
        if getattr(mod, "re", None) is re:  # FastReID's own module-level `import re`
            mod.re = _BasenameRe(re)
            changed = True
    return changed


def atomic_write(path: str, write: Callable, mode: str = "wb") -> None:
    """Write ``path`` through ``write(f)`` on a temporary file in the same folder, fsync it and ``os.replace``
    it over ``path``: a reader (or a run killed mid-write) sees the old file or the new one, never a part."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@_patch("atomic_checkpoints", "fastreid",
        "Checkpointer.save writes model_*.pth and last_checkpoint in place: a kill mid-write leaves a truncated "
        "checkpoint that last_checkpoint names; write a temporary file and os.replace it")
def _atomic_checkpoints() -> bool:
    import inspect
    import os

    import torch
    from fastreid.utils import checkpoint as ckpt

    cls = ckpt.Checkpointer
    if getattr(cls.save, "__fastreid_ext_patched__", False):
        return False
    if 'open(save_file, "wb")' not in inspect.getsource(cls.save):  # FastReID no longer writes in place
        return False
    original_save, original_tag = cls.save, cls.tag_last_checkpoint

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):  # not a local folder (PathManager URL): FastReID's own writer
            return original_save(self, name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = "{}.pth".format(name)
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if not os.path.isdir(self.save_dir):
            return original_tag(self, last_filename_basename)
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename), mode="w")

    save.__fastreid_ext_patched__ = True
    cls.save = save
    cls.tag_last_checkpoint = tag_last_checkpoint
    return True


@_patch("metric_printer_same_iteration", "fastreid",
        "CommonMetricPrinter divides by the iterations since its last write: ZeroDivisionError when it writes "
        "twice at one iteration (step + epoch end) before IterationTimer has times, e.g. short or resumed runs")
def _metric_printer_same_iteration() -> bool:
    import inspect

    from fastreid.utils import events

    cls = events.CommonMetricPrinter
    if getattr(cls.write, "__fastreid_ext_patched__", False):
        return False
    if "iteration - self._last_write[0]" not in inspect.getsource(cls.write):
        return False
    original = cls.write

    def write(self):
        last = getattr(self, "_last_write", None)
        if last is not None and last[0] == events.get_event_storage().iter:
            self._last_write = None  # no estimate from a zero-iteration interval (FastReID then skips the ETA)
        return original(self)

    write.__fastreid_ext_patched__ = True
    cls.write = write
    return True


@_patch("preprocess_not_in_place", "fastreid",
        "Baseline.preprocess_image normalizes the batch in place, corrupting it for a second pass "
        "(flip test, second backbone, teacher nets); also moves it to the model's device")
def _preprocess() -> bool:
    from fastreid.modeling.meta_arch.baseline import Baseline

    if getattr(Baseline.preprocess_image, "__fastreid_ext_patched__", False):
        return False

    def preprocess_image(self, batched_inputs):
        import torch

        if isinstance(batched_inputs, dict):
            images = batched_inputs["images"]
        elif isinstance(batched_inputs, torch.Tensor):
            images = batched_inputs
        else:
            raise TypeError("batched_inputs must be dict or torch.Tensor, but get {}".format(
                type(batched_inputs)))
        images = images.to(self.pixel_mean.device, non_blocking=True)
        return (images - self.pixel_mean) / self.pixel_std

    preprocess_image.__fastreid_ext_patched__ = True
    Baseline.preprocess_image = preprocess_image
    return True


@_patch("targets_to_device", "fastreid",
        "Baseline.forward uses batched_inputs['targets'] where the loader left it; with a plain loader "
        "on GPU the targets must follow the model")
def _targets_device() -> bool:
    from fastreid.modeling.meta_arch.baseline import Baseline

    if getattr(Baseline.forward, "__fastreid_ext_patched__", False):
        return False
    original = Baseline.forward

    @functools.wraps(original)
    def forward(self, batched_inputs):
        import torch

        if isinstance(batched_inputs, dict) and isinstance(batched_inputs.get("targets"), torch.Tensor):
            dev = self.pixel_mean.device
            if batched_inputs["targets"].device != dev:
                batched_inputs = dict(batched_inputs, targets=batched_inputs["targets"].to(dev))
        return original(self, batched_inputs)

    forward.__fastreid_ext_patched__ = True
    Baseline.forward = forward
    return True


class _PoseImportHook:
    """Applies the pose patches the first time ``mmpose`` or ``mmdet`` is imported (keeps
    ``import fastreid_ext`` cheap: mmcv/mmengine are only imported when pose code is used)."""

    TRIGGERS = ("mmpose", "mmdet")

    def find_spec(self, name, path=None, target=None):
        if name in self.TRIGGERS:
            remove_pose_hook()
            _run("pose")
        return None  # let the normal finders import the module itself


_POSE_HOOK = _PoseImportHook()


def remove_pose_hook() -> None:
    if _POSE_HOOK in sys.meta_path:
        sys.meta_path.remove(_POSE_HOOK)


def _is_ext_cfg(cfg) -> bool:
    """A config built with fastreid_ext's keys (``fastreid_ext.get_cfg()`` or ``add_fastreid_ext_config``)."""
    datasets = getattr(cfg, "DATASETS", None)
    return datasets is not None and "ANNOTATIONS" in datasets and "SYNTHPED" in datasets


def _refuse_own_trainer_methods(cfg) -> None:
    from .engine.trainer import Trainer, trainer_class

    cls = trainer_class(cfg)
    if cls is not Trainer:
        raise RuntimeError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} needs its own trainer ({cls.__name__}: e.g. MMT "
            f"clusters the target domain before the first epoch), which FastReID's DefaultTrainer cannot replace. "
            f"In your train_net.py build the trainer with `from fastreid_ext.engine import build_trainer; trainer = "
            f"build_trainer(cfg)` instead of `DefaultTrainer(cfg)`, or use fastreid_ext's tools/train_net.py.")


@_patch("loaders_with_annotations", "fastreid",
        "FastReID's build_reid_*_loader ignore DATASETS.ANNOTATIONS and SynthPed options: configs of ours under "
        "FastReID's own DefaultTrainer would get batches without keypoints/masks")
def _loaders_with_annotations() -> bool:
    import fastreid.data as fdata
    import fastreid.data.build as fbuild
    import fastreid.engine.defaults as fdefaults

    if getattr(fbuild.build_reid_train_loader, "__fastreid_ext_patched__", False):
        return False
    orig_train, orig_test = fbuild.build_reid_train_loader, fbuild.build_reid_test_loader

    def build_reid_train_loader(*args, **kwargs):
        cfg = args[0] if args else kwargs.get("cfg")
        if _is_ext_cfg(cfg) and len(args) <= 1 and "train_set" not in kwargs:
            from .data.build import build_train_loader

            _refuse_own_trainer_methods(cfg)
            return build_train_loader(cfg)
        return orig_train(*args, **kwargs)

    def build_reid_test_loader(*args, **kwargs):
        cfg = args[0] if args else kwargs.get("cfg")
        if _is_ext_cfg(cfg) and "test_set" not in kwargs:
            from .data.build import build_test_loader

            name = kwargs.get("dataset_name", args[1] if len(args) > 1 else None)
            return build_test_loader(cfg, name)
        return orig_test(*args, **kwargs)

    for fn, orig in ((build_reid_train_loader, orig_train), (build_reid_test_loader, orig_test)):
        functools.update_wrapper(fn, orig)
        fn.__fastreid_ext_patched__ = True
    for mod in (fbuild, fdata, fdefaults):
        mod.build_reid_train_loader = build_reid_train_loader
        mod.build_reid_test_loader = build_reid_test_loader
    return True


@_patch("pose_stack", "pose",
        "mmcv-lite has no compiled mmcv.ops (mmcv cannot be built against torch>=2.5) and mmpose imports it")
def _pose() -> bool:
    from .compat_mmcv import apply_pose_compat

    return bool(apply_pose_compat())


def apply_pose() -> List[str]:
    """Apply the pose-stack patches now (normally done lazily on the first ``import mmpose``)."""
    remove_pose_hook()
    return _run("pose")


def _run(stage: str) -> List[str]:
    done = []
    for name, (st, _reason, fn) in PATCHES.items():
        if st != stage:
            continue
        if fn():
            done.append(name)
            if name not in APPLIED:
                APPLIED.append(name)
    return done


class _FastReIDImportHook:
    """Runs the FastReID-stage patches, then the registered callbacks (fastreid_ext's registrations), right after
    the first ``import fastreid`` (of any submodule) has executed ``fastreid/__init__.py``. This keeps the pure
    parts of fastreid_ext (SynthPed's generator, ``fastreid_ext.functional``) importable without FastReID."""

    def find_spec(self, name, path=None, target=None):
        if name != "fastreid":
            return None
        remove_fastreid_hook()
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterExecLoader(spec.loader, _after_fastreid)
        return spec


class _AfterExecLoader:
    def __init__(self, loader, after):
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._after()

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self._loader, name)


_FASTREID_HOOK = _FastReIDImportHook()
#: functions run once FastReID is imported (after the FastReID-stage patches), in order
_ON_FASTREID: List[Callable[[], None]] = []
_FASTREID_DONE = False


def remove_fastreid_hook() -> None:
    if _FASTREID_HOOK in sys.meta_path:
        sys.meta_path.remove(_FASTREID_HOOK)


def _after_fastreid() -> None:
    global _FASTREID_DONE
    if _FASTREID_DONE:
        return
    _FASTREID_DONE = True
    import fastreid.data.build  # noqa: F401  (the early patches make these imports work)
    import fastreid.engine  # noqa: F401
    import fastreid.evaluation  # noqa: F401

    _run("fastreid")
    _defer_to_first_lookup()


_PENDING = {"running": False}


def run_registrations() -> None:
    """Run the ``on_fastreid`` callbacks now (once each). Normally they run on the first look-up in any FastReID
    registry (``Registry.get``), i.e. after every import in progress has finished: running them inside
    FastReID's import would re-enter modules that are still being imported."""
    if _PENDING["running"]:
        return
    _PENDING["running"] = True
    try:
        while _ON_FASTREID:
            _ON_FASTREID.pop(0)()
    finally:
        _PENDING["running"] = False


def _defer_to_first_lookup() -> None:
    from fastreid.utils.registry import Registry

    if getattr(Registry.get, "__fastreid_ext_patched__", False):
        return
    get = Registry.get

    def registry_get(self, name):
        run_registrations()
        return get(self, name)

    registry_get.__fastreid_ext_patched__ = True
    Registry.get = registry_get


def apply(on_fastreid: Callable[[], None] | None = None) -> List[str]:
    """Apply every needed patch (idempotent). Returns the names applied by this call.

    The early patches run now. The FastReID-stage patches and ``on_fastreid`` (fastreid_ext's registrations) run
    right after FastReID's first import, or now when FastReID is already imported. The pose patches are deferred
    to the first import of ``mmpose``/``mmdet`` (see :class:`_PoseImportHook`) unless those are already imported."""
    before = list(APPLIED)
    _run("early")
    # Register a prebuilt Cython evaluator (user cache) before FastReID's rank.py looks for it.
    from .evaluation.cython_build import load_cython_evaluator

    load_cython_evaluator()
    if on_fastreid is not None and on_fastreid not in _ON_FASTREID:
        _ON_FASTREID.append(on_fastreid)
    if "fastreid" in sys.modules:
        remove_fastreid_hook()
        _after_fastreid()
    elif _FASTREID_HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _FASTREID_HOOK)
    if any(m in sys.modules for m in _PoseImportHook.TRIGGERS):
        apply_pose()
    elif _POSE_HOOK not in sys.meta_path and "pose_stack" not in APPLIED:
        sys.meta_path.insert(0, _POSE_HOOK)
    return [n for n in APPLIED if n not in before]


def patch_table() -> str:
    rows = ["| patch | applied here | reason |", "| --- | --- | --- |"]
    for name, (_stage, reason, _fn) in PATCHES.items():
        rows.append(f"| `{name}` | {'yes' if name in APPLIED else 'no'} | {reason} |")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover
    apply()
    import fastreid  # noqa: F401  (runs the FastReID-stage patches)
    print(patch_table())
