"""Compatibility patches for the OpenMMLab pose stack (mmpose 1.3 / mmdet 3.3 / mmcv-lite 2.1).

The compiled ``mmcv`` (with ``mmcv._ext``) cannot be built against torch >= 2.5, so fastreid_ext
installs ``mmcv-lite`` instead. mmcv-lite ships the Python files of ``mmcv.ops`` but not the compiled
extension, so ``import mmcv.ops`` fails, and mmpose (and mmdet, which mmpose's RTMO head imports)
import ``mmcv.ops`` symbols at module import time. The top-down heatmap models (HRNet, ...) never
*use* those ops; only the deformable / detection models do.

:func:`apply_pose_compat` applies every patch this stack needs (each one guarded and idempotent) and
returns the names of those that changed something. It must be called *before* ``mmpose``/``mmdet`` are
imported (``fastreid_ext.compat`` does that from an import hook) and therefore never imports them.

Importing this module is cheap: it imports nothing beyond the standard library.
"""
from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Callable, Dict, List, Optional

__all__ = ["apply_pose_compat", "install_mmcv_ops_standin", "is_standin", "STANDIN_MARK"]

#: attribute set on every stand-in module / placeholder created here.
STANDIN_MARK = "__fastreid_ext_standin__"

#: attribute set on the replacement functions installed by the other patches.
_PATCHED_MARK = "__fastreid_ext_patched__"

_OPS = "mmcv.ops"

_MESSAGE = ("mmcv.ops.{name} needs the compiled mmcv, which cannot be built against torch >= 2.5; "
            "fastreid_ext installs mmcv-lite (no compiled ops) with a stand-in for mmcv.ops so that "
            "mmpose's top-down models import and run. Models that really use this op (deformable conv, "
            "RoI ops, NMS, ...) need a full mmcv built for your torch.")


def is_standin(obj) -> bool:
    """True for the ``mmcv.ops`` stand-in modules and their placeholders."""
    return bool(getattr(obj, "__dict__", {}).get(STANDIN_MARK, False)) or \
        (isinstance(obj, type) and any(STANDIN_MARK in vars(k) for k in obj.__mro__))


# ----------------------------------------------------------------------------------------------------
# mmcv.ops stand-in
# ----------------------------------------------------------------------------------------------------
class _CompiledOpMeta(type):
    """Metaclass of the placeholders: any call (calling a function-like op, instantiating a module-like
    op or a class derived from one) raises ImportError naming the op."""

    def __call__(cls, *args, **kwargs):
        name = next((vars(k)["_op_name"] for k in cls.__mro__ if "_op_name" in vars(k)), cls.__name__)
        raise ImportError(_MESSAGE.format(name=name))

    def __repr__(cls):
        return f"<mmcv.ops stand-in {cls.__module__}.{cls.__qualname__}>"


class _CompiledOp(metaclass=_CompiledOpMeta):
    """Base of the placeholders. Being a class, a placeholder can be imported, subclassed, registered in
    a registry and used in ``isinstance`` checks (always False) without touching the compiled op."""


def _placeholder(module: str, name: str) -> type:
    op = _CompiledOpMeta(name, (_CompiledOp,), {
        "__module__": module,
        "__qualname__": name,
        "__doc__": f"Stand-in for ``{module}.{name}`` (needs the compiled mmcv; raises ImportError on use).",
        "_op_name": f"{module[len(_OPS) + 1:] + '.' if module != _OPS else ''}{name}",
        STANDIN_MARK: True,
    })
    return op


class _StandinModule(types.ModuleType):
    """``mmcv.ops`` / ``mmcv.ops.<sub>`` stand-in: every public attribute is a placeholder created on
    first access (and cached), so ``from mmcv.ops import AnyName`` works at import time."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        op = _placeholder(self.__name__, name)
        setattr(self, name, op)
        return op

    def __setattr__(self, name: str, value):
        # Importing the stand-in submodule ``mmcv.ops.nms`` makes the import system set ``mmcv.ops.nms`` to
        # that module. In the real mmcv, ``mmcv/ops/__init__.py`` rebinds such names to the op they export
        # (``from .nms import nms``): keep the op placeholder for every name in ``__all__``.
        if isinstance(value, _StandinModule) and name in self.__dict__.get("__all__", ()):
            if name not in self.__dict__:
                self.__getattr__(name)  # creates and caches the placeholder
            return
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self.__dict__.get("__all__", ())))


class _StandinFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``mmcv.ops.<anything>`` from stand-in modules instead of the mmcv-lite files (which import
    the missing ``mmcv._ext``)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(_OPS + ".") and is_standin(sys.modules.get(_OPS)):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _new_standin_module(spec.name, spec=spec)

    def exec_module(self, module):
        pass


_FINDER = _StandinFinder()
setattr(_FINDER, STANDIN_MARK, True)


def _new_standin_module(name: str, spec=None, all_names=()) -> types.ModuleType:
    mod = _StandinModule(name, f"Stand-in for ``{name}`` installed by fastreid_ext.compat_mmcv "
                               "(mmcv-lite has no compiled ops).")
    if spec is None:
        spec = importlib.machinery.ModuleSpec(name, _FINDER, is_package=True)
    spec.submodule_search_locations = []
    mod.__spec__ = spec
    mod.__loader__ = _FINDER
    mod.__path__ = []
    mod.__package__ = name
    mod.__all__ = list(all_names)
    setattr(mod, STANDIN_MARK, True)
    return mod


def _ops_all_names() -> List[str]:
    """``__all__`` of mmcv-lite's ``mmcv/ops/__init__.py``, read without executing it."""
    try:
        spec = importlib.util.find_spec("mmcv")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            try:
                with open(f"{loc}/ops/__init__.py", encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except OSError:
                continue
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                    return [str(v) for v in ast.literal_eval(node.value)]
    except Exception:  # noqa: BLE001  (best effort: the names are also created lazily)
        pass
    return []


def install_mmcv_ops_standin() -> bool:
    """mmcv-lite lacks the compiled mmcv.ops (no build for torch>=2.5); mmpose/mmdet import its names.

    Installs the ``mmcv.ops`` stand-in (placeholders that raise ImportError when used). Guarded: returns
    False (and changes nothing) when mmcv is absent, when ``mmcv.ops`` imports for real (a full mmcv) or
    when the stand-in is already installed. Returns True when it installed it.
    """
    if importlib.util.find_spec("mmcv") is None:
        return False
    current = sys.modules.get(_OPS)
    if current is not None:
        if is_standin(current) and not _finder_installed():
            sys.meta_path.insert(0, _FINDER)  # somebody removed the finder: restore it
        return False  # stand-in already installed, or the real mmcv.ops is already imported
    try:
        importlib.import_module(_OPS)
        return False  # a full mmcv: leave it alone
    except (ImportError, OSError):  # mmcv-lite (no mmcv._ext), or a full mmcv built for another torch
        pass
    # The failed import may have left some of mmcv-lite's ops submodules behind: drop them.
    for name in [n for n in sys.modules if n == _OPS or n.startswith(_OPS + ".")]:
        del sys.modules[name]
    import mmcv

    standin = _new_standin_module(_OPS, all_names=_ops_all_names())
    sys.modules[_OPS] = standin
    mmcv.ops = standin
    if not _finder_installed():
        sys.meta_path.insert(0, _FINDER)
    return True


def _finder_installed() -> bool:
    # by mark, not identity: a second copy of this module (loaded by path) must not add a second finder
    return any(getattr(f, STANDIN_MARK, False) for f in sys.meta_path)


# ----------------------------------------------------------------------------------------------------
# mmengine.utils.package_utils without pkg_resources
# ----------------------------------------------------------------------------------------------------
def _top_level_module(dist) -> str:
    txt = dist.read_text("top_level.txt")
    if txt and txt.split():
        return txt.split()[0]
    for f in dist.files or ():  # wheels without top_level.txt: first importable top-level name
        top = f.parts[0] if f.parts else ""
        if top and not top.endswith((".dist-info", ".egg-info", ".data")) and not top.startswith(("_", ".")):
            return top[:-3] if top.endswith(".py") else top
    raise ValueError(f"can not infer the module name of {dist.metadata['Name']}")


def _is_installed(package: str) -> bool:
    """mmengine's ``is_installed`` on importlib.metadata instead of pkg_resources."""
    import importlib.metadata as md

    try:
        md.distribution(package)
        return True
    except md.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    """mmengine's ``get_installed_path`` on importlib.metadata instead of pkg_resources."""
    import importlib.metadata as md
    import os.path as osp

    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise
        if spec.origin is None:
            raise RuntimeError(f"{package} is a namespace package, which is invalid for `get_install_path`")
        return osp.dirname(spec.origin)
    location = str(dist.locate_file(""))
    possible_path = osp.join(location, package)
    if osp.exists(possible_path):
        return possible_path
    return osp.join(location, _top_level_module(dist))


def _package2module(package: str) -> str:
    """mmengine's ``package2module`` on importlib.metadata instead of pkg_resources."""
    import importlib.metadata as md

    return _top_level_module(md.distribution(package))


_PKG_UTILS_REPLACEMENTS = {
    "is_installed": _is_installed,
    "get_installed_path": _get_installed_path,
    "package2module": _package2module,
}
for _fn in _PKG_UTILS_REPLACEMENTS.values():
    setattr(_fn, _PATCHED_MARK, True)


def patch_mmengine_pkg_resources() -> bool:
    """setuptools>=81 dropped pkg_resources, which mmengine.utils.get_installed_path (run by mmpose) uses.

    Reimplements mmengine's ``is_installed`` / ``get_installed_path`` / ``package2module`` on
    importlib.metadata. Guarded: no-op when ``pkg_resources`` imports, when mmengine is absent, or when
    already patched. Rebinds the functions in ``mmengine.utils.package_utils`` and in every already-imported
    mmengine/mmcv/mmdet/mmpose module that imported them by name.
    """
    if importlib.util.find_spec("mmengine") is None:
        return False
    try:
        if importlib.util.find_spec("pkg_resources") is not None:
            return False
    except (ImportError, ValueError):
        pass
    pu = importlib.import_module("mmengine.utils.package_utils")
    if all(getattr(getattr(pu, n, None), _PATCHED_MARK, False) for n in _PKG_UTILS_REPLACEMENTS):
        return False
    originals = {n: getattr(pu, n, None) for n in _PKG_UTILS_REPLACEMENTS}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or mod_name.split(".")[0] not in ("mmengine", "mmcv", "mmdet", "mmpose"):
            continue
        for n, fn in _PKG_UTILS_REPLACEMENTS.items():
            if originals[n] is not None and getattr(mod, n, None) is originals[n]:
                setattr(mod, n, fn)
    for n, fn in _PKG_UTILS_REPLACEMENTS.items():
        setattr(pu, n, fn)
    return True


# ----------------------------------------------------------------------------------------------------
# mmengine local checkpoints vs. torch.load(weights_only=True)
# ----------------------------------------------------------------------------------------------------
def _torch_load_defaults_to_weights_only() -> bool:
    import inspect

    import torch

    try:
        default = inspect.signature(torch.load).parameters["weights_only"].default
    except (KeyError, ValueError, TypeError):
        return False
    return default is None or default is True  # torch >= 2.6: None means "True unless the env var says no"


def load_from_local(filename, map_location):  # named like mmengine's, whose log prints name[10:]
    """mmengine's local checkpoint loader, trying ``weights_only=True`` first and falling back to a full
    unpickle (with a warning naming the file) for checkpoints holding numpy arrays / mmengine objects."""
    import logging
    import os.path as osp
    import pickle

    import torch

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        logging.getLogger("fastreid_ext").warning(
            "%s is not a weights-only checkpoint (%s); loading it as a trusted local file.",
            filename, str(e).strip().splitlines()[0][:200])
        return torch.load(filename, map_location=map_location, weights_only=False)


setattr(load_from_local, _PATCHED_MARK, True)


def patch_mmengine_checkpoint_weights_only() -> bool:
    """torch>=2.6 torch.load defaults to weights_only=True: mmengine rejects checkpoints with numpy meta.

    Replaces mmengine's local-file checkpoint loader by one that tries ``weights_only=True`` first and
    falls back to a full unpickle with a warning (mmengine's behaviour on torch < 2.6). Guarded: no-op
    when mmengine is absent, when torch.load does not default to weights_only, or when the local loader
    is already replaced. Only the local-file scheme ('') is replaced.
    """
    if importlib.util.find_spec("mmengine") is None or importlib.util.find_spec("torch") is None:
        return False
    if not _torch_load_defaults_to_weights_only():
        return False
    ckpt = importlib.import_module("mmengine.runner.checkpoint")
    loader = ckpt.CheckpointLoader
    if getattr(loader._schemes.get(""), _PATCHED_MARK, False):
        return False
    loader.register_scheme(prefixes="", loader=load_from_local, force=True)
    return True


# ----------------------------------------------------------------------------------------------------
# patch list
# ----------------------------------------------------------------------------------------------------
#: name -> function returning True when it changed something. Applied in this order.
_PATCHES: Dict[str, Callable[[], bool]] = {
    "mmengine_pkg_resources": patch_mmengine_pkg_resources,
    "mmcv_ops_standin": install_mmcv_ops_standin,
    "mmengine_checkpoint_weights_only": patch_mmengine_checkpoint_weights_only,
}

#: names of the patches applied in this process (in order).
APPLIED: List[str] = []


def apply_pose_compat() -> List[str]:
    """Apply every pose-stack patch that is needed (idempotent; never imports mmpose/mmdet).

    Returns the names of the patches that changed something in *this* call, so a second call returns
    ``[]``.
    """
    done: List[str] = []
    for name, fn in _PATCHES.items():
        if fn():
            done.append(name)
            if name not in APPLIED:
                APPLIED.append(name)
    return done


def patch_reasons() -> Dict[str, Optional[str]]:
    """name -> first line of the patch's docstring (its reason)."""
    return {n: (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else None
            for n, fn in _PATCHES.items()}
