"""A preview picture of SynthPed: identities across cameras and domains, with keypoints and masks."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .generate import _identity
from .render import DOMAINS, draw_keypoints, render_person


def make_preview(root_or_none, out_png, domains: Sequence[str] = ("SynthPedA", "SynthPedB", "SynthPedC"),
                 num_ids: int = 4, seed: int = 7, scale: int = 2) -> str:
    """Rows: identities (each drawn in every domain's cameras, as if they walked through all
    networks); columns: one camera per domain and view, then the last image with its exact keypoints
    and mask overlaid. ``root_or_none`` is unused (the preview renders directly) but kept so the CLI
    can point it at a dataset folder later."""
    rows = []
    for i in range(num_ids):
        ident = _identity(seed, domains[0], i + 1)
        tiles = []
        for d in domains:
            for cam in range(1, min(3, DOMAINS[d].num_cameras) + 1):
                img, kps, mask = render_person(ident, cam, np.random.default_rng([seed, i, cam, len(d)]), domain=d)
                tiles.append(cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
        overlay = img.copy()
        overlay[mask > 0] = (0.5 * overlay[mask > 0] + 0.5 * np.array([0, 200, 255])).astype(np.uint8)
        big = cv2.resize(overlay, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
        big = draw_keypoints(big, np.concatenate([kps[:, :2] * 4 + 1.5, kps[:, 2:]], 1), radius=3, thickness=3)
        tiles.append(cv2.resize(big, (tiles[0].shape[1], tiles[0].shape[0]), interpolation=cv2.INTER_AREA))
        sep = np.full((tiles[0].shape[0], 3, 3), 255, np.uint8)
        rows.append(np.concatenate(sum([[t, sep] for t in tiles], [])[:-1], 1))
    hsep = np.full((3, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate(sum([[r, hsep] for r in rows], [])[:-1], 0)
    cv2.imwrite(str(out_png), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return str(out_png)
