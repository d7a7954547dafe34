"""Data: annotations (keypoints, masks), joint transforms, SynthPed and loaders.

The SynthPed generator (``fastreid_ext.data.synthped``) and the transforms import without FastReID; the dataset
registrations (``datasets``) and loaders (``build``) use FastReID.
"""
_LAZY = {"AnnotationError": "annotations", "AnnotationIndex": "annotations", "build_dataset": "build",
         "build_test_loader": "build", "build_train_loader": "build", "AnnotatedDataset": "common"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
