"""A seeded random fraction of a training set, by identities or by images. Plain Python / numpy: no FastReID import.

The pose-transfer paper (Sec. 4.2, Table 2) transfers to DukeMTMC-reID with all of its training data or with
"a fixed amount of training data drawn at random" (fractions 1.0, 0.8, 0.6, 0.4, 0.2); it does not say whether
images or identities were drawn. Both are offered:

* ``ids``: ``round(fraction * #ids)`` identities with all of their images (fewer people, each fully observed);
* ``images``: ``round(fraction * #images)`` images drawn uniformly (every person may remain, with fewer images;
  some identities may keep a single image or disappear).

The draw is one permutation of the (sorted) identities or of the image indices from ``numpy.random.default_rng(
seed)`` whose first ``n`` entries are kept, so that with one seed a smaller fraction is a subset of a larger one
(the subsets are nested), and the result does not depend on anything but the items, the fraction, the mode and
the seed. Items keep their order.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

__all__ = ["FRACTION_MODES", "check_fraction", "fraction_subset", "count_ids"]

FRACTION_MODES = ("ids", "images")


def check_fraction(fraction: float, key: str = "TRANSFER.FRACTION") -> float:
    """``fraction`` as a float in (0, 1], else a ValueError naming ``key``."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number in (0, 1], got {fraction!r}") from None
    if not (0.0 < f <= 1.0):  # also rejects nan
        raise ValueError(f"{key} must be in (0, 1] (the share of the target training set to train on), got {f}")
    return f


def count_ids(items: Sequence) -> int:
    """Distinct identities (``item[1]``) of FastReID items ``(path, pid, camid, ...)``."""
    return len({it[1] for it in items})


def fraction_subset(items: Sequence, fraction: float, by: str = "ids", seed: int = 0, min_ids: int = 1,
                    key: str = "TRANSFER.FRACTION", what: str = "the training set") -> List:
    """The seeded ``fraction`` of ``items`` (FastReID items ``(path, pid, camid, ...)``), by ``ids`` or ``images``
    (module docstring). Raises a ValueError naming ``key`` when ``fraction`` is outside (0, 1], when ``by`` is
    unknown, or when fewer than ``min_ids`` identities remain (e.g. the P identities of a P x K batch)."""
    f = check_fraction(fraction, key)
    if by not in FRACTION_MODES:
        raise ValueError(f"{key}_BY must be one of {FRACTION_MODES}, got {by!r}")
    items = list(items)
    if not items:
        raise ValueError(f"{what} is empty: nothing to take {key} {f} of")
    rng = np.random.default_rng(int(seed))
    if by == "ids":
        ids = sorted({it[1] for it in items}, key=lambda p: (str(type(p)), p))
        n = max(1, int(round(f * len(ids))))
        order = rng.permutation(len(ids))
        keep_ids = {ids[k] for k in order[:n]}
        out = [it for it in items if it[1] in keep_ids]
    else:
        n = max(1, int(round(f * len(items))))
        keep = np.sort(rng.permutation(len(items))[:n])
        out = [items[k] for k in keep]
    n_ids = count_ids(out)
    if n_ids < min_ids:
        raise ValueError(
            f"{key} {f} (by {by}, seed {seed}) leaves {n_ids} identities of {count_ids(items)} in {what} "
            f"({len(out)} images), but at least {min_ids} are needed (a P x K batch takes P = SOLVER.IMS_PER_BATCH / "
            f"DATALOADER.NUM_INSTANCE identities; verification pairs need 2). Raise {key}, draw by identities, or "
            f"lower SOLVER.IMS_PER_BATCH / raise DATALOADER.NUM_INSTANCE.")
    return out
