"""Per-loss-term gradient norms of any registered model on its own training batches (``tools/loss_gradients.py``).

    python tools/loss_gradients.py --config-file projects/RBNet/configs/SynthPed/rbnet_mnv2.yml [--batches 3]
        [--weights model.pth] [--out grads.json] [KEY VALUE ...]

Builds the model and training loader exactly as ``tools/train_net.py`` would (same config, same registered
meta-architecture, the backbone's pre-training or ``--weights``), runs the model in training mode on a few batches
and prints, for every loss term the model returns, the L2 norm of its gradient on the backbone, on the rest of the
model and on all trainable parameters (:func:`fastreid_ext.functional.grad_norms.loss_gradient_norms`), averaged
over the batches. Nothing is updated. See projects/RBNet/README.md for the measurement it was written for.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Dict, Optional, Sequence

import torch

from ..functional.grad_norms import loss_gradient_norms, mean_norms


def parameter_groups(model: torch.nn.Module) -> Dict[str, list]:
    """``backbone`` (``model.backbone``'s parameters), ``rest`` (every other trainable parameter), ``all``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    backbone = getattr(model, "backbone", None)
    bb = [p for p in backbone.parameters() if p.requires_grad] if isinstance(backbone, torch.nn.Module) else []
    ids = {id(p) for p in bb}
    return {"backbone": bb, "rest": [p for p in trainable if id(p) not in ids], "all": trainable}


def build(cfg, weights: str = ""):
    """``(model in training mode, iterator over its training batches)`` as ``tools/train_net.py`` builds them."""
    from fastreid.utils.checkpoint import Checkpointer

    from .trainer import trainer_class

    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)  # FastReID's trainer writes its config.yaml there
    trainer = trainer_class(cfg)(cfg)
    if weights:
        Checkpointer(trainer.model).load(weights)
    return trainer.model.train(), iter(trainer.data_loader)


def measure_model(model: torch.nn.Module, batches) -> Dict[str, Dict[str, float]]:
    """Mean per-term gradient norms of ``model`` (training mode) over ``batches`` (FastReID batch dicts)."""
    from fastreid.utils.events import EventStorage

    groups = parameter_groups(model)
    runs = []
    with EventStorage(0):
        for batch in batches:
            losses = model(batch)
            if not isinstance(losses, dict) or not losses:
                raise ValueError(f"{type(model).__name__} returned no loss dict in training mode")
            runs.append(loss_gradient_norms(losses, groups))
    return mean_norms(runs)


def measure(cfg, batches: int = 3, weights: str = "") -> Dict[str, Dict[str, float]]:
    """Mean per-term gradient norms over ``batches`` training batches of ``cfg`` (see the module docstring)."""
    model, it = build(cfg, weights)
    return measure_model(model, [next(it) for _ in range(batches)])


def format_table(norms: Dict[str, Dict[str, float]]) -> str:
    gnames = list(next(iter(norms.values())))
    lines = ["| loss term | " + " | ".join(f"grad norm: {g}" for g in gnames) + " |",
             "| --- |" + " --- |" * len(gnames)]
    lines += [f"| {t} | " + " | ".join(f"{v[g]:.4g}" for g in gnames) + " |" for t, v in norms.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    import fastreid_ext

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", default="", help="a FastReID checkpoint (default: the config's initialisation)")
    p.add_argument("--batches", type=int, default=3, help="training batches to average over")
    p.add_argument("--out", default="", help="also write the norms as JSON here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.batches < 1:
        p.error("--batches must be >= 1")
    cfg = fastreid_ext.get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    # FastReID's trainer writes config.yaml into OUTPUT_DIR: point it at a scratch folder, never at a run's
    cfg.OUTPUT_DIR = tempfile.mkdtemp(prefix="loss_gradients_")
    cfg.freeze()
    norms = measure(cfg, args.batches, args.weights)
    print(format_table(norms))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(norms, f, indent=1)
    return norms


if __name__ == "__main__":
    main()
