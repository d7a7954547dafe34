"""The package layout's import rules (docs/CONTRIBUTING.md), checked by reading the imports of every file (ast):

(a) the shared core imports no method package (``fastreid_ext.METHODS``);
(b) functional code and the SynthPed generator import no FastReID, not even inside a function, and no
    fastreid_ext module outside that pure set;
(c) model modules (``fastreid_ext/modeling/**``, ``fastreid_ext/<method>/meta_arch.py``) import no engine;
(d) every ``tools/*.py`` is a thin wrapper (at most ``MAX_TOOL_LINES`` lines of code) over a package module;
(e) no test loads ``tools/`` by path (tests call the package's command-line modules).

Each rule is a function over source text, and the checkers are tested on bad sources too, so that the rules
can fail.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import fastreid_ext

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fastreid_ext"
METHODS = tuple(fastreid_ext.METHODS)
PURE = ("fastreid_ext.functional", "fastreid_ext.data.synthped")
MAX_TOOL_LINES = 30


# ------------------------------------------------------------------------------------------------- the checkers
def module_name(path: Path) -> Tuple[str, bool]:
    """(dotted module name, is a package ``__init__``) of a file under the repository root."""
    parts = list(path.resolve().relative_to(ROOT).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def imports(source: str, module: str, is_package: bool = False) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (at any depth: inside functions too),
    relative imports resolved against ``module``. ``from X import a`` yields ``X`` and ``X.a`` (``a`` may be a
    submodule); ``importlib.import_module("X")`` with a constant absolute name yields ``X``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level - 1 > len(base) - 1:
                    raise ValueError(f"{module}:{node.lineno}: relative import beyond the top-level package")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            yield node.lineno, target
            for a in node.names:
                if a.name != "*":
                    yield node.lineno, f"{target}.{a.name}"
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and not node.args[0].value.startswith("."):
                yield node.lineno, node.args[0].value


def _within(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def method_imports(source: str, module: str, is_package: bool = False) -> List[str]:
    """Rule (a): imports of a method package."""
    return [f"{module}:{line} imports {t}" for line, t in imports(source, module, is_package)
            if any(_within(t, f"fastreid_ext.{m}") for m in METHODS)]


def impure_imports(source: str, module: str, is_package: bool = False) -> List[str]:
    """Rule (b): imports of FastReID, or of a fastreid_ext module outside the pure set (which could import it)."""
    bad = []
    for line, t in imports(source, module, is_package):
        if _within(t, "fastreid"):
            bad.append(f"{module}:{line} imports {t} (FastReID)")
        elif _within(t, "fastreid_ext") and t != "fastreid_ext" and not any(_within(t, p) for p in PURE):
            bad.append(f"{module}:{line} imports {t} (not a pure module: {', '.join(PURE)})")
    return bad


def engine_imports(source: str, module: str, is_package: bool = False) -> List[str]:
    """Rule (c): imports of fastreid_ext's or FastReID's engine."""
    return [f"{module}:{line} imports {t}" for line, t in imports(source, module, is_package)
            if _within(t, "fastreid_ext.engine") or _within(t, "fastreid.engine")]


def code_lines(source: str) -> int:
    """Rule (d): lines of code: not blank, not a comment, not in the module docstring."""
    tree = ast.parse(source)
    doc = set()
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant) \
            and isinstance(tree.body[0].value.value, str):
        doc = set(range(tree.body[0].lineno, tree.body[0].end_lineno + 1))
    return sum(1 for i, line in enumerate(source.splitlines(), 1)
               if i not in doc and line.strip() and not line.strip().startswith("#"))


LOADERS = ("spec_from_file_location", "run_path", "SourceFileLoader", "load_source")


def _mentions_tools(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and isinstance(n.value, str)
               and (n.value == "tools" or "tools/" in n.value or "tools\\" in n.value) for n in ast.walk(node))


def tool_loads(source: str, name: str = "<test>") -> List[str]:
    """Rule (e): a test that imports ``tools`` as a module, puts ``tools/`` on ``sys.path`` or loads a file under
    ``tools/`` by path (running the script in a subprocess is not loading it)."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(_within(a.name, "tools") for a in node.names):
            bad.append(f"{name}:{node.lineno} imports the tools folder as a module")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module and _within(node.module, "tools"):
            bad.append(f"{name}:{node.lineno} imports the tools folder as a module")
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            on_sys_path = isinstance(f, ast.Attribute) and fname in ("insert", "append") \
                and isinstance(f.value, ast.Attribute) and f.value.attr == "path"
            if (fname in LOADERS or on_sys_path) and _mentions_tools(node):
                bad.append(f"{name}:{node.lineno} loads tools/ by path ({fname})")
    return bad


def _py_files(top: Path):
    return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)


def _check(files, checker) -> List[str]:
    bad = []
    for p in files:
        mod, is_pkg = module_name(p)
        bad += checker(p.read_text(encoding="utf-8"), mod, is_pkg)
    return bad


def core_files() -> List[Path]:
    return [p for p in _py_files(PKG) if p != PKG / "__init__.py"
            and p.relative_to(PKG).parts[0] not in METHODS]


def model_files() -> List[Path]:
    return _py_files(PKG / "modeling") + sorted(PKG.glob("*/meta_arch.py"))


# ------------------------------------------------------------------------------------------------- the rules
def test_methods_are_packages_and_the_core_is_not_empty():
    assert METHODS and all((PKG / m / "__init__.py").is_file() for m in METHODS), METHODS
    core = {p.relative_to(PKG).parts[0] for p in core_files()}
    assert {"config", "data", "engine", "functional", "modeling"} <= core


def test_core_imports_no_method():
    assert _check(core_files(), method_imports) == []


def test_functional_and_synthped_import_no_fastreid():
    files = _py_files(PKG / "functional") + _py_files(PKG / "data" / "synthped")
    assert len(files) > 5
    assert _check(files, impure_imports) == []


def test_pure_modules_import_without_fastreid_at_run_time():
    mods = [module_name(p)[0] for p in _py_files(PKG / "functional") + _py_files(PKG / "data" / "synthped")]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + \
           "assert 'fastreid' not in sys.modules, 'FastReID was imported'\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]


def test_models_import_no_engine():
    files = model_files()
    assert any(p.name == "meta_arch.py" for p in files)
    assert _check(files, engine_imports) == []


def test_tools_are_thin():
    tools = sorted((ROOT / "tools").glob("*.py"))
    assert tools
    fat = {p.name: n for p in tools if (n := code_lines(p.read_text())) > MAX_TOOL_LINES}
    assert fat == {}, f"move the logic into a package module with main(argv) (e.g. fastreid_ext/<x>/cli.py): {fat}"


def test_no_test_loads_tools_by_path():
    bad = []
    for p in sorted((ROOT / "tests").glob("*.py")):
        bad += tool_loads(p.read_text(), p.name)
    assert bad == []


def test_the_library_reads_no_repository_file():
    """A non-editable install has only the package: no module climbs out of it (``Path(__file__).parents[n]``,
    ``..`` from ``__file__``); files it reads ship as package data (setup.py ``package_data``)."""
    bad = []
    for p in _py_files(PKG):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Name) and node.id == "__file__":
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} uses __file__ (use importlib.resources)")
    assert bad == []
    data = [p for p in PKG.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc", ".so")
            and "__pycache__" not in p.parts]
    setup = (ROOT / "setup.py").read_text()
    for p in data:
        pkg = ".".join(p.parent.relative_to(ROOT).parts)
        assert f"{p.parent.name}/*{p.suffix}" in setup or f'"{pkg}"' in setup, f"{p} is not in package_data"


def test_packaged_osnet_config_is_the_project_config():
    from fastreid_ext.video.embed import TORCHREID_OSNET_CONFIG, load_cfg

    packaged = load_cfg(TORCHREID_OSNET_CONFIG)
    project = load_cfg(str(ROOT / "projects/JointIBN/configs/torchreid/osnet_x0_25.yml"))
    assert packaged.dump() == project.dump()
    assert packaged.MODEL.BACKBONE.NAME == "build_osnet_torchreid_backbone"


# ------------------------------------------------------------------------------------- the checkers can fail
def test_checkers_flag_bad_sources():
    # (a) absolute, relative (module and name forms) and import_module
    assert method_imports("from fastreid_ext.rbnet.masking import apply_mask\n", "fastreid_ext.video.embed")
    assert method_imports("from ..rbnet import RBNet\n", "fastreid_ext.video.embed")
    assert method_imports("from .. import mmt\n", "fastreid_ext.data.build")
    assert method_imports("def f():\n    from ...hplf.meta_arch import HPLF\n", "fastreid_ext.data.synthped.cli")
    assert method_imports("import importlib\nimportlib.import_module('fastreid_ext.joint_ibn')\n", "fastreid_ext.x")
    assert method_imports("from ..data import build\n", "fastreid_ext.video.cli") == []
    assert method_imports("from . import annotations\n", "fastreid_ext.data", is_package=True) == []
    # (b) FastReID at module level or in a function, and a non-pure fastreid_ext module
    assert impure_imports("import fastreid\n", "fastreid_ext.functional.x")
    assert impure_imports("def f():\n    from fastreid.utils import comm\n", "fastreid_ext.functional.x")
    assert impure_imports("from ..data.build import build_dataset\n", "fastreid_ext.functional.x")
    assert impure_imports("from ...functional.keypoints import NUM_KEYPOINTS\nimport numpy\n",
                          "fastreid_ext.data.synthped.render") == []
    assert impure_imports("import fastreid_ext\nimport fastreid_extra\n", "fastreid_ext.functional.x") == []
    # (c)
    assert engine_imports("from ..engine.trainer import register_evaluator\n", "fastreid_ext.hplf.meta_arch")
    assert engine_imports("def f():\n    from fastreid.engine import hooks\n", "fastreid_ext.modeling.x")
    assert engine_imports("from fastreid.modeling import build_model\n", "fastreid_ext.modeling.x") == []
    # (d)
    thin = '"""doc\n\nmore doc\n"""\nimport sys\n\n# comment\nfrom x import main\n'
    assert code_lines(thin) == 2
    assert code_lines(thin + "x = 1\n" * 40) == 42
    # (e)
    assert tool_loads("import importlib.util\ns = importlib.util.spec_from_file_location('v', 'tools/v.py')\n")
    assert tool_loads("import os\nspec_from_file_location('t', os.path.join(ROOT, 'tools/train_net.py'))\n")
    assert tool_loads("import sys\nsys.path.insert(0, str(ROOT / 'tools'))\nimport make_synthetic\n")
    assert tool_loads("from tools.reid_video import main\n")
    assert tool_loads("import runpy\nrunpy.run_path('tools/x.py')\n")
    assert tool_loads("import subprocess\nsubprocess.run([sys.executable, 'tools/train_net.py'])\n") == []
    assert tool_loads("from fastreid_ext.video.cli import main\n") == []


@pytest.mark.parametrize("module,is_pkg,src,expected", [
    ("fastreid_ext.video.embed", False, "from ..engine import Trainer", "fastreid_ext.engine"),
    ("fastreid_ext.rbnet", True, "from .meta_arch import RBNet", "fastreid_ext.rbnet.meta_arch"),
    ("fastreid_ext.data.synthped.cli", False, "from .generate import x", "fastreid_ext.data.synthped.generate"),
    ("fastreid_ext.data.synthped", True, "from ...functional import keypoints", "fastreid_ext.functional"),
])
def test_relative_imports_resolve(module, is_pkg, src, expected):
    assert [t for _, t in imports(src, module, is_pkg)][0] == expected


def test_relative_import_beyond_the_package_is_an_error():
    with pytest.raises(ValueError, match="beyond"):
        list(imports("from .... import x\n", "fastreid_ext.a.b"))
