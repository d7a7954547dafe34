"""Unsupervised domain adaptation plumbing for MMT: pseudo labels, the loader they feed, the mean-net update.

* :class:`PseudoLabeler` (process-agnostic): target features -> sparse Jaccard distance -> DBSCAN ->
  labels, outlier policy, cluster centres; decides whether the result is usable (at least one cluster and
  enough classes for the P x K sampler).
* :func:`extract_target_features`: mean-net features of the target train split (``DATASETS.NAMES``; the
  dataset's own labels are ignored), each process on its shard, gathered to rank 0.
* :class:`UDAState`: clusters on rank 0, broadcasts the outcome, rebuilds the two-view train loader
  (FastReID's ``NaiveIdentitySampler`` P x K) and re-initialises the classifiers.
* :class:`MMTHook` (``register_trainer_hooks("MMT")``): re-clusters before every ``UDA.CLUSTER_EVERY``-th
  epoch and updates the mean nets after every optimizer step.
* :class:`MMTTrainer` (``register_trainer("MMT")``, built by ``build_trainer(cfg)``): FastReID's trainer builds its
  loader in ``__init__``, before any model exists, so this one builds the model, loads the source
  checkpoints and clusters once *before* ``DefaultTrainer.__init__`` and hands it that loader and model.

If DBSCAN finds no cluster (or fewer classes than a batch needs) the hook logs it and keeps the previous
labels; at the first clustering there are none, so it raises an error that explains eps.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from fastreid.engine.train_loop import HookBase
from fastreid.utils import comm
from torch.nn.parallel import DistributedDataParallel

from ..data import build as data_build
from ..data.common import AnnotatedDataset
from ..data.transforms import build_joint_transforms
from .two_view import TwoViewDataset
from ..functional.clustering import apply_outlier_policy, cluster_centers, jaccard_dbscan, kmeans_labels
from ..engine.trainer import Trainer, register_trainer, register_trainer_hooks, setup_ext_logger

logger = logging.getLogger(__name__)

__all__ = ["PseudoLabeler", "ClusteringOutcome", "extract_target_features", "UDAState", "MMTHook", "MMTTrainer",
           "target_items", "unwrap"]


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def target_dataset(cfg, cls, items, is_train: bool, relabel: bool):
    """``cls`` (AnnotatedDataset or TwoViewDataset) over ``items`` with the configured per-image keypoints /
    masks (a background-removing base model needs its masks for clustering features too)."""
    a = cfg.DATASETS.ANNOTATIONS
    return cls(items, build_joint_transforms(cfg, is_train=is_train), relabel=relabel,
               annotations=data_build.annotation_index(cfg) if (a.LOAD_KEYPOINTS or a.LOAD_MASKS) else None,
               load_keypoints=a.LOAD_KEYPOINTS, load_masks=a.LOAD_MASKS, on_missing=a.ON_MISSING)


def target_items(cfg) -> list:
    """``(path, pid, camid)`` of the train splits of ``cfg.DATASETS.NAMES`` (the target domain)."""
    items = []
    for name in cfg.DATASETS.NAMES:
        data = data_build.build_dataset(name, cfg, combineall=cfg.DATASETS.COMBINEALL)
        items.extend(data.train)
    if not items:
        raise RuntimeError(f"the target train split {tuple(cfg.DATASETS.NAMES)} is empty")
    return items


def min_classes_for_sampler(cfg) -> int:
    """Identities one batch of FastReID's identity samplers needs (P = per-process batch / K)."""
    if cfg.DATALOADER.SAMPLER_TRAIN in ("NaiveIdentitySampler", "BalancedIdentitySampler"):
        mini = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
        return max(1, mini // cfg.DATALOADER.NUM_INSTANCE)
    return 1


@dataclass
class ClusteringOutcome:
    status: str  # "ok" | "no_cluster" | "too_few"
    eps: float
    num_samples: int
    num_clusters: int = 0
    num_outliers: int = 0
    num_classes: int = 0
    labels: Optional[np.ndarray] = None  # after the outlier policy, -1 = left out
    centers: Dict[str, np.ndarray] = field(default_factory=dict)  # branch -> C x D
    seconds: float = 0.0

    def message(self, min_classes: int) -> str:
        base = (f"{self.num_samples} target images, eps {self.eps:.4f}: {self.num_clusters} cluster(s), "
                f"{self.num_outliers} outlier(s)")
        if self.status == "ok":
            return base + f", {self.num_classes} training classes ({self.seconds:.1f} s)"
        if self.status == "no_cluster":
            return base + " - DBSCAN found no cluster"
        return base + f" - only {self.num_classes} classes, a batch needs {min_classes} (P = batch / K)"


class PseudoLabeler:
    """Pseudo labels with the ``UDA`` keys: ``UDA.CLUSTERING dbscan`` (sparse Jaccard + DBSCAN; keeps the eps of
    the first clustering, as MMT computes it once, at the first epoch, when ``UDA.EPS <= 0``) or ``kmeans``
    (``UDA.NUM_CLUSTERS`` clusters with faiss k-means on the L2-normalized features: MMT's MMT-500 / MMT-700)."""

    def __init__(self, cfg, eps: Optional[float] = None):
        u = cfg.UDA
        self.method = u.CLUSTERING
        if self.method not in ("dbscan", "kmeans"):
            raise ValueError(f"UDA.CLUSTERING must be 'dbscan' or 'kmeans', got {self.method!r}")
        self.num_clusters = int(u.NUM_CLUSTERS)
        if self.method == "kmeans" and self.num_clusters < 1:
            raise ValueError(f"UDA.CLUSTERING kmeans needs UDA.NUM_CLUSTERS >= 1 (MMT: 500 for Market-1501 / "
                             f"DukeMTMC), got {self.num_clusters}")
        self.seed = int(u.KMEANS_SEED)
        self.eps = float(u.EPS) if u.EPS > 0 else (eps if eps else None)
        self.rho = float(u.EPS_RHO)
        self.min_samples = int(u.MIN_SAMPLES)
        self.k1, self.k2 = int(u.K1), int(u.K2)
        self.index = u.KNN_INDEX
        self.outliers = u.OUTLIERS
        if self.outliers not in ("drop", "keep"):
            raise ValueError(f"UDA.OUTLIERS must be 'drop' or 'keep', got {self.outliers!r}")
        self.min_classes = min_classes_for_sampler(cfg)

    def _kmeans(self, feats: np.ndarray, n: int) -> ClusteringOutcome:
        if self.num_clusters > n:
            raise ValueError(f"UDA.NUM_CLUSTERS {self.num_clusters} > {n} target images: lower it")
        labels = kmeans_labels(feats, self.num_clusters, seed=self.seed)
        self.seed += 1  # a new k-means initialisation at every re-clustering, reproducible from the key
        c = int(labels.max() + 1)
        return ClusteringOutcome("ok", 0.0, n, c, 0, num_classes=c, labels=labels)

    def __call__(self, features: Dict[str, np.ndarray]) -> ClusteringOutcome:
        t0 = time.perf_counter()
        feats = features["cluster"]
        n = feats.shape[0]
        if self.method == "kmeans":
            out = self._kmeans(feats, n)
            if out.num_classes < self.min_classes:
                out.status, out.labels = "too_few", None
            else:
                out.centers = {b: cluster_centers(f, out.labels, out.num_classes) for b, f in features.items()}
            out.seconds = time.perf_counter() - t0
            return out
        res = jaccard_dbscan(feats, eps=self.eps, rho=self.rho, min_samples=self.min_samples, k1=self.k1,
                             k2=self.k2, index=self.index)
        if self.eps is None:
            self.eps = res.eps  # fixed from now on (MMT)
        out = ClusteringOutcome("ok", res.eps, n, res.num_clusters, res.num_outliers)
        if res.num_clusters == 0:
            out.status = "no_cluster"
        else:
            labels = apply_outlier_policy(res.labels, self.outliers)
            out.num_classes = int(labels.max() + 1)
            if out.num_classes < self.min_classes:
                out.status = "too_few"
            else:
                out.labels = labels
                out.centers = {b: cluster_centers(f, labels, out.num_classes)
                               for b, f in features.items()}
        out.seconds = time.perf_counter() - t0
        return out


@torch.no_grad()
def extract_target_features(model, loader, desc: str = "MMT: target features") -> Optional[Dict[str, np.ndarray]]:
    """``model.extract_for_clustering`` over ``loader`` (a FastReID test loader on the target train split),
    eval mode, each process on its shard; returns the full features (dataset order) on rank 0, ``None``
    on the others."""
    from tqdm import tqdm

    model = unwrap(model)
    was_training = model.training
    model.eval()
    chunks: Dict[str, list] = {}
    try:
        for batch in tqdm(loader, desc=desc, disable=not comm.is_main_process(), leave=False, dynamic_ncols=True):
            for k, v in model.extract_for_clustering(batch).items():
                chunks.setdefault(k, []).append(v.float().cpu().numpy())
    finally:
        model.train(was_training)
    local = {k: np.concatenate(v) if v else None for k, v in chunks.items()}
    indices = np.asarray(list(loader.batch_sampler.sampler._local_indices), dtype=np.int64)
    gathered = comm.gather((indices, local), dst=0)
    if not comm.is_main_process():
        return None
    n = sum(len(ix) for ix, _ in gathered)
    keys = next(loc for _, loc in gathered if loc).keys()
    out = {}
    for k in keys:
        parts = [(ix, loc[k]) for ix, loc in gathered if len(ix)]
        arr = np.empty((n, parts[0][1].shape[1]), dtype=np.float32)
        for ix, f in parts:
            arr[ix] = f
        out[k] = arr
    return out


def _broadcast(obj):
    if comm.get_world_size() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=comm._get_global_gloo_group())
    return box[0]


class UDAState:
    """Target items, the clustering loader, the pseudo labeler and the current labels of one MMT run."""

    def __init__(self, cfg, items: Optional[list] = None, eps: Optional[float] = None):
        self.cfg = cfg
        self.items = items if items is not None else target_items(cfg)
        self.labeler = PseudoLabeler(cfg, eps)
        self.labels: Optional[np.ndarray] = None
        self.labels_epoch: Optional[int] = None
        self.force = False  # re-cluster at the next epoch whatever CLUSTER_EVERY says (resume)
        self.history: List[ClusteringOutcome] = []
        self._loader = None

    def cluster_loader(self):
        if self._loader is None:
            test_set = target_dataset(self.cfg, AnnotatedDataset, self.items, is_train=False, relabel=False)
            self._loader, _ = data_build.build_test_loader(self.cfg, test_set=test_set)
        return self._loader

    def cluster(self, model, epoch: int) -> ClusteringOutcome:
        """Extract (all processes), cluster (rank 0), broadcast the outcome (all processes); logs it."""
        feats = extract_target_features(model, self.cluster_loader(),
                                        desc=f"MMT epoch {epoch}: target features")
        out = self.labeler(feats) if comm.is_main_process() else None
        out = _broadcast(out)
        self.labeler.eps = out.eps
        self.history.append(out)
        msg = f"MMT pseudo labels before epoch {epoch}: " + out.message(self.labeler.min_classes)
        if out.status == "ok":
            logger.info(msg)
        else:
            logger.warning(msg)
        return out

    def explain_failure(self, out: ClusteringOutcome) -> str:
        u = self.cfg.UDA
        how = (f"UDA.EPS {u.EPS}" if u.EPS > 0 else
               f"eps {out.eps:.4f} from MMT's rule (UDA.EPS 0, UDA.EPS_RHO {u.EPS_RHO})")
        if out.status == "no_cluster" or out.num_outliers > out.num_samples // 2:
            fix = ("Eps is too small for these features: raise UDA.EPS (or UDA.EPS_RHO when UDA.EPS is 0) or "
                   "lower UDA.MIN_SAMPLES")
        else:
            fix = ("Few, large clusters: eps is too large (lower UDA.EPS), or the batch needs fewer "
                   "identities (SOLVER.IMS_PER_BATCH / DATALOADER.NUM_INSTANCE); UDA.OUTLIERS keep adds the "
                   "outliers as classes")
        return (f"MMT: the first clustering of the target domain gave no usable pseudo labels: "
                f"{out.message(self.labeler.min_classes)}. DBSCAN ({how}, UDA.MIN_SAMPLES {u.MIN_SAMPLES}) "
                f"makes a sample a core point when at least {u.MIN_SAMPLES} samples (itself included) lie within "
                f"eps on the k-reciprocal Jaccard distance (k1={u.K1}, k2={u.K2}; 0 = same neighbourhood, 1 = "
                f"nothing shared). {fix}. Also check that MODEL.MMT.WEIGHTS_1/2 are trained source models.")

    def train_set(self, labels: np.ndarray) -> TwoViewDataset:
        keep = np.flatnonzero(labels >= 0)
        items = [(self.items[i][0], int(labels[i]), self.items[i][2]) for i in keep]
        return target_dataset(self.cfg, TwoViewDataset, items, is_train=True, relabel=True)

    def train_loader(self, labels: np.ndarray):
        """The two-view P x K loader over the labelled items; with ``SEED`` its sampler is seeded with
        ``SEED + epoch of the labels`` (a new draw after every re-clustering, the same in every process)."""
        seed = data_build.sampler_seed(self.cfg, self.labels_epoch or 0)
        return data_build.build_train_loader(self.cfg, train_set=self.train_set(labels), seed=seed)

    def accept(self, out: ClusteringOutcome, model, epoch: int) -> list:
        """Adopt an ``ok`` outcome: labels, classifiers; returns the reset classifier parameters."""
        self.labels = out.labels
        self.labels_epoch = epoch
        centers = {b: torch.from_numpy(c) for b, c in out.centers.items() if b != "cluster"}
        m = unwrap(model)
        m.uda_eps.fill_(out.eps)
        return m.reset_classifiers(centers)


class MMTHook(HookBase):
    """Re-clusters the target domain before every ``UDA.CLUSTER_EVERY``-th epoch (features of the mean nets,
    new two-view P x K loader, classifiers from the centres, optimizer state cleared with
    ``UDA.RESET_OPTIMIZER``) and updates the mean nets after every optimizer step."""

    def __init__(self, state: UDAState, every: int = 1, reset_optimizer: bool = True):
        self.state = state
        self.every = max(1, int(every))
        self.reset_optimizer = reset_optimizer

    def before_epoch(self):
        t = self.trainer
        epoch = t.epoch
        if self.state.labels_epoch == epoch:
            return  # clustered for this epoch already (the trainer's first clustering)
        if not self.state.force and self.state.labels is not None and epoch % self.every != 0:
            return
        self.state.force = False
        out = self.state.cluster(t.model, epoch)
        if out.status != "ok":
            if self.state.labels is None:
                raise RuntimeError(self.state.explain_failure(out))
            logger.warning("MMT: keeping the pseudo labels of epoch %d (classifiers and loader unchanged)",
                           self.state.labels_epoch)
            return
        params = self.state.accept(out, t.model, epoch)
        self._install_loader(self.state.train_loader(out.labels))
        self._reset_optimizer(params)

    def after_step(self):
        unwrap(self.trainer.model).update_mean_nets()

    def _install_loader(self, loader):
        inner = self.trainer._trainer
        old = inner.data_loader
        inner.data_loader = loader
        inner._data_loader_iter = iter(loader)
        del old

    def _reset_optimizer(self, classifier_params):
        opt = self.trainer.optimizer
        if self.reset_optimizer:
            opt.state.clear()
        else:
            for p in classifier_params:
                opt.state.pop(p, None)


@register_trainer_hooks("MMT")
def _mmt_hooks(trainer):
    state = getattr(trainer, "uda", None)
    if state is None:
        raise RuntimeError("MMT needs its trainer, MMTTrainer: build it with fastreid_ext.engine.build_trainer(cfg); "
                           "FastReID's DefaultTrainer cannot build pseudo labels")
    return [MMTHook(state, trainer.cfg.UDA.CLUSTER_EVERY, trainer.cfg.UDA.RESET_OPTIMIZER)]


@register_trainer("MMT")
class MMTTrainer(Trainer):
    """``Trainer`` for ``MODEL.META_ARCHITECTURE MMT`` (module docstring): model, source weights and the first
    clustering come before FastReID's ``DefaultTrainer.__init__``, which then receives that loader/model."""

    def __init__(self, cfg):
        self.seed_once(cfg)  # SEED: before the model and the first clustering, which come before Trainer.__init__
        cfg = cfg.clone()
        cfg.defrost()
        setup_ext_logger(cfg)
        items = target_items(cfg)
        if cfg.MODEL.HEADS.NUM_CLASSES <= 0:
            cfg.MODEL.HEADS.NUM_CLASSES = len(items)  # classifier capacity: at most one class per image
        from fastreid.modeling.meta_arch import build_model

        model = build_model(cfg)
        unwrap(model).load_source(cfg.MODEL.MMT.WEIGHTS_1, cfg.MODEL.MMT.WEIGHTS_2)
        self.uda = UDAState(cfg, items)
        if cfg.UDA.ADABN:
            n = unwrap(model).adapt_bn(self.uda.cluster_loader())
            logger.info("UDA.ADABN: BatchNorm statistics of both networks re-estimated on %d target batches", n)
        out = self.uda.cluster(model, epoch=0)
        if out.status != "ok":
            raise RuntimeError(self.uda.explain_failure(out))
        self.uda.accept(out, model, epoch=0)
        self._pending = {"loader": self.uda.train_loader(out.labels), "model": model}
        super().__init__(cfg)

    # DefaultTrainer.__init__ calls these on the instance: hand over what was built above
    def build_train_loader(self, cfg):  # noqa: D102  (instance method on purpose)
        pending = getattr(self, "_pending", None)
        if pending and "loader" in pending:
            return pending.pop("loader")
        return Trainer.build_train_loader(cfg)  # PreciseBN's loader

    def build_model(self, cfg):  # noqa: D102
        pending = getattr(self, "_pending", None)
        if pending and "model" in pending:
            return pending.pop("model")
        return Trainer.build_model(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """FastReID's optimizer without its contiguous parameter buffer: per-parameter state, so that
        classifier rows can be reset; and torch 2's ``zero_grad(set_to_none=True)`` drops the flat buffer's
        gradient (the contiguous wrapper then never updates the weights)."""
        from fastreid.solver import build_optimizer

        return build_optimizer(cfg, model, contiguous=False)

    def resume_or_load(self, resume=True):
        """FastReID's resume / ``MODEL.WEIGHTS`` (a whole MMT checkpoint); when either loaded weights, the first
        epoch re-clusters with them (and a resumed run keeps the eps of its first epoch)."""
        super().resume_or_load(resume)
        resumed = resume and self.checkpointer.has_checkpoint()
        m = unwrap(self.model)
        if resumed and float(m.uda_eps) > 0 and self.cfg.UDA.EPS <= 0:
            self.uda.labeler.eps = float(m.uda_eps)
        if resumed or self.cfg.MODEL.WEIGHTS:
            self.uda.labels_epoch = None
            self.uda.force = True
