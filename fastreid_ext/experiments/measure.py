"""Measurements after a FastReID run, in their own process (the runner starts ``python -m
fastreid_ext.experiments.measure``): extra numbers a method's paper claims beyond Rank-1 / mAP. Each method registers
its own (:func:`register_measurement` in ``fastreid_ext/<method>/measures.py``, found by :func:`load_measurements`):

* ``rbnet_maps``: RBNet's keypoint error and mask means (:func:`fastreid_ext.rbnet.evaluation.map_quality`) on the
  first test set's images, for a model of the same config and seed before training (``init/``) and for the trained
  ``model_final.pth``;
* ``mmt_pseudo_labels``: the quality of MMT's DBSCAN pseudo labels of the target train split (Ge, Chen & Li, "Mutual
  Mean-Teaching", ICLR 2020, Sec. 3.1: clustering of the mean nets' features): number of clusters, outliers and the
  adjusted Rand index against the true identities (scikit-learn; outliers count as singleton clusters), for the
  first clustering (the two source models, ``pl_init/``) and for the final mean nets (``pl_final/``, with the eps
  the run fixed at its first clustering);
* ``adabn``: the model with its BatchNorm statistics re-estimated on the last test set's train images (AdaBN: Li et
  al., "Revisiting batch normalization for practical domain adaptation", 2016), evaluated on that test set.

    python -m fastreid_ext.experiments.measure --config-file CFG --weights model_final.pth --out m.json NAME
        [KEY VALUE ...]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
from typing import Callable, Dict

import numpy as np

__all__ = ["MEASUREMENTS", "register_measurement", "load_measurements", "measure", "adjusted_rand_with_outliers",
           "main"]


def adjusted_rand_with_outliers(true_ids, labels) -> float:
    """Adjusted Rand index (Hubert & Arabie, 1985; scikit-learn) of ``labels`` against ``true_ids``, each label
    ``< 0`` (a DBSCAN outlier) counted as a cluster of its own."""
    from sklearn.metrics import adjusted_rand_score

    labels = np.asarray(labels).copy()
    out = labels < 0
    labels[out] = labels.max(initial=-1) + 1 + np.arange(int(out.sum()))
    _, truth = np.unique(np.asarray(true_ids), return_inverse=True)
    return float(adjusted_rand_score(truth, labels))


def _cfg(config_file, opts):
    import fastreid_ext

    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    return cfg


#: measurement name -> fn(cfg, weights) -> {key: float}; methods register theirs in ``fastreid_ext/<method>/measures.py``
MEASUREMENTS: Dict[str, Callable] = {}


def register_measurement(name: str):
    """Decorator: register ``fn(cfg, weights) -> {key: float}`` as the measurement ``name``."""

    def deco(fn):
        MEASUREMENTS[name] = fn
        return fn

    return deco


def load_measurements() -> Dict[str, Callable]:
    """Import the methods' measurement modules (``fastreid_ext.<method>.measures`` for each of
    ``fastreid_ext.METHODS`` that has one, the way ``fastreid_ext`` imports the methods' registrations) and return
    the registry."""
    import fastreid_ext

    for m in fastreid_ext.METHODS:
        mod = f"fastreid_ext.{m}.measures"
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    return MEASUREMENTS


def measure(name: str, config_file: str, weights: str, opts=()) -> Dict[str, float]:
    load_measurements()
    if name not in MEASUREMENTS:
        raise KeyError(f"unknown measurement {name!r}; known: {sorted(MEASUREMENTS)}")
    return MEASUREMENTS[name](_cfg(config_file, opts), weights)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", help="a registered measurement (fastreid_ext/<method>/measures.py)")
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True, help="JSON file of the numbers")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    import fastreid_ext  # noqa: F401  (compat + registrations)

    # the registry of the importable module (``python -m`` runs this file as ``__main__``, a second copy)
    from fastreid_ext.experiments.measure import measure as registered_measure

    res = registered_measure(args.name, args.config_file, args.weights, args.opts)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
