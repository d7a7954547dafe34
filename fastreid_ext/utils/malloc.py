"""Let a CPU process reuse freed tensor memory instead of handing it back to the OS (glibc ``mallopt``).

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves requests above its mmap threshold
(128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and unmaps them on free, so large activations are
page-faulted in anew at every training step: on this 2-core machine a ReLU over a 35 MB tensor in a fresh
process took 17.3 ms (8,705 page faults), and 1.9 ms once freed memory was reused. In training, glibc's
adaptive threshold catches part of it: FastReID's Baseline (ResNet-18, 128x64, batch 64) ran without page
faults either way, RBNet took 60-73 thousand page faults per iteration and ran 1.06-1.12x faster with
:func:`keep_freed_memory` (two interleaved runs of ``bench/bench_malloc.py``). Memory-bound layers at high
resolution (RBNet's reverse path: BN, ReLU, adds, depthwise convolutions, upsampling) are what gains.

The cost: freed memory stays in the process (up to ``limit`` bytes at the top of the heap), so the resident
size stays near the peak of a step instead of shrinking between steps. Opt out with the environment
variable ``FASTREID_EXT_MALLOC=system``. Other allocators (jemalloc / tcmalloc via ``LD_PRELOAD``, the usual
advice for PyTorch on CPU) do the same job; this needs no install. Non-glibc platforms are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["keep_freed_memory", "ENV_VAR"]

logger = logging.getLogger(__name__)

ENV_VAR = "FASTREID_EXT_MALLOC"
# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_applied = None


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes for this process (and processes it forks).

    Returns whether the setting is in effect: False where ``FASTREID_EXT_MALLOC=system`` is set, on non-glibc
    C libraries, or if ``mallopt`` refuses. Safe to call more than once."""
    global _applied
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        return False
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(limit))) and bool(libc.mallopt(_M_TRIM_THRESHOLD, int(limit)))
    except (OSError, AttributeError) as e:  # no mallopt in this libc
        logger.info("keep_freed_memory: mallopt unavailable (%s)", e)
        return False
    if ok:
        logger.info("glibc malloc keeps freed memory up to %d MiB (%s=system to opt out)", limit >> 20, ENV_VAR)
    _applied = ok
    return ok
