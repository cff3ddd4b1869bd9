"""The embedded toy still-image action dataset: stick figures in poses, in MPII Human Pose's exact layout.

Every class is a *pose* (arms raised, squatting, running, ...) of an articulated stick figure with MPII's
16 joints: limbs are thick lines, the head a disc between the upper neck and the head top. A class is a base
pose plus random jitter of every limb angle, the limb lengths, the figure's size, position and tilt, and a
left/right mirroring (which changes no class here: waving either arm is waving). Backgrounds and colours are
drawn from one distribution for every class, so only the figure's pose tells the class. ``difficulty``:

- ``easy`` (default): a dark figure 80-90% of the image high, its box centred, thick limbs, on a light smooth
  gradient; labelled images show only the actor, every other unlabelled or unlisted image adds a bystander.
  Random (untrained) ResNet-101 features separate these classes (a linear probe on layer4: 0.77, chance 1/6).
- ``hard`` (the drawing of format version 1, byte for byte): a figure of either polarity anywhere in the
  frame on clutter (rectangles, ellipses, stray thick lines, noise); about a third of the images hold a
  second, smaller person placed in the other half. Random features stay at chance on it.

Bystanders stand with arms down (a pose of no class); the actor is always the first person of ``annorect``.

Layout written (MPII's)::

    OUT/images/<9 digits>.jpg                 JPEG, quality 90, SIZE x SIZE
    OUT/mpii_human_pose_v1_u12_1.mat          RELEASE: annolist, act, img_train, single_person, video_list, version
    OUT/images_mpii_train.txt                 image names without .jpg, sorted
    OUT/images_mpii_val.txt
    OUT/.actiontk-toy-mpii.json               config + counts; written last, marks a complete dataset

The .mat has MPII's nesting and its oddities, so that reading it exercises the real parser: struct arrays
that squeeze to a lone struct, ``is_visible`` stored as a number in even-indexed images and as the string
``'1'``/``'0'`` in odd ones and left empty for the two head joints of every third image, joints the
"annotator" skipped (3% of them, still drawn), occluded far-side limbs of profile poses (``is_visible`` 0),
one class name carried by two act ids (``running``: 5 and 205), unlabelled images (``act_id`` -1, listed,
so the loader must exclude and count them), and two images of MPII's own test set (``img_train`` 0,
people with ``scale``/``objpos`` only, in no list). Every number is a double, as MATLAB stores them (ids,
``act_id``, ``img_train``, ``is_visible`` when numeric); ``video_list`` holds YouTube-like ids that every
entry's ``vididx`` (1-based) points into, with a ``frame_sec``. The rarer oddities of the real file go on
:data:`QUIRK_IMAGES` extra images in no list (unlabelled, ``img_train`` 1, at the end of ``annolist`` so
that the other entries keep their positions), one each: an empty ``annorect`` (figures drawn, nobody
annotated), a person with an empty ``annopoints`` and empty ``scale``/``objpos``, a person whose points have
no ``is_visible`` field, and a person with a single point (which squeezes to a lone struct). Coordinates
(joints, head boxes, ``objpos``) follow MPII's MATLAB convention of 1-based pixel indices: x right, y down,
the top-left pixel's centre at (1, 1) (``actiontk.data.pose.from_pixel_indices`` converts them to continuous
coordinates).

Split: of each class's images k = 0..N-1, those with k % 3 == 2 go to the val list, the rest to train;
unlabelled images alternate. Each image is drawn from its own ``np.random.default_rng`` seeded by
``(seed, group, class, k)``, so it does not depend on the other images or on ``classes``; the same config
gives byte-identical files (the .mat's header text, which scipy fills with the time, is fixed).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from actiontk.cache.runs import atomic_write_bytes
from actiontk.datasets.mpii import IMAGE_DIR, MAT_NAME, NUM_JOINTS, TRAIN_LIST, VAL_LIST
from actiontk.errors import UserError

__all__ = ["ACTIONS", "MARKER", "QUIRK_IMAGES", "QUIRKS", "ToyAction", "ToyMPIIConfig", "generate_toy_mpii",
           "render_image"]

FORMAT = "actiontk-toy-mpii"
FORMAT_VERSION = 3  # 2: --difficulty (easy, the new default; hard draws as version 1 did); 3: the .mat's doubles,
# video_list and the quirk images (the labelled images and their annotations are version 2's)
MARKER = ".actiontk-toy-mpii.json"
SUPERSAMPLE = 2  # figures are drawn at 2x and box-filtered down: smooth edges without antialiased primitives
JPEG_QUALITY = 90
UNLABELLED_FRACTION = 0.05  # at least one
TEST_IMAGES = 2  # img_train = 0, in no list
# The extra images whose annotations carry the real file's rarer oddities, one each (see _quirk_rects).
QUIRKS = ("no-people", "no-keypoints", "no-visibility-field", "lone-point")
QUIRK_IMAGES = len(QUIRKS)
SKIP_JOINT = 0.03  # probability that the "annotator" leaves a drawn joint out
_GRADIENT_GRID = 32  # the background gradient is computed on this grid and enlarged
DIFFICULTIES = {
    "easy": "one large dark figure (80-90% of the image height, its box centred), thick limbs, on a light smooth "
            "gradient; bystanders only in every other unlabelled or unlisted image",
    "hard": "a figure 50-85% high anywhere in the frame, cluttered background (rectangles, ellipses, limb-like "
            "lines), a bystander in a third of the images",
}


@dataclass(frozen=True)
class ToyAction:
    name: str  # act_name
    category: str  # cat_name
    act_ids: tuple[int, ...]  # the first is used, the second (if any) for every fourth image
    view: str  # frontal | profile | lying: how wide the shoulders and hips look, which side is occluded
    pose: dict[str, float]  # base angles in degrees (see _skeleton), missing keys take the standing pose
    jitter: dict[str, float]  # per-angle jitter (std, degrees) where it differs from the default
    description: str


# Angles are directions in the image: 0 = straight down, 90 = right (+x), 180 = up, -90 = left. Frontal
# figures face the camera, so their right side is on the image's left (negative angles point outwards);
# profile figures face right (+x) before mirroring. Keys: torso (pelvis -> thorax), head (tilt relative to
# the torso), r/l_ua (shoulder -> elbow), r/l_fa (elbow -> wrist), r/l_th (hip -> knee), r/l_sh (knee -> ankle).
_STAND = {"torso": 180.0, "head": 0.0, "r_ua": -10.0, "r_fa": -5.0, "l_ua": 10.0, "l_fa": 5.0,
          "r_th": -4.0, "r_sh": -2.0, "l_th": 4.0, "l_sh": 2.0}
_DEFAULT_JITTER = 8.0

# The classes, in the order ``classes=N`` takes them. Indices into this tuple seed the images, so append new
# actions at the end (and bump FORMAT_VERSION if the drawing of existing ones changes).
ACTIONS: tuple[ToyAction, ...] = (
    ToyAction("arms raised", "toy exercise", (41,), "frontal",
              {"r_ua": -165, "r_fa": -172, "l_ua": 165, "l_fa": 172}, {}, "both arms straight up"),
    ToyAction("squatting", "toy exercise", (17,), "frontal",
              {"r_th": -72, "r_sh": -8, "l_th": 72, "l_sh": 8, "r_ua": -25, "r_fa": -15, "l_ua": 25, "l_fa": 15},
              {}, "knees out and up, hips low"),
    ToyAction("running", "toy running", (5, 205), "profile",
              {"torso": 163, "r_th": 40, "r_sh": -8, "l_th": -35, "l_sh": -100, "r_ua": -45, "r_fa": 35,
               "l_ua": 40, "l_fa": 125}, {}, "leaning forward mid-stride, arms swinging against the legs"),
    ToyAction("waving one arm", "toy miscellaneous", (88,), "frontal",
              {"r_ua": -105, "r_fa": -170}, {"r_fa": 20.0}, "one upper arm out, its forearm up, the other arm down"),
    ToyAction("sitting", "toy inactivity", (60,), "profile",
              {"torso": 178, "r_th": 88, "r_sh": 5, "l_th": 84, "l_sh": 0, "r_ua": 12, "r_fa": 80, "l_ua": 8,
               "l_fa": 75}, {}, "upright torso, thighs horizontal, shins down, hands on the lap"),
    ToyAction("kicking", "toy sports", (23,), "profile",
              {"torso": 196, "r_th": 105, "r_sh": 98, "l_th": -6, "l_sh": -2, "r_ua": -115, "r_fa": -130,
               "l_ua": 70, "l_fa": 85}, {}, "one leg straight out in front at hip height, leaning back"),
    ToyAction("arms out", "toy exercise", (33,), "frontal",
              {"r_ua": -90, "r_fa": -90, "l_ua": 90, "l_fa": 90}, {}, "both arms horizontal (a T)"),
    ToyAction("touching toes", "toy exercise", (71,), "profile",
              {"torso": 35, "r_th": -12, "r_sh": -5, "l_th": -8, "l_sh": -3, "r_ua": 10, "r_fa": 5, "l_ua": 5,
               "l_fa": 0}, {}, "bent forward, head low, hands down to the feet"),
    ToyAction("jumping jacks", "toy exercise", (12,), "frontal",
              {"r_ua": -135, "r_fa": -150, "l_ua": 135, "l_fa": 150, "r_th": -22, "r_sh": -22, "l_th": 22,
               "l_sh": 22}, {}, "arms and legs spread diagonally"),
    ToyAction("lying", "toy inactivity", (95,), "lying",
              {"torso": 90, "head": 0, "r_th": -90, "r_sh": -90, "l_th": -85, "l_sh": -92, "r_ua": -85,
               "r_fa": -88, "l_ua": -80, "l_fa": -84}, {"torso": 6.0}, "horizontal, arms along the body"),
)
MIN_CLASSES = 2

# Body proportions in units of the standing height (ankle to head top is about 1).
_LEN = {"torso": 0.30, "neck": 0.04, "head": 0.14, "shoulder": 0.10, "hip": 0.06, "ua": 0.16, "fa": 0.15,
        "th": 0.24, "sh": 0.23}
_WIDTH = {"frontal": 1.0, "profile": 0.25, "lying": 0.3}
_SWAP = np.array([5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10])  # MPII id -> id of its mirror joint
_FAR_SIDE = np.array([3, 4, 5, 13, 14, 15])  # left joints: the occluded side of a figure facing right


@dataclass(frozen=True)
class ToyMPIIConfig:
    """What to generate; the same config (seed included) always gives the same bytes."""

    seed: int = 0
    classes: int = 6  # the first `classes` entries of ACTIONS
    per_class: int = 45  # labelled images per class (a third of them, k % 3 == 2, in the val list)
    size: int = 160  # image height = width in pixels
    difficulty: str = "easy"  # easy | hard (see DIFFICULTIES)

    def validate(self) -> None:
        """Raise :class:`UserError` naming the offending command-line option."""
        if self.difficulty not in DIFFICULTIES:
            raise UserError(f"--difficulty must be one of {', '.join(DIFFICULTIES)}, got {self.difficulty!r}",
                            "; ".join(f"{k}: {v}" for k, v in DIFFICULTIES.items()))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "difficulty":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"--{f.name.replace('_', '-')} must be an integer, got {value!r}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if not MIN_CLASSES <= self.classes <= len(ACTIONS):
            raise UserError(
                f"--classes must be between {MIN_CLASSES} and {len(ACTIONS)}, got {self.classes}",
                f"the toy actions are: {', '.join(a.name for a in ACTIONS)}",
            )
        if not 3 <= self.per_class <= 100_000:
            raise UserError(f"--per-class must be between 3 and 100000, got {self.per_class}",
                            "a third of each class goes to the val list")
        if not 48 <= self.size <= 4096:
            raise UserError(f"--size must be between 48 and 4096, got {self.size}")

    @property
    def unlabelled(self) -> int:
        return max(1, round(UNLABELLED_FRACTION * self.classes * self.per_class))


# -- the figures ------------------------------------------------------------------------------------------


def _dir(deg: np.ndarray | float) -> np.ndarray:
    rad = np.radians(deg)
    return np.array([np.sin(rad), np.cos(rad)])


def _skeleton(angles: dict[str, float], lengths: dict[str, float], width: float) -> np.ndarray:
    """(16, 2) joint positions in body units, pelvis at the origin, y down, MPII's joint order."""
    j = np.zeros((NUM_JOINTS, 2))
    t = angles["torso"]
    j[6] = 0.0  # pelvis
    j[7] = j[6] + lengths["torso"] * _dir(t)  # thorax
    j[8] = j[7] + lengths["neck"] * _dir(t + angles["head"])  # upper neck
    j[9] = j[8] + lengths["head"] * _dir(t + angles["head"])  # head top
    right = _dir(t + 90.0)  # the person's right, seen from the front: image left when upright
    j[12] = j[7] + lengths["shoulder"] * width * right
    j[13] = j[7] - lengths["shoulder"] * width * right
    j[2] = j[6] + lengths["hip"] * width * right
    j[3] = j[6] - lengths["hip"] * width * right
    for side, shoulder, elbow, wrist, hip, knee, ankle in (("r", 12, 11, 10, 2, 1, 0), ("l", 13, 14, 15, 3, 4, 5)):
        j[elbow] = j[shoulder] + lengths["ua"] * _dir(angles[f"{side}_ua"])
        j[wrist] = j[elbow] + lengths["fa"] * _dir(angles[f"{side}_fa"])
        j[knee] = j[hip] + lengths["th"] * _dir(angles[f"{side}_th"])
        j[ankle] = j[knee] + lengths["sh"] * _dir(angles[f"{side}_sh"])
    return j


@dataclass(frozen=True)
class _Figure:
    joints: np.ndarray  # (16, 2) body units, pelvis at the origin, after mirroring and tilt
    occluded: np.ndarray  # (16,) bool: far-side joints (profile views)
    lengths: dict[str, float]


def _pose(action: ToyAction | None, rng: np.random.Generator) -> _Figure:
    """A jittered, possibly mirrored figure of ``action`` (None: the bystander, standing with arms down)."""
    base = dict(_STAND)
    jitter: dict[str, float] = {}
    view = "frontal"
    if action is not None:
        base.update(action.pose)
        jitter = action.jitter
        view = action.view
    angles = {k: v + rng.normal(0.0, jitter.get(k, _DEFAULT_JITTER if k != "head" else 10.0))
              for k, v in base.items()}
    if action is not None and action.name == "running" and rng.random() < 0.5:
        # the other half of the stride: the left leg in front (and the right arm forward)
        for limb in ("ua", "fa", "th", "sh"):
            angles[f"r_{limb}"], angles[f"l_{limb}"] = angles[f"l_{limb}"], angles[f"r_{limb}"]
    lengths = {k: v * rng.uniform(0.92, 1.08) for k, v in _LEN.items()}
    joints = _skeleton(angles, lengths, _WIDTH[view])
    occluded = np.zeros(NUM_JOINTS, dtype=bool)
    if view == "profile":
        occluded[_FAR_SIDE] = True
    if rng.random() < 0.5:  # mirror: reflect and swap the left/right labels, as a flipped photo would
        joints = joints[_SWAP] * np.array([-1.0, 1.0])
        occluded = occluded[_SWAP]
    tilt = np.radians(rng.normal(0.0, 6.0))
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    return _Figure(joints=joints @ rot.T, occluded=occluded, lengths=lengths)


def _colour(rng: np.random.Generator, luminance: float, chroma: float) -> np.ndarray:
    """An RGB colour (0..1) of about the given luminance with a random hue."""
    e1 = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    e2 = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)
    hue = rng.uniform(0, 2 * np.pi)
    return np.clip(luminance + chroma * (np.cos(hue) * e1 + np.sin(hue) * e2), 0.0, 1.0)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(round(float(v) * 255)) for v in c)  # type: ignore[return-value]


def _background(rng: np.random.Generator, canvas: int, lum: float):
    """A PIL image: gradient, clutter shapes and stray thick lines around luminance ``lum``."""
    from PIL import Image, ImageDraw

    # a linear gradient between two colours, computed on a coarse grid and enlarged (it is linear anyway)
    t = (np.arange(_GRADIENT_GRID) + 0.5) / _GRADIENT_GRID - 0.5
    a = rng.uniform(0, 2 * np.pi)
    ramp = t[None, :] * np.cos(a) + t[:, None] * np.sin(a) + 0.5  # about 0..1 across the image
    c1 = _colour(rng, lum + rng.uniform(-0.12, 0.12), rng.uniform(0.0, 0.25))
    c2 = _colour(rng, lum + rng.uniform(-0.12, 0.12), rng.uniform(0.0, 0.25))
    bg = np.clip(c1 + ramp[..., None] * (c2 - c1), 0, 1) * 255 + 0.5
    image = Image.fromarray(bg.astype(np.uint8)).resize((canvas, canvas), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        w, h = rng.uniform(0.1, 0.5, size=2) * canvas
        x0, y0 = rng.uniform(-0.1, 1.0, size=2) * canvas
        colour = _rgb(_colour(rng, lum + rng.uniform(-0.2, 0.2), rng.uniform(0.0, 0.3)))
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    for _ in range(int(rng.integers(0, 3))):
        p = rng.uniform(0, 1, size=4) * canvas
        colour = _rgb(_colour(rng, lum + rng.choice([-1, 1]) * rng.uniform(0.1, 0.25), rng.uniform(0.0, 0.3)))
        draw.line([float(p[0]), float(p[1]), float(p[2]), float(p[3])], fill=colour,
                  width=max(1, int(canvas * rng.uniform(0.01, 0.03))))
    return image


def _extent(fig: _Figure) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi) of the figure in body units, head disc and line width included."""
    head_c = (fig.joints[8] + fig.joints[9]) / 2
    r = 0.55 * fig.lengths["head"]
    pts = np.vstack([fig.joints, head_c - r, head_c + r])
    return pts.min(axis=0) - 0.04, pts.max(axis=0) + 0.04


def _place(fig: _Figure, rng: np.random.Generator, size: int, x_range: tuple[float, float],
           height: float) -> tuple[float, np.ndarray]:
    """(pixels per body unit, offset) that put the figure's box inside x_range x [0, size)."""
    lo, hi = _extent(fig)
    span = hi - lo
    room = np.array([x_range[1] - x_range[0], size]) * 0.97
    h = min(height, *(room / span))
    free = room - span * h
    offset = np.array([x_range[0], 0.0]) + room * 0.015 + rng.uniform(0, 1, size=2) * free - lo * h
    return float(h), offset


def _draw_figure(draw, fig: _Figure, h: float, offset: np.ndarray, colour: np.ndarray, bg_lum: float,
                 limb_width: float) -> None:
    """Draw ``fig`` scaled by ``h`` pixels per body unit, limbs ``limb_width`` body units thick."""
    s = SUPERSAMPLE
    pts = (fig.joints * h + offset + 0.5) * s - 0.5  # canvas coordinates of the joints
    width = max(2.0, limb_width * h) * s
    near = _rgb(colour)
    far = _rgb(colour + 0.35 * (bg_lum - colour))  # the occluded side, a little toward the background

    def limb(a: int, b: int, fill, w: float = width) -> None:
        draw.line([tuple(pts[a]), tuple(pts[b])], fill=fill, width=int(round(w)))
        for k in (a, b):
            r = w / 2
            draw.ellipse([pts[k][0] - r, pts[k][1] - r, pts[k][0] + r, pts[k][1] + r], fill=fill)

    far_side = fig.occluded.any()
    limbs = ((12, 11), (11, 10), (13, 14), (14, 15), (2, 1), (1, 0), (3, 4), (4, 5))
    if far_side:
        for a, b in limbs:
            if fig.occluded[a]:
                limb(a, b, far)
    draw.polygon([tuple(pts[k]) for k in (12, 13, 3, 2)], fill=near)  # the torso
    limb(6, 7, near, width * 1.4)
    limb(12, 13, near)
    limb(2, 3, near)
    limb(7, 8, near)
    centre = (pts[8] + pts[9]) / 2
    r = 0.55 * np.linalg.norm(pts[9] - pts[8])
    draw.ellipse([centre[0] - r, centre[1] - r, centre[0] + r, centre[1] + r], fill=near)
    for a, b in limbs:
        if not (far_side and fig.occluded[a]):
            limb(a, b, near)


@dataclass(frozen=True)
class _Person:
    """A drawn person, in 1-based pixel-index coordinates of the saved image (MPII's convention)."""

    joints: np.ndarray  # (16, 2)
    occluded: np.ndarray  # (16,) bool
    skipped: np.ndarray  # (16,) bool: joints the "annotator" leaves out of the .mat
    scale: float  # box height / 200, like MPII's
    objpos: tuple[float, float]
    head_box: tuple[float, float, float, float]


def _place_centred(fig: _Figure, size: int, x_range: tuple[float, float], height: float) -> tuple[float, np.ndarray]:
    """(pixels per body unit, offset) that centre the figure's box in x_range x [0, size), like a crop around
    MPII's ``objpos``: random (untrained) features are so sensitive to position that even a few pixels of
    jitter cost a linear probe a good part of its accuracy."""
    lo, hi = _extent(fig)
    span = hi - lo
    room = np.array([x_range[1] - x_range[0], size]) * 0.97
    h = min(height, *(room / span))
    offset = np.array([x_range[0], 0.0]) + room * 0.015 + (room - span * h) / 2 - lo * h
    return float(h), offset


def _smooth_background(rng: np.random.Generator, canvas: int, lum: float):
    """A PIL image: a linear gradient between two low-chroma colours around luminance ``lum``, nothing else."""
    from PIL import Image

    t = (np.arange(_GRADIENT_GRID) + 0.5) / _GRADIENT_GRID - 0.5
    a = rng.uniform(0, 2 * np.pi)
    ramp = t[None, :] * np.cos(a) + t[:, None] * np.sin(a) + 0.5
    c1 = _colour(rng, lum + rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.15))
    c2 = _colour(rng, lum + rng.uniform(-0.08, 0.08), rng.uniform(0.0, 0.15))
    bg = np.clip(c1 + ramp[..., None] * (c2 - c1), 0, 1) * 255 + 0.5
    return Image.fromarray(bg.astype(np.uint8)).resize((canvas, canvas), Image.Resampling.BILINEAR)


def _layout_easy(config: ToyMPIIConfig, action: ToyAction | None, key: tuple[int, ...],
                 rng: np.random.Generator):
    """Background, people and how to draw them for --difficulty easy: a dark figure on a light background
    (one polarity: flipping it at random halves what a linear probe on random features gets)."""
    size, canvas = config.size, config.size * SUPERSAMPLE
    bg_lum = float(rng.uniform(0.7, 0.9))
    image = _smooth_background(rng, canvas, bg_lum)
    actor = _pose(action, rng)
    if key[0] != 0 and key[-1] % 2 == 0:
        # unlabelled and "MPII test" images only (a bystander in a labelled image costs the probe ~0.1): the
        # actor keeps three quarters of the width, a small bystander stands in the rest
        left = rng.random() < 0.5
        main = (0.0, 0.75 * size) if left else (0.25 * size, float(size))
        side = (0.75 * size, float(size)) if left else (0.0, 0.25 * size)
        plan = [(actor, main, 1.0), (_pose(None, rng), side, 0.5)]
    else:
        plan = [(actor, (0.0, float(size)), 1.0)]
    people = []
    for fig, region, shrink in plan:
        h, offset = _place_centred(fig, size, region, rng.uniform(0.8, 0.9) * size * shrink)
        colour = _colour(rng, rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2))
        people.append((fig, h, offset, colour, rng.random(NUM_JOINTS) < SKIP_JOINT))
    return image, bg_lum, people, 0.11, 2.0


def _layout_hard(config: ToyMPIIConfig, action: ToyAction | None, rng: np.random.Generator):
    """Background, people and how to draw them for --difficulty hard (toy MPII format version 1's drawing)."""
    size, canvas = config.size, config.size * SUPERSAMPLE
    bg_lum = float(rng.uniform(0.2, 0.8))
    image = _background(rng, canvas, bg_lum)
    actor = _pose(action, rng)
    two = rng.random() < 1 / 3
    regions = [(0.0, float(size))]
    if two:
        halves = [(0.0, size / 2), (size / 2, float(size))]
        regions = halves if rng.random() < 0.5 else halves[::-1]
    sign = 1.0 if bg_lum < 0.5 else -1.0
    people = []
    for n, (fig, region) in enumerate(zip([actor, _pose(None, rng)] if two else [actor], regions, strict=False)):
        height = rng.uniform(0.5, 0.85) * size * (1.0 if n == 0 else rng.uniform(0.7, 0.9))
        h, offset = _place(fig, rng, size, region, height)
        colour = _colour(rng, bg_lum + sign * rng.uniform(0.35, 0.5), rng.uniform(0.1, 0.3))
        people.append((fig, h, offset, colour, rng.random(NUM_JOINTS) < SKIP_JOINT))
    return image, bg_lum, people, 0.055, None


def _render(config: ToyMPIIConfig, action: ToyAction | None, key: tuple[int, ...]) -> tuple[np.ndarray, list[_Person]]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng([config.seed, *key])
    size = config.size
    if config.difficulty == "easy":
        image, bg_lum, layout, limb_width, noise = _layout_easy(config, action, key, rng)
    else:
        image, bg_lum, layout, limb_width, noise = _layout_hard(config, action, rng)
    draw = ImageDraw.Draw(image)
    people = []
    for fig, h, offset, colour, skipped in layout:
        _draw_figure(draw, fig, h, offset, colour, bg_lum, limb_width)
        joints = fig.joints * h + offset + 1.0  # 0-based pixel indices -> MPII's 1-based ones
        lo, hi = _extent(fig)
        lo, hi = lo * h + offset + 1.0, hi * h + offset + 1.0
        head_c = (joints[8] + joints[9]) / 2
        r = 0.55 * float(np.linalg.norm(joints[9] - joints[8]))
        people.append(_Person(
            joints=joints, occluded=fig.occluded.copy(), skipped=skipped,
            scale=float((hi[1] - lo[1]) / 200.0), objpos=(float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2)),
            head_box=(float(head_c[0] - r), float(head_c[1] - r), float(head_c[0] + r), float(head_c[1] + r)),
        ))
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    sigma = rng.uniform(2.0, 9.0) if noise is None else noise
    small += np.float32(sigma) * rng.standard_normal(small.shape, dtype=np.float32)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8), people


def render_image(config: ToyMPIIConfig, class_name: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``k`` of class ``class_name`` before JPEG encoding (uint8 (S, S, 3)) and its people's joints
    (P, 16, 2) as the .mat gives them (1-based pixel indices), the actor first; for inspection."""
    names = [a.name for a in ACTIONS[: config.classes]]
    if class_name not in names:
        raise UserError(f"unknown toy MPII class {class_name!r}", f"choose one of: {', '.join(names)}")
    c = names.index(class_name)
    image, people = _render(config, ACTIONS[c], (0, c, k))
    return image, np.stack([p.joints for p in people])


# -- the dataset ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One image to write: where its pixels come from and what the .mat says about it."""

    name: str  # 'NNNNNNNNN.jpg'
    action: ToyAction | None
    act_id: int  # -1: unlabelled
    key: tuple[int, ...]  # (group, class, k): seeds the image
    subset: str | None  # 'train', 'val' or None (in no list: MPII's own test set, or a quirk image)
    quirk: str | None = None  # one of QUIRKS: how this image's annotations are odd


def _name(seed: int, key: tuple[int, ...], taken: set[str]) -> str:
    digest = hashlib.sha256(f"{FORMAT}:{seed}:{key}".encode()).digest()
    n = int.from_bytes(digest[:8], "big") % 10**9
    while f"{n:09d}.jpg" in taken:  # a collision: take the next free number
        n = (n + 1) % 10**9
    name = f"{n:09d}.jpg"
    taken.add(name)
    return name


def _plan(config: ToyMPIIConfig) -> list[_Entry]:
    """Every image, in annolist order (a seeded shuffle, so that the file's order says nothing of classes)."""
    taken: set[str] = set()
    entries = []
    for c, action in enumerate(ACTIONS[: config.classes]):
        for k in range(config.per_class):
            act_id = action.act_ids[1] if len(action.act_ids) > 1 and k % 4 == 3 else action.act_ids[0]
            entries.append(_Entry(_name(config.seed, (0, c, k), taken), action, act_id, (0, c, k),
                                  "val" if k % 3 == 2 else "train"))
    for k in range(config.unlabelled):
        entries.append(_Entry(_name(config.seed, (1, 0, k), taken), None, -1, (1, 0, k),
                              "train" if k % 2 == 0 else "val"))
    for k in range(TEST_IMAGES):
        entries.append(_Entry(_name(config.seed, (2, 0, k), taken), None, -1, (2, 0, k), None))
    order = np.random.default_rng([config.seed, 99]).permutation(len(entries))
    # the quirk images come after the shuffle, so that the entries above keep version 2's positions
    quirks = [_Entry(_name(config.seed, (3, 0, k), taken), None, -1, (3, 0, k), None, quirk)
              for k, quirk in enumerate(QUIRKS)]
    return [entries[i] for i in order] + quirks


def _empty() -> np.ndarray:
    return np.zeros((0, 0))


def _struct_array(records: list[dict], names: list[str], shape: str = "row") -> np.ndarray:
    """A MATLAB struct array (what savemat writes for a structured ndarray); absent fields are []."""
    dims = (1, len(records)) if shape == "row" else (len(records), 1)
    out = np.zeros(dims, dtype=[(n, object) for n in names])
    flat = out.reshape(-1)
    for i, rec in enumerate(records):
        for n in names:
            flat[i][n] = rec.get(n, _empty())
    return out


def _visibility(value: int, style: str):
    if style == "empty":
        return _empty()
    return str(value) if style == "str" else float(value)


def _points(p: _Person, i: int, *, visibility: bool = True) -> list[dict]:
    """The annotated joints of a person in annolist entry ``i`` (see the module docstring for the styles)."""
    points = []
    for jid in range(NUM_JOINTS):
        if p.skipped[jid]:
            continue
        point = {"id": float(jid), "x": round(float(p.joints[jid, 0]), 2), "y": round(float(p.joints[jid, 1]), 2)}
        if visibility:
            style = "empty" if jid in (8, 9) and i % 3 == 0 else ("str" if i % 2 else "int")
            point["is_visible"] = _visibility(int(not p.occluded[jid]), style)
        points.append(point)
    return points


def _rect(p: _Person, points: list[dict] | None) -> dict:
    """A person of ``annorect``: head box, scale, objpos and keypoints (``points`` None: an empty annopoints)."""
    x1, y1, x2, y2 = (round(v, 2) for v in p.head_box)
    fields = ["id", "x", "y"] + (["is_visible"] if points and "is_visible" in points[0] else [])
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "scale": round(p.scale, 4),
            "objpos": {"x": round(p.objpos[0], 2), "y": round(p.objpos[1], 2)},
            "annopoints": {"point": _struct_array(points, fields)} if points else _empty()}


def _quirk_rects(entry: _Entry, persons: list[_Person], i: int) -> list[dict]:
    """The people of a quirk image, annotated the odd way its name says (the actor is ``persons[0]``)."""
    actor, others = persons[0], persons[1:]
    if entry.quirk == "no-people":  # drawn, but nobody annotated: annorect = []
        return []
    if entry.quirk == "no-keypoints":  # a person without keypoints, scale or objpos
        first = {**_rect(actor, None), "scale": _empty(), "objpos": _empty()}
    elif entry.quirk == "no-visibility-field":  # the point struct array has no is_visible field
        first = _rect(actor, _points(actor, i, visibility=False))
    else:  # lone-point: one annotated joint, the head top; a 1x1 struct array squeezes to a lone struct
        top = [pt for pt in _points(actor, i) if pt["id"] == 9] or _points(actor, i)[:1]
        first = _rect(actor, top)
    return [first] + [_rect(p, _points(p, i)) for p in others]


def _video_ids(seed: int, n: int) -> np.ndarray:
    """``n`` YouTube-like video ids (11 characters of [A-Za-z0-9_-]), as a MATLAB cell row."""
    import base64

    ids = np.empty((1, n), dtype=object)
    for v in range(n):
        digest = hashlib.sha256(f"{FORMAT}:{seed}:video:{v}".encode()).digest()
        ids[0, v] = base64.urlsafe_b64encode(digest).decode()[:11]
    return ids


def _release(plan: list[_Entry], people: list[list[_Person]], seed: int) -> dict:
    """The RELEASE struct in MPII's nesting (see the module docstring for the oddities it carries)."""
    annolist, acts, singles = [], [], np.empty((len(plan), 1), dtype=object)
    videos = max(1, len(plan) // 8)  # a few frames from each video, as in MPII
    for i, (entry, persons) in enumerate(zip(plan, people, strict=True)):
        if entry.quirk is not None:
            rects = _quirk_rects(entry, persons, i)
        elif entry.subset is None:  # MPII's test set: no keypoints, no head box
            rects = [{"scale": round(p.scale, 4), "objpos": {"x": round(p.objpos[0], 2), "y": round(p.objpos[1], 2)}}
                     for p in persons]
        else:
            rects = [_rect(p, _points(p, i)) for p in persons]
        names = ["scale", "objpos"] if entry.subset is None and entry.quirk is None else [
            "x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"]
        annolist.append({"image": {"name": entry.name}, "annorect": _struct_array(rects, names) if rects else _empty(),
                         "frame_sec": float(1 + (37 * i) % 600), "vididx": float(1 + (5 * i) % videos)})
        if entry.action is None:
            acts.append({"act_name": _empty(), "cat_name": _empty(), "act_id": -1.0})
        else:
            acts.append({"act_name": entry.action.name, "cat_name": entry.action.category,
                         "act_id": float(entry.act_id)})
        singles[i, 0] = np.arange(1, len(rects) + 1, dtype=np.float64).reshape(-1, 1)
    return {
        "annolist": _struct_array(annolist, ["image", "annorect", "frame_sec", "vididx"]),
        "img_train": np.array([[0.0 if e.subset is None and e.quirk is None else 1.0 for e in plan]]),
        "version": "12",
        "single_person": singles,
        "act": _struct_array(acts, ["act_name", "cat_name", "act_id"], shape="column"),
        "video_list": _video_ids(seed, videos),
    }


def _write_mat(path: Path, release: dict) -> None:
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, {"RELEASE": release}, do_compression=True)
    data = bytearray(buf.getvalue())
    # bytes 0..115 of a v5 MAT file are free text, which scipy fills with the current time
    data[:116] = f"MATLAB 5.0 MAT-file, written by actiontk {FORMAT} v{FORMAT_VERSION}".encode().ljust(116)
    atomic_write_bytes(path, bytes(data))


def _info(config: ToyMPIIConfig, plan: list[_Entry]) -> dict:
    labelled = [e for e in plan if e.action is not None]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(config),
        "classes": [a.name for a in ACTIONS[: config.classes]],
        "images": len(plan),
        "labelled": len(labelled),
        "unlabelled": len(plan) - len(labelled),
        "train": sum(e.subset == "train" for e in labelled),
        "val": sum(e.subset == "val" for e in labelled),
        "unlisted": sum(e.subset is None for e in plan),
    }


def _existing(out_dir: Path, config: ToyMPIIConfig, plan: list[_Entry]) -> dict | None:
    """The info of a complete toy MPII dataset with this exact config in ``out_dir``, else None (or raise)."""
    try:
        info = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return None
    if info.get("version") != FORMAT_VERSION or info.get("config") != asdict(config):
        return None
    wanted = [f"{IMAGE_DIR}/{e.name}" for e in plan] + [MAT_NAME, TRAIN_LIST, VAL_LIST]
    missing = [rel for rel in wanted if not (out_dir / rel).is_file()]
    if missing:
        raise UserError(
            f"the toy MPII dataset in {out_dir} is incomplete: {len(missing)} file(s) missing, e.g. {missing[0]}",
            "delete the directory and generate it again",
        )
    return info


def generate_toy_mpii(
    out_dir: str | Path,
    config: ToyMPIIConfig = ToyMPIIConfig(),
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the toy MPII dataset to ``out_dir`` (new or empty); return its info (also in the marker file).

    If ``out_dir`` already holds a complete toy MPII dataset with the same config, nothing is written and
    its info comes back with ``"reused": True``. ``progress(done, total)`` is called with ``done=0`` and
    after every image.
    """
    config.validate()
    out_dir = Path(out_dir)
    plan = _plan(config)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"{out_dir} is not a directory", "choose an empty directory")
        existing = _existing(out_dir, config, plan)
        if existing is not None:
            return {**existing, "root": str(out_dir), "reused": True}
        if any(out_dir.iterdir()):
            ours = (out_dir / MARKER).exists()
            what = "a toy MPII dataset made with a different config or version" if ours else "files"
            raise UserError(f"{out_dir} is not empty (it holds {what})", "choose an empty directory")
    images = out_dir / IMAGE_DIR
    images.mkdir(parents=True, exist_ok=True)

    from PIL import Image

    total = len(plan)
    if progress:
        progress(0, total)
    people: list[list[_Person]] = []
    for done, entry in enumerate(plan, start=1):
        pixels, persons = _render(config, entry.action, entry.key)
        people.append(persons)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=JPEG_QUALITY)
        atomic_write_bytes(images / entry.name, buf.getvalue())
        if progress:
            progress(done, total)
    _write_mat(out_dir / MAT_NAME, _release(plan, people, config.seed))
    for subset, fname in (("train", TRAIN_LIST), ("val", VAL_LIST)):
        stems = sorted(e.name[:-4] for e in plan if e.subset == subset)
        atomic_write_bytes(out_dir / fname, "".join(s + "\n" for s in stems).encode())
    info = _info(config, plan)
    # the marker goes last and atomically: its presence means the dataset is complete
    atomic_write_bytes(out_dir / MARKER, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    return {**info, "root": str(out_dir), "reused": False}
