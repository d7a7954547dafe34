"""fastreid_ext: methods, datasets and tools plugged into FastReID's registries.

``import fastreid_ext`` is the single switch: it makes ``fastreid==1.4.0`` work on today's stack (see
:mod:`fastreid_ext.compat`) and registers our datasets, backbones, meta-architectures, evaluators and trainers
into FastReID's registries. The FastReID-level part happens when FastReID itself is first imported (at once if it
already is), so the pure parts of the package (``fastreid_ext.functional``, the SynthPed generator in
``fastreid_ext.data.synthped``) can be imported without importing FastReID.

Layout: the shared core (``compat``, ``config``, ``data``, ``engine``, ``evaluation``, ``functional``,
``modeling``, ``pose``, ``segmentation``, ``video``, ``utils``) never imports a method; each method is a package
of its own (``rbnet``, ``hplf``, ``mmt``, ``joint_ibn``), see docs/CONTRIBUTING.md.
"""
import importlib

from . import compat

__version__ = "0.2.0"

#: the shared core modules whose import registers something (datasets, backbones, evaluator hooks)
CORE_REGISTRATIONS = ("config", "data.datasets", "deploy.config", "engine", "modeling")
#: one package per method; each registers its config keys, meta-architecture and, where it has them,
#: its evaluator / trainer / hooks in its ``__init__``
METHODS = ("rbnet", "hplf", "mmt", "joint_ibn", "pose_transfer", "angular", "moco")


def _register() -> None:
    for name in CORE_REGISTRATIONS + METHODS:
        importlib.import_module(f"{__name__}.{name}")


def register() -> None:
    """Import every registering module now (normally done on the first look-up in a FastReID registry)."""
    import fastreid  # noqa: F401  (the FastReID-stage patches)

    compat.run_registrations()


compat.apply(on_fastreid=_register)


def __getattr__(name):
    if name in ("get_cfg", "add_fastreid_ext_config"):
        register()  # every method's config keys are registered
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
