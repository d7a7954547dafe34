"""Build and load FastReID's Cython rank/ROC evaluators outside site-packages.

FastReID ships ``fastreid/evaluation/rank_cylib/{rank_cy,roc_cy}.pyx`` and
compiles them *into site-packages* at run time (``compile_helper`` runs
``make`` there and calls ``sys.exit(1)`` when that fails).  This module does
the same compilation in a temporary directory, in a subprocess, and keeps the
resulting extension modules in a per-user cache::

    $FASTREID_EXT_CACHE/cython/<tag>/        (if FASTREID_EXT_CACHE is set)
    ~/.cache/fastreid_ext/cython/<tag>/      (otherwise)

where ``<tag>`` encodes the FastReID version, the Python ABI and the numpy
major.minor version, so a cached build is never loaded into an incompatible
interpreter.  Nothing here writes into site-packages, calls ``sys.exit`` or
imports the ``fastreid`` package at module level.

Command line::

    python -m fastreid_ext.evaluation.cython_build [--force] [--verbose] [--require]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CYTHON_MODULES",
    "FASTREID_MODULE_PREFIX",
    "build_cython_evaluator",
    "cython_cache_dir",
    "fastreid_cylib_dir",
    "load_cython_evaluator",
    "load_cython_roc",
]

#: Cython sources compiled from FastReID's ``rank_cylib`` folder.
CYTHON_MODULES = ("rank_cy", "roc_cy")
#: Package under which the compiled modules are registered in ``sys.modules``.
FASTREID_MODULE_PREFIX = "fastreid.evaluation.rank_cylib"

_EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0]

_SETUP_PY = """\
import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

ext_modules = [
    Extension(name, [name + ".pyx"], include_dirs=[np.get_include()])
    for name in {names!r}
]
setup(
    name="fastreid_ext_cython_eval",
    ext_modules=cythonize(ext_modules, quiet=True),
)
"""

_lock = threading.Lock()
_loaded: dict = {}  # module short name -> module, or None once a load failed


# --------------------------------------------------------------------------- paths
def _fastreid_version() -> str:
    try:
        return importlib.metadata.version("fastreid")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _python_abi_tag() -> str:
    soabi = sysconfig.get_config_var("SOABI")
    if soabi:
        return str(soabi)
    return f"{sys.implementation.cache_tag}-{sys.platform}"


def _numpy_tag() -> str:
    major, minor = np.__version__.split(".")[:2]
    return f"np{major}.{minor}"


def cython_cache_dir() -> Path:
    """Directory holding the compiled extension modules for this environment.

    ``$FASTREID_EXT_CACHE/cython/<tag>`` or ``~/.cache/fastreid_ext/cython/<tag>``
    with ``tag = fastreid-<version>-<python SOABI>-np<major.minor>``.
    The directory is not created here.
    """
    root = os.environ.get("FASTREID_EXT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "fastreid_ext"
    tag = f"fastreid-{_fastreid_version()}-{_python_abi_tag()}-{_numpy_tag()}"
    return base / "cython" / tag


def fastreid_cylib_dir() -> Optional[Path]:
    """Location of FastReID's installed ``evaluation/rank_cylib`` sources.

    Found through ``importlib.util.find_spec`` so that the ``fastreid`` package
    is not imported.
    """
    try:
        spec = importlib.util.find_spec("fastreid")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / "evaluation" / "rank_cylib"
        if (cand / "rank_cy.pyx").is_file():
            return cand
    return None


def _built_path(name: str, cache_dir: Optional[Path] = None) -> Path:
    return (cache_dir or cython_cache_dir()) / f"{name}{_EXT_SUFFIX}"


def _is_built(cache_dir: Path, names=CYTHON_MODULES) -> bool:
    return all(_built_path(n, cache_dir).is_file() for n in names)


# --------------------------------------------------------------------------- build
def build_cython_evaluator(force: bool = False, quiet: bool = True) -> Optional[Path]:
    """Compile FastReID's ``rank_cy.pyx`` / ``roc_cy.pyx`` into :func:`cython_cache_dir`.

    The ``.pyx`` files are copied to a temporary directory and compiled there
    with Cython + setuptools in a subprocess (``setup.py build_ext --inplace``);
    the resulting extension modules are then moved (atomically) into the cache.

    Args:
        force: rebuild even if the cache already holds both modules.
        quiet: capture the compiler output (it is logged only on failure).

    Returns:
        The cache directory on success (a fast no-op when already built), or
        ``None`` when FastReID's sources are missing or compilation fails (a
        warning is logged; never raises for build errors, never exits).
    """
    cache_dir = cython_cache_dir()
    if not force and _is_built(cache_dir):
        return cache_dir

    src_dir = fastreid_cylib_dir()
    if src_dir is None:
        logger.warning("fastreid_ext: cannot build the Cython evaluator: "
                       "FastReID's rank_cylib/rank_cy.pyx was not found")
        return None
    names = [n for n in CYTHON_MODULES if (src_dir / f"{n}.pyx").is_file()]

    try:
        with tempfile.TemporaryDirectory(prefix="fastreid_ext_cy_") as tmp:
            tmp_path = Path(tmp)
            for n in names:
                shutil.copy2(src_dir / f"{n}.pyx", tmp_path / f"{n}.pyx")
            (tmp_path / "setup.py").write_text(_SETUP_PY.format(names=names))
            cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
            env = dict(os.environ)
            env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
            proc = subprocess.run(
                cmd, cwd=tmp, env=env, timeout=900,
                stdout=subprocess.PIPE if quiet else None,
                stderr=subprocess.STDOUT if quiet else None,
                text=True,
            )
            if proc.returncode != 0:
                tail = (proc.stdout or "")[-4000:]
                logger.warning(
                    "fastreid_ext: compiling FastReID's Cython evaluator failed "
                    "(%s exited with %d); falling back to the vectorized numpy "
                    "evaluator.%s", " ".join(cmd), proc.returncode,
                    ("\n" + tail) if tail else "")
                return None
            cache_dir.mkdir(parents=True, exist_ok=True)
            for n in names:
                built = sorted(tmp_path.glob(f"{n}.*.so")) + sorted(tmp_path.glob(f"{n}.*.pyd"))
                built = [p for p in built if p.name == f"{n}{_EXT_SUFFIX}"] or built
                if not built:
                    logger.warning("fastreid_ext: Cython build produced no %s module", n)
                    return None
                dst = _built_path(n, cache_dir)
                # copy next to the target, then atomic rename: concurrent
                # builders / readers never see a half-written library
                fd, tmp_dst = tempfile.mkstemp(prefix=f".{n}.", suffix=".tmp", dir=cache_dir)
                os.close(fd)
                shutil.copyfile(built[0], tmp_dst)
                os.chmod(tmp_dst, 0o755)
                os.replace(tmp_dst, dst)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("fastreid_ext: compiling FastReID's Cython evaluator failed: %s", exc)
        return None

    if not _is_built(cache_dir, names) or "rank_cy" not in names:
        logger.warning("fastreid_ext: Cython build did not produce rank_cy")
        return None
    return cache_dir


# --------------------------------------------------------------------------- load
def _load_module(name: str) -> Optional[ModuleType]:
    full_name = f"{FASTREID_MODULE_PREFIX}.{name}"
    if name in _loaded:
        return _loaded[name]
    mod = None
    existing = sys.modules.get(full_name)
    path = _built_path(name)
    if existing is not None:
        mod = existing
    elif not path.is_file():
        return None  # not built (yet): not cached, so a later build is picked up
    else:
        try:
            spec = importlib.util.spec_from_file_location(full_name, str(path))
            if spec is None or spec.loader is None:
                raise ImportError(f"no loader for {path}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[full_name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(full_name, None)
                raise
            parent = sys.modules.get(FASTREID_MODULE_PREFIX)
            if parent is not None:
                setattr(parent, name, mod)
        except Exception as exc:  # ImportError, e.g. faiss missing for roc_cy
            logger.warning("fastreid_ext: could not load cached Cython module %s: %s", path, exc)
            mod = None
    _loaded[name] = mod
    return mod


def load_cython_evaluator() -> Optional[ModuleType]:
    """Return FastReID's compiled ``rank_cy`` module from the cache, or ``None``.

    The module (and ``roc_cy`` when it loads) is registered in ``sys.modules``
    as ``fastreid.evaluation.rank_cylib.rank_cy`` (``...roc_cy``) so FastReID's
    own ``from .rank_cylib.rank_cy import evaluate_cy`` finds it.  The result
    is cached; nothing is built here (see :func:`build_cython_evaluator`).
    """
    with _lock:
        rank = _load_module("rank_cy")
        if rank is not None and "roc_cy" not in _loaded:
            _load_module("roc_cy")
        return rank


def load_cython_roc() -> Optional[ModuleType]:
    """Return FastReID's compiled ``roc_cy`` module (needs ``faiss``), or ``None``."""
    with _lock:
        return _load_module("roc_cy")


def _reset_cache() -> None:
    """Forget loaded modules (testing helper; ``sys.modules`` is left alone)."""
    with _lock:
        _loaded.clear()


# --------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastreid_ext.evaluation.cython_build",
        description="Compile FastReID's Cython rank/ROC evaluators into the fastreid_ext cache.")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    parser.add_argument("--verbose", action="store_true", help="show the compiler output")
    parser.add_argument("--require", action="store_true",
                        help="exit with status 1 when the build fails")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    print(f"FastReID sources : {fastreid_cylib_dir()}")
    print(f"cache directory  : {cython_cache_dir()}")
    out = build_cython_evaluator(force=args.force, quiet=not args.verbose)
    if out is None:
        print("Cython evaluator build FAILED; fastreid_ext will use the vectorized "
              "numpy evaluator instead.")
        return 1 if args.require else 0
    rank = load_cython_evaluator()
    if rank is None:
        print(f"Cython evaluator built in {out} but could not be loaded.")
        return 1 if args.require else 0
    roc = _loaded.get("roc_cy")
    print(f"Cython evaluator ready: {rank.__file__}")
    print(f"Cython ROC module: {roc.__file__ if roc is not None else 'not loadable (faiss missing?)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
