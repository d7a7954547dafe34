"""The generator stage's trainer: alternating discriminator / generator updates inside FastReID's engine.

FD-GAN (Ge et al., NeurIPS 2018) updates its discriminators and its generator in turn, each with its own optimizer
(Adam for the generator side, SGD for D_i / D_p). :class:`PoseGANTrainer` (registered for ``MODEL.META_ARCHITECTURE
PoseGAN``; built by ``fastreid_ext.engine.build_trainer``) keeps FastReID's loop, hooks, evaluation, logging and
checkpointer and changes only what a GAN needs:

* ``build_optimizer``: the generator-side optimizer (E_P, G, and E_I / C_v / head when they train; E_I at
  ``GAN.SOLVER.ENCODER_LR_FACTOR``), the trainer's ``optimizer``, scheduled by FastReID's ``LRScheduler`` hook;
* a second optimizer ``optimizer_d`` for D_i and D_p (``GAN.SOLVER.D_*``) with its own FastReID schedule
  (``SOLVER.SCHED``, ``STEPS``, warm-up), stepped by :class:`DiscriminatorLRScheduler`; both optimizers and all four
  schedulers are checkpointables of FastReID's ``Checkpointer`` (``optimizer``, ``lr_sched``, ``warmup_sched``,
  ``optimizer_d``, ``d_lr_sched``, ``d_warmup_sched``), so ``--resume`` restores every one of them;
* ``run_step``: one forward pass (:meth:`PoseGAN.gan_forward`), a discriminator step every ``GAN.D_PERIOD``
  iterations, then a generator step every ``GAN.G_PERIOD`` iterations with the discriminators' parameters taking no
  gradient; the alternation is a function of the global iteration, so a resumed run stays in step;
* reproducible resume: with ``SEED >= 0`` every iteration seeds torch and ``random`` from ``(SEED, iteration)``
  (augmentations, noise, target poses, label smoothing, dropout), and a resumed trainer skips the batches the
  interrupted run already used (the sampler's index stream replayed without loading images; done here unless the
  base ``Trainer.resume_or_load`` already fast-forwarded the loader), so with
  ``DATALOADER.NUM_WORKERS 0`` the resumed run's next losses equal the uninterrupted run's (tested);
* a non-finite loss raises ``FloatingPointError`` before its optimizer steps (no weight changes);
* DDP: the passes run on the unwrapped model and each step averages its optimizer's gradients over the processes
  (what DDP does) before stepping.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
from typing import Dict, List

import torch
from fastreid.engine import hooks
from fastreid.utils import comm

from ..data import build as data_build
from ..engine.trainer import register_trainer, register_trainer_hooks
from .trainer import PoseTransferTrainer, _pose_transfer_hooks, _unwrap

logger = logging.getLogger(__name__)

__all__ = ["PoseGANTrainer", "DiscriminatorLRScheduler", "SkipBatches", "build_discriminator_optimizer",
           "build_generator_optimizer", "discriminator_step", "generator_step", "step_seed"]


def step_seed(seed: int, iteration: int) -> int:
    """The per-iteration seed of a seeded run (distinct for every (seed, iteration, rank))."""
    return (int(seed) * 1_000_003 + int(iteration) * 7919 + comm.get_rank() + 1) % (2 ** 63 - 1)


def build_generator_optimizer(cfg, model) -> torch.optim.Optimizer:
    """Adam(``SOLVER.BASE_LR``, ``GAN.SOLVER.BETAS``, ``SOLVER.WEIGHT_DECAY``) on the generator side; E_I's
    parameters at ``GAN.SOLVER.ENCODER_LR_FACTOR`` x the rate."""
    s = cfg.MODEL.POSE_TRANSFER.GAN.SOLVER
    m = _unwrap(model)
    enc = {id(p) for p in m.backbone.parameters()}
    params = m.generator_side_parameters()
    groups = [{"params": [p for p in params if id(p) not in enc], "lr": cfg.SOLVER.BASE_LR, "name": "generator"},
              {"params": [p for p in params if id(p) in enc], "lr": cfg.SOLVER.BASE_LR * s.ENCODER_LR_FACTOR,
               "name": "encoder"}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups, lr=cfg.SOLVER.BASE_LR, betas=tuple(s.BETAS), weight_decay=cfg.SOLVER.WEIGHT_DECAY)


def build_discriminator_optimizer(cfg, model) -> torch.optim.Optimizer:
    """``GAN.SOLVER.D_OPT`` (SGD with ``D_MOMENTUM``, or Adam with ``BETAS``) on D_p at ``D_BASE_LR`` and D_i at
    ``DI_LR_FACTOR`` x it, weight decay ``D_WEIGHT_DECAY``."""
    s = cfg.MODEL.POSE_TRANSFER.GAN.SOLVER
    m = _unwrap(model)
    groups = [{"params": [p for p in m.disc_pose.parameters() if p.requires_grad], "lr": s.D_BASE_LR,
               "name": "disc_pose"},
              {"params": [p for p in m.disc_id.parameters() if p.requires_grad], "lr": s.D_BASE_LR * s.DI_LR_FACTOR,
               "name": "disc_id"}]
    groups = [g for g in groups if g["params"]]
    if s.D_OPT == "SGD":
        return torch.optim.SGD(groups, lr=s.D_BASE_LR, momentum=s.D_MOMENTUM, weight_decay=s.D_WEIGHT_DECAY)
    if s.D_OPT == "Adam":
        return torch.optim.Adam(groups, lr=s.D_BASE_LR, betas=tuple(s.BETAS), weight_decay=s.D_WEIGHT_DECAY)
    raise ValueError(f"MODEL.POSE_TRANSFER.GAN.SOLVER.D_OPT must be 'SGD' or 'Adam', got {s.D_OPT!r}")


def _params(opt) -> List[torch.nn.Parameter]:
    return [p for g in opt.param_groups for p in g["params"]]


def _check_finite(losses: Dict[str, torch.Tensor]) -> None:
    bad = {k: float(v.detach()) for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())}
    if bad:
        raise FloatingPointError(f"PoseGAN: non-finite loss(es) {bad} before the optimizer step (no weight was "
                                 f"changed); lower SOLVER.BASE_LR / MODEL.POSE_TRANSFER.GAN.SOLVER.D_BASE_LR")


def discriminator_step(model, st, optimizer, generator=None, sync=None) -> Dict[str, torch.Tensor]:
    """One update of D_i and D_p on ``model.discriminator_losses(st)`` (G's images detached)."""
    ld = model.discriminator_losses(st, generator)
    if not ld:
        return ld
    _check_finite(ld)
    optimizer.zero_grad(set_to_none=True)
    sum(ld.values()).backward()
    if sync is not None:
        sync(_params(optimizer))
    optimizer.step()
    return ld


def generator_step(model, st, batched_inputs, optimizer, sync=None) -> Dict[str, torch.Tensor]:
    """One update of the generator side on ``model.generator_losses``; the discriminators' parameters take no
    gradient meanwhile (their ``requires_grad`` is restored afterwards)."""
    dparams = model.discriminator_parameters()
    for p in dparams:
        p.requires_grad_(False)
    try:
        lg = model.generator_losses(st, batched_inputs)
        _check_finite(lg)
        optimizer.zero_grad(set_to_none=True)
        sum(lg.values()).backward()
    finally:
        for p in dparams:
            p.requires_grad_(True)
    if sync is not None:
        sync(_params(optimizer))
    optimizer.step()
    return lg


class SkipBatches(torch.utils.data.Sampler):
    """A batch sampler that drops the first ``skip`` batches of ``batch_sampler`` (indices only: no image is
    loaded), so a resumed run sees the batches the uninterrupted run would have seen."""

    def __init__(self, batch_sampler, skip: int):
        self.batch_sampler, self.skip = batch_sampler, int(skip)

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self):
        return max(0, len(self.batch_sampler) - self.skip)


class DiscriminatorLRScheduler(hooks.LRScheduler):
    """FastReID's ``LRScheduler`` hook for the discriminators' optimizer (warm-up per iteration, the main schedule per
    epoch), logging ``lr_d``: the rate of its first group (D_p's; D_i's is ``GAN.SOLVER.DI_LR_FACTOR`` x it)."""

    def __init__(self, optimizer, scheduler):
        super().__init__(optimizer, scheduler)
        self._best_param_group_id = 0

    def after_step(self):
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr_d", lr, smoothing_hint=False)
        if self.trainer.iter + 1 <= self.trainer.warmup_iters:
            self._scheduler["warmup_sched"].step()


@register_trainer("PoseGAN")
class PoseGANTrainer(PoseTransferTrainer):
    """``Trainer`` for ``MODEL.META_ARCHITECTURE PoseGAN`` (module docstring)."""

    @classmethod
    def build_train_loader(cls, cfg):
        if not cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS:
            raise ValueError("PoseGAN needs the target poses: set DATASETS.ANNOTATIONS.LOAD_KEYPOINTS True (SynthPed "
                             "ships exact keypoints; real data sets: tools/extract_keypoints.py writes keypoints.json)")
        return super().build_train_loader(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_generator_optimizer(cfg, model), None

    def build_hooks(self):
        m = _unwrap(self.model)
        self.optimizer_d = build_discriminator_optimizer(self.cfg, m)
        self.scheduler_d = self.build_lr_scheduler(self.cfg, self.optimizer_d, self.iters_per_epoch)
        self.checkpointer.checkpointables["optimizer_d"] = self.optimizer_d
        for k, v in self.scheduler_d.items():
            self.checkpointer.checkpointables["d_" + k] = v
        ret = super().build_hooks()
        at = next((i + 1 for i, h in enumerate(ret) if isinstance(h, hooks.LRScheduler)), 1)
        d_hook = DiscriminatorLRScheduler(self.optimizer_d, self.scheduler_d)
        return ret[:at] + [d_hook] + ret[at:]

    def resume_or_load(self, resume=True):
        before = self._trainer._data_loader_iter
        super().resume_or_load(resume=resume)
        done = self.start_epoch * self.iters_per_epoch
        if done > 0 and self._trainer._data_loader_iter is before:  # the base trainer did not fast-forward it
            old = self._trainer.data_loader
            loader = data_build.make_data_loader(self.cfg, old.dataset, SkipBatches(old.batch_sampler, done),
                                                 self.cfg.DATALOADER.NUM_WORKERS)
            self._trainer.data_loader = loader
            self._trainer._data_loader_iter = iter(loader)
            logger.info("PoseGAN resume: epoch %d, the data stream skips the %d batches already used", self.start_epoch,
                        done)

    # ---------------------------------------------------------------------------------------------------- step
    def _sync_grads(self, params: List[torch.nn.Parameter]) -> None:
        world = comm.get_world_size()
        if world <= 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)

    def run_step(self):
        m = _unwrap(self.model)
        assert m.training, "[PoseGANTrainer] model was changed to eval mode!"
        g = self.cfg.MODEL.POSE_TRANSFER.GAN
        gen = None
        if self.cfg.SEED >= 0:
            s = step_seed(self.cfg.SEED, self.iter)
            random.seed(s)
            torch.manual_seed(s)
            gen = torch.Generator().manual_seed(s)
        start = time.perf_counter()
        data = next(self._trainer._data_loader_iter)
        data_time = time.perf_counter() - start
        d_step = g.D_PERIOD > 0 and self.iter % g.D_PERIOD == 0
        g_step = g.G_PERIOD > 0 and self.iter % g.G_PERIOD == 0
        with torch.set_grad_enabled(g_step):
            st = m.gan_forward(data, gen)
        losses: Dict[str, torch.Tensor] = {}
        if d_step:
            losses.update(discriminator_step(m, st, self.optimizer_d, gen, self._sync_grads))
        if g_step:
            losses.update(generator_step(m, st, data, self.optimizer, self._sync_grads))
        rec = float((st["fake"].detach() - st["real_target"]).abs().mean())
        self.storage.put_scalar("recon_l1", rec)
        self.storage.put_scalars(d_step=float(d_step), g_step=float(g_step), smoothing_hint=False)
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        if losses:
            self._trainer._write_metrics(losses, data_time)


register_trainer_hooks("PoseGAN")(_pose_transfer_hooks)
