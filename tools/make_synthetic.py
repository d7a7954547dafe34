#!/usr/bin/env python
"""Generate a SynthPed domain (Market-1501 layout + keypoints.json + masks/) or a preview picture.

    python tools/make_synthetic.py --domain SynthPedA --root datasets            # default preset
    python tools/make_synthetic.py --domain SynthPedB --preset tiny --root /tmp/ds
    python tools/make_synthetic.py --preview docs/synthped_samples.jpg

The datasets are also created automatically on first use by FastReID (DATASETS.NAMES ("SynthPedA",)),
under $FASTREID_DATASETS.
"""
import argparse
import importlib.util
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _load_synthped():
    # import the generator without importing fastreid_ext (and FastReID, torch): it only needs numpy/OpenCV
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fastreid_ext", "data", "synthped")
    spec = importlib.util.spec_from_file_location("synthped", os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["synthped"] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    sp = _load_synthped()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", default="SynthPedA", choices=sorted(sp.DOMAINS))
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"))
    p.add_argument("--seed", type=int, default=None, help="default: the domain's fixed seed")
    p.add_argument("--preset", default="default", choices=sorted(sp.PRESETS))
    p.add_argument("--num-train-ids", type=int, default=None)
    p.add_argument("--num-test-ids", type=int, default=None)
    p.add_argument("--vertical-misalign", type=float, default=0.0,
                   help="shift people up/down by up to this fraction of the crop height (0..0.5)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--preview", metavar="PNG", help="write a preview picture instead of a dataset")
    a = p.parse_args(argv)
    if a.preview:
        print(sp.make_preview(None, a.preview))
        return
    out = sp.generate_dataset(a.root, a.domain, seed=a.seed, num_train_ids=a.num_train_ids,
                              num_test_ids=a.num_test_ids, preset=a.preset, vertical_misalign=a.vertical_misalign,
                              height=a.height, width=a.width, overwrite=a.overwrite, workers=a.workers)
    print(out)


if __name__ == "__main__":
    main()
