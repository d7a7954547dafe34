"""SynthPed body model and renderer (numpy + OpenCV only).

A person is an articulated 3-D stick-and-volume body (units: fraction of the body height, the
sole at ``y = 0``, ``x`` towards the person's *left*, ``y`` up, ``z`` forwards).  A pose is a gait
phase plus a swing amplitude (0: standing, ~1: walking); a view is a yaw of the body around the
vertical axis (0: facing the camera, 180: back, -90: the camera sees the person's left side, +90:
the right side).  The body is projected orthographically into a super-sampled canvas, parts are
painted far-to-near, then the canvas is area-downsampled onto a per-camera background, lit,
blurred, noised and JPEG-compressed like a surveillance crop.

Ground truth is exact: the 17 COCO keypoints are projected with the same transform (pixel centres
at integer coordinates of the stored image), and the mask is the super-sampled person coverage
(minus occluding objects) thresholded at 50 %.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Optional, Union

import cv2
import numpy as np

from ...functional.keypoints import (COCO17_FLIP_PAIRS, COCO17_LEFT, COCO17_NAMES, COCO17_RIGHT,
                                     COCO17_SKELETON, NUM_KEYPOINTS)

__all__ = [
    "COCO_KEYPOINT_NAMES", "FLIP_PAIRS", "COCO_SKELETON", "VIEWS", "CameraSpec", "DomainSpec", "DOMAINS",
    "Identity", "RenderResult", "sample_identity", "sample_similar_identity", "render_person", "render_sample",
    "draw_keypoints",
    "stable_hash",
]

#: COCO-17 names, flip pairs and skeleton under the names SynthPed has always exported
COCO_KEYPOINT_NAMES = COCO17_NAMES
FLIP_PAIRS = COCO17_FLIP_PAIRS
COCO_SKELETON = COCO17_SKELETON
VIEWS = ("front", "back", "left", "right")
#: yaw of the body (degrees); "left": the camera sees the person's left side (walking to image left)
VIEW_YAW_DEG = {"front": 0.0, "back": 180.0, "left": -90.0, "right": 90.0}

Color = tuple  # (b, g, r) ints


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's ``hash`` is salted)."""
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# cameras and domains
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraSpec:
    """One camera of a domain: viewpoint, framing, scene and image-quality statistics."""

    cam_id: int
    style: str                      # "indoor" | "outdoor" | "night": scene generator
    scene_seed: int                 # the camera's fixed scene
    tint: Color                     # dominant scene colour (BGR)
    view_probs: tuple               # P(front, back, left, right)
    scale_range: tuple              # person height / crop height
    brightness: float               # global gain
    color_gain: tuple               # per-channel (B, G, R) colour cast
    blur_range: tuple               # Gaussian sigma (output pixels)
    noise_sigma: float              # additive Gaussian noise (grey levels)
    jpeg_range: tuple               # JPEG quality range
    occlusion_prob: float           # probability of an occluding object in front of the person
    clutter: float = 0.5            # probability of extra per-image background clutter
    walk_prob: float = 0.8          # walking vs standing
    yaw_jitter: float = 18.0        # degrees (std) around the nominal view


@dataclass(frozen=True)
class DomainSpec:
    """A SynthPed domain: its cameras and (mild) clothing priors of its population."""

    name: str
    seed: int
    style: str
    description: str
    cameras: tuple
    p_backpack: float = 0.3
    p_bag: float = 0.25
    p_hat: float = 0.12
    p_short_sleeve: float = 0.35
    p_shorts: float = 0.12
    p_skirt: float = 0.12

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    def camera(self, cam_id: int) -> CameraSpec:
        return self.cameras[cam_id - 1]


def _cam(cid, style, seed, tint, views, scale, bright, gain, blur, noise, jpeg, occ, **kw):
    return CameraSpec(cid, style, seed, tuple(tint), tuple(views), tuple(scale), bright, tuple(gain),
                      tuple(blur), noise, tuple(jpeg), occ, **kw)


DOMAINS = {
    "SynthPedA": DomainSpec(
        "SynthPedA", 1001, "indoor",
        "6 indoor-like cameras: greyish walls and tiled floors, neutral light, mid scale, sharp, good JPEG",
        (
            _cam(1, "indoor", 101, (150, 152, 155), (0.55, 0.25, 0.10, 0.10), (0.80, 0.92), 1.00, (1.00, 1.00, 1.00), (0.0, 0.5), 2.0, (88, 95), 0.10),
            _cam(2, "indoor", 102, (132, 136, 140), (0.20, 0.50, 0.15, 0.15), (0.78, 0.90), 1.05, (1.02, 1.00, 0.98), (0.0, 0.6), 2.5, (85, 95), 0.12),
            _cam(3, "indoor", 103, (165, 163, 160), (0.15, 0.15, 0.35, 0.35), (0.80, 0.93), 0.95, (0.98, 1.00, 1.03), (0.2, 0.7), 2.0, (85, 92), 0.15),
            _cam(4, "indoor", 104, (118, 120, 122), (0.40, 0.40, 0.10, 0.10), (0.82, 0.94), 1.00, (1.00, 1.01, 1.00), (0.0, 0.5), 2.5, (88, 95), 0.10, walk_prob=0.6),
            _cam(5, "indoor", 105, (140, 145, 150), (0.10, 0.30, 0.30, 0.30), (0.78, 0.90), 1.08, (1.03, 1.00, 0.97), (0.2, 0.8), 3.0, (82, 90), 0.15),
            _cam(6, "indoor", 106, (175, 175, 172), (0.35, 0.15, 0.25, 0.25), (0.80, 0.92), 0.92, (0.97, 1.00, 1.03), (0.0, 0.6), 2.0, (85, 95), 0.12),
        ),
        p_backpack=0.35, p_bag=0.25, p_hat=0.08, p_short_sleeve=0.3, p_shorts=0.08, p_skirt=0.12,
    ),
    "SynthPedB": DomainSpec(
        "SynthPedB", 2002, "outdoor",
        "4 outdoor-like cameras: green/blue cluttered scenes, warm or cool casts, smaller people, "
        "more blur, stronger JPEG",
        (
            _cam(1, "outdoor", 201, (70, 135, 85), (0.45, 0.25, 0.15, 0.15), (0.62, 0.78), 1.15, (0.82, 0.98, 1.18), (0.7, 1.3), 4.0, (65, 80), 0.25),
            _cam(2, "outdoor", 202, (165, 125, 80), (0.20, 0.40, 0.20, 0.20), (0.66, 0.82), 0.95, (1.18, 1.03, 0.85), (0.8, 1.5), 4.5, (60, 75), 0.25),
            _cam(3, "outdoor", 203, (60, 120, 95), (0.15, 0.15, 0.35, 0.35), (0.60, 0.76), 1.20, (0.88, 1.00, 1.12), (0.6, 1.2), 3.5, (65, 80), 0.30),
            _cam(4, "outdoor", 204, (150, 135, 95), (0.30, 0.30, 0.20, 0.20), (0.64, 0.80), 1.05, (1.12, 1.00, 0.90), (0.9, 1.6), 5.0, (60, 72), 0.20),
        ),
        p_backpack=0.25, p_bag=0.3, p_hat=0.22, p_short_sleeve=0.5, p_shorts=0.22, p_skirt=0.15,
    ),
    "SynthPedC": DomainSpec(
        "SynthPedC", 3003, "night",
        "3 night-like cameras: dark scenes with lamps, sodium or bluish casts, large scale, heavy noise",
        (
            _cam(1, "night", 301, (40, 45, 55), (0.40, 0.30, 0.15, 0.15), (0.84, 0.96), 0.66, (0.80, 0.96, 1.20), (0.5, 1.0), 6.0, (55, 70), 0.15),
            _cam(2, "night", 302, (60, 45, 35), (0.20, 0.40, 0.20, 0.20), (0.86, 0.97), 0.62, (1.20, 1.02, 0.86), (0.6, 1.1), 7.0, (50, 65), 0.15),
            _cam(3, "night", 303, (45, 50, 50), (0.25, 0.25, 0.25, 0.25), (0.82, 0.95), 0.70, (0.95, 1.00, 1.06), (0.7, 1.2), 6.5, (55, 70), 0.20),
        ),
        p_backpack=0.3, p_bag=0.2, p_hat=0.15, p_short_sleeve=0.2, p_shorts=0.05, p_skirt=0.1,
    ),
}


def _domain(domain) -> DomainSpec:
    if isinstance(domain, DomainSpec):
        return domain
    if domain not in DOMAINS:
        raise KeyError(f"unknown SynthPed domain {domain!r}; known: {sorted(DOMAINS)}")
    return DOMAINS[domain]


# --------------------------------------------------------------------------------------------
# identities
# --------------------------------------------------------------------------------------------
# A deliberately small shared palette (BGR): many people share colours.
CLOTH_COLORS = {
    "black": (30, 30, 32), "charcoal": (64, 62, 60), "grey": (128, 128, 125), "white": (222, 224, 226),
    "navy": (92, 48, 32), "blue": (165, 110, 60), "lightblue": (210, 180, 145), "red": (48, 42, 170),
    "green": (60, 100, 58), "khaki": (118, 160, 182), "brown": (48, 72, 108), "pink": (175, 150, 215),
    "yellow": (70, 185, 215),
}
UPPER_W = {"black": 3.0, "charcoal": 1.5, "grey": 2.0, "white": 2.5, "navy": 2.0, "blue": 1.2, "lightblue": 1.0,
           "red": 1.0, "green": 0.8, "khaki": 0.8, "brown": 0.6, "pink": 0.5, "yellow": 0.4}
LOWER_W = {"black": 3.5, "charcoal": 1.5, "grey": 1.5, "navy": 1.5, "blue": 3.0, "lightblue": 0.6, "khaki": 1.5,
           "brown": 0.7, "white": 0.4}
PATTERN_W = {"plain": 0.40, "hstripes": 0.16, "vstripes": 0.13, "checks": 0.13, "logo": 0.18}
SKIN_TONES = {"light": (185, 200, 235), "medium": (140, 168, 212), "tan": (105, 140, 190), "brown": (72, 100, 148),
              "dark": (48, 66, 100)}
SKIN_W = {"light": 3, "medium": 3, "tan": 2, "brown": 1.5, "dark": 1}
HAIR_COLORS = {"black": (24, 24, 28), "darkbrown": (30, 44, 64), "brown": (44, 74, 112), "blonde": (105, 165, 205),
               "grey": (150, 150, 150)}
HAIR_W = {"black": 4, "darkbrown": 3, "brown": 1.5, "blonde": 0.7, "grey": 0.5}
SHOE_COLORS = {"black": (26, 26, 26), "white": (228, 228, 228), "grey": (118, 118, 118), "brown": (40, 62, 95)}
SHOE_W = {"black": 4, "white": 2.5, "grey": 1, "brown": 1}
BAG_W = {"black": 4, "charcoal": 1.5, "grey": 1, "navy": 1.5, "red": 0.8, "brown": 1.2, "khaki": 0.7, "green": 0.5,
         "blue": 0.6, "pink": 0.3}


@dataclass(frozen=True)
class Identity:
    """Fixed attributes of one person (colours BGR)."""

    height: float
    build: float
    shoulder_ratio: float
    hip_ratio: float
    skin: Color
    hair_color: Color
    hair_style: str            # short | buzz | long | bun
    upper_name: str
    upper_color: Color
    upper_pattern: str         # plain | hstripes | vstripes | checks | logo
    pattern_name: str
    pattern_color: Color
    pattern_period: float      # stripe period (body-height units)
    logo_shape: str            # square | circle
    sleeve: str                # long | short
    lower_name: str
    lower_color: Color
    lower_type: str            # trousers | shorts | skirt
    legwear: Color             # colour of legs below shorts/skirt (skin or tights)
    shoe_name: str
    shoe_color: Color
    backpack: Optional[Color] = None
    backpack_name: str = ""
    backpack_size: float = 1.0
    bag: Optional[Color] = None
    bag_name: str = ""
    bag_carry: str = ""        # hand | shoulder
    bag_side: int = 1          # +1: person's left, -1: right
    hat: Optional[Color] = None
    hat_style: str = ""        # cap | beanie
    gait_amp: float = 1.0

    def key(self) -> tuple:
        """Discrete attributes; two people with the same key are considered duplicates."""
        return (self.upper_name, self.upper_pattern, self.pattern_name if self.upper_pattern != "plain" else "",
                self.sleeve, self.lower_name, self.lower_type, self.hair_style, self.shoe_name,
                self.backpack_name, self.bag_name, self.bag_carry, self.hat_style)

    def describe(self) -> dict:
        return {
            "upper": f"{self.upper_name} {self.upper_pattern}" + (
                f" ({self.pattern_name})" if self.upper_pattern != "plain" else ""),
            "sleeve": self.sleeve, "lower": f"{self.lower_name} {self.lower_type}", "shoes": self.shoe_name,
            "hair": self.hair_style, "backpack": self.backpack_name or None,
            "bag": f"{self.bag_name} {self.bag_carry}" if self.bag else None, "hat": self.hat_style or None,
            "height": round(self.height, 3), "build": round(self.build, 3),
        }


def _pick(rng, weights: dict, exclude=()) -> str:
    names = [k for k in weights if k not in exclude]
    p = np.array([weights[k] for k in names], float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _jitter(rng, bgr, dv=0.05, dc=4.0) -> Color:
    c = np.asarray(bgr, float) * rng.uniform(1 - dv, 1 + dv) + rng.normal(0, dc, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def sample_identity(rng, domain="SynthPedA") -> Identity:
    """Draw one person's fixed attributes (shared small palette + jitter, domain clothing priors)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    d = _domain(domain)
    female_like = rng.random() < 0.45
    upper = _pick(rng, UPPER_W)
    pattern = _pick(rng, PATTERN_W)
    pat = _pick(rng, UPPER_W, exclude=(upper,))
    lower_type = "trousers"
    r = rng.random()
    if female_like and r < d.p_skirt * 2:
        lower_type = "skirt"
    elif r > 1 - d.p_shorts:
        lower_type = "shorts"
    lower = _pick(rng, LOWER_W, exclude=(upper,) if rng.random() < 0.7 else ())
    skin_name = _pick(rng, SKIN_W)
    skin = _jitter(rng, SKIN_TONES[skin_name], 0.06, 4)
    hair_style = ("long" if rng.random() < 0.55 else ("bun" if rng.random() < 0.5 else "short")) if female_like \
        else ("buzz" if rng.random() < 0.25 else "short")
    hair_name = _pick(rng, HAIR_W)
    if lower_type == "trousers":
        legwear = skin
    else:
        legwear = _jitter(rng, CLOTH_COLORS["black"], 0.2, 4) if (lower_type == "skirt" and rng.random() < 0.4) \
            else skin
    shoe = _pick(rng, SHOE_W)
    kw = {}
    if rng.random() < d.p_backpack:
        n = _pick(rng, BAG_W)
        kw.update(backpack=_jitter(rng, CLOTH_COLORS[n]), backpack_name=n, backpack_size=float(rng.uniform(0.85, 1.2)))
    if rng.random() < d.p_bag:
        n = _pick(rng, BAG_W)
        kw.update(bag=_jitter(rng, CLOTH_COLORS[n]), bag_name=n,
                  bag_carry="hand" if rng.random() < 0.5 else "shoulder", bag_side=int(rng.choice([-1, 1])))
    if rng.random() < d.p_hat:
        n = _pick(rng, BAG_W)
        kw.update(hat=_jitter(rng, CLOTH_COLORS[n]), hat_style="cap" if rng.random() < 0.6 else "beanie")
    return Identity(
        height=float(np.clip(rng.normal(0.97 if female_like else 1.02, 0.035), 0.88, 1.1)),
        build=float(np.clip(rng.normal(1.0, 0.08), 0.82, 1.25)),
        shoulder_ratio=float(rng.uniform(0.86, 0.96) if female_like else rng.uniform(0.98, 1.1)),
        hip_ratio=float(rng.uniform(1.05, 1.18) if female_like else rng.uniform(0.95, 1.05)),
        skin=skin, hair_color=_jitter(rng, HAIR_COLORS[hair_name], 0.1, 4), hair_style=hair_style,
        upper_name=upper, upper_color=_jitter(rng, CLOTH_COLORS[upper]), upper_pattern=pattern,
        pattern_name=pat, pattern_color=_jitter(rng, CLOTH_COLORS[pat]),
        pattern_period=float(rng.uniform(0.035, 0.06)), logo_shape="square" if rng.random() < 0.5 else "circle",
        sleeve="short" if rng.random() < d.p_short_sleeve else "long",
        lower_name=lower, lower_color=_jitter(rng, CLOTH_COLORS[lower]), lower_type=lower_type, legwear=legwear,
        shoe_name=shoe, shoe_color=_jitter(rng, SHOE_COLORS[shoe], 0.08, 4),
        gait_amp=float(rng.uniform(0.8, 1.15)), **kw)


#: attribute groups of :class:`Identity`; near-twins share all but one or two groups
ATTRIBUTE_GROUPS = {
    "upper": ("upper_name", "upper_color", "upper_pattern", "pattern_name", "pattern_color", "pattern_period",
              "logo_shape"),
    "sleeve": ("sleeve",),
    "lower": ("lower_name", "lower_color", "lower_type", "legwear"),
    "shoes": ("shoe_name", "shoe_color"),
    "hair": ("hair_style", "hair_color"),
    "carry": ("backpack", "backpack_name", "backpack_size", "bag", "bag_name", "bag_carry", "bag_side"),
    "hat": ("hat", "hat_style"),
    "skin": ("skin",),
}
_TWIN_GROUP_W = {"upper": 1.0, "sleeve": 0.5, "lower": 1.0, "shoes": 0.8, "hair": 0.8, "carry": 1.0, "hat": 0.4,
                 "skin": 0.3}


def sample_similar_identity(rng, base: Identity, domain="SynthPedA") -> Identity:
    """A near-twin of ``base``: a fresh person who copies all of ``base``'s attribute groups but one or
    two (body shape and gait always fresh), so that only a few cues tell them apart."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    fresh = sample_identity(rng, domain)
    names = list(_TWIN_GROUP_W)
    p = np.array([_TWIN_GROUP_W[n] for n in names])
    keep_fresh = set(rng.choice(names, size=1 if rng.random() < 0.7 else 2, replace=False, p=p / p.sum()))
    copied = {}
    for g, fields in ATTRIBUTE_GROUPS.items():
        if g not in keep_fresh:
            for f in fields:
                copied[f] = getattr(base, f)
    if fresh.lower_type == "skirt" or base.lower_type == "skirt":  # keep hips/hair plausible for skirts
        copied.setdefault("hip_ratio", base.hip_ratio)
    return replace(fresh, **copied)


# --------------------------------------------------------------------------------------------
# body model
# --------------------------------------------------------------------------------------------
Y_SH, Y_HIP = 0.815, 0.52
L_UA, L_FA, L_TH, L_SH = 0.185, 0.16, 0.245, 0.232
ANKLE_H = 0.045
HEAD_AX, HEAD_AY, HEAD_AZ = 0.048, 0.064, 0.056
HEAD_C = 0.932


def _v(*a):
    return np.array(a, float)


def _unit(v):
    return v / (np.linalg.norm(v) + 1e-12)


def _rot_y(p, a):
    """Rotate body-frame points (x left, y up, z forward) about the vertical axis into the camera
    frame (X image-right, Y up, Z towards the camera); a = 0 shows the front."""
    p = np.asarray(p, float)
    c, s = math.cos(a), math.sin(a)
    if p.ndim == 1:
        x, y, z = float(p[0]), float(p[1]), float(p[2])
        return np.array((x * c + z * s, y, -x * s + z * c))
    return np.stack([p[..., 0] * c + p[..., 2] * s, p[..., 1], -p[..., 0] * s + p[..., 2] * c], -1)


def _skeleton(ident: Identity, amp: float, phase: float, head_turn: float, rng) -> dict:
    """3-D joints in the body frame (sole at y = 0)."""
    b = ident.build
    ws = 0.105 * b * ident.shoulder_ratio
    wh = 0.080 * b * ident.hip_ratio
    lean = 0.02 * amp
    P = {"ws": ws, "wh": wh, "lean": lean}
    for side, s in ((1, "l"), (-1, "r")):
        ph = phase if side > 0 else phase + math.pi
        hip = _v(side * wh, Y_HIP, 0.0)
        th = amp * 0.40 * math.sin(ph) + rng.normal(0, 0.03)
        kf = amp * (0.08 + 0.75 * max(0.0, math.cos(ph)) ** 1.5) + 0.03
        knee = hip + L_TH * _v(0, -math.cos(th), math.sin(th))
        a = th - kf
        ankle = knee + L_SH * _v(0, -math.cos(a), math.sin(a))
        heel = ankle + _v(0, -0.025, -0.025)
        toe = ankle + _v(0, -0.03, 0.075)
        carrying = ident.bag is not None and ident.bag_carry == "hand" and ident.bag_side == side
        sw = -amp * 0.38 * math.sin(ph) * (0.25 if carrying else 1.0) + rng.normal(0, 0.04)
        abd = 0.08 + (0.08 if carrying else 0.0) + abs(rng.normal(0, 0.03))
        shoulder = _v(side * ws, Y_SH - 0.005, lean)
        d1 = _v(side * math.sin(abd), -math.cos(abd) * math.cos(sw), math.cos(abd) * math.sin(sw))
        elbow = shoulder + L_UA * d1
        ef = 0.12 + 0.45 * amp * max(0.0, sw) + abs(rng.normal(0, 0.05))
        a2 = sw + ef
        d2 = _unit(_v(side * math.sin(abd) * 0.5, -math.cos(a2), math.sin(a2)))
        wrist = elbow + L_FA * d2
        hand = wrist + 0.04 * d2
        P.update({f"hip_{s}": hip, f"knee_{s}": knee, f"ankle_{s}": ankle, f"heel_{s}": heel, f"toe_{s}": toe,
                  f"shoulder_{s}": shoulder, f"elbow_{s}": elbow, f"wrist_{s}": wrist, f"hand_{s}": hand})
    head_c = _v(0, HEAD_C, lean + 0.012)
    P["head_c"] = head_c
    P["head_turn"] = head_turn
    face = {"nose": _v(0, -0.008, HEAD_AZ), "eye_l": _v(0.022, 0.01, 0.047), "eye_r": _v(-0.022, 0.01, 0.047),
            "ear_l": _v(0.045, 0.0, -0.004), "ear_r": _v(-0.045, 0.0, -0.004)}
    for k, v in face.items():
        P[k] = head_c + _rot_y(v, head_turn)
    # ground: the lowest sole touches y = 0
    low = min(min(P[f"ankle_{s}"][1] - ANKLE_H, P[f"toe_{s}"][1], P[f"heel_{s}"][1]) for s in "lr")
    for k, v in P.items():
        if isinstance(v, np.ndarray):
            P[k] = v - _v(0, low, 0)
    return P


KP_SOURCES = ("nose", "eye_l", "eye_r", "ear_l", "ear_r", "shoulder_l", "shoulder_r", "elbow_l", "elbow_r",
              "wrist_l", "wrist_r", "hip_l", "hip_r", "knee_l", "knee_r", "ankle_l", "ankle_r")


# --------------------------------------------------------------------------------------------
# drawing primitives on a super-sampled BGRA canvas (alpha = coverage, binary)
# --------------------------------------------------------------------------------------------
_SH = 4  # cv2 fixed-point shift
_F = 1 << _SH


def _fx(p):
    return (int(round(float(p[0]) * _F)), int(round(float(p[1]) * _F)))


def _c4(c):
    return (int(c[0]), int(c[1]), int(c[2]), 255)


def _shade(c, f):
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _circle(cv, p, r, color):
    cv2.circle(cv, _fx(p), max(1, int(round(r * _F))), _c4(color), -1, cv2.LINE_8, _SH)


def _poly(cv, pts, color):
    pts = np.round(np.asarray(pts, float) * _F).astype(np.int32)
    cv2.fillPoly(cv, [pts], _c4(color), cv2.LINE_8, _SH)


def _capsule(cv, p1, p2, r1, r2, color, shaded=True):
    """Tapered capsule; shaded: darker rim + lighter core for a rounded look."""
    def one(ra, rb, col):
        p1a, p2a = np.asarray(p1, float), np.asarray(p2, float)
        d = p2a - p1a
        n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
        _poly(cv, [p1a + n * ra, p2a + n * rb, p2a - n * rb, p1a - n * ra], col)
        _circle(cv, p1a, ra, col)
        _circle(cv, p2a, rb, col)
    if shaded:
        one(r1, r2, _shade(color, 0.78))
        one(r1 * 0.6, r2 * 0.6, color)
    else:
        one(r1, r2, color)


class _Projector:
    """Body frame -> image. Defaults: the orthographic side-on view of the datasets. ``pitch`` (radians, > 0: the
    camera looks down) tilts the view about the horizontal image axis; ``persp`` > 0 is the camera's distance from
    the point at height ``pivot`` (body units) and makes the projection perspective (``s`` holds at the pivot's
    depth). Both are used by the controlled-conditions mode (:mod:`.controlled`)."""

    def __init__(self, yaw, s, cx, vg, S, pitch=0.0, persp=0.0, pivot=0.0):
        self.yaw, self.s, self.cx, self.vg, self.S = yaw, s, cx, vg, S
        self.pitch, self.persp, self.pivot = float(pitch), float(persp), float(pivot)

    def world(self, p):
        w = _rot_y(p, self.yaw)
        if self.pitch:  # a linear map (normals transform with it too): Y up / Z towards the camera, tilted
            c, s = math.cos(self.pitch), math.sin(self.pitch)
            w = np.stack([w[..., 0], w[..., 1] * c - w[..., 2] * s, w[..., 1] * s + w[..., 2] * c], -1)
        return w

    def _plane(self, w):
        """Camera-frame point(s) -> (x, y) on the image plane in body units (y up, origin at the sole)."""
        if not self.persp:
            return w[..., 0], w[..., 1]
        py, pz = self.pivot * math.cos(self.pitch), self.pivot * math.sin(self.pitch)
        k = self.persp / np.maximum(self.persp - (w[..., 2] - pz), 1e-3)
        return k * w[..., 0], py + k * (w[..., 1] - py)

    def hr(self, p):
        """Body-frame point(s) -> super-sampled canvas pixel coordinates."""
        x, y = self._plane(self.world(p))
        return np.stack([(self.cx + self.s * x + 0.5) * self.S - 0.5, (self.vg - self.s * y + 0.5) * self.S - 0.5],
                        -1)

    def out(self, p):
        """Body-frame point(s) -> output-image pixel coordinates (pixel centres at integers)."""
        x, y = self._plane(self.world(p))
        return np.stack([self.cx + self.s * x, self.vg - self.s * y], -1)

    def depth(self, p):
        return float(self.world(p)[..., 2].mean())


def _draw_box(cv, pr: _Projector, center, half, color, rot=0.0, origin=None):
    """Box with half sizes ``half`` centred at ``center`` of a local frame rotated by ``rot`` about
    the vertical axis and placed at ``origin`` (body frame); visible faces shaded by their facing."""
    cx, cy, cz = center
    hx, hy, hz = half
    corners = np.array([[cx + sx * hx, cy + sy * hy, cz + sz * hz] for sx in (-1, 1) for sy in (-1, 1)
                        for sz in (-1, 1)])
    corners = _rot_y(corners, rot) + (0 if origin is None else np.asarray(origin, float))
    img = pr.hr(corners)
    faces = {  # (corner indices in drawing order, local normal)
        (0, 1, 3, 2): (-1, 0, 0), (4, 5, 7, 6): (1, 0, 0), (0, 1, 5, 4): (0, -1, 0), (2, 3, 7, 6): (0, 1, 0),
        (0, 2, 6, 4): (0, 0, -1), (1, 3, 7, 5): (0, 0, 1)}
    for idx, n in faces.items():
        nw = pr.world(_rot_y(np.array(n, float), rot))
        if nw[2] > 1e-3 or (n[1] == 1 and nw[2] > -1e-3):
            f = 0.72 + 0.28 * nw[2] + (0.08 if n[1] == 1 else 0.0)
            _poly(cv, img[list(idx)], _shade(color, f))


def _section_outline(pr: _Projector, ys, ws, ds, zs):
    """Polygon (hr coords) of a vertical stack of elliptic cross-sections; returns (poly, centre_u,
    half_width_hr) per section."""
    cu, hw, vv = [], [], []
    c, s = math.cos(pr.yaw), math.sin(pr.yaw)
    for y, w, d, z in zip(ys, ws, ds, zs):
        p = pr.hr(_v(0, y, z))
        cu.append(p[0])
        vv.append(p[1])
        hw.append(math.sqrt((w * c) ** 2 + (d * s) ** 2) * pr.s * pr.S)
    cu, hw, vv = map(np.array, (cu, hw, vv))
    left = np.stack([cu - hw, vv], 1)
    right = np.stack([cu + hw, vv], 1)[::-1]
    return np.concatenate([left, right]), cu, hw, vv


def _paint_region(cv, poly, colour_fn):
    """Rasterise a polygon into the canvas with per-pixel colours colour_fn(xs, ys) -> (N, 3)."""
    H, W = cv.shape[:2]
    x0 = max(0, int(math.floor(poly[:, 0].min())) - 1)
    x1 = min(W, int(math.ceil(poly[:, 0].max())) + 2)
    y0 = max(0, int(math.floor(poly[:, 1].min())) - 1)
    y1 = min(H, int(math.ceil(poly[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    pts = np.round((poly - [x0, y0]) * _F).astype(np.int32)
    cv2.fillPoly(m, [pts], 1, cv2.LINE_8, _SH)
    yy, xx = np.nonzero(m)
    if len(yy) == 0:
        return
    cols = colour_fn(xx + x0, yy + y0)
    sub = cv[y0:y1, x0:x1]
    sub[yy, xx, :3] = np.clip(cols, 0, 255).astype(np.uint8)
    sub[yy, xx, 3] = 255


# --------------------------------------------------------------------------------------------
# person
# --------------------------------------------------------------------------------------------
def _draw_person(cv, ident: Identity, P: dict, pr: _Projector):
    S, s = pr.S, pr.s
    px = s * S  # canvas pixels per body unit
    b = math.sqrt(ident.build)
    ws, wh, lean = P["ws"], P["wh"], P["lean"]
    d_t = 0.068 * ident.build
    parts = []  # (depth key, tie, fn)

    def add(key, fn):
        parts.append((key, len(parts), fn))

    # ---- legs (always behind the torso: the shirt hem overlaps the thighs)
    for side, sx in ((1, "l"), (-1, "r")):
        hip, knee, ankle = P[f"hip_{sx}"], P[f"knee_{sx}"], P[f"ankle_{sx}"]
        heel, toe = P[f"heel_{sx}"], P[f"toe_{sx}"]
        key = min(pr.depth(np.stack([hip, knee, ankle])), -0.02)

        def leg(hip=hip, knee=knee, ankle=ankle, heel=heel, toe=toe):
            h, k, a = pr.hr(hip), pr.hr(knee), pr.hr(ankle)
            lt = ident.lower_type
            if lt == "trousers":
                _capsule(cv, k, a, 0.040 * b * px, 0.032 * b * px, ident.lower_color)
                _capsule(cv, h + [0, -0.02 * px], k, 0.054 * b * px, 0.041 * b * px, ident.lower_color)
            else:
                leg_c = ident.legwear
                _capsule(cv, k, a, 0.034 * b * px, 0.024 * b * px, leg_c)
                _capsule(cv, h, k, 0.047 * b * px, 0.035 * b * px, leg_c)
                if lt == "shorts":
                    m = h + 0.55 * (k - h)
                    _capsule(cv, h + [0, -0.02 * px], m, 0.057 * b * px, 0.050 * b * px, ident.lower_color)
            _capsule(cv, pr.hr(heel), pr.hr(toe), 0.027 * px, 0.025 * px, ident.shoe_color, shaded=False)
        add(key, leg)

    # ---- pelvis / skirt (lower clothing)
    def pelvis():
        ys = [0.45, 0.50, 0.57]
        poly, *_ = _section_outline(pr, ys, [wh * 1.25, wh * 1.3, wh * 1.28], [0.062 * b] * 3,
                                    [0.0, 0.0, lean * 0.2])
        _poly(cv, poly, ident.lower_color)
    add(-0.015, pelvis)
    if ident.lower_type == "skirt":
        def skirt():
            top = pr.hr(_v(0, 0.56, 0))
            hw_top = math.sqrt((wh * 1.35 * math.cos(pr.yaw)) ** 2 + (0.07 * math.sin(pr.yaw)) ** 2) * px
            y_bot = 0.34
            xs = []
            for sx in "lr":
                hip, knee = P[f"hip_{sx}"], P[f"knee_{sx}"]
                t = (hip[1] - y_bot) / max(1e-6, hip[1] - knee[1])
                xs.append(pr.hr(hip + t * (knee - hip))[0])
            lo, hi = min(xs) - 0.07 * b * px, max(xs) + 0.07 * b * px
            lo, hi = min(lo, top[0] - hw_top * 1.25), max(hi, top[0] + hw_top * 1.25)
            vb = pr.hr(_v(0, y_bot, 0))[1]
            poly = np.array([[top[0] - hw_top, top[1]], [top[0] + hw_top, top[1]], [hi, vb], [lo, vb]])
            _paint_region(cv, poly, lambda xx, yy: np.asarray(ident.lower_color, float)[None] *
                          (0.85 + 0.15 * np.cos(np.clip((xx - (lo + hi) / 2) / ((hi - lo) / 2 + 1e-6), -1, 1)
                                                 * 1.4))[:, None])
        add(-0.012, skirt)

    # ---- torso (upper clothing with pattern, cylinder shading)
    ys = [0.455, 0.52, 0.60, 0.68, 0.75, 0.80, 0.828, 0.848]
    tw = [wh * 1.30, wh * 1.30, ws * 0.86, ws * 0.92, ws * 0.98, ws * 1.04, ws * 0.78, 0.040]
    td = [d_t * 0.95, d_t * 0.95, d_t * 0.9, d_t * 1.05, d_t, d_t * 0.85, d_t * 0.7, 0.035]
    tz = [lean * (y - Y_HIP) / (Y_SH - Y_HIP) for y in ys]

    def torso():
        poly, cu, hw, vv = _section_outline(pr, ys, tw, td, tz)
        order = np.argsort(vv)
        vv_s, cu_s, hw_s = vv[order], cu[order], hw[order]
        base = np.asarray(ident.upper_color, float)
        pat_c = np.asarray(ident.pattern_color, float)
        per = ident.pattern_period
        n_v = max(4, 2 * int(round(0.55 / (2 * per))))
        pattern = ident.upper_pattern

        def colours(xx, yy):
            c = np.interp(yy, vv_s, cu_s)
            w = np.interp(yy, vv_s, hw_s)
            u = np.clip((xx - c) / np.maximum(w, 1e-3), -1, 1)
            alpha = np.arcsin(u)
            beta = np.mod(alpha - pr.yaw + math.pi, 2 * math.pi) - math.pi  # 0: chest centre, + towards left
            ybody = (pr.vg - ((yy + 0.5) / S - 0.5)) / s
            use_pat = np.zeros(len(xx), bool)
            if pattern in ("hstripes", "checks"):
                use_pat ^= (np.floor((ybody - 0.455) / per).astype(int) % 2).astype(bool)
            if pattern in ("vstripes", "checks"):
                use_pat ^= (np.floor((beta + math.pi) / (2 * math.pi / n_v)).astype(int) % 2).astype(bool)
            if pattern == "logo":
                dy = (ybody - 0.695) / 0.032
                db = beta / 0.34
                use_pat = (np.abs(dy) < 1) & (np.abs(db) < 1) if ident.logo_shape == "square" else \
                    (dy ** 2 + db ** 2 < 1)
            col = np.where(use_pat[:, None], pat_c[None], base[None])
            return col * (0.78 + 0.22 * np.cos(alpha))[:, None]
        _paint_region(cv, poly, colours)
    add(0.0, torso)

    # ---- arms
    for side, sx in ((1, "l"), (-1, "r")):
        sh, el, wr, ha = P[f"shoulder_{sx}"], P[f"elbow_{sx}"], P[f"wrist_{sx}"], P[f"hand_{sx}"]
        key = pr.depth(np.stack([sh, el, wr]))

        def arm(sh=sh, el=el, wr=wr, ha=ha):
            a, e, w, h = pr.hr(sh), pr.hr(el), pr.hr(wr), pr.hr(ha)
            if ident.sleeve == "long":
                _capsule(cv, e, w, 0.030 * b * px, 0.026 * b * px, ident.upper_color)
                _capsule(cv, a, e, 0.037 * b * px, 0.031 * b * px, ident.upper_color)
            else:
                _capsule(cv, e, w, 0.026 * b * px, 0.021 * b * px, ident.skin)
                _capsule(cv, a, e, 0.031 * b * px, 0.026 * b * px, ident.skin)
                _capsule(cv, a, a + 0.5 * (e - a), 0.040 * b * px, 0.036 * b * px, ident.upper_color)
            _circle(cv, w + 0.45 * (h - w), 0.025 * px, _shade(ident.skin, 0.92))
        add(key, arm)
        if ident.bag is not None and ident.bag_carry == "hand" and ident.bag_side == side:
            bc = wr + _v(0, -0.085, 0)

            def hbag(wr=wr, bc=bc):
                _capsule(cv, pr.hr(wr), pr.hr(bc + _v(0, 0.06, 0)), 0.006 * px, 0.006 * px, _shade(ident.bag, 0.6),
                         shaded=False)
                _draw_box(cv, pr, bc, (0.022, 0.06, 0.075), ident.bag)
            add(key + 1e-3, hbag)

    # ---- shoulder bag + strap
    if ident.bag is not None and ident.bag_carry == "shoulder":
        sd = ident.bag_side
        bc = _v(sd * (wh * 1.3 + 0.05), 0.50, 0.01)
        for zz in (d_t + 0.004, -d_t - 0.004):
            p0, p1 = _v(-sd * ws * 0.55, 0.83, zz * 0.6), _v(sd * (wh + 0.045), 0.55, zz * 0.8)

            def strap(p0=p0, p1=p1):
                _capsule(cv, pr.hr(p0), pr.hr(p1), 0.010 * px, 0.010 * px, _shade(ident.bag, 0.75), shaded=False)
            add(pr.depth(np.stack([p0, p1])) * 1.3, strap)
        add(pr.depth(bc), lambda bc=bc: _draw_box(cv, pr, bc, (0.028, 0.058, 0.07), ident.bag))

    # ---- backpack + front straps
    if ident.backpack is not None:
        k = ident.backpack_size
        bc = _v(0, 0.665, -(d_t + 0.045 * k))
        add(pr.depth(bc), lambda bc=bc: _draw_box(cv, pr, bc, (0.085 * k * b, 0.11 * k, 0.045 * k), ident.backpack))
        for side in (1, -1):
            p0, p1 = _v(side * 0.052, 0.835, 0.01), _v(side * 0.066, 0.60, d_t + 0.004)

            def bstrap(p0=p0, p1=p1):
                _capsule(cv, pr.hr(p0), pr.hr(p1), 0.011 * px, 0.011 * px, _shade(ident.backpack, 0.8), shaded=False)
            add(pr.depth(_v(side * 0.06, 0.7, d_t + 0.004)), bstrap)

    # ---- long hair curtain behind the head
    if ident.hair_style == "long":
        hc = _v(0, 0.85, P["head_c"][2] - 0.05)
        add(pr.depth(hc), lambda hc=hc: _draw_box(cv, pr, hc, (0.047, 0.075, 0.02), ident.hair_color))

    # ---- neck and head
    def neck():
        _capsule(cv, pr.hr(_v(0, 0.83, lean)), pr.hr(P["head_c"] + _v(0, -0.04, 0)), 0.027 * px, 0.025 * px,
                 _shade(ident.skin, 0.9), shaded=False)
    add(0.5, neck)
    add(0.6, lambda: _draw_head(cv, ident, P, pr))

    for _, _, fn in sorted(parts, key=lambda t: (t[0], t[1])):
        fn()


def _draw_head(cv, ident: Identity, P: dict, pr: _Projector):
    S, s = pr.S, pr.s
    px = s * S
    hy = pr.yaw + P["head_turn"]
    hc = P["head_c"]
    # ears first (peek out at the sides in front/back views)
    for e in ("ear_l", "ear_r"):
        _circle(cv, pr.hr(P[e]), 0.013 * px, _shade(ident.skin, 0.85))
    c = pr.hr(hc)
    a = math.sqrt((HEAD_AX * math.cos(hy)) ** 2 + (HEAD_AZ * math.sin(hy)) ** 2) * px
    bb = HEAD_AY * px
    hs = ident.hair_style
    skin = np.asarray(ident.skin, float)
    hair = np.asarray(ident.hair_color, float)
    hat = None if ident.hat is None else np.asarray(ident.hat, float)
    ch, sh = math.cos(hy), math.sin(hy)

    def colours(xx, yy):
        nx = np.clip((xx - c[0]) / a, -1, 1)
        ny = np.clip((c[1] - yy) / bb, -1, 1)
        nz = np.sqrt(np.clip(1 - nx ** 2 - ny ** 2, 0, 1))
        hx, hz = nx * ch - nz * sh, nx * sh + nz * ch  # head-frame normal (x left, z forward)
        if hs == "short":
            is_hair = ny > -0.05 + 0.5 * hz
        elif hs == "buzz":
            is_hair = ny > 0.15 + 0.45 * hz
        elif hs == "long":
            is_hair = ny > -0.35 + 0.8 * hz
        else:  # bun
            is_hair = ny > -0.2 + 0.65 * hz
        col = np.where(is_hair[:, None], hair[None], skin[None])
        if hs == "buzz":
            col = np.where(is_hair[:, None], 0.55 * hair[None] + 0.45 * skin[None], col)
        if hat is not None:
            crown = ny > (0.25 - 0.05 * hz if ident.hat_style == "cap" else 0.05 + 0.1 * hz)
            col = np.where(crown[:, None], hat[None], col)
        return col * (0.8 + 0.2 * nz)[:, None]

    bun = hc + _rot_y(_v(0, 0.045, -0.05), P["head_turn"])
    bun_front = hs == "bun" and pr.world(bun - hc)[2] > 0
    if hs == "bun" and not bun_front:
        _circle(cv, pr.hr(bun), 0.026 * px, _shade(ident.hair_color, 1.1))
    t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    poly = np.stack([c[0] + a * np.cos(t), c[1] + bb * np.sin(t)], 1)
    _paint_region(cv, poly, colours)
    # nose bump (side views)
    if math.sin(abs(hy)) > 0.5 and math.cos(hy) > -0.3:
        _circle(cv, pr.hr(P["nose"]), 0.011 * px, _shade(ident.skin, 0.9))
    # eyes when the face is towards the camera
    for e, sgn in (("eye_l", 1), ("eye_r", -1)):
        n = pr.world(_rot_y(_v(sgn * 0.45, 0.1, 0.88), P["head_turn"]))
        if n[2] > 0.3:
            _circle(cv, pr.hr(P[e]), max(0.0065 * px, 0.6), (30, 30, 38))
    if bun_front:
        _circle(cv, pr.hr(bun), 0.026 * px, _shade(ident.hair_color, 1.1))
    if ident.hat is not None and ident.hat_style == "cap":
        _draw_box(cv, pr, (0, 0.03, 0.062), (0.046, 0.006, 0.036), _shade(ident.hat, 0.9), rot=P["head_turn"],
                  origin=hc)


# --------------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------------
def _lowfreq(rng, h, w, cells, amp):
    g = rng.normal(0, 1, (max(2, h // cells + 2), max(2, w // cells + 2))).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * amp


@lru_cache(maxsize=64)
def _camera_scene(cam: CameraSpec, H: int, W: int) -> np.ndarray:
    """The camera's fixed background (float32 BGR, larger than a crop; crops are taken from it)."""
    rng = np.random.default_rng([cam.scene_seed, H, W, 7])
    SH, SW = int(round(H * 1.35)), W * 5
    horizon = int(SH * rng.uniform(0.50, 0.66))
    tint = np.asarray(cam.tint, np.float32)
    img = np.zeros((SH, SW, 3), np.float32)
    yy = np.arange(SH, dtype=np.float32)[:, None, None]
    if cam.style == "indoor":
        wall = tint * (1.12 - 0.22 * yy[:horizon] / horizon) + _lowfreq(rng, horizon, SW, 24, 5)
        img[:horizon] = wall
        x = 0
        while x < SW:
            w = int(rng.uniform(0.25, 0.8) * W)
            kind = rng.choice(["door", "poster", "pillar", "window", "none", "none"])
            top = int(horizon * rng.uniform(0.05, 0.35))
            if kind == "door":
                col = tint * rng.uniform(0.6, 0.85) + rng.normal(0, 8, 3)
                cv2.rectangle(img, (x, top), (x + w, horizon), col.tolist(), -1)
                cv2.rectangle(img, (x, top), (x + w, horizon), (col * 0.7).tolist(), max(1, W // 40))
            elif kind == "poster":
                col = np.asarray(list(CLOTH_COLORS.values())[rng.integers(len(CLOTH_COLORS))], np.float32)
                col = 0.45 * col + 0.55 * tint
                y0 = int(horizon * rng.uniform(0.2, 0.5))
                cv2.rectangle(img, (x, y0), (x + w // 2, y0 + w // 2 + 4), col.tolist(), -1)
            elif kind == "pillar":
                col = tint * rng.uniform(1.05, 1.2)
                cv2.rectangle(img, (x, 0), (x + w // 3, horizon), col.tolist(), -1)
            elif kind == "window":
                col = np.clip(tint * 1.35 + [12, 8, 0], 0, 255)
                cv2.rectangle(img, (x, top), (x + w, int(horizon * 0.6)), col.tolist(), -1)
                cv2.line(img, (x + w // 2, top), (x + w // 2, int(horizon * 0.6)), (tint * 0.8).tolist(), 1)
            x += w + int(rng.uniform(0.1, 0.6) * W)
        floor = tint * rng.uniform(0.7, 0.9) + [0, rng.uniform(-8, 8), rng.uniform(-6, 10)]
        fl = np.broadcast_to(floor, (SH - horizon, SW, 3)) * (0.95 + 0.1 * (yy[horizon:] - horizon) / (SH - horizon))
        img[horizon:] = fl + _lowfreq(rng, SH - horizon, SW, 10, 4)
        step = max(4, W // 5)
        for yl in range(horizon + 3, SH, step):
            cv2.line(img, (0, yl), (SW, yl), (floor * 0.88).tolist(), 1)
        for xl in range(0, SW, int(W * 0.45)):
            cv2.line(img, (xl, horizon), (int(xl + (xl - SW / 2) * 0.6), SH), (floor * 0.88).tolist(), 1)
        cv2.line(img, (0, horizon), (SW, horizon), (tint * 0.55).tolist(), max(1, H // 64))
    elif cam.style == "outdoor":
        sky_line = int(horizon * rng.uniform(0.15, 0.4))
        sky = np.array([215, 185, 150], np.float32) * (0.95 + 0.1 * yy[:sky_line] / max(1, sky_line))
        img[:sky_line] = sky
        mid = tint * (0.9 + 0.15 * yy[sky_line:horizon] / horizon)
        img[sky_line:horizon] = mid + _lowfreq(rng, horizon - sky_line, SW, 8, 12)
        # buildings / foliage / trunks
        for _ in range(int(SW / W * 3)):
            x = int(rng.uniform(0, SW))
            if rng.random() < 0.4:
                w, h = int(rng.uniform(0.4, 1.2) * W), int(rng.uniform(0.3, 0.8) * horizon)
                col = np.clip(tint * rng.uniform(0.8, 1.3) + rng.normal(0, 15, 3) + 20, 0, 255)
                cv2.rectangle(img, (x, horizon - h), (x + w, horizon), col.tolist(), -1)
                for wy in range(horizon - h + 4, horizon - 6, max(5, H // 16)):
                    for wx in range(x + 3, x + w - 3, max(5, W // 8)):
                        cv2.rectangle(img, (wx, wy), (wx + 2, wy + 3), (col * 0.6).tolist(), -1)
            else:
                for _k in range(int(rng.integers(6, 14))):
                    r = int(rng.uniform(0.08, 0.22) * W)
                    cy = int(rng.uniform(sky_line * 0.5, horizon * 0.95))
                    col = np.array([rng.uniform(30, 80), rng.uniform(90, 160), rng.uniform(40, 90)])
                    col = 0.6 * col + 0.4 * tint
                    cv2.circle(img, (x + int(rng.normal(0, W * 0.25)), cy), r, col.tolist(), -1, cv2.LINE_AA)
                if rng.random() < 0.5:
                    cv2.rectangle(img, (x, int(horizon * 0.55)), (x + max(2, W // 16), horizon), (40, 60, 85), -1)
        ground = np.array([150, 160, 165], np.float32) * rng.uniform(0.7, 1.0) + rng.normal(0, 8, 3)
        img[horizon:] = ground * (0.9 + 0.15 * (yy[horizon:] - horizon) / (SH - horizon)) + \
            rng.normal(0, 7, (SH - horizon, SW, 1)).astype(np.float32) + _lowfreq(rng, SH - horizon, SW, 12, 8)
        for xl in range(0, SW, int(W * 0.8)):
            cv2.line(img, (xl, horizon), (xl - int(W * 0.3), SH), (ground * 0.8).tolist(), 1)
        cv2.rectangle(img, (0, horizon - 2), (SW, horizon + 1), (ground * 1.15).tolist(), -1)
        for _ in range(int(rng.integers(1, 4))):  # parked cars
            x = int(rng.uniform(0, SW))
            w, h = int(rng.uniform(0.8, 1.6) * W), int(rng.uniform(0.18, 0.3) * H)
            col = np.asarray(list(CLOTH_COLORS.values())[rng.integers(len(CLOTH_COLORS))], np.float32)
            cv2.rectangle(img, (x, horizon - h), (x + w, horizon + 2), col.tolist(), -1)
            cv2.rectangle(img, (x + w // 6, horizon - h - h // 2), (x + w - w // 6, horizon - h),
                          (col * 0.5 + 40).tolist(), -1)
    else:  # night
        img[:] = tint * (0.55 + 0.45 * yy / SH) + _lowfreq(rng, SH, SW, 16, 4)
        for _ in range(int(SW / W * 1.5)):
            x = int(rng.uniform(0, SW))
            w, h = int(rng.uniform(0.5, 1.5) * W), int(rng.uniform(0.4, 0.9) * horizon)
            col = tint * rng.uniform(0.4, 0.8)
            cv2.rectangle(img, (x, horizon - h), (x + w, horizon), col.tolist(), -1)
            for wy in range(horizon - h + 4, horizon - 6, max(6, H // 12)):
                for wx in range(x + 3, x + w - 3, max(6, W // 6)):
                    if rng.random() < 0.3:
                        cv2.rectangle(img, (wx, wy), (wx + 3, wy + 4), (60, 170, 220), -1)
        ground = tint * 0.8
        img[horizon:] = ground * (0.9 + 0.3 * (yy[horizon:] - horizon) / (SH - horizon))
        glow = np.zeros((SH, SW), np.float32)
        for _ in range(int(rng.integers(2, 5))):
            x, y = int(rng.uniform(0, SW)), int(rng.uniform(0.05, 0.4) * horizon)
            cv2.circle(glow, (x, y), max(2, W // 10), 1.0, -1)
            cv2.line(glow, (x, horizon), (x, SH), 0.25, max(2, W // 12))
            cv2.line(img, (x, y), (x, horizon), (25, 25, 28), max(1, W // 40))
        glow = cv2.GaussianBlur(glow, (0, 0), W / 8)
        lamp = np.array([120, 200, 255], np.float32) if cam.color_gain[2] > cam.color_gain[0] else \
            np.array([255, 225, 200], np.float32)
        img += glow[..., None] * lamp * 1.6
        img += rng.normal(0, 3, (SH, SW, 1)).astype(np.float32)
    return np.clip(img, 0, 255)


def _clutter(img, rng, style, H, W):
    """Per-image background clutter (behind the person)."""
    for _ in range(int(rng.integers(1, 3))):
        kind = rng.random()
        if kind < 0.45:  # a passer-by / object at a crop edge
            w = int(rng.uniform(0.15, 0.3) * W)
            x = -w // 2 if rng.random() < 0.5 else W - w // 2
            y0 = int(rng.uniform(0.05, 0.4) * H)
            col = np.asarray(list(CLOTH_COLORS.values())[rng.integers(len(CLOTH_COLORS))], np.float32)
            col = col * (0.45 if style == "night" else 0.9)
            cv2.rectangle(img, (x, y0), (x + w, int(y0 + rng.uniform(0.4, 0.7) * H)), col.tolist(), -1)
        elif kind < 0.8:
            x, y = int(rng.uniform(0, W)), int(rng.uniform(0, 0.7) * H)
            w, h = int(rng.uniform(0.1, 0.35) * W), int(rng.uniform(0.05, 0.25) * H)
            base = img[min(H - 1, max(0, y)), min(W - 1, max(0, x))]
            col = np.clip(base * rng.uniform(0.6, 1.4) + rng.normal(0, 12, 3), 0, 255)
            cv2.rectangle(img, (x, y), (x + w, y + h), col.tolist(), -1)
        else:
            x = int(rng.uniform(0, W))
            col = np.clip(img[H // 2, min(W - 1, x)] * rng.uniform(0.5, 0.8), 0, 255)
            cv2.line(img, (x, 0), (x + int(rng.normal(0, 3)), H), col.tolist(), max(1, W // 32))


def _draw_occluder(occ, rng, style, box, S):
    """An object in front of the person on a separate super-sampled BGRA canvas. box = person
    (x0, y0, x1, y1) in hr pixels."""
    Hh, Wh = occ.shape[:2]
    x0, y0, x1, y1 = box
    ph = y1 - y0
    kind = rng.choice(["bottom", "side", "pole"], p=[0.5, 0.3, 0.2])
    if style == "indoor":
        palette = [(110, 120, 130), (70, 90, 120), (140, 140, 140), (120, 100, 80), (60, 60, 60)]
    elif style == "outdoor":
        palette = [(60, 120, 70), (50, 100, 60), (40, 40, 170), (170, 120, 60), (200, 200, 200), (60, 60, 60)]
    else:
        palette = [(30, 30, 35), (45, 40, 35), (25, 35, 45)]
    col = np.asarray(palette[rng.integers(len(palette))], float) * rng.uniform(0.85, 1.15)
    if kind == "bottom":
        top = y1 - ph * rng.uniform(0.18, 0.42)
        if rng.random() < 0.5:
            xa, xb = -1.0, Wh + 1.0
        else:
            w = Wh * rng.uniform(0.55, 0.9)
            xa = rng.uniform(-0.1 * Wh, Wh - w)
            xb = xa + w
        if style == "outdoor" and rng.random() < 0.5:  # bush
            for _ in range(14):
                r = rng.uniform(0.1, 0.2) * Wh
                cx = rng.uniform(xa + r * 0.5, xb - r * 0.5)
                cy = rng.uniform(top + r, Hh + r)
                c2 = np.array([rng.uniform(30, 70), rng.uniform(90, 150), rng.uniform(40, 80)])
                _circle(occ, (cx, cy), r, tuple(c2))
        else:
            _poly(occ, [(xa, top), (xb, top), (xb, Hh + 1), (xa, Hh + 1)], tuple(col))
            _poly(occ, [(xa, top), (xb, top), (xb, top + 0.04 * ph), (xa, top + 0.04 * ph)], _shade(col, 1.25))
    elif kind == "side":
        w = Wh * rng.uniform(0.22, 0.4)
        left = rng.random() < 0.5
        xa, xb = (-1.0, w) if left else (Wh - w, Wh + 1.0)
        ya = rng.uniform(-0.1, 0.4) * Hh
        _poly(occ, [(xa, ya), (xb, ya), (xb, Hh + 1), (xa, Hh + 1)], tuple(col))
        edge = xb if left else xa
        _poly(occ, [(edge - 0.04 * Wh, ya), (edge + 0.04 * Wh, ya), (edge + 0.04 * Wh, Hh + 1),
                    (edge - 0.04 * Wh, Hh + 1)], _shade(col, 0.8))
    else:
        w = Wh * rng.uniform(0.07, 0.13)
        cx = rng.uniform(x0, x1)
        for i, f in enumerate((0.75, 1.0, 1.2, 1.0, 0.8)):
            xa = cx - w / 2 + i * w / 5
            _poly(occ, [(xa, -1), (xa + w / 5 + 0.5, -1), (xa + w / 5 + 0.5, Hh + 1), (xa, Hh + 1)],
                  _shade((150, 150, 150) if style != "night" else (50, 50, 55), f))
    return str(kind)


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
@dataclass
class RenderResult:
    image: np.ndarray            # uint8 HxWx3 BGR, before JPEG
    keypoints: np.ndarray        # float32 17x3 (x, y, score)
    mask: np.ndarray             # uint8 HxW 0/255
    jpeg_quality: int
    view: str
    info: dict = field(default_factory=dict)


def _supersample(H: int) -> int:
    return int(np.clip(round(384 / H), 2, 4))


def render_sample(identity: Identity, camera: CameraSpec, rng, height: int = 128, width: int = 64, *,
                  view: Optional[str] = None, vertical_misalign: float = 0.0, occlusion: Optional[bool] = None,
                  walking: Optional[bool] = None, bad_crop: bool = False) -> RenderResult:
    """Render one crop of ``identity`` seen by ``camera`` (all randomness from ``rng``)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    H, W = int(height), int(width)
    S = _supersample(H)
    # ---- viewpoint and pose
    if view is None:
        view = VIEWS[int(rng.choice(4, p=np.asarray(camera.view_probs) / np.sum(camera.view_probs)))]
    yaw = math.radians(VIEW_YAW_DEG[view] + float(np.clip(rng.normal(0, camera.yaw_jitter), -35, 35)))
    if walking is None:
        walking = bool(rng.random() < camera.walk_prob)
    amp = identity.gait_amp * rng.uniform(0.7, 1.1) if walking else rng.uniform(0.0, 0.15)
    phase = rng.uniform(0, 2 * math.pi)
    head_turn = math.radians(float(np.clip(rng.normal(0, 10), -30, 30)))
    P = _skeleton(identity, amp, phase, head_turn, rng)

    # ---- framing (person centred like a detector crop; misalignment shifts it vertically)
    vm = float(vertical_misalign)
    frac = rng.uniform(*camera.scale_range) * identity.height
    if vm > 0:
        frac *= rng.uniform(1 - 0.6 * vm, 1 + 0.3 * vm)
    if bad_crop:
        frac *= rng.uniform(0.9, 1.5)
    s = frac * H  # output pixels per body unit
    pts = np.stack([v for v in P.values() if isinstance(v, np.ndarray)])
    wpts = _rot_y(pts, yaw)
    top = HEAD_C + HEAD_AY + (0.01 if identity.hat is not None else 0.0)
    xmid = 0.5 * (wpts[:, 0].min() + wpts[:, 0].max())
    cx = W / 2 - 0.5 - s * xmid + rng.normal(0, 0.03 * W)
    cy = H / 2 - 0.5 + rng.normal(0, 0.015 * H) + (rng.uniform(-vm, vm) * H if vm > 0 else 0.0)
    if bad_crop:
        cy += rng.choice([-1, 1]) * rng.uniform(0.15, 0.4) * H
        cx += rng.choice([-1, 1]) * rng.uniform(0.0, 0.3) * W
    vg = cy + s * top / 2  # ground line (output pixels)
    pr = _Projector(yaw, s, cx, vg, S)

    # ---- person (and occluder) on super-sampled canvases
    Hh, Wh = H * S, W * S
    cv = np.zeros((Hh, Wh, 4), np.uint8)
    _draw_person(cv, identity, P, pr)
    occ_kind = None
    if occlusion is None:
        occlusion = bool(rng.random() < camera.occlusion_prob)
    if occlusion:
        occ = np.zeros((Hh, Wh, 4), np.uint8)
        box = (pr.cx * S + (wpts[:, 0].min() * s) * S, (vg - s * top) * S, pr.cx * S + (wpts[:, 0].max() * s) * S,
               vg * S)
        occ_kind = _draw_occluder(occ, rng, camera.style, box, S)

    person = cv[..., 3] > 0
    if occlusion:
        occm = occ[..., 3] > 0
        layer = np.where(occm[..., None], occ, cv)
        person = person & ~occm
    else:
        occm = None
        layer = cv
    lay = cv2.resize(layer.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    vis = cv2.resize(person.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA)
    mask = np.where(vis >= 0.5, 255, 0).astype(np.uint8)

    # ---- background: a crop of the camera's scene + clutter + the person's floor shadow
    scene = _camera_scene(camera, H, W)
    oy = int(rng.integers(0, scene.shape[0] - H + 1))
    ox = int(rng.integers(0, scene.shape[1] - W + 1))
    bg = scene[oy:oy + H, ox:ox + W].copy() * rng.uniform(0.92, 1.08)
    if rng.random() < camera.clutter:
        _clutter(bg, rng, camera.style, H, W)
    feet = pr.out(np.stack([P["ankle_l"], P["ankle_r"]]))
    sh_mask = np.zeros((H, W), np.float32)
    cv2.ellipse(sh_mask, (int(round(feet[:, 0].mean() * 4)), int(round(vg * 4))),
                (int(round(max(0.12 * s, abs(feet[1, 0] - feet[0, 0]) * 0.7) * 4)), int(round(0.03 * s * 4))),
                0, 0, 360, 1.0, -1, cv2.LINE_AA, 2)
    sh_mask = cv2.GaussianBlur(sh_mask, (0, 0), max(0.8, 0.02 * s))
    bg *= (1 - 0.4 * sh_mask)[..., None]

    a = lay[..., 3:4] / 255.0
    img = bg * (1 - a) + lay[..., :3]

    # ---- camera: light, colour cast, blur, noise
    gain = camera.brightness * rng.uniform(0.85, 1.15) * np.asarray(camera.color_gain, np.float32) * \
        rng.uniform(0.94, 1.06, 3).astype(np.float32)
    img = img * gain
    sigma = rng.uniform(*camera.blur_range)
    if sigma > 0.15:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, camera.noise_sigma, img.shape).astype(np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    quality = int(rng.integers(camera.jpeg_range[0], camera.jpeg_range[1] + 1))

    # ---- keypoints
    kp = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    xy = pr.out(np.stack([P[k] for k in KP_SOURCES]))
    kp[:, :2] = xy
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= W - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= H - 1)
    hr = pr.hr(np.stack([P[k] for k in KP_SOURCES]))
    hx = np.clip(np.round(hr[:, 0]).astype(int), 0, Wh - 1)
    hy = np.clip(np.round(hr[:, 1]).astype(int), 0, Hh - 1)
    occluded = occm[hy, hx] if occm is not None else np.zeros(NUM_KEYPOINTS, bool)
    kp[:, 2] = (inside & ~occluded).astype(np.float32)
    info = {"view": view, "yaw_deg": round(math.degrees(yaw), 1), "walking": walking,
            "occluder": occ_kind, "scale": round(float(frac), 3), "bad_crop": bad_crop}
    return RenderResult(img, kp, mask, quality, view, info)


def _resolve_camera(camera, domain) -> CameraSpec:
    if isinstance(camera, CameraSpec):
        return camera
    return _domain(domain).camera(int(camera))


def render_person(identity: Identity, camera: Union[CameraSpec, int], rng=None, *, domain="SynthPedA",
                  height: int = 128, width: int = 64, view: Optional[str] = None, vertical_misalign: float = 0.0,
                  occlusion: Optional[bool] = None, walking: Optional[bool] = None, jpeg: bool = True,
                  return_info: bool = False):
    """Render one image of ``identity`` in ``camera`` (a :class:`CameraSpec` or a 1-based camera id of
    ``domain``).  Returns ``(img_bgr uint8 HxWx3, keypoints float32 17x3, mask uint8 HxW)`` (plus an
    info dict with ``return_info``).  ``jpeg``: apply the camera's JPEG compression like the stored
    files."""
    cam = _resolve_camera(camera, domain)
    r = render_sample(identity, cam, rng if rng is not None else np.random.default_rng(0), height, width, view=view,
                      vertical_misalign=vertical_misalign, occlusion=occlusion, walking=walking)
    img = r.image
    if jpeg:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, r.jpeg_quality])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    out = (img, r.keypoints, r.mask)
    if return_info:
        return out + (dict(r.info, jpeg_quality=r.jpeg_quality),)
    return out


def draw_keypoints(img: np.ndarray, kps: np.ndarray, radius: int = 1, thickness: int = 1) -> np.ndarray:
    """Skeleton overlay (left side orange, right side blue, centre green); hidden points skipped."""
    out = img.copy()
    left, right = COCO17_LEFT, COCO17_RIGHT

    def col(i):
        return (0, 140, 255) if i in left else ((255, 120, 0) if i in right else (0, 220, 0))
    for a, b in COCO_SKELETON:
        if kps[a, 2] > 0 and kps[b, 2] > 0:
            c = col(a) if (a in left) == (b in left) else (0, 220, 0)
            cv2.line(out, (int(round(kps[a, 0] * 4)), int(round(kps[a, 1] * 4))),
                     (int(round(kps[b, 0] * 4)), int(round(kps[b, 1] * 4))), c, thickness, cv2.LINE_AA, 2)
    for i, (x, y, v) in enumerate(kps):
        if v > 0:
            cv2.circle(out, (int(round(x * 4)), int(round(y * 4))), radius * 4, col(i), -1, cv2.LINE_AA, 2)
    return out
