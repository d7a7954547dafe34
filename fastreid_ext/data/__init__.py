"""Data: annotations (keypoints, masks), joint transforms, SynthPed and loaders."""
from . import datasets  # noqa: F401  (registers SynthPed datasets)
from .annotations import AnnotationError, AnnotationIndex  # noqa: F401
from .build import build_dataset, build_test_loader, build_train_loader  # noqa: F401
from .common import AnnotatedDataset  # noqa: F401
