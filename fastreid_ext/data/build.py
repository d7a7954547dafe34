"""Train/test loaders that carry keypoints and masks, built from the config on FastReID's samplers and collator.

Everything a loader needs comes from the ``cfg`` passed in, nothing from process-wide state:

* dataset options: a dataset class that defines ``kwargs_from_config(cfg)`` (SynthPed: ``DATASETS.SYNTHPED``)
  gets those constructor arguments from :func:`build_dataset`; other datasets get none of them;
* the loader class: FastReID's ``DataLoaderX`` (CUDA streams, batches moved to the GPU by a background
  thread) when ``MODEL.DEVICE`` is a CUDA device and CUDA is available, else a plain ``DataLoader``
  (:func:`make_data_loader`);
* the sampler's seed: ``SEED`` (``>= 0``) seeds FastReID's training samplers (:func:`build_train_sampler`);
  ``SEED < 0`` keeps FastReID's shared random seed.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
from fastreid.data import samplers
from fastreid.data.build import fast_batch_collator
from fastreid.data.data_utils import DataLoaderX
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm

from . import checks
from .annotations import AnnotationIndex
from .common import AnnotatedDataset
from .transforms import build_joint_transforms

logger = logging.getLogger(__name__)


def datasets_root() -> str:
    """Where datasets live: ``$FASTREID_DATASETS`` (FastReID's variable), default ``./datasets``."""
    return os.getenv("FASTREID_DATASETS", "datasets")


def build_dataset(name: str, cfg=None, **kwargs):
    """Instantiate a registered dataset under :func:`datasets_root` with clear errors.

    With ``cfg``, a dataset class that defines ``kwargs_from_config(cfg)`` (the SynthPed domains:
    ``DATASETS.SYNTHPED``) also gets those constructor arguments; explicit ``kwargs`` win over them."""
    root = datasets_root()
    try:
        cls = DATASET_REGISTRY.get(name)
    except KeyError:
        known = ", ".join(sorted(DATASET_REGISTRY._obj_map))
        raise KeyError(f"dataset {name!r} is not registered. Registered datasets: {known}") from None
    if cfg is not None and hasattr(cls, "kwargs_from_config"):
        kwargs = {**cls.kwargs_from_config(cfg), **kwargs}
    try:
        return cls(root=root, **kwargs)
    except RuntimeError as e:
        if "is not found" in str(e):
            raise FileNotFoundError(
                f"dataset {name}: {e} (FASTREID_DATASETS={os.path.abspath(root)}). Put the dataset there in "
                f"FastReID's layout (see README.md, 'Real datasets'), or set FASTREID_DATASETS to the folder "
                f"that holds it.") from None
        raise


def annotation_index(cfg) -> AnnotationIndex:
    a = cfg.DATASETS.ANNOTATIONS
    missing = [r for r in a.MASK_ROOTS if not os.path.isdir(r)]
    if missing:  # was: a silent fall-back to the dataset's own masks
        from .annotations import AnnotationError

        raise AnnotationError(f"DATASETS.ANNOTATIONS.MASK_ROOTS names folder(s) that do not exist: "
                              f"{', '.join(os.path.abspath(r) for r in missing)}; fix the path, or remove it to use "
                              f"the masks/ folder beside the dataset")
    return AnnotationIndex(a.KEYPOINTS_FILES, a.MASK_ROOTS)


def keypoints_used_at_test(cfg) -> bool:
    """Whether evaluation needs the test images' keypoints: only the test transforms' flip canonicalisation from
    keypoints (``INPUT.FLIP_CANON.ENABLED`` with a ``SOURCE`` other than ``orientation``) uses them; no model's
    inference does (keypoints are training targets, e.g. RBNet's heatmap loss), so keypoints made for the
    training images only are enough."""
    fc = getattr(cfg.INPUT, "FLIP_CANON", None)
    return bool(cfg.DATASETS.ANNOTATIONS.LOAD_KEYPOINTS and fc is not None and fc.ENABLED
                and fc.SOURCE != "orientation")


def _dataset_kwargs(cfg, is_train: bool, keypoints: Optional[bool] = None) -> dict:
    """AnnotatedDataset's annotation arguments. ``keypoints``: load them (``None``: as
    ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS`` says; evaluation passes :func:`keypoints_used_at_test`)."""
    a = cfg.DATASETS.ANNOTATIONS
    load_keypoints = bool(a.LOAD_KEYPOINTS if keypoints is None else keypoints)
    return dict(annotations=annotation_index(cfg) if (load_keypoints or a.LOAD_MASKS) else None,
                load_keypoints=load_keypoints, load_masks=a.LOAD_MASKS, on_missing=a.ON_MISSING)


def check_data(cfg, items, where: str, keypoints: Optional[bool] = None, **kwargs) -> None:
    """Before anything trains or evaluates on ``items`` (FastReID items, path first): the images can be read
    (:func:`checks.check_images`: zero-byte / not an image refused, grayscale / RGBA / tiny images logged) and the
    annotations the loader will ask for exist with the right shape (:func:`checks.check_annotations`; ``keypoints``
    as in :func:`_dataset_kwargs`, or the dataset's own ``kwargs``). Cheap: ~0.2 s per 3000 images (headers only),
    so the test sets are checked again when the evaluation builds their loaders."""
    paths = [it[0] for it in items]
    opts = kwargs or _dataset_kwargs(cfg, False, keypoints)
    scan = checks.check_images(paths, where)
    checks.check_annotations(paths, opts["annotations"], opts["load_keypoints"], opts["load_masks"],
                             opts["on_missing"], where, image_sizes=scan.sizes)


def build_train_set(cfg, names=None) -> AnnotatedDataset:
    items = []
    for d in names or cfg.DATASETS.NAMES:
        data = build_dataset(d, cfg, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    return AnnotatedDataset(items, build_joint_transforms(cfg, is_train=True), relabel=True,
                            **_dataset_kwargs(cfg, True))


def check_train_set(cfg, train_set) -> None:
    """:func:`check_data` of a training set (:func:`build_train_set`'s or a method's own: MoCo, PoseTransfer, MMT's
    pseudo-labelled target set) with the annotations it will load; :func:`build_train_loader` calls it, in the main
    process, before any loader worker reads an image."""
    check_data(cfg, train_set.img_items, f"training set {tuple(cfg.DATASETS.NAMES)}",
               annotations=getattr(train_set, "annotations", None),
               load_keypoints=bool(getattr(train_set, "load_keypoints", False)),
               load_masks=bool(getattr(train_set, "load_masks", False)),
               on_missing=getattr(train_set, "on_missing", "error"))


def build_test_data(cfg, dataset_name: str, keypoints: Optional[bool] = None):
    """The dataset ``dataset_name`` checked for evaluation: query and gallery not empty
    (:func:`checks.check_test_splits`), their images and the annotations the test loader asks for
    (:func:`check_data`)."""
    data = build_dataset(dataset_name, cfg)
    checks.check_test_splits(dataset_name, data)
    check_data(cfg, data.query + data.gallery, f"test dataset {dataset_name} (query + gallery)", keypoints)
    return data


def check_test_sets(cfg, keypoints: Optional[bool] = None) -> None:
    """:func:`build_test_data` of every ``DATASETS.TESTS`` entry: called before training, so that an empty split or
    a broken test image stops the run at its start, not at the evaluation after it."""
    for name in cfg.DATASETS.TESTS:
        build_test_data(cfg, name, keypoints)


def uses_cuda_loader(cfg) -> bool:
    """True when the loaders should be FastReID's CUDA ``DataLoaderX``: ``MODEL.DEVICE`` is a CUDA device and
    CUDA is available."""
    return str(cfg.MODEL.DEVICE).startswith("cuda") and torch.cuda.is_available()


def make_data_loader(cfg, dataset, batch_sampler, num_workers: int):
    """The loader for ``cfg.MODEL.DEVICE`` (:func:`uses_cuda_loader`): FastReID's ``DataLoaderX`` with pinned
    memory on CUDA, else a plain ``DataLoader``. Both use FastReID's batch collator."""
    if uses_cuda_loader(cfg):
        return DataLoaderX(comm.get_local_rank(), dataset=dataset, batch_sampler=batch_sampler,
                           num_workers=num_workers, collate_fn=fast_batch_collator, pin_memory=True)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers,
                                       collate_fn=fast_batch_collator)


def sampler_seed(cfg, offset: int = 0) -> Optional[int]:
    """``cfg.SEED + offset`` when ``SEED >= 0``, else ``None`` (FastReID's samplers then draw a shared random
    seed)."""
    return int(cfg.SEED) + int(offset) if cfg.SEED >= 0 else None


def check_sampler_constraints(cfg, train_set) -> None:
    """Refuse, before training starts, the batch settings FastReID's samplers cannot serve: with them its identity
    samplers loop forever looking for a batch (``IMS_PER_BATCH`` not a multiple of ``NUM_INSTANCE``, more ids per
    batch than the set has) and a batch larger than the set divides by zero."""
    world = comm.get_world_size()
    total, k, name = int(cfg.SOLVER.IMS_PER_BATCH), int(cfg.DATALOADER.NUM_INSTANCE), cfg.DATALOADER.SAMPLER_TRAIN
    n = len(train_set)
    if total <= 0 or total % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {total} must be a positive multiple of the number of processes "
                         f"({world})")
    mini = total // world
    if n == 0:
        raise ValueError(f"the training set {tuple(cfg.DATASETS.NAMES)} is empty")
    if mini > n:
        raise ValueError(f"a batch of {mini} images per process (SOLVER.IMS_PER_BATCH {total} over {world} "
                         f"process(es)) is larger than the training set ({n} images): lower SOLVER.IMS_PER_BATCH")
    if name in ("NaiveIdentitySampler", "BalancedIdentitySampler", "SetReWeightSampler"):
        if k <= 0 or mini % k:
            lower, upper = (mini // k) * k if k > 0 else 0, ((mini // k) + 1) * k if k > 0 else 0
            raise ValueError(
                f"{name} builds batches of P identities x K images: the per-process batch {mini} "
                f"(SOLVER.IMS_PER_BATCH {total} / {world} process(es)) must be a multiple of DATALOADER.NUM_INSTANCE "
                f"{k}; use SOLVER.IMS_PER_BATCH {lower * world or k * world} or {upper * world}, or change NUM_INSTANCE")
        ids = len({item[1] for item in train_set.img_items})
        if mini // k > ids:
            raise ValueError(f"{name} needs {mini // k} identities per batch (SOLVER.IMS_PER_BATCH {total} / "
                             f"NUM_INSTANCE {k}) but the training set has {ids}: lower SOLVER.IMS_PER_BATCH to at most "
                             f"{ids * k * world}")


def build_train_sampler(cfg, train_set, seed: Optional[int] = None):
    """FastReID's training sampler named by ``DATALOADER.SAMPLER_TRAIN`` over ``train_set``; ``seed`` (default
    :func:`sampler_seed`) must be the same in every process (each process takes its own share)."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    seed = sampler_seed(cfg) if seed is None else int(seed)
    mini_batch = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    k = cfg.DATALOADER.NUM_INSTANCE
    check_sampler_constraints(cfg, train_set)
    logger.info("Using training sampler %s (seed %s)", name, "shared random" if seed is None else seed)
    if name == "TrainingSampler":
        return samplers.TrainingSampler(len(train_set), seed=seed)
    if name in ("NaiveIdentitySampler", "BalancedIdentitySampler"):
        return getattr(samplers, name)(train_set.img_items, mini_batch, k, seed=seed)
    if name == "SetReWeightSampler":
        return samplers.SetReWeightSampler(train_set.img_items, mini_batch, k, cfg.DATALOADER.SET_WEIGHT, seed=seed)
    if name == "ImbalancedDatasetSampler":
        return samplers.ImbalancedDatasetSampler(train_set.img_items, seed=seed)
    raise ValueError(f"Unknown training sampler: {name}")


def build_train_loader(cfg, train_set=None, seed: Optional[int] = None):
    """Infinite training loader: :func:`build_train_set` (or ``train_set``) checked (:func:`check_train_set`), the
    sampler of :func:`build_train_sampler`, batches of ``SOLVER.IMS_PER_BATCH`` over all processes, and the loader
    class of :func:`make_data_loader`."""
    if train_set is None:
        train_set = build_train_set(cfg)
    check_train_set(cfg, train_set)  # now, not in a loader worker mid-epoch
    sampler = build_train_sampler(cfg, train_set, seed)
    batch_sampler = torch.utils.data.BatchSampler(sampler, cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(), True)
    return make_data_loader(cfg, train_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS)


def build_test_loader(cfg, dataset_name: Optional[str] = None, *, test_set=None, num_query: int = 0,
                      keypoints: Optional[bool] = None):
    """``(loader, num_query)`` like FastReID's ``build_reid_test_loader``: query + gallery of ``dataset_name``,
    or any ``test_set`` (e.g. a target train split to extract features from) with its ``num_query``.
    ``keypoints``: load the query/gallery keypoints (``None``: ``DATASETS.ANNOTATIONS.LOAD_KEYPOINTS``; the
    trainer's evaluation passes :func:`keypoints_used_at_test`, so it never demands keypoints nothing uses)."""
    if test_set is None:
        if dataset_name is None:
            raise ValueError("build_test_loader needs a dataset_name or a test_set")
        data = build_test_data(cfg, dataset_name, keypoints)
        if comm.is_main_process():
            data.show_test()
        test_set = AnnotatedDataset(data.query + data.gallery, build_joint_transforms(cfg, is_train=False),
                                    relabel=False, **_dataset_kwargs(cfg, False, keypoints))
        num_query = len(data.query)
    sampler = samplers.InferenceSampler(len(test_set))
    batch_sampler = torch.utils.data.BatchSampler(sampler, cfg.TEST.IMS_PER_BATCH // comm.get_world_size(), False)
    return make_data_loader(cfg, test_set, batch_sampler, cfg.DATALOADER.NUM_WORKERS), num_query
