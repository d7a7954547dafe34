"""SynthPed domains registered as FastReID datasets (created on first use under $FASTREID_DATASETS)."""
from __future__ import annotations

import glob
import logging
import os.path as osp
import re

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

logger = logging.getLogger(__name__)


def synthped_options(cfg) -> dict:
    """The generation options ``cfg.DATASETS.SYNTHPED`` asks for, as SynthPed constructor arguments."""
    s = cfg.DATASETS.SYNTHPED
    return dict(preset=s.PRESET, num_train_ids=s.NUM_TRAIN_IDS or None, num_test_ids=s.NUM_TEST_IDS or None,
                seed=None if s.SEED < 0 else int(s.SEED), vertical_misalign=float(s.VERTICAL_MISALIGN),
                auto_create=bool(s.AUTO_CREATE))


def variant_tag(opts: dict) -> str:
    """Folder tag of non-default generation options ('' for the defaults)."""
    parts = []
    if opts["preset"] != "default":
        parts.append(opts["preset"])
    if opts["num_train_ids"]:
        parts.append(f"tr{opts['num_train_ids']}")
    if opts["num_test_ids"]:
        parts.append(f"te{opts['num_test_ids']}")
    if opts["seed"] is not None:
        parts.append(f"seed{opts['seed']}")
    if opts["vertical_misalign"]:
        parts.append(f"misalign{opts['vertical_misalign']:g}")
    return "-".join(parts)


def synthped_dir(root: str, domain: str, opts: dict) -> str:
    tag = variant_tag(opts)
    return osp.join(root, "synthped", tag, domain) if tag else osp.join(root, domain)


class _SynthPed(ImageDataset):
    """Market-1501 layout written by :func:`fastreid_ext.data.synthped.generate_dataset`.

    The generation options are constructor arguments (``preset``, ``num_train_ids``, ``num_test_ids``, ``seed``,
    ``vertical_misalign``; ``auto_create`` generates a missing dataset on first use); the loader builders take
    them from ``cfg.DATASETS.SYNTHPED`` (:meth:`kwargs_from_config`). Each option set has its own folder
    (:func:`synthped_dir`)."""

    domain = ""
    dataset_name = ""

    @classmethod
    def kwargs_from_config(cls, cfg) -> dict:
        """Constructor arguments taken from the config (``DATASETS.SYNTHPED``); :func:`fastreid_ext.data.build.
        build_dataset` passes them to the datasets that define this method."""
        return synthped_options(cfg)

    def __init__(self, root="datasets", preset="default", num_train_ids=None, num_test_ids=None, seed=None,
                 vertical_misalign=0.0, auto_create=True, **kwargs):
        opts = dict(preset=preset, num_train_ids=num_train_ids, num_test_ids=num_test_ids, seed=seed,
                    vertical_misalign=vertical_misalign, auto_create=auto_create)
        self.options = opts
        self.root = root
        self.data_dir = synthped_dir(root, self.domain, opts)
        if osp.isfile(osp.join(self.data_dir, "meta.json")):
            # the folder's meta.json must match what the config asks for (a dataset written with `--preset tiny`
            # into the default preset's folder was used silently); the generator compares and returns at once
            from .synthped import generate_dataset
            from .synthped.generate import DatasetParameterMismatch

            try:
                generate_dataset(osp.dirname(self.data_dir), domain=self.domain, seed=opts["seed"],
                                 num_train_ids=opts["num_train_ids"], num_test_ids=opts["num_test_ids"],
                                 preset=opts["preset"], vertical_misalign=opts["vertical_misalign"], progress=False)
            except DatasetParameterMismatch as e:
                raise ValueError(f"{e} The config asks for DATASETS.SYNTHPED {dict(opts)}: set DATASETS.SYNTHPED "
                                 f"to the parameters the dataset was made with, or regenerate it "
                                 f"(tools/make_synthetic.py --overwrite).") from None
        else:
            if not opts["auto_create"]:
                raise FileNotFoundError(
                    f"{self.domain} not found at {osp.abspath(self.data_dir)}. Create it with: python "
                    f"tools/make_synthetic.py --domain {self.domain} --root {osp.dirname(self.data_dir)}"
                    f"{' --preset ' + opts['preset'] if opts['preset'] != 'default' else ''} "
                    f"(or set DATASETS.SYNTHPED.AUTO_CREATE True).")
            from .synthped import generate_dataset

            logger.info("Creating %s under %s (first use)", self.domain, osp.abspath(self.data_dir))
            generate_dataset(osp.dirname(self.data_dir), domain=self.domain, seed=opts["seed"],
                             num_train_ids=opts["num_train_ids"], num_test_ids=opts["num_test_ids"],
                             preset=opts["preset"], vertical_misalign=opts["vertical_misalign"])
        self.train_dir = osp.join(self.data_dir, "bounding_box_train")
        self.query_dir = osp.join(self.data_dir, "query")
        self.gallery_dir = osp.join(self.data_dir, "bounding_box_test")
        self.check_before_run([self.data_dir, self.train_dir, self.query_dir, self.gallery_dir])

        train = lambda: self.process_dir(self.train_dir, is_train=True)  # noqa: E731
        query = lambda: self.process_dir(self.query_dir, is_train=False)  # noqa: E731
        gallery = lambda: self.process_dir(self.gallery_dir, is_train=False)  # noqa: E731
        super().__init__(train, query, gallery, **kwargs)

    def process_dir(self, dir_path, is_train=True):
        pattern = re.compile(r"(\d+)_c(\d+)s\d+_\d+_\d+\.jpg$")
        data = []
        for img_path in sorted(glob.glob(osp.join(dir_path, "*.jpg"))):
            m = pattern.search(osp.basename(img_path))
            if m is None:
                raise ValueError(f"unexpected file name {img_path} (expected PPPP_cCsS_FFFFFF_00.jpg)")
            pid, camid = int(m.group(1)), int(m.group(2)) - 1
            if is_train:
                data.append((img_path, f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}"))
            else:
                data.append((img_path, pid, camid))
        return data


@DATASET_REGISTRY.register()
class SynthPedA(_SynthPed):
    """SynthPed domain A (indoor-like cameras)."""
    domain = "SynthPedA"
    dataset_name = "synthpeda"


@DATASET_REGISTRY.register()
class SynthPedB(_SynthPed):
    """SynthPed domain B (outdoor-like cameras), the usual adaptation target."""
    domain = "SynthPedB"
    dataset_name = "synthpedb"


@DATASET_REGISTRY.register()
class SynthPedC(_SynthPed):
    """SynthPed domain C (a third camera network, for joint training)."""
    domain = "SynthPedC"
    dataset_name = "synthpedc"
