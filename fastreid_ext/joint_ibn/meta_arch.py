"""JointIBN (Zhang & Wu, "Person re-identification based on multiple deep learning methods"): the BoT baseline
(Luo et al., "Bag of tricks and a strong baseline for deep person re-identification", CVPRW 2019) with
ResNet50-IBN-a, trained jointly on several source datasets without random erasing, on crops whose background
an instance segmenter removed.

What is the method and where it lives:

* joint training: FastReID's ``DATASETS.NAMES`` list (Market1501 + CUHK03 + MSMT17 in the paper) with
  ``DATASETS.COMBINEALL True``: the paper's ~175k images (Sec. 4.2, Table 5) are the three datasets' train +
  query + gallery (169,961 images with FastReID's loaders; the train splits alone are 50,552). FastReID's
  datasets (and SynthPed) prefix training pids/camids with the dataset name (query/gallery ones with
  ``<dataset>_test_``), so identities of different datasets never merge and the classifier has ``sum of ids``
  classes;
* IBN-a: ``MODEL.BACKBONE.WITH_IBN True`` (FastReID's ResNet, 18x/34x/50x/101x);
* no random erasing: ``INPUT.REA.ENABLED False``;
* background removal: this meta-architecture. Each image is multiplied by its person mask
  (``batched_inputs["masks"]``, from ``DATASETS.ANNOTATIONS.LOAD_MASKS``: the masks follow flip/crop/
  resize with the image) *before* normalization, in training and at test time, see
  :func:`fastreid_ext.functional.background.remove_background` (fill ``zero`` / ``mean`` / ``blur``).

Everything else is FastReID's ``Baseline`` (backbone, ``EmbeddingHead``, CE + triplet losses).

FastReID's ``inference_on_dataset`` with ``TEST.FLIP.ENABLED`` mirrors ``batched_inputs["images"]`` in
place and calls the model a second time with the *same* (unmirrored) masks. The model recognises that
second call (the images are the mirror of the ones it has just seen, in the same dict) and mirrors the
masks too, so flip test works with background removal.
"""
from __future__ import annotations

import torch
from fastreid.config import configurable
from fastreid.modeling.meta_arch.baseline import Baseline
from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

from ..functional.background import FILL_MODES, remove_background
from ..modeling.backbones import torchreid_bridge  # noqa: F401  (registers build_osnet_torchreid_backbone)
from ..modeling.multi_branch import MultiBranchModel

_SEEN_KEY = "_joint_ibn_last_images"




@META_ARCH_REGISTRY.register()
class JointIBN(MultiBranchModel, Baseline):
    """FastReID ``Baseline`` with a background-removal input stage (see the module docstring); one ``plain``
    branch of the multi-branch interface (:mod:`fastreid_ext.modeling.multi_branch`), whose defaults all go
    through :meth:`preprocess_image` and so see the masked image.

    Args (besides ``Baseline``'s):
        remove_bg: apply the mask stage (``MODEL.JOINT_IBN.ENABLED``); off: exactly ``Baseline``.
        fill / blur_kernel: ``MODEL.JOINT_IBN.FILL`` / ``BLUR_KERNEL``.
    """

    @configurable
    def __init__(self, *, remove_bg: bool = True, fill: str = "zero", blur_kernel: int = 21, **kwargs):
        super().__init__(**kwargs)
        if fill not in FILL_MODES:
            raise ValueError(f"MODEL.JOINT_IBN.FILL must be one of {FILL_MODES}, got {fill!r}")
        if fill == "blur" and (int(blur_kernel) < 1 or int(blur_kernel) % 2 == 0):
            raise ValueError(f"MODEL.JOINT_IBN.BLUR_KERNEL must be a positive odd integer, got {blur_kernel}")
        self.remove_bg = bool(remove_bg)
        self.fill = fill
        self.blur_kernel = int(blur_kernel)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        j = cfg.MODEL.JOINT_IBN
        if j.ENABLED and not cfg.DATASETS.ANNOTATIONS.LOAD_MASKS:
            raise ValueError(
                "MODEL.JOINT_IBN.ENABLED (background removal) needs person masks in every batch: set "
                "DATASETS.ANNOTATIONS.LOAD_MASKS True (masks/ at the dataset root, see tools/extract_masks.py), "
                "or MODEL.JOINT_IBN.ENABLED False for the plain baseline.")
        ret.update(remove_bg=j.ENABLED, fill=j.FILL, blur_kernel=j.BLUR_KERNEL)
        return ret

    @property
    def requires_masks(self) -> bool:
        return self.remove_bg

    def _masks_for(self, batched_inputs, images: torch.Tensor) -> torch.Tensor:
        masks = batched_inputs.get("masks") if isinstance(batched_inputs, dict) else None
        if masks is None:
            raise KeyError(
                "JointIBN with MODEL.JOINT_IBN.ENABLED needs batched_inputs['masks'] (B, 1, H, W): set "
                "DATASETS.ANNOTATIONS.LOAD_MASKS True, or pass masks with the images")
        if not self.training and isinstance(batched_inputs, dict):
            # FastReID's flip test mirrors the images in place in the same dict; mirror the masks too
            last = batched_inputs.get(_SEEN_KEY)
            if last is not None and last is not images and last.shape == images.shape \
                    and torch.equal(last.flip(3), images):
                masks = masks.flip(3)
            batched_inputs[_SEEN_KEY] = images
        return masks.to(images.device)

    def preprocess_image(self, batched_inputs):
        """Mask (out of place) then FastReID's normalization."""
        if not self.remove_bg:
            return super().preprocess_image(batched_inputs)
        if isinstance(batched_inputs, dict):
            images = batched_inputs["images"]
        elif isinstance(batched_inputs, torch.Tensor):
            raise TypeError("JointIBN with background removal needs a dict with 'images' and 'masks', got a tensor")
        else:
            raise TypeError(f"batched_inputs must be a dict, got {type(batched_inputs)}")
        masks = self._masks_for(batched_inputs, images)
        images = images.to(self.pixel_mean.device)
        images = remove_background(images, masks, self.fill, pixel_mean=self.pixel_mean.view(-1),
                                   blur_kernel=self.blur_kernel)
        return (images - self.pixel_mean) / self.pixel_std
