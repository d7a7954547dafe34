"""Train/test loaders that carry keypoints and masks, built on FastReID's loader, samplers and collator."""
from __future__ import annotations

import logging
import os

from fastreid.data.build import build_reid_test_loader, build_reid_train_loader
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.utils import comm

from .annotations import AnnotationIndex
from .common import AnnotatedDataset
from .transforms import build_joint_transforms

logger = logging.getLogger(__name__)


def datasets_root() -> str:
    """Where datasets live: ``$FASTREID_DATASETS`` (FastReID's variable), default ``./datasets``."""
    return os.getenv("FASTREID_DATASETS", "datasets")


def build_dataset(name: str, **kwargs):
    """Instantiate a registered dataset under :func:`datasets_root` with clear errors."""
    root = datasets_root()
    try:
        cls = DATASET_REGISTRY.get(name)
    except KeyError:
        known = ", ".join(sorted(DATASET_REGISTRY._obj_map))
        raise KeyError(f"dataset {name!r} is not registered. Registered datasets: {known}") from None
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
    return AnnotationIndex(a.KEYPOINTS_FILES, a.MASK_ROOTS)


def _dataset_kwargs(cfg, is_train: bool) -> dict:
    a = cfg.DATASETS.ANNOTATIONS
    return dict(annotations=annotation_index(cfg) if (a.LOAD_KEYPOINTS or a.LOAD_MASKS) else None,
                load_keypoints=a.LOAD_KEYPOINTS, load_masks=a.LOAD_MASKS, on_missing=a.ON_MISSING)


def build_train_set(cfg, names=None) -> AnnotatedDataset:
    items = []
    for d in names or cfg.DATASETS.NAMES:
        data = build_dataset(d, combineall=cfg.DATASETS.COMBINEALL)
        if comm.is_main_process():
            data.show_train()
        items.extend(data.train)
    return AnnotatedDataset(items, build_joint_transforms(cfg, is_train=True), relabel=True,
                            **_dataset_kwargs(cfg, True))


def build_train_loader(cfg, train_set=None):
    """FastReID's ``build_reid_train_loader`` (sampler from ``DATALOADER.SAMPLER_TRAIN``) on our dataset."""
    if train_set is None:
        train_set = build_train_set(cfg)
    return build_reid_train_loader(cfg, train_set=train_set)


def build_test_loader(cfg, dataset_name: str):
    """Returns ``(loader, num_query)`` like FastReID's ``build_reid_test_loader``."""
    data = build_dataset(dataset_name)
    if comm.is_main_process():
        data.show_test()
    test_set = AnnotatedDataset(data.query + data.gallery, build_joint_transforms(cfg, is_train=False),
                                relabel=False, **_dataset_kwargs(cfg, False))
    return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                  num_query=len(data.query), num_workers=cfg.DATALOADER.NUM_WORKERS)
