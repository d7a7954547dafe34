"""PoseTransfer test with verification re-ranking (FD-GAN's second stage), registered for ``PoseTransfer``.

With ``MODEL.POSE_TRANSFER.RERANK.ENABLED`` the model returns ``[re-id feature | C_v's input feature]`` per image.
:class:`PoseTransferEvaluator` gives the re-id part to FastReID's ``ReidEvaluator`` (the usual keys and numbers),
then re-scores each query's ``RERANK.TOPK`` nearest gallery images with the model's C_v
(:func:`fastreid_ext.pose_transfer.rerank.verification_rerank`) and reports ``RR/Rank-k``, ``RR/mAP``, ``RR/mINP``
and the cost: ``RR/pairs`` (C_v evaluations), ``RR/seconds``, ``RR/ms_per_query``.

The evaluator needs the model's C_v: :class:`~fastreid_ext.pose_transfer.trainer.PoseTransferTrainer` binds it
(``test``); without a bound model only the first-stage numbers are reported (with a warning). An onnxruntime model
(``MODEL.DEPLOY.ONNX``) gives the features and C_v runs in PyTorch on them (:func:`verification_module`).
"""
from __future__ import annotations

import copy
import itertools
import logging
from collections import OrderedDict

import numpy as np
import torch

from fastreid.evaluation.reid_evaluation import ReidEvaluator
from fastreid.utils import comm
from fastreid.utils.compute_dist import build_dist

from ..engine.reliability import ConfigError
from ..engine.trainer import register_evaluator
from .rerank import verification_rerank

logger = logging.getLogger(__name__)

__all__ = ["PoseTransferEvaluator", "verification_module"]


class PoseTransferEvaluator(ReidEvaluator):
    """``ReidEvaluator`` on the re-id feature + the numbers after verification re-ranking (module docstring)."""

    def __init__(self, cfg, num_query, output_dir=None, model=None):
        super().__init__(cfg, num_query, output_dir)
        self.model = model
        r = cfg.MODEL.POSE_TRANSFER.RERANK
        self.topk = int(r.TOPK)
        self.batch_pairs = int(r.BATCH_PAIRS)

    def _verif_dim(self):
        m = verification_module(self.model)
        return None if m is None else int(m.verification_dim())

    def process(self, inputs, outputs):
        outputs = outputs.to(self._cpu_device, torch.float32)
        dv = self._verif_dim()
        if dv is None:
            raise RuntimeError("PoseTransferEvaluator needs the model (its C_v and feature size): build it with "
                               "PoseTransferTrainer.build_evaluator inside PoseTransferTrainer.test, or pass model=")
        if outputs.dim() != 2 or outputs.shape[1] <= dv:
            raise ValueError(f"PoseTransferEvaluator expects [re-id | verification ({dv})] features, got "
                             f"{tuple(outputs.shape)}; is MODEL.POSE_TRANSFER.RERANK.ENABLED on?")
        self._predictions.append({
            "feats": outputs[:, :-dv].contiguous(),
            "verif": outputs[:, -dv:].contiguous(),
            "pids": inputs["targets"].to(self._cpu_device),
            "camids": inputs["camids"].to(self._cpu_device),
        })

    def evaluate(self):
        results = super().evaluate()
        if comm.get_world_size() > 1:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        nq = self._num_query
        feats = torch.cat([p["feats"] for p in predictions])
        verif = torch.cat([p["verif"] for p in predictions])
        pids = torch.cat([p["pids"] for p in predictions]).numpy()
        camids = torch.cat([p["camids"] for p in predictions]).numpy()
        dist = build_dist(feats[:nq], feats[nq:], self.cfg.TEST.METRIC)
        verifier = verification_module(self.model).verifier
        was = verifier.training
        verifier.eval()
        dev = next(verifier.parameters()).device
        try:
            new, cost = verification_rerank(
                dist, verif[:nq].to(dev), verif[nq:].to(dev), verifier.different_prob, self.topk, self.batch_pairs)
        finally:
            verifier.train(was)
        results.update(self._metrics(new, pids[:nq], pids[nq:], camids[:nq], camids[nq:], "RR/"))
        results["RR/pairs"] = cost["pairs"]
        results["RR/seconds"] = cost["seconds"]
        results["RR/ms_per_query"] = cost["ms_per_query"]
        logger.info("Verification re-ranking of the top %d of %d queries: %d C_v pairs in %.3f s (%.3f ms / query)",
                    self.topk, nq, cost["pairs"], cost["seconds"], cost["ms_per_query"])
        self._results = results
        return copy.deepcopy(results)

    @staticmethod
    def _metrics(dist, q_pids, g_pids, q_camids, g_camids, prefix=""):
        from fastreid.evaluation.rank import evaluate_rank  # the compat layer's (Cython or vectorized)

        cmc, all_ap, all_inp = evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids)
        out = OrderedDict()
        for r in (1, 5, 10):
            out[f"{prefix}Rank-{r}"] = float(cmc[r - 1] * 100)
        out[f"{prefix}mAP"] = float(np.mean(all_ap) * 100)
        out[f"{prefix}mINP"] = float(np.mean(all_inp) * 100)
        return out


def verification_module(model):
    """The PoseTransfer module whose C_v re-ranks: ``model`` itself, or for an onnxruntime model
    (``MODEL.DEPLOY.ONNX``, :class:`fastreid_ext.deploy.ort_embedder.OnnxEvalModel`, whose features are the exported
    ``[re-id | verification]``) the PyTorch model of the same weights (its ``torch_reference``): C_v
    (``(f1 - f2)^2 -> BatchNorm -> Linear``, 2 x dim parameters per output) then runs in PyTorch on the onnxruntime
    verification features. It is not exported because it scores pairs (query, top-k gallery item), not images, and
    its cost is negligible next to the encoder, which is all in the ONNX file. ``ConfigError`` for an ONNX model
    without that PyTorch model (no ``MODEL.WEIGHTS``; not ``NotImplementedError``, which FastReID's ``test`` turns
    into an empty result)."""
    m = getattr(model, "module", model)
    if m is None or hasattr(m, "verifier"):
        return m
    if hasattr(m, "torch_reference"):
        ref = m.torch_reference
        if ref is None:
            raise ConfigError(
                "MODEL.POSE_TRANSFER.RERANK.ENABLED with an ONNX file (MODEL.DEPLOY.ONNX): the verification classifier "
                "C_v is not in the file (it scores pairs of features, not images) and runs in PyTorch on the "
                "onnxruntime features; give MODEL.WEIGHTS, the checkpoint the file was exported from, or set "
                "MODEL.POSE_TRANSFER.RERANK.ENABLED False for the first-stage numbers only")
        logger.info("MODEL.DEPLOY.ONNX: features from onnxruntime (%s), C_v re-ranking in PyTorch on them "
                    "(MODEL.WEIGHTS)", getattr(getattr(m, "net", None), "path", "the ONNX file"))
        return getattr(ref, "module", ref)
    raise RuntimeError(f"PoseTransferEvaluator needs a PoseTransfer model (its C_v), got {type(m).__name__}")


@register_evaluator("PoseTransfer")
def build_pose_transfer_evaluator(trainer_cls, cfg, dataset_name, output_dir=None):
    """The re-ranking evaluator when ``MODEL.POSE_TRANSFER.RERANK.ENABLED`` and a model is bound to
    ``trainer_cls`` (``PoseTransferTrainer.test``); ``None`` keeps FastReID's evaluator."""
    if not cfg.MODEL.POSE_TRANSFER.RERANK.ENABLED:
        return None
    model = getattr(trainer_cls, "_bound_model", None)
    if model is None:
        raise RuntimeError(
            "MODEL.POSE_TRANSFER.RERANK.ENABLED needs the model's C_v at test time: evaluate with "
            "fastreid_ext.engine.trainer_class(cfg).test(cfg, model) (PoseTransferTrainer), or set "
            "MODEL.POSE_TRANSFER.RERANK.ENABLED False")
    verification_module(model)  # an ONNX model without its PyTorch C_v: refused before any feature is extracted
    data_loader, num_query = trainer_cls.build_test_loader(cfg, dataset_name)
    return data_loader, PoseTransferEvaluator(cfg, num_query, output_dir, model=model)
