"""Command line of ``tools/make_synthetic.py``: generate SynthPed domains (Market-1501 layout +
``keypoints.json`` + ``masks/`` + ``meta.json``) and previews. Imports neither FastReID nor the methods.

    python tools/make_synthetic.py --domain SynthPedA --root datasets              # default preset
    python tools/make_synthetic.py --domain SynthPedA SynthPedB --preset tiny --root /tmp/ds
    python tools/make_synthetic.py --domain SynthPedA --root datasets --preview a.png   # + preview of it
    python tools/make_synthetic.py --domain SynthPedA SynthPedB SynthPedC --preview-only \\
        --preview docs/synthped_samples.png                                         # samples, no dataset

    python tools/make_synthetic.py --controlled datasets/synthped_controlled --controlled-ids 12 \
        [--controlled-factors distance orientation] [--preview controlled.png]   # controlled conditions

The preview has a row per identity (the same person in different cameras, labelled with pid,
camera and view: fr/ba/le/ri) and a panel with the first image's keypoints and mask overlay.
FastReID also creates the datasets on first use (DATASETS.NAMES ("SynthPedA",)) under
$FASTREID_DATASETS.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import List, Optional, Sequence

from .controlled import FACTORS as CONTROLLED_FACTORS
from .controlled import generate_controlled, make_controlled_preview
from .generate import PRESETS, generate_dataset, make_preview
from .render import DOMAINS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="make_synthetic.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", nargs="+", default=["SynthPedA"], choices=sorted(DOMAINS),
                   help="one or more domains (default: SynthPedA)")
    p.add_argument("--root", default=os.getenv("FASTREID_DATASETS", "datasets"),
                   help="datasets are written to ROOT/<domain> (default: $FASTREID_DATASETS or ./datasets)")
    p.add_argument("--seed", type=int, default=None, help="default: the domain's fixed seed")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS))
    p.add_argument("--num-train-ids", type=int, default=None, help="override the preset's")
    p.add_argument("--num-test-ids", type=int, default=None, help="override the preset's")
    p.add_argument("--vertical-misalign", type=float, default=0.0,
                   help="shift people up/down by up to this fraction of the crop height, 0..0.5 (and vary the scale)")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2); no effect on the output")
    p.add_argument("--overwrite", action="store_true", help="regenerate even if the folder holds a dataset")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--preview", metavar="PNG", help="write a preview grid picture of the domain(s)")
    p.add_argument("--preview-only", action="store_true",
                   help="render the preview's samples directly, do not generate datasets")
    p.add_argument("--preview-ids", type=int, default=4, help="identities (rows) per domain in the preview")
    p.add_argument("--preview-cols", type=int, default=6, help="cameras (columns) per identity in the preview")
    p.add_argument("--preview-zoom", type=float, default=1.0)
    p.add_argument("--preview-colors", type=int, default=0, help="quantise the preview PNG (smaller file); 0: off")
    p.add_argument("--controlled", metavar="DIR",
                   help="write the controlled-conditions set (one factor at a time, <factor>/<condition>/<id>_<shot>.png; "
                        "fastreid_ext/data/synthped/controlled.py) into DIR instead of a domain")
    p.add_argument("--controlled-ids", type=int, default=10, help="people in the controlled set")
    p.add_argument("--controlled-shots", type=int, default=5, help="shots per condition (the paper: 5)")
    p.add_argument("--controlled-factors", nargs="+", default=None, choices=list(CONTROLLED_FACTORS),
                   help="factor series (default: all)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> List[Path]:
    """Generate the datasets and/or the preview; returns the paths written (dataset folders, then the preview)."""
    a = build_parser().parse_args(argv)
    if a.controlled:
        t = time.time()
        out = generate_controlled(a.controlled, num_ids=a.controlled_ids, shots=a.controlled_shots,
                                  seed=0 if a.seed is None else a.seed, factors=a.controlled_factors,
                                  domain=a.domain[0], overwrite=a.overwrite, progress=not a.no_progress,
                                  workers=a.workers)
        print(f"controlled: {out} ({time.time() - t:.1f} s)")
        written = [Path(out)]
        if a.preview:
            written.append(Path(make_controlled_preview(out, a.preview, colors=a.preview_colors or None)))
            print(f"preview: {written[-1]}")
        return written
    if a.preview_only and not a.preview:
        raise SystemExit("--preview-only needs --preview PNG")
    written: List[Path] = []
    if not a.preview_only:
        for dom in a.domain:
            t = time.time()
            out = generate_dataset(a.root, dom, seed=a.seed, num_train_ids=a.num_train_ids,
                                   num_test_ids=a.num_test_ids, preset=a.preset,
                                   vertical_misalign=a.vertical_misalign, height=a.height, width=a.width,
                                   progress=not a.no_progress, overwrite=a.overwrite, workers=a.workers)
            print(f"{dom}: {out} ({time.time() - t:.1f} s)")
            written.append(Path(out))
    if a.preview:
        out = make_preview(None if a.preview_only else a.root, a.preview, domains=a.domain, num_ids=a.preview_ids,
                           max_cols=a.preview_cols, seed=a.seed, vertical_misalign=a.vertical_misalign,
                           height=a.height, width=a.width, zoom=a.preview_zoom, colors=a.preview_colors or None)
        print(f"preview: {out} ({os.path.getsize(out) / 1024:.0f} KB)")
        written.append(Path(out))
    return written


if __name__ == "__main__":
    main()
