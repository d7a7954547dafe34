"""SynthPed's controlled-conditions mode: the same people rendered varying one factor at a time.

Yoshida, Okubo, Fujii and Takamori, "Evaluation of metric learning model for Person Re-identification"
(in Japanese), Sec. 3, photograph one person under a *standard condition* and change exactly one factor per
series, 5 shots per condition: horizontal distance 2..14 m (Fig. 1), orientation 0..315 degrees in 45-degree
steps without and with a backpack (Fig. 2), clothing (Fig. 3: white sweatshirt, white shirt, grey sweatshirt,
white sweatshirt without the helmet), background (Fig. 4: no panel, a monitor, the grey panel) and camera
height 112 / 172 / 232 cm at a constant 4 m slant distance with the tilt adjusted to keep the person centred
(Fig. 5). The standard condition: 4 m, camera at 112 cm looking level, the person's back to the camera (180
degrees), upright, white sweatshirt, grey trousers, helmet, a grey panel behind the person.

This module renders the same design for any number of SynthPed people (numpy + OpenCV, no torch / FastReID):

* :data:`FACTORS`: the factor series (``distance``, ``orientation``, ``orientation_backpack``, ``clothing``,
  ``background``, ``camera_height``) and their conditions; :data:`STANDARD`: the standard condition. Every
  condition's parameters are the standard's with the factor's key changed (``orientation_backpack`` also sets
  ``backpack``).
* Geometry: a perspective camera of focal length ``focal_px`` at ``distance_m`` (the slant distance to the
  person's centre at ``pivot_height_m``) and at ``camera_height_cm``, tilted down by ``asin((height - pivot) /
  distance)`` so that the person stays centred, as in the paper's Fig. 5. A person is ~``focal_px * 1.7 m /
  distance`` pixels tall (4 m: ~150 px, 14 m: ~44 px): distance costs resolution, as it does in a real camera.
* Crops are tight boxes around the person's silhouette plus ``crop_margin`` (the paper crops by hand), so their
  size and aspect ratio vary with distance, orientation and camera height; pre-processing (the paper's letterbox
  to 128 x 384, :class:`fastreid_ext.data.transforms.JointLetterbox`) happens at embedding time.
* Shots: 5 per condition by default; shot ``k`` of a person has the same small pose jitter (yaw and head turn
  within +-3 degrees, standing sway, limb noise) in every condition, so that two conditions differ by the factor
  only, and the shots of one condition differ by the jitter only.

Layout written by :func:`generate_controlled` (what ``tools/similarity_matrix.py`` reads)::

    ROOT/<factor>/<condition>/<id>_<shot>.png      e.g. distance/6m/0003_2.png
    ROOT/masks/<factor>/<condition>/<id>_<shot>.png  exact person masks (0 / 255)
    ROOT/keypoints.json                             exact COCO-17 keypoints (fastreid_ext.data.annotations)
    ROOT/conditions.json                            standard, settings, factors (ordered conditions with their
                                                    parameters) and every image's parameters and jitter
    ROOT/meta.json                                  generation arguments (written last)

:func:`render_record` re-renders any image from its ``conditions.json`` record (the record is complete).
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .render import (BAG_W, CLOTH_COLORS, COCO_KEYPOINT_NAMES, FLIP_PAIRS, HEAD_AY, HEAD_C, KP_SOURCES, Identity,
                     _Projector, _draw_person, _jitter, _lowfreq, _pick, _poly, _rot_y, _skeleton, _supersample,
                     sample_identity, stable_hash)

__all__ = ["FACTORS", "STANDARD", "SETTINGS", "FactorSpec", "condition_params", "derived_geometry",
           "controlled_identity", "dress", "shot_jitter", "render_condition", "render_record", "generate_controlled",
           "make_controlled_preview", "CONTROLLED_FORMAT"]

logger = logging.getLogger(__name__)

CONTROLLED_FORMAT = 1


@dataclass(frozen=True)
class FactorSpec:
    """One series: ``key`` (the parameter it varies), its ``values`` with folder ``labels`` (in display order),
    ``fixed``: other parameters set for the whole series (the backpack of ``orientation_backpack``), and the
    figure of the paper it mirrors."""

    key: str
    values: tuple
    labels: tuple
    fixed: tuple = ()
    paper: str = ""


def _deg_labels(vals):
    return tuple(f"{v:g}deg" for v in vals)


_ORIENT = tuple(float(a) for a in range(0, 360, 45))
#: the factor series, in the paper's order (Figs. 1-5; orientation with a backpack is Fig. 2's second row)
FACTORS: Dict[str, FactorSpec] = {
    "distance": FactorSpec("distance_m", tuple(float(d) for d in range(2, 15, 2)),
                           tuple(f"{d}m" for d in range(2, 15, 2)), paper="Fig. 1 / Fig. 6"),
    "orientation": FactorSpec("orientation_deg", _ORIENT, _deg_labels(_ORIENT), paper="Fig. 2-1 / Fig. 7"),
    "orientation_backpack": FactorSpec("orientation_deg", _ORIENT, _deg_labels(_ORIENT), (("backpack", True),),
                                       paper="Fig. 2-2 / Fig. 8"),
    "clothing": FactorSpec("clothing", ("standard", "similar_top", "other_top", "no_hat"),
                           ("standard", "similar_top", "other_top", "no_hat"), paper="Fig. 3 / Fig. 9"),
    "background": FactorSpec("background", ("none", "monitor", "panel"), ("none", "monitor", "panel"),
                             paper="Fig. 4 / Fig. 10"),
    "camera_height": FactorSpec("camera_height_cm", (112.0, 172.0, 232.0), ("112cm", "172cm", "232cm"),
                                paper="Fig. 5 / Fig. 11"),
}

#: the paper's standard condition (Sec. 3): 4 m, camera at 112 cm, back to the camera, standard clothes with the
#: helmet, no backpack, the panel behind the person
STANDARD = {"distance_m": 4.0, "orientation_deg": 180.0, "backpack": False, "clothing": "standard",
            "background": "panel", "camera_height_cm": 112.0}

#: rendering settings shared by every image (recorded in conditions.json)
SETTINGS = {
    "focal_px": 360.0,          # pixels per metre at 1 m: a 1.7 m person at 4 m is ~153 px tall
    "body_unit_m": 1.7,         # SynthPed's body unit (a person of height 1.0) in metres
    "pivot_height_m": 1.12,     # the point the camera looks at (the standard camera height: level view)
    "projection": "perspective",
    "crop_margin": 0.05,        # box around the silhouette: + this fraction of its height on every side
    "gain": 1.0,
    "blur_sigma": 0.5,          # optics, in native pixels
    "noise_sigma": 2.0,         # sensor noise (grey levels)
    "yaw_jitter_deg": 3.0,      # per-shot jitter: uniform in +-this
    "head_jitter_deg": 3.0,
    "sway_max": 0.08,           # standing sway amplitude (SynthPed's gait amplitude; walking is ~1)
    "format": "png",
}

_HELMETS = ("white", "yellow", "red", "blue", "navy", "black")
_S_ID, _S_SHOT = 21, 22


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_hash("controlled"), *map(int, keys)]))


# --------------------------------------------------------------------------------------------------------------
# conditions
# --------------------------------------------------------------------------------------------------------------
def condition_params(factor: str, value) -> dict:
    """The parameters of ``factor``'s condition ``value``: :data:`STANDARD` with the factor's key (and its series'
    ``fixed`` parameters) changed."""
    if factor not in FACTORS:
        raise KeyError(f"unknown factor {factor!r}; known: {list(FACTORS)}")
    spec = FACTORS[factor]
    p = dict(STANDARD)
    p.update(dict(spec.fixed))
    p[spec.key] = value
    return p


def derived_geometry(params: dict, settings: dict = SETTINGS) -> dict:
    """Camera geometry that follows from the parameters: tilt (degrees, > 0 looks down), horizontal distance,
    pixels per metre at the person's centre."""
    d = float(params["distance_m"])
    dh = float(params["camera_height_cm"]) / 100.0 - settings["pivot_height_m"]
    if abs(dh) >= 0.95 * d:
        raise ValueError(f"camera height {params['camera_height_cm']} cm is too far above the person for a {d} m "
                         f"slant distance")
    pitch = math.degrees(math.asin(dh / d))
    return {"pitch_deg": round(pitch, 4), "horizontal_distance_m": round(math.sqrt(d * d - dh * dh), 4),
            "px_per_m": round(settings["focal_px"] / d, 4)}


# --------------------------------------------------------------------------------------------------------------
# people
# --------------------------------------------------------------------------------------------------------------
def controlled_identity(seed: int, pid: int, domain: str = "SynthPedA") -> Tuple[Identity, dict]:
    """Person ``pid`` in its standard outfit: a SynthPed person of ``domain``'s population without bags or
    backpack and with a helmet (the paper's standard outfit has one); plus the backpack it carries in the
    ``orientation_backpack`` series."""
    rng = _rng(seed, _S_ID, pid)
    base = sample_identity(rng, domain)
    helmet = str(rng.choice(_HELMETS))
    pack = _pick(rng, BAG_W)
    ident = replace(base, bag=None, bag_name="", bag_carry="", backpack=None, backpack_name="",
                    hat=_jitter(rng, CLOTH_COLORS[helmet]), hat_style="beanie")
    backpack = {"backpack": _jitter(rng, CLOTH_COLORS[pack]), "backpack_name": pack,
                "backpack_size": float(rng.uniform(0.9, 1.15))}
    return ident, backpack


def _other_top(ident: Identity) -> Tuple[tuple, str]:
    """A distinct upper-clothing colour from SynthPed's palette: the nearest one at least 60 grey levels away
    (the paper's white -> grey sweatshirt: a clear but not extreme change)."""
    c = np.asarray(ident.upper_color, float)
    cands = [(float(np.linalg.norm(np.asarray(v, float) - c)), k) for k, v in CLOTH_COLORS.items()]
    far = sorted((d, k) for d, k in cands if d >= 60.0)
    name = far[0][1] if far else max(cands)[1]
    return tuple(int(v) for v in CLOTH_COLORS[name]), name


def dress(ident: Identity, backpack: dict, params: dict) -> Tuple[Identity, dict]:
    """The person as the condition wants them (clothing variant, backpack); returns the identity and the
    attribute changes made (recorded)."""
    change = {}
    cl = params["clothing"]
    if cl == "similar_top":  # same colour, other garment (the paper's white sweatshirt -> white shirt)
        sleeve = "short" if ident.sleeve == "long" else "long"
        ident = replace(ident, sleeve=sleeve, upper_pattern="plain")
        change = {"sleeve": sleeve, "upper_pattern": "plain"}
    elif cl == "other_top":
        col, name = _other_top(ident)
        ident = replace(ident, upper_color=col, upper_name=name)
        change = {"upper_name": name}
    elif cl == "no_hat":
        ident = replace(ident, hat=None, hat_style="")
        change = {"hat": None}
    elif cl != "standard":
        raise ValueError(f"unknown clothing variant {cl!r}; known: {FACTORS['clothing'].values}")
    if params["backpack"]:
        ident = replace(ident, **backpack)
        change["backpack"] = backpack["backpack_name"]
    return ident, change


def shot_jitter(seed: int, pid: int, shot: int, settings: dict = SETTINGS) -> dict:
    """Shot ``shot`` of person ``pid``: the same small pose jitter in every condition."""
    r = _rng(seed, _S_SHOT, pid, shot)
    return {"yaw_deg": round(float(r.uniform(-1, 1) * settings["yaw_jitter_deg"]), 4),
            "head_turn_deg": round(float(r.uniform(-1, 1) * settings["head_jitter_deg"]), 4),
            "sway": round(float(r.uniform(0, settings["sway_max"])), 4),
            "phase": round(float(r.uniform(0, 2 * math.pi)), 4),
            "pose_seed": int(r.integers(0, 2 ** 31 - 1)), "noise_seed": int(r.integers(0, 2 ** 31 - 1))}


# --------------------------------------------------------------------------------------------------------------
# backgrounds (drawn in the camera-aligned room frame: x image-right, y up, z towards the camera, metres / 1.7)
# --------------------------------------------------------------------------------------------------------------
_PANEL_Z, _WALL_Z = -0.3, -1.6
_PANEL = np.array([150, 151, 152], np.float32)   # grey panel
_FLOOR = np.array([138, 140, 140], np.float32)   # a floor of a similar grey (the paper: "same colour family")
_WALL = np.array([168, 180, 190], np.float32)    # the room without the panel: beige wall ...
_ROOM = [  # ... with a door, a poster, a notice board and a skirting board within view of a tight crop
    ((-0.75, -0.16, 0.0, 1.22), (52, 74, 104)), ((-0.19, -0.16, 0.0, 1.22), (38, 52, 74)),
    ((0.12, 0.34, 0.55, 0.82), (60, 70, 170)), ((0.16, 0.3, 0.6, 0.7), (200, 200, 205)),
    ((-0.14, 0.06, 0.95, 1.12), (120, 150, 80)), ((-2.0, 2.0, 0.0, 0.05), (90, 100, 110))]
_MONITOR = ((-0.14, 0.26, 0.56, 0.84), (26, 26, 30))  # the back of a black monitor on a stand, behind the person


def _room_to_body(q, yaw):
    return _rot_y(np.asarray(q, float), -yaw)


def _plane_row(pr: _Projector, z: float, yaw: float) -> float:
    """Output row where the floor meets a vertical plane at depth ``z``."""
    return float(pr.out(_room_to_body((0.0, 0.0, z), yaw))[1])


def _quad(img, pr, yaw, x0, x1, y0, y1, z, colour):
    pts = pr.hr(_room_to_body([(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z)], yaw))
    _poly(img, pts, colour)


def _background(kind: str, pr: _Projector, yaw: float, H: int, W: int, seed: int) -> np.ndarray:
    """The background of a ``H x W`` canvas (float32 BGR) seen through ``pr``."""
    rng = np.random.default_rng([seed, 5])
    rows = np.arange(H, dtype=np.float32)[:, None, None]
    if kind in ("panel", "monitor"):
        junction = _plane_row(pr, _PANEL_Z, yaw)
        wall = _PANEL
    elif kind == "none":
        junction = _plane_row(pr, _WALL_Z, yaw)
        wall = _WALL
    else:
        raise ValueError(f"unknown background {kind!r}; known: {FACTORS['background'].values}")
    img = np.empty((H, W, 3), np.float32)
    img[:] = wall * (1.04 - 0.06 * rows / max(H, 1))
    j = int(np.clip(round(junction), 0, H))
    img[j:] = _FLOOR * (0.97 + 0.05 * (rows[j:] - j) / max(H - j, 1))
    img += _lowfreq(rng, H, W, 24, 3)
    S = 2
    over = np.zeros((H * S, W * S, 4), np.uint8)  # polygons on a super-sampled layer, then area-averaged
    hr = _Projector(pr.yaw, pr.s, pr.cx, pr.vg, S, pr.pitch, pr.persp, pr.pivot)
    if kind == "none":
        for (x0, x1, y0, y1), col in _ROOM:
            _quad(over, hr, yaw, x0, x1, y0, y1, _WALL_Z + 0.001, col)
    elif kind == "monitor":
        (x0, x1, y0, y1), col = _MONITOR
        zc = _PANEL_Z + 0.08
        _quad(over, hr, yaw, (x0 + x1) / 2 - 0.012, (x0 + x1) / 2 + 0.012, 0.0, y0, zc - 0.01, (40, 40, 44))
        _quad(over, hr, yaw, x0, x1, y0, y1, zc, col)
    if over[..., 3].any():
        lay = cv2.resize(over.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
        a = lay[..., 3:4] / 255.0
        img = img * (1 - a) + lay[..., :3]
    return img


# --------------------------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------------------------
def render_condition(ident: Identity, params: dict, jitter: dict, settings: dict = SETTINGS):
    """Render one shot: returns ``(image BGR uint8, keypoints float32 (17, 3), mask uint8 0/255, info)`` of the
    tight crop around the person."""
    geo = derived_geometry(params, settings)
    unit = settings["body_unit_m"]
    d = float(params["distance_m"])
    s = settings["focal_px"] * unit / d  # output pixels per body unit at the person's centre
    pitch = math.radians(geo["pitch_deg"])
    persp = d / unit if settings["projection"] == "perspective" else 0.0
    pivot = settings["pivot_height_m"] / unit
    yaw = math.radians(float(params["orientation_deg"]) + jitter["yaw_deg"])
    P = _skeleton(ident, jitter["sway"], jitter["phase"], math.radians(jitter["head_turn_deg"]),
                  np.random.default_rng(jitter["pose_seed"]))
    # canvas: the projected joints + room for arms, hair, helmet and backpack
    probe = _Projector(yaw, s, 0.0, 0.0, 1, pitch, persp, pivot)
    pts = [v for v in P.values() if isinstance(v, np.ndarray)]
    pts += [np.array([0.0, HEAD_C + HEAD_AY + 0.02, 0.0])]
    xy = probe.out(np.stack(pts))
    padx, pady = 0.3 * s, 0.1 * s
    W = int(math.ceil(xy[:, 0].max() - xy[:, 0].min() + 2 * padx))
    H = int(math.ceil(xy[:, 1].max() - xy[:, 1].min() + 2 * pady))
    cx, vg = padx - xy[:, 0].min(), pady - xy[:, 1].min()
    S = _supersample(H)
    pr = _Projector(yaw, s, cx, vg, S, pitch, persp, pivot)
    cv = np.zeros((H * S, W * S, 4), np.uint8)
    _draw_person(cv, ident, P, pr)
    lay = cv2.resize(cv.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    vis = lay[..., 3] / 255.0
    bg = _background(params["background"], pr, yaw, H, W, stable_hash(params["background"]))
    feet = pr.out(np.stack([P["ankle_l"], P["ankle_r"]]))
    shadow = np.zeros((H, W), np.float32)
    cv2.ellipse(shadow, (int(round(feet[:, 0].mean() * 4)), int(round(feet[:, 1].max() * 4 + 0.02 * s * 4))),
                (int(round(0.14 * s * 4)), int(round(0.03 * s * 4 * (1 + 3 * math.sin(max(pitch, 0)))))),
                0, 0, 360, 1.0, -1, cv2.LINE_AA, 2)
    bg *= (1 - 0.3 * cv2.GaussianBlur(shadow, (0, 0), max(0.8, 0.02 * s)))[..., None]
    img = bg * (1 - vis[..., None]) + lay[..., :3]
    img *= settings["gain"]
    if settings["blur_sigma"] > 0:
        img = cv2.GaussianBlur(img, (0, 0), settings["blur_sigma"])
    img += np.random.default_rng(jitter["noise_seed"]).normal(0, settings["noise_sigma"], img.shape).astype(
        np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    # tight crop around the silhouette
    ys, xs = np.nonzero(vis > 0.1)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = int(round(settings["crop_margin"] * (bottom - top)))
    y0, y1 = max(0, top - m), min(H, bottom + m)
    x0, x1 = max(0, left - m), min(W, right + m)
    mask = np.where(vis >= 0.5, 255, 0).astype(np.uint8)[y0:y1, x0:x1]
    kp = np.zeros((len(KP_SOURCES), 3), np.float32)
    kxy = pr.out(np.stack([P[k] for k in KP_SOURCES])) - np.array([x0, y0], float)
    kp[:, :2] = kxy
    h, w = y1 - y0, x1 - x0
    kp[:, 2] = ((kxy[:, 0] >= 0) & (kxy[:, 0] <= w - 1) & (kxy[:, 1] >= 0) & (kxy[:, 1] <= h - 1)).astype(np.float32)
    info = {"crop_hw": [int(h), int(w)], "person_px": int(bottom - top), "canvas_hw": [H, W],
            "orientation_true_deg": round((float(params["orientation_deg"]) + jitter["yaw_deg"]) % 360.0, 4)}
    return np.ascontiguousarray(img[y0:y1, x0:x1]), kp, np.ascontiguousarray(mask), info


def _condition_identity(seed: int, pid: int, domain: str, params: dict):
    ident, backpack = controlled_identity(seed, pid, domain)
    return dress(ident, backpack, params)


def render_record(record: dict, seed: int, domain: str = "SynthPedA", settings: Optional[dict] = None):
    """Re-render an image from its ``conditions.json`` record (``id``, ``shot``, ``params``) and the dataset's
    seed / domain / settings: the same pixels as the stored file."""
    settings = dict(SETTINGS if settings is None else settings)
    ident, _ = _condition_identity(seed, int(record["id"]), domain, record["params"])
    return render_condition(ident, record["params"], shot_jitter(seed, int(record["id"]), int(record["shot"]),
                                                                    settings), settings)


# --------------------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------------------
def _plan(factors: Sequence[str], num_ids: int, shots: int) -> List[Tuple[str, str, int, int]]:
    jobs = []
    for f in factors:
        for label in FACTORS[f].labels:
            for pid in range(1, num_ids + 1):
                for shot in range(1, shots + 1):
                    jobs.append((f, label, pid, shot))
    return jobs


def _render_job(job, seed: int, domain: str, settings: dict, out_dir: str):
    factor, label, pid, shot = job
    spec = FACTORS[factor]
    params = condition_params(factor, spec.values[spec.labels.index(label)])
    ident, change = _condition_identity(seed, pid, domain, params)
    jit = shot_jitter(seed, pid, shot, settings)
    img, kp, mask, info = render_condition(ident, params, jit, settings)
    rel = f"{factor}/{label}/{pid:04d}_{shot}.png"
    ok, png = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    ok2, mpng = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not (ok and ok2):
        raise RuntimeError(f"encoding failed for {rel}")
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(png.tobytes())
    with open(os.path.join(out_dir, "masks", rel), "wb") as f:
        f.write(mpng.tobytes())
    record = {"factor": factor, "condition": label, "id": pid, "shot": shot, "params": params,
              "derived": derived_geometry(params, settings), "clothing_change": change, "jitter": jit, "info": info}
    kps = [[round(float(x), 3), round(float(y), 3), float(v)] for x, y, v in kp]
    return rel, kps, record


def generate_controlled(root, num_ids: int = 10, shots: int = 5, seed: int = 0, factors: Optional[Iterable[str]] = None,
                        domain: str = "SynthPedA", overwrite: bool = False, progress: bool = True,
                        workers: Optional[int] = None, settings: Optional[dict] = None) -> Path:
    """Write the controlled-conditions set (module docstring) into ``root`` and return it. Idempotent: a folder
    generated with the same arguments is returned as is; other arguments raise ``FileExistsError`` unless
    ``overwrite``. ``workers`` (default: up to 2 processes for large sets) does not change the output."""
    factors = list(FACTORS) if factors is None else list(factors)
    unknown = [f for f in factors if f not in FACTORS]
    if unknown:
        raise KeyError(f"unknown factor(s) {unknown}; known: {list(FACTORS)}")
    if num_ids < 1 or shots < 1 or num_ids > 9999:
        raise ValueError(f"need 1 <= num_ids <= 9999 and shots >= 1, got {num_ids}, {shots}")
    settings = dict(SETTINGS if settings is None else settings)
    args = {"format_version": CONTROLLED_FORMAT, "num_ids": int(num_ids), "shots": int(shots), "seed": int(seed),
            "factors": factors, "domain": domain, "settings": settings}
    root = Path(root)
    meta_path = root / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text()).get("args")
        except ValueError:
            old = None
        if old == json.loads(json.dumps(args)) and not overwrite:
            return root
        if not overwrite:
            raise FileExistsError(f"{root} holds a controlled SynthPed set made with other arguments ({old}); pass "
                                  f"overwrite=True (--overwrite) or another folder")
    elif root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root} exists, is not empty and has no meta.json; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for f in factors:
            for label in FACTORS[f].labels:
                (tmp / f / label).mkdir(parents=True)
                (tmp / "masks" / f / label).mkdir(parents=True)
        jobs = _plan(factors, num_ids, shots)
        fn = partial(_render_job, seed=seed, domain=domain, settings=settings, out_dir=str(tmp))
        keypoints, images = {}, {}
        from tqdm import tqdm

        n_work = (min(2, os.cpu_count() or 1) if len(jobs) >= 200 else 1) if workers is None else int(workers)
        with tqdm(total=len(jobs), desc="SynthPed controlled", unit="img", disable=not progress) as bar:
            if n_work <= 1:
                results = map(fn, jobs)
                pool = None
            else:
                ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
                pool = ctx.Pool(n_work)
                results = pool.imap(fn, jobs, chunksize=8)
            try:
                for rel, kps, rec in results:
                    keypoints[rel] = kps
                    images[rel] = rec
                    bar.update(1)
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
        with open(tmp / "keypoints.json", "w") as f:
            json.dump({"format": "coco17", "keypoint_names": list(COCO_KEYPOINT_NAMES),
                       "flip_pairs": [list(p) for p in FLIP_PAIRS], "images": keypoints}, f, separators=(",", ":"))
        fac = {f: {"key": FACTORS[f].key, "fixed": dict(FACTORS[f].fixed), "paper": FACTORS[f].paper,
                   "conditions": list(FACTORS[f].labels),
                   "params": {lab: condition_params(f, v) for v, lab in zip(FACTORS[f].values, FACTORS[f].labels)}}
               for f in factors}
        with open(tmp / "conditions.json", "w") as f:
            json.dump({"standard": STANDARD, "settings": settings, "seed": seed, "domain": domain,
                       "orientation_convention": "degrees the person is turned from facing the camera; 90: facing "
                                                 "image right (the camera sees the right side), 180: back, 270: "
                                                 "facing image left",
                       "factors": fac, "images": images}, f, separators=(",", ":"))
        with open(tmp / "meta.json", "w") as f:
            json.dump({"generator": "fastreid_ext.data.synthped.controlled", "args": args, "images": len(jobs),
                       "layout": "<factor>/<condition>/<id>_<shot>.png"}, f, indent=1, sort_keys=True)
        if root.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.rename(root, trash / "old")
            os.rename(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def make_controlled_preview(root, out_png, pid: int = 1, shot: int = 1, tile_h: int = 96,
                            factors: Optional[Sequence[str]] = None, colors: Optional[int] = 64) -> Path:
    """One row per factor: person ``pid``'s shot ``shot`` in every condition (tiles ``tile_h`` high, aspect kept,
    labelled with the condition)."""
    root = Path(root)
    cond = json.loads((root / "conditions.json").read_text())
    factors = list(cond["factors"]) if factors is None else list(factors)
    rows = []
    for f in factors:
        tiles = []
        for lab in cond["factors"][f]["conditions"]:
            img = cv2.imread(str(root / f / lab / f"{pid:04d}_{shot}.png"))
            if img is None:
                continue
            w = max(1, int(round(img.shape[1] * tile_h / img.shape[0])))
            t = cv2.resize(img, (w, tile_h), interpolation=cv2.INTER_AREA)
            cell = np.full((tile_h + 12, max(w, 7 * len(lab)) + 4, 3), 255, np.uint8)
            cell[12:, 2:2 + w] = t
            cv2.putText(cell, lab, (2, 9), cv2.FONT_HERSHEY_PLAIN, 0.6, (30, 30, 30), 1, cv2.LINE_AA)
            tiles.append(cell)
        head = np.full((tile_h + 12, 8 * max(len(f) for f in factors) + 6, 3), 255, np.uint8)
        cv2.putText(head, f, (2, tile_h // 2 + 6), cv2.FONT_HERSHEY_PLAIN, 0.75, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([head] + tiles, 1))
    wmax = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 4), (0, wmax - r.shape[1]), (0, 0)), constant_values=255) for r in rows], 0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if colors:
        from PIL import Image

        Image.fromarray(grid[..., ::-1]).quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT,
                                                  dither=Image.Dither.NONE).save(out, optimize=True)
    else:
        cv2.imwrite(str(out), grid)
    return out
