"""Shared by the benchmarks (``bench/*.py``; this folder is on ``sys.path`` when a script runs): setup and
reporting.

Setup: :func:`set_threads`, :func:`make_cfg` (a config file + ``KEY VALUE`` overrides + a training budget + a seed).
The budget uses the trainer-level keys, no trainer subclass: ``SOLVER.ITERS_PER_EPOCH`` fixes the epoch length
when asked, and the LR schedule is one rule for every benchmark, :func:`lr_steps` (Base-SynthPed's x0.1 after
8 and 11 of 12 epochs, scaled). ``SEED`` makes the trainer seed torch / numpy / random and the samplers.

Reporting: :func:`write_report` prints a markdown report and writes it under ``bench/results/`` (or ``--out``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------------------------------------- setup
def set_threads(n: int) -> int:
    """``torch.set_num_threads(n)`` when ``n > 0`` (1 avoids OpenMP spin-waiting on a CPU shared with other jobs;
    0 keeps torch's default); returns the number of threads in use."""
    import torch

    if n and n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def add_threads_arg(ap, default: int = 1) -> None:
    ap.add_argument("--threads", type=int, default=default, help="torch intra-op threads (0: torch's default; 1 "
                    "avoids OpenMP spin-waiting on a CPU shared with other jobs)")


def lr_steps(epochs: int) -> List[int]:
    """The benchmarks' LR schedule: x0.1 after 2/3 and 11/12 of the epochs (Base-SynthPed's 8 and 11 of 12)."""
    return sorted({max(1, epochs * 8 // 12), max(1, epochs * 11 // 12)})


def budget_opts(epochs: int, epoch_iters: int = 0, warmup_iters: int = 0, constant_lr: bool = False) -> List[str]:
    """``KEY VALUE`` overrides for a run of ``epochs`` epochs: epochs of ``epoch_iters`` iterations
    (``SOLVER.ITERS_PER_EPOCH``; 0 keeps FastReID's ``len(train set) // batch``), :func:`lr_steps` (or a constant
    LR), ``warmup_iters`` (0 keeps the config's), evaluation and checkpoint at the end only."""
    epochs = max(1, int(epochs))
    steps = [epochs + 1] if constant_lr else lr_steps(epochs)
    opts = ["SOLVER.MAX_EPOCH", str(epochs), "SOLVER.STEPS", str(steps).replace(" ", ""),
            "TEST.EVAL_PERIOD", str(epochs), "SOLVER.CHECKPOINT_PERIOD", str(epochs), "TEST.EVAL_INIT", "False"]
    if epoch_iters > 0:
        opts += ["SOLVER.ITERS_PER_EPOCH", str(int(epoch_iters))]
    if warmup_iters > 0:
        opts += ["SOLVER.WARMUP_ITERS", str(int(warmup_iters))]
    return opts


def natural_epoch_iters(cfg) -> int:
    """FastReID's epoch length for ``cfg``: ``len(train set) // SOLVER.IMS_PER_BATCH`` (builds the train set)."""
    from fastreid_ext.data.build import build_train_set

    return max(1, len(build_train_set(cfg)) // cfg.SOLVER.IMS_PER_BATCH)


def make_cfg(config, opts: Sequence[str] = (), *, seed: Optional[int] = None, iters: int = 0, epochs: int = 0,
             epoch_iters: int = 0, constant_lr: bool = False):
    """``fastreid_ext.get_cfg()`` + ``config`` (a path, relative to the repository root or absolute) + ``opts``,
    then the budget (``budget_opts``): ``iters`` iterations (as ``round(iters / epoch length)`` whole epochs,
    warm-up a tenth of them) or ``epochs`` epochs (the config's warm-up), in epochs of ``epoch_iters`` iterations
    (0: FastReID's length); ``seed`` sets ``SEED``. Returns the (unfrozen) config."""
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list(list(opts))
    if seed is not None:
        cfg.SEED = int(seed)
    warmup = 0
    if iters:
        length = epoch_iters if epoch_iters > 0 else natural_epoch_iters(cfg)
        epochs = max(1, int(round(iters / length)))
        warmup = max(1, iters // 10)
    if epochs:
        cfg.merge_from_list(budget_opts(epochs, epoch_iters, warmup, constant_lr))
    return cfg


def print_setup(out_root=None) -> None:
    """One line: where the datasets and runs are, torch threads, load average."""
    import torch

    where = f"; runs in {out_root}" if out_root else ""
    print(f"datasets under {os.path.abspath(os.getenv('FASTREID_DATASETS', 'datasets'))}{where}; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}", flush=True)


# ---------------------------------------------------------------------------------------------------- reporting
def result_path(name: str) -> str:
    """``bench/results/<name>``."""
    return str(RESULTS / name)


def write_report(text: str, out: str, shown: Optional[str] = None) -> None:
    """Print ``shown`` (default: the whole ``text``) and write ``text`` to ``out`` (folders created)."""
    print(text if shown is None else shown, flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text.rstrip("\n") + "\n")


def proc_status_mb(key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (current) resident memory of this process in MB, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")
