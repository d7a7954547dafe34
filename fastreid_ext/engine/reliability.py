"""Training reliability for :class:`fastreid_ext.engine.Trainer` and ``tools/train_net.py``.

* **Non-finite training**: :func:`check_losses_finite` stops a step whose loss terms are NaN/inf before the
  optimizer step, naming the term and the iteration (every rank checks its own losses); :class:`SafeCheckpointHook`
  refuses to let a model with NaN/inf weights reach a checkpoint (the previous good one stays the last).
* **Final checkpoint before the final evaluation**: :class:`SafeCheckpointHook` writes ``model_final.pth`` before
  FastReID's ``EvalHook`` evaluates the last epoch (FastReID's checkpointer runs after it: an evaluation that
  fails lost the whole run).
* **Checkpoints that do not fit**: :func:`state_fit` compares a checkpoint's tensors with a model's; a resume
  refuses a checkpoint of another model (:func:`check_resume_fit`), ``--eval-only`` refuses weights that leave
  part of the model untrained (:func:`check_evaluation_fit`), ``MODEL.WEIGHTS`` for training loads what fits and
  reports what was skipped (:func:`report_fit`).
* **Broken last checkpoint**: :func:`readable_checkpoint` falls back from an unreadable (truncated) file that
  ``last_checkpoint`` names to the newest readable ``model_*.pth``.
* **Output folder of a finished run**: :func:`check_output_dir` refuses to train over it without ``--resume``.

Checkpoints are written atomically by the compat patch ``atomic_checkpoints`` (fastreid_ext/compat.py).
"""
from __future__ import annotations

import glob
import itertools
import logging
import os
import random
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/inf: training stops before the optimizer step."""


class NonFiniteWeightsError(FloatingPointError):
    """The model's weights became NaN/inf: no checkpoint is written of them."""


class ConfigError(ValueError):
    """A command line / config that cannot run as given; ``tools/train_net.py`` prints the message and exits 1."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint that does not fit the configured model where all of it must (resume, evaluation)."""


def explain_build_key_error(cfg, err: KeyError) -> str:
    """The message for a ``KeyError`` out of building the model: an unknown registry name (meta-architecture,
    backbone, head: the registered names listed) or a ``MODEL.BACKBONE.DEPTH`` the backbone builder does not know."""
    from fastreid.modeling.backbones import BACKBONE_REGISTRY
    from fastreid.modeling.heads import REID_HEADS_REGISTRY
    from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

    key = err.args[0] if err.args else ""
    for option, name, reg in (("MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE, META_ARCH_REGISTRY),
                              ("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME, BACKBONE_REGISTRY),
                              ("MODEL.HEADS.NAME", cfg.MODEL.HEADS.NAME, REID_HEADS_REGISTRY)):
        if name not in reg._obj_map:
            return (f"{option} {name!r} is not registered; registered: {', '.join(sorted(reg._obj_map))} "
                    f"(a method's name needs `import fastreid_ext`)")
    if str(key) == str(cfg.MODEL.BACKBONE.DEPTH):
        return (f"MODEL.BACKBONE.DEPTH {cfg.MODEL.BACKBONE.DEPTH!r} is not a depth {cfg.MODEL.BACKBONE.NAME} knows "
                f"(FastReID's ResNet: 18x, 34x, 50x, 101x, 152x; MobileNetV2: 1.0x, 1.4x, ...)")
    return f"building the model from the config failed on the key {key!r} ({type(err).__name__}); check the MODEL options"


def last_checkpoint_name(output_dir: str) -> str:
    """The file ``OUTPUT_DIR/last_checkpoint`` names, or ``"none"``."""
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            return f.read().strip() or "none"
    except OSError:
        return "none"


def check_losses_finite(loss_dict: Mapping[str, torch.Tensor], iteration: int, cfg=None) -> None:
    """Raise :class:`NonFiniteLossError` naming every NaN/inf term of ``loss_dict`` and the iteration."""
    values = {k: torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in loss_dict.items()}
    bad = {k: v for k, v in values.items() if not bool(torch.isfinite(v).all())}
    if not bad:
        return
    terms = ", ".join(f"{k} = {float(v.float().mean())}" for k, v in bad.items())
    hint = _stop_hint(cfg, ", then start again or --resume.")
    raise NonFiniteLossError(f"loss {terms} is not finite at iteration {iteration} (rank {comm.get_rank()}): "
                             f"training stopped before the optimizer step.{hint}")


def _stop_hint(cfg, tail: str = ".") -> str:
    """What a stopped run tells the user: the last good checkpoint and the options to change (empty without cfg)."""
    if cfg is None:
        return ""
    last = last_checkpoint_name(cfg.OUTPUT_DIR) if cfg.OUTPUT_DIR else "none"
    return (f" The last good checkpoint stays the last one ({last} in {cfg.OUTPUT_DIR}); lower SOLVER.BASE_LR "
            f"(now {cfg.SOLVER.BASE_LR:g}) or set SOLVER.CLIP_GRADIENTS.ENABLED True{tail}")


#: a loss term this many times its value at the first iteration of the run (at least 1.0) is a divergence:
#: finite but garbage (e.g. Adam with SOLVER.BASE_LR 1e6: loss 2e14); no healthy re-id loss grows 10^4-fold
DIVERGENCE_FACTOR = 1e4


class LossDivergenceError(NonFiniteLossError):
    """A loss term grew by orders of magnitude over its start: training stops before the optimizer step."""


class DivergenceGuard:
    """Remembers each loss term's value at the first iteration this process trains (after a resume too) and
    raises :class:`LossDivergenceError` when a term exceeds ``factor * max(start, 1)``, naming the term, both
    values and the iteration (the last good checkpoint stays the last one)."""

    def __init__(self, factor: float = DIVERGENCE_FACTOR):
        self.factor = float(factor)
        self.start: Dict[str, float] = {}

    def __call__(self, loss_dict: Mapping[str, torch.Tensor], iteration: int, cfg=None) -> None:
        bad = []
        for k, v in loss_dict.items():
            x = float(torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v).float().mean())
            ref = self.start.setdefault(k, x)
            if abs(x) > self.factor * max(abs(ref), 1.0):
                bad.append(f"{k} = {x:.4g} (was {ref:.4g} at the start)")
        if not bad:
            return
        hint = _stop_hint(cfg)
        raise LossDivergenceError(
            f"loss {', '.join(bad)} grew more than {self.factor:g}-fold at iteration {iteration} (rank "
            f"{comm.get_rank()}): the training diverged; stopped before the optimizer step.{hint}")


def first_non_finite(module: torch.nn.Module) -> Optional[str]:
    """Name of the first floating-point parameter or buffer of ``module`` with a NaN/inf, else ``None``."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all()):
            return name
    return None


class SafeCheckpointHook(HookBase):
    """Placed right before FastReID's ``EvalHook``: after each epoch, refuse NaN/inf weights (raise before the
    evaluation and the checkpointer see them); at the last epoch, write ``model_final.pth`` before the evaluation
    (FastReID's checkpointer writes it again after, with the metric)."""

    def __init__(self, checkpointer, eval_period: int):
        self._checkpointer = checkpointer
        self._eval_period = int(eval_period)

    def after_epoch(self):
        t = self.trainer
        bad = first_non_finite(t.model)
        if bad is not None:
            out = t.cfg.OUTPUT_DIR
            raise NonFiniteWeightsError(
                f"weight {bad} is not finite after iteration {t.iter} (epoch {t.epoch}): training stopped, no "
                f"checkpoint written of this model; the last good checkpoint stays the last one "
                f"({last_checkpoint_name(out)} in {out}). Lower SOLVER.BASE_LR (now {t.cfg.SOLVER.BASE_LR:g}) or set "
                f"SOLVER.CLIP_GRADIENTS.ENABLED True.")
        next_epoch = t.epoch + 1
        evaluates_now = self._eval_period > 0 and next_epoch % self._eval_period == 0
        if next_epoch >= t.max_epoch and evaluates_now and comm.is_main_process():
            self._checkpointer.save("model_final", epoch=t.epoch)


@dataclass
class Fit:
    """How a checkpoint's ``model`` tensors match a model: ``loaded`` names, ``wrong_shape`` (name, checkpoint
    shape, model shape), ``missing`` (model names absent from the checkpoint), ``unexpected`` (checkpoint names
    the model lacks)."""
    loaded: List[str] = field(default_factory=list)
    wrong_shape: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.loaded) + len(self.wrong_shape) + len(self.missing)

    def describe(self, limit: int = 5) -> str:
        parts = [f"{len(self.loaded)} of the model's {self.total} tensors fit"]
        if self.wrong_shape:
            parts.append(f"{len(self.wrong_shape)} with another shape (" + ", ".join(
                f"{k}: {list(a)} in the checkpoint, {list(b)} in the model" for k, a, b in self.wrong_shape[:limit])
                + (", ..." if len(self.wrong_shape) > limit else "") + ")")
        if self.missing:
            parts.append(f"{len(self.missing)} not in the checkpoint (" + ", ".join(self.missing[:limit])
                         + (", ..." if len(self.missing) > limit else "") + ")")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} of the checkpoint not in the model (" + ", ".join(
                self.unexpected[:limit]) + (", ..." if len(self.unexpected) > limit else "") + ")")
        return "; ".join(parts)


def _strip_module(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def state_fit(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> Fit:
    """Compare ``state`` (a checkpoint's ``model`` dict) with ``model.state_dict()``."""
    state = _strip_module(state)
    fit = Fit()
    for k, v in model.state_dict().items():
        if k not in state:
            fit.missing.append(k)
        elif tuple(state[k].shape) != tuple(v.shape):
            fit.wrong_shape.append((k, tuple(state[k].shape), tuple(v.shape)))
        else:
            fit.loaded.append(k)
    own = model.state_dict()
    fit.unexpected = [k for k in state if k not in own]
    return fit


def first_non_finite_tensor(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """Name of the first floating-point tensor of ``state`` with a NaN/inf, else ``None``."""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return k
    return None


def check_resume_fit(fit: Fit, path: str, cfg) -> None:
    """A resumed checkpoint must be this model's, all of it."""
    if fit.wrong_shape or fit.missing or fit.unexpected:
        raise CheckpointMismatchError(
            f"--resume: {path} is not a checkpoint of this model (MODEL.META_ARCHITECTURE "
            f"{cfg.MODEL.META_ARCHITECTURE}): {fit.describe()}. OUTPUT_DIR {cfg.OUTPUT_DIR} holds another run: "
            f"choose a new OUTPUT_DIR, or drop --resume and pass MODEL.WEIGHTS {path} to start from the weights "
            f"that fit.")


def check_evaluation_fit(fit: Fit, path: str, cfg) -> None:
    """``--eval-only`` weights must cover the model, except classifier rows (a classifier built for
    ``MODEL.HEADS.NUM_CLASSES``, 0 when unknown, is not used by the evaluation)."""
    n_cls = int(cfg.MODEL.HEADS.NUM_CLASSES)
    bad_shape = [(k, a, b) for k, a, b in fit.wrong_shape
                 if not (len(a) == len(b) and len(b) >= 1 and tuple(a[1:]) == tuple(b[1:]) and b[0] == n_cls)]
    if not fit.loaded or bad_shape or fit.missing:
        shown = Fit(loaded=fit.loaded, wrong_shape=bad_shape, missing=fit.missing, unexpected=fit.unexpected)
        raise CheckpointMismatchError(
            f"--eval-only: MODEL.WEIGHTS {path} does not fit the configured model (MODEL.META_ARCHITECTURE "
            f"{cfg.MODEL.META_ARCHITECTURE}, backbone {cfg.MODEL.BACKBONE.NAME} {cfg.MODEL.BACKBONE.DEPTH}): "
            f"{shown.describe()}. Evaluate with the config the checkpoint was trained with (its OUTPUT_DIR/config.yaml).")


def load_for_evaluation(model: torch.nn.Module, cfg) -> None:
    """``--eval-only``: load ``MODEL.WEIGHTS`` into ``model``; refuse (:class:`ConfigError`) a missing path or
    weights that do not fit the model (:func:`check_evaluation_fit`), instead of evaluating a random model."""
    from fastreid.utils.checkpoint import Checkpointer

    path = cfg.MODEL.WEIGHTS
    if not path:
        raise ConfigError("--eval-only needs trained weights: pass MODEL.WEIGHTS <OUTPUT_DIR>/model_final.pth "
                          "(without them the metrics would be those of an untrained model)")
    if "://" not in path and not os.path.isfile(path):
        raise ConfigError(f"--eval-only: MODEL.WEIGHTS {path} does not exist")
    ckpt = Checkpointer(model)
    original = ckpt._load_model

    def checked(checkpoint):
        state = checkpoint.get("model", {})
        check_evaluation_fit(state_fit(ckpt.model, state), path, cfg)
        bad = first_non_finite_tensor(state)
        if bad is not None:
            raise ConfigError(f"--eval-only: MODEL.WEIGHTS {path} holds NaN/inf weights ({bad}): the training "
                              f"diverged; evaluate an earlier checkpoint of its OUTPUT_DIR")
        return original(checkpoint)

    ckpt._load_model = checked
    ckpt.load(path)


def report_fit(fit: Fit, path: str) -> None:
    """``MODEL.WEIGHTS`` to start a training from: load what fits, say what was skipped."""
    if fit.wrong_shape or fit.missing or fit.unexpected:
        logger.warning("MODEL.WEIGHTS %s: loaded what fits, skipped the rest: %s", path, fit.describe())
    else:
        logger.info("MODEL.WEIGHTS %s: all %d tensors of the model loaded", path, fit.total)


def is_readable_checkpoint(path: str) -> bool:
    """``path`` exists and is a complete torch file (zip archive with its central directory; a truncated write
    lacks it); a legacy (non-zip) file is tried with ``torch.load``."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                return len(z.namelist()) > 0
        except (zipfile.BadZipFile, OSError):
            return False
    from ..compat import UntrustedCheckpointError, trusted_torch_load

    try:
        trusted_torch_load(path)
        return True
    except UntrustedCheckpointError:  # readable, but refused: say so, do not fall back to another file
        raise
    except Exception:  # noqa: BLE001  (any failure to read means: not usable)
        return False


def readable_checkpoint(output_dir: str, path: str) -> str:
    """``path`` when readable, else the newest readable ``model_*.pth`` of ``output_dir`` (with a warning);
    raises ``FileNotFoundError`` when none is."""
    if is_readable_checkpoint(path):
        return path
    others = sorted((p for p in glob.glob(os.path.join(output_dir, "model_*.pth")) if p != path),
                    key=os.path.getmtime, reverse=True)
    for p in others:
        if is_readable_checkpoint(p):
            logger.warning("last_checkpoint names %s, which cannot be read (truncated or missing): resuming from "
                           "%s, the newest readable checkpoint", path, p)
            return p
    raise FileNotFoundError(f"--resume: {path} (named by {output_dir}/last_checkpoint) cannot be read and no other "
                            f"readable model_*.pth is in {output_dir}; start again without --resume")


def check_output_dir(cfg, resume: bool, eval_only: bool, overwrite: bool) -> Optional[str]:
    """The refusal message when a training without ``--resume`` would write over a trained run in
    ``OUTPUT_DIR`` (it holds ``last_checkpoint``), else ``None``."""
    out = cfg.OUTPUT_DIR
    if resume or eval_only or overwrite or not out or not os.path.isfile(os.path.join(out, "last_checkpoint")):
        return None
    return (f"OUTPUT_DIR {out} already holds a training run (last checkpoint: {last_checkpoint_name(out)}); training "
            f"again without --resume would overwrite its checkpoints (model_final.pth included). Pass --resume to "
            f"continue it, choose another OUTPUT_DIR, or pass --overwrite to start again in this folder.")


def scheduler_base_lrs(schedulers: Mapping[str, object]) -> Dict[str, List[float]]:
    """``{name: base_lrs}`` of the LR schedulers in FastReID's ``trainer.scheduler`` dict."""
    return {k: [float(x) for x in getattr(s, "base_lrs", [])] for k, s in schedulers.items()
            if getattr(s, "base_lrs", None) is not None}


class RNGStates:
    """Checkpointable random state of this process (torch, numpy, ``random``), so that a resumed single-process
    run continues with the augmentations, dropout and sampler draws of the uninterrupted one. Saved by rank 0;
    restored only when both the saving and the resuming run have one process (each process of a multi-process
    run has its own state; those are re-seeded with ``SEED + rank``). Loading keeps the state aside:
    :meth:`apply` sets it, after the sampler was fast-forwarded (FastReID's samplers draw from numpy's global
    generator)."""

    def __init__(self):
        self.pending = None

    def state_dict(self):
        np_state = np.random.get_state()
        py_version, py_keys, py_gauss = random.getstate()
        return {"world_size": comm.get_world_size(), "torch": torch.get_rng_state(),
                "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
                "numpy_has_gauss": int(np_state[3]), "numpy_gauss": float(np_state[4]),
                "random_version": int(py_version), "random_keys": torch.tensor(py_keys, dtype=torch.int64),
                "random_gauss": py_gauss}

    def load_state_dict(self, state):
        self.pending = dict(state)

    def apply(self) -> bool:
        s, self.pending = self.pending, None
        if s is None:
            return False
        if int(s.get("world_size", 1)) != 1 or comm.get_world_size() != 1:
            logger.info("--resume with several processes: random states re-seeded (SEED + rank), not restored")
            return False
        torch.set_rng_state(s["torch"])
        np.random.set_state(("MT19937", s["numpy_keys"].numpy().astype(np.uint32), s["numpy_pos"],
                             s["numpy_has_gauss"], s["numpy_gauss"]))
        random.setstate((s["random_version"], tuple(int(x) for x in s["random_keys"].tolist()), s["random_gauss"]))
        return True


class _SkipSampler(torch.utils.data.Sampler):
    """``sampler`` without its first ``n`` indices (FastReID's training samplers are infinite)."""

    def __init__(self, sampler, n: int):
        self.sampler, self.n = sampler, int(n)

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.n, None)


def fast_forward_loader(inner_trainer, iterations: int) -> bool:
    """Restart the training loader of FastReID's ``SimpleTrainer`` ``inner_trainer`` where an uninterrupted run is
    after ``iterations`` steps: the same batches follow (the sampler is seeded; only indices are drawn, no image is
    read). Returns ``False`` (nothing done) for a loader without a ``BatchSampler`` over a sampler."""
    loader = getattr(inner_trainer, "data_loader", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if iterations <= 0 or not isinstance(batch_sampler, torch.utils.data.BatchSampler):
        return False
    if getattr(loader, "num_workers", 0) == 0:
        it = iter(loader)
        for _ in range(iterations):  # draw the index batches now, in this process (no image is loaded)
            next(it._sampler_iter)
    else:  # workers prefetch on creation: skip inside the sampler, which the iterator draws from right away
        original = batch_sampler.sampler
        batch_sampler.sampler = _SkipSampler(original, iterations * batch_sampler.batch_size)
        try:
            it = iter(loader)
        finally:
            batch_sampler.sampler = original
    inner_trainer._data_loader_iter = it
    return True
