"""The embedded toy action dataset: small, learnable, real MPEG-4 videos in UCF101's exact layout.

Every class is a *motion* (MoveLeft, RotateClockwise, ZoomIn, ...) applied to a randomly drawn textured
object in front of a randomly drawn textured background. Everything a single frame shows (shape, colours,
size, orientation, position, background, a static distractor, noise) is drawn from the same distribution
for every class, and the motion is anchored at the middle frame ``frames // 2``: that frame is identically
distributed across classes, so the class is only recoverable from how things move. (Frames far from the
middle do hint at it -- a MoveLeft object tends to start right of centre -- because a bounded frame cannot
hide where a motion began; that is information about the motion too.) The motions are large (a third of the
frame, half a turn, a 2x zoom) so that features of a pretrained CNN see them clearly.

Layout written (UCF101's)::

    OUT/<Class>/v_<Class>_gGG_cCC.avi
    OUT/ucfTrainTestlist/classInd.txt            "<id> <Class>"
    OUT/ucfTrainTestlist/trainlist0N.txt         "<Class>/v_<Class>_gGG_cCC.avi <id>"   (N = 1, 2, 3)
    OUT/ucfTrainTestlist/testlist0N.txt          "<Class>/v_<Class>_gGG_cCC.avi"
    OUT/.actiontk-toy.json                       config + counts; written last, marks a complete dataset

Split N tests the groups g with ``(g - 1) % 3 == N - 1`` and trains on the others, so like UCF101's
splits no group (think: same actor and scene) is on both sides.

Each video is rendered from its own ``np.random.default_rng([seed, motion, group, clip])``, so it does not
depend on the other videos, on the number of classes, or on which worker process made it; and it is
encoded single-threaded, because FFmpeg's mpeg4 encoder splits frames into one slice per thread, which
would make the bytes depend on the machine's core count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from actiontk.cache.runs import atomic_write_text
from actiontk.errors import UserError
from actiontk.video.writer import write_video

__all__ = [
    "MOTIONS", "MOTION_DESCRIPTIONS", "ToyConfig", "generate_toy", "held_out_groups", "render_clip",
    "video_name",
]

FORMAT = "actiontk-toy"
FORMAT_VERSION = 1
MARKER = ".actiontk-toy.json"
LIST_DIR = "ucfTrainTestlist"

# The motion classes, in the order ``classes=N`` takes them. Indices into this tuple seed the videos, so
# append new motions at the end (and bump FORMAT_VERSION if the rendering of existing ones changes).
MOTIONS: tuple[str, ...] = (
    "MoveLeft",
    "MoveRight",
    "MoveUp",
    "MoveDown",
    "RotateClockwise",
    "RotateCounterclockwise",
    "ZoomIn",
    "ZoomOut",
    "Oscillate",
    "Orbit",
)
MOTION_DESCRIPTIONS: dict[str, str] = {
    "MoveLeft": "the object slides about a third of the frame to the left",
    "MoveRight": "the object slides about a third of the frame to the right",
    "MoveUp": "the object slides about a third of the frame upwards",
    "MoveDown": "the object slides about a third of the frame downwards",
    "RotateClockwise": "the object turns 120-190 degrees clockwise (as seen on screen) in place",
    "RotateCounterclockwise": "the object turns 120-190 degrees counterclockwise in place",
    "ZoomIn": "the object grows 1.8-2.4x in place",
    "ZoomOut": "the object shrinks 1.8-2.4x in place",
    "Oscillate": "the object shakes back and forth along a random axis, 1.5-2.5 cycles",
    "Orbit": "the object travels once around a small circle, either direction, without turning",
}
MIN_CLASSES = 6
SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ell", "pacman")

# Frames rendered per numpy batch: bounds memory for large sizes without losing vectorization.
_CHUNK = 12
# Half-width (fraction of the frame) of the box the object's centre is drawn from at the middle frame;
# together with the motion amplitudes below this keeps every object fully inside the frame.
_CENTER_BOX = 0.09


@dataclass(frozen=True)
class ToyConfig:
    """What to generate; the same config (seed included) always gives the same bytes."""

    seed: int = 0
    classes: int = 8  # the first `classes` entries of MOTIONS
    groups: int = 6  # UCF101-style groups per class (g01..); a multiple of 3 (one third tested per split)
    clips: int = 2  # clips per group (c01..)
    frames: int = 36  # frames per video
    size: int = 112  # frame height = width in pixels, even (yuv420p)
    fps: int = 25

    def validate(self) -> None:
        """Raise :class:`UserError` naming the offending command-line option."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"--{f.name} must be an integer, got {value!r}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if not MIN_CLASSES <= self.classes <= len(MOTIONS):
            raise UserError(
                f"--classes must be between {MIN_CLASSES} and {len(MOTIONS)}, got {self.classes}",
                f"the toy motions are: {', '.join(MOTIONS)}",
            )
        if self.groups < 3 or self.groups % 3 or self.groups > 99:
            raise UserError(
                f"--groups must be a multiple of 3 between 3 and 99, got {self.groups}",
                "each of the 3 splits tests one third of the groups",
            )
        if not 1 <= self.clips <= 99:
            raise UserError(f"--clips must be between 1 and 99, got {self.clips}")
        if not 8 <= self.frames <= 10_000:
            raise UserError(f"--frames must be between 8 and 10000, got {self.frames}")
        if self.size < 32 or self.size % 2 or self.size > 4096:
            raise UserError(
                f"--size must be an even number between 32 and 4096, got {self.size}",
                "MPEG-4 in yuv420p needs even frame sizes",
            )
        if not 1 <= self.fps <= 1000:
            raise UserError(f"--fps must be between 1 and 1000, got {self.fps}")

    @property
    def class_names(self) -> list[str]:
        return list(MOTIONS[: self.classes])


def video_name(class_name: str, group: int, clip: int) -> str:
    """``<Class>/v_<Class>_gGG_cCC.avi`` (1-based group and clip), relative to the dataset root."""
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def held_out_groups(config: ToyConfig, split: int) -> list[int]:
    """The groups (1-based) that split ``split`` (1..3) holds out for testing."""
    return [g for g in range(1, config.groups + 1) if (g - 1) % 3 == split - 1]


# -- rendering ------------------------------------------------------------------------------------------


def _shape_sdf(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape's outline in canonical units, positive inside.

    Every shape fits in the unit disc, so a centre at least ``scale`` pixels from each border keeps the
    whole object in the frame. Distances (not 0/1 masks) give anti-aliased edges for free, which keeps
    sub-pixel motion smooth instead of flickering.
    """
    if shape == "disc":
        return 0.95 - np.hypot(u, v)
    if shape == "square":
        return 0.7 - np.maximum(np.abs(u), np.abs(v))
    if shape == "triangle":
        # equilateral, circumradius 0.95: inside all three half-planes at distance 0.475 from the centre
        d = None
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            proj = u * np.cos(a) + v * np.sin(a)
            d = proj if d is None else np.maximum(d, proj)
        return 0.475 - d
    if shape == "cross":
        au, av_ = np.abs(u), np.abs(v)
        return np.maximum(np.minimum(0.9 - au, 0.28 - av_), np.minimum(0.28 - au, 0.9 - av_))
    if shape == "ell":
        stem = np.minimum(np.minimum(u + 0.6, -0.1 - u), np.minimum(v + 0.7, 0.7 - v))
        foot = np.minimum(np.minimum(u + 0.6, 0.6 - u), np.minimum(v - 0.2, 0.7 - v))
        return np.maximum(stem, foot)
    if shape == "pacman":
        # a disc with a 70-degree wedge cut out: the most obviously asymmetric shape
        r = np.hypot(u, v)
        off = np.abs(np.arctan2(v, u)) - 0.6
        wedge = r * np.sin(np.clip(off, -np.pi / 2, np.pi / 2))
        return np.minimum(0.95 - r, wedge)
    raise ValueError(f"unknown shape {shape!r}")


def _colour(rng: np.random.Generator, luminance: float, chroma: tuple[float, float]) -> np.ndarray:
    """An RGB colour (0..1) of about the given luminance with a random hue of the given saturation range."""
    # two unit vectors orthogonal to grey (1,1,1): adding them changes hue, not brightness
    e1 = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    e2 = np.array([1.0, 1.0, -2.0]) / np.sqrt(6.0)
    hue = rng.uniform(0, 2 * np.pi)
    c = luminance + rng.uniform(*chroma) * (np.cos(hue) * e1 + np.sin(hue) * e2)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Sprite:
    """A textured shape: body colour with soft stripes of a second colour and an off-centre dot."""

    shape: str
    body: np.ndarray
    stripe: np.ndarray
    dot: np.ndarray
    stripe_dir: float  # radians, in the shape's canonical frame
    stripe_period: float  # canonical units
    stripe_phase: float
    dot_uv: tuple[float, float]
    dot_radius: float


def _draw_sprite(rng: np.random.Generator, bg_luminance: float) -> _Sprite:
    shape = SHAPES[rng.integers(len(SHAPES))]
    # Both object colours sit on the side of the background's brightness with more room, so the object
    # always stands out; which side that is depends on the (class-independent) background only.
    sign = 1.0 if bg_luminance < 0.5 else -1.0
    room = max(bg_luminance, 1.0 - bg_luminance)
    lum_a = bg_luminance + sign * room * rng.uniform(0.45, 0.65)
    lum_b = bg_luminance + sign * room * rng.uniform(0.85, 1.0)
    if rng.random() < 0.5:
        lum_a, lum_b = lum_b, lum_a
    body = _colour(rng, lum_a, (0.05, 0.3))
    stripe = _colour(rng, lum_b, (0.05, 0.3))
    dot = _colour(rng, bg_luminance, (0.2, 0.35))
    # The dot breaks every symmetry (a striped disc looks the same after half a turn). Its centre is a
    # random point of a grid over the shape that keeps the whole dot inside (the ell's bars are thin).
    dot_radius = 0.16
    grid = np.linspace(-0.8, 0.8, 33)
    gu, gv = np.meshgrid(grid, grid)
    inside = np.flatnonzero(_shape_sdf(shape, gu, gv).ravel() > dot_radius + 0.04)
    pick = inside[rng.integers(len(inside))]
    du, dv = gu.ravel()[pick], gv.ravel()[pick]
    return _Sprite(
        shape=shape,
        body=body,
        stripe=stripe,
        dot=dot,
        stripe_dir=float(rng.uniform(0, np.pi)),
        stripe_period=float(rng.uniform(0.45, 0.75)),
        stripe_phase=float(rng.uniform(0, 2 * np.pi)),
        dot_uv=(float(du), float(dv)),
        dot_radius=dot_radius,
    )


def _render_sprite(
    sprite: _Sprite, x: np.ndarray, y: np.ndarray, cx: np.ndarray, cy: np.ndarray, angle: np.ndarray,
    scale: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (n,H,W,1), colour (n,H,W,3)) of the sprite for n poses given as (n,1,1) arrays.

    Inverse mapping: every pixel is taken back through the pose (translate, rotate by -angle, divide by
    scale) into the shape's canonical frame, where shape, stripes and dot are simple closed forms.
    """
    dx, dy = x - cx, y - cy
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c + dy * s) / scale
    v = (dy * c - dx * s) / scale
    alpha = np.clip(_shape_sdf(sprite.shape, u, v) * scale + 0.5, 0.0, 1.0)
    w = u * np.cos(sprite.stripe_dir) + v * np.sin(sprite.stripe_dir)
    # a clipped sine: flat stripes with soft (about 1/6 period) edges
    stripe = np.clip(0.5 + 1.5 * np.sin(2 * np.pi * w / sprite.stripe_period + sprite.stripe_phase), 0, 1)
    colour = sprite.body + stripe[..., None] * (sprite.stripe - sprite.body)
    dot_d = sprite.dot_radius - np.hypot(u - sprite.dot_uv[0], v - sprite.dot_uv[1])
    dot_a = np.clip(dot_d * scale + 0.5, 0.0, 1.0)[..., None]
    colour = colour + dot_a * (sprite.dot - colour)
    return alpha[..., None], colour


def _background(rng: np.random.Generator, size: int, luminance: float) -> np.ndarray:
    """A static textured background (H,W,3) in 0..1: tinted blotches, a gradient and a fine texture."""
    tint = _colour(rng, luminance, (0.0, 0.15))
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    # low-frequency colour blotches: a few random plane waves (0.7-2.5 cycles per frame) with random
    # colours; far cheaper than smoothing or spline-upsampling noise and just as blotchy
    blotches = np.zeros((size, size, 3), dtype=np.float32)
    for _ in range(8):
        f = rng.uniform(0.7, 2.5) * 2 * np.pi
        a = rng.uniform(0, 2 * np.pi)
        wave = np.cos(f * (xx * np.cos(a) + yy * np.sin(a)) + rng.uniform(0, 2 * np.pi))
        blotches += wave[..., None] * rng.standard_normal(3).astype(np.float32)
    blotches /= blotches.std() + 1e-6
    bg = tint + rng.uniform(0.03, 0.08) * blotches
    a = rng.uniform(0, 2 * np.pi)
    bg += (rng.uniform(0.0, 0.2) * (xx * np.cos(a) + yy * np.sin(a)))[..., None]
    # fine texture so the background is not flat (CNN features see texture everywhere, as in real video)
    if rng.random() < 0.5:
        b = rng.uniform(0, np.pi)
        freq = rng.uniform(6, 14)
        fine = np.sin(2 * np.pi * freq * (xx * np.cos(b) + yy * np.sin(b)) + rng.uniform(0, 2 * np.pi))
        bg += (rng.uniform(0.02, 0.05) * fine)[..., None]
    else:
        from scipy.ndimage import gaussian_filter

        fine = gaussian_filter(rng.standard_normal((size, size)), sigma=max(1.0, size / 100))
        fine /= fine.std() + 1e-6
        bg += (rng.uniform(0.02, 0.05) * fine)[..., None]
    return np.clip(bg, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Plan:
    """Everything about one video, drawn up front so rendering is a pure function of it."""

    size: int
    frames: int
    background: np.ndarray  # (H,W,3) float32, distractor already composited
    sprite: _Sprite
    cx: np.ndarray  # (T,) centre x in pixels
    cy: np.ndarray
    angle: np.ndarray  # (T,) radians; increasing = clockwise on screen (y points down)
    scale: np.ndarray  # (T,) pixels per canonical unit (= the object's bounding radius)
    noise: float  # per-pixel Gaussian noise std, 0..1 units
    gain: np.ndarray  # (T,) global brightness flicker
    noise_seed: int


def _plan(config: ToyConfig, motion: int, group: int, clip: int) -> _Plan:
    size, T = config.size, config.frames
    rng = np.random.default_rng([config.seed, motion, group, clip])
    name = MOTIONS[motion]

    # -- appearance: identical distribution for every class ------------------------------------------
    bg_lum = float(rng.uniform(0.25, 0.75))
    background = _background(rng, size, bg_lum)
    sprite = _draw_sprite(rng, bg_lum)
    if rng.random() < 0.5:
        # a static distractor object, drawn behind the moving one
        d_sprite = _draw_sprite(rng, bg_lum)
        d_scale = rng.uniform(0.07, 0.11) * size
        d_c = rng.uniform(d_scale + 1, size - d_scale - 1, size=2)
        x = np.arange(size, dtype=np.float32) + 0.5
        a, col = _render_sprite(
            d_sprite, x[None, None, :], x[None, :, None], np.array(d_c[0]).reshape(1, 1, 1),
            np.array(d_c[1]).reshape(1, 1, 1), np.array(rng.uniform(0, 2 * np.pi)).reshape(1, 1, 1),
            np.array(d_scale).reshape(1, 1, 1),
        )
        background = (background + a[0] * (col[0] - background)).astype(np.float32)
    scale0 = rng.uniform(0.13, 0.19) * size
    angle0 = rng.uniform(0, 2 * np.pi)
    centre0 = size / 2 + rng.uniform(-_CENTER_BOX, _CENTER_BOX, size=2) * size
    noise = float(rng.uniform(0.004, 0.015))
    gain = 1.0 + rng.normal(0.0, 0.008, size=T)
    noise_seed = int(rng.integers(2**31))

    # -- motion, anchored at the middle frame so that frame looks the same for every class -------------
    # tau runs over about -0.5..0.5 across the clip; amplitudes below are totals over the clip.
    tau = (np.arange(T) - T // 2) / (T - 1)
    offset = np.zeros((T, 2))
    log_scale = np.zeros(T)
    turn = np.zeros(T)
    if name.startswith("Move"):
        direction = {"MoveLeft": np.pi, "MoveRight": 0.0, "MoveUp": -np.pi / 2, "MoveDown": np.pi / 2}[name]
        direction += rng.uniform(-0.15, 0.15)  # not perfectly axis-aligned
        dist = rng.uniform(0.28, 0.36) * size
        offset = dist * tau[:, None] * np.array([np.cos(direction), np.sin(direction)])
    elif name.startswith("Rotate"):
        sign = 1.0 if name == "RotateClockwise" else -1.0
        turn = sign * rng.uniform(np.radians(120), np.radians(190)) * tau
    elif name.startswith("Zoom"):
        sign = 1.0 if name == "ZoomIn" else -1.0
        log_scale = sign * np.log(rng.uniform(1.8, 2.4)) * tau
    elif name == "Oscillate":
        axis = rng.uniform(0, np.pi)
        amp = rng.uniform(0.09, 0.13) * size
        cycles = min(rng.uniform(1.5, 2.5), (T - 1) / 6)  # at least 6 frames per cycle: no aliasing
        along = amp * np.sin(2 * np.pi * cycles * tau) * rng.choice([-1.0, 1.0])
        offset = along[:, None] * np.array([np.cos(axis), np.sin(axis)])
    elif name == "Orbit":
        radius = rng.uniform(0.07, 0.10) * size
        turns = min(rng.uniform(0.8, 1.2), (T - 1) / 8) * rng.choice([-1.0, 1.0])
        phase0 = rng.uniform(0, 2 * np.pi)
        phase = phase0 + 2 * np.pi * turns * tau
        offset = radius * np.stack([np.cos(phase) - np.cos(phase0), np.sin(phase) - np.sin(phase0)], axis=1)
    else:  # pragma: no cover - MOTIONS and this function must agree
        raise AssertionError(name)
    # Nuisance motion in the components the class does not use, so "something moves" is never the cue
    # and a model must tell directions and kinds of motion apart.
    if not name.startswith("Rotate"):
        turn = turn + rng.uniform(-0.35, 0.35) * tau
    if not name.startswith("Zoom"):
        log_scale = log_scale + rng.uniform(-0.1, 0.1) * tau
    if name.startswith(("Rotate", "Zoom")):
        drift_dir = rng.uniform(0, 2 * np.pi)
        offset = offset + rng.uniform(0, 0.04) * size * tau[:, None] * np.array(
            [np.cos(drift_dir), np.sin(drift_dir)]
        )

    scale = scale0 * np.exp(log_scale)
    centre = centre0 + offset
    # The amplitudes above keep the object inside by construction; clamping is only a safety net.
    centre = np.clip(centre, scale[:, None] + 0.5, size - scale[:, None] - 0.5)
    return _Plan(
        size=size, frames=T, background=background, sprite=sprite, cx=centre[:, 0], cy=centre[:, 1],
        angle=angle0 + turn, scale=scale, noise=noise, gain=gain, noise_seed=noise_seed,
    )


def _render(plan: _Plan) -> Iterator[np.ndarray]:
    """The plan's frames, uint8 (H,W,3), rendered in vectorized batches of _CHUNK frames."""
    size = plan.size
    x = np.arange(size, dtype=np.float32) + 0.5
    noise_rng = np.random.default_rng(plan.noise_seed)
    for start in range(0, plan.frames, _CHUNK):
        sl = slice(start, min(start + _CHUNK, plan.frames))

        def pose(a: np.ndarray, sl: slice = sl) -> np.ndarray:
            return a[sl].astype(np.float32)[:, None, None]

        cx, cy, scale = plan.cx[sl], plan.cy[sl], plan.scale[sl]
        # Only the box the object covers in this batch is rendered (every shape lies within `scale` of its
        # centre): typically a fifth of the frame, and the sprite maths is most of the work.
        x0, x1 = max(int(np.min(cx - scale)) - 1, 0), min(int(np.max(cx + scale)) + 2, size)
        y0, y1 = max(int(np.min(cy - scale)) - 1, 0), min(int(np.max(cy + scale)) + 2, size)
        alpha, colour = _render_sprite(
            plan.sprite, x[None, None, x0:x1], x[None, y0:y1, None], pose(plan.cx), pose(plan.cy),
            pose(plan.angle), pose(plan.scale),
        )
        frames = np.repeat(plan.background[None], sl.stop - sl.start, axis=0)
        box = frames[:, y0:y1, x0:x1]
        box += alpha * (colour - box)
        frames *= pose(plan.gain)[..., None]
        frames += np.float32(plan.noise) * noise_rng.standard_normal(frames.shape, dtype=np.float32)
        frames *= 255.0
        frames += 0.5
        yield from np.clip(frames, 0, 255).astype(np.uint8)


def render_clip(config: ToyConfig, class_name: str, group: int, clip: int) -> np.ndarray:
    """The frames (T,H,W,3) uint8 of one video, exactly as written (before encoding); for inspection."""
    if class_name not in MOTIONS:
        raise UserError(f"unknown toy class {class_name!r}", f"choose one of: {', '.join(MOTIONS)}")
    return np.stack(list(_render(_plan(config, MOTIONS.index(class_name), group, clip))))


# -- encoding and the dataset ---------------------------------------------------------------------------


def _make_video(out_dir: str, config: ToyConfig, motion: int, group: int, clip: int) -> tuple[str, int]:
    """Render and encode one video (runs in a worker process); returns (relative path, bytes)."""
    rel = video_name(MOTIONS[motion], group, clip)
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, _render(_plan(config, motion, group, clip)), fps=config.fps, codec="mpeg4")
    return rel, path.stat().st_size


def _info(config: ToyConfig) -> dict:
    names = config.class_names
    per_class = config.groups * config.clips
    splits = {}
    for split in (1, 2, 3):
        n_test = len(held_out_groups(config, split)) * config.clips * config.classes
        splits[str(split)] = {"train": config.classes * per_class - n_test, "test": n_test}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(config),
        "classes": names,
        "videos": config.classes * per_class,
        "videos_per_class": per_class,
        "splits": splits,
    }


def _write_text(path: Path, lines: list[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _write_lists(out_dir: Path, config: ToyConfig) -> None:
    lists = out_dir / LIST_DIR
    lists.mkdir(parents=True, exist_ok=True)
    names = config.class_names
    _write_text(lists / "classInd.txt", [f"{i} {name}" for i, name in enumerate(names, 1)])
    for split in (1, 2, 3):
        held_out = set(held_out_groups(config, split))
        train, test = [], []
        for cid, name in enumerate(names, 1):
            for group in range(1, config.groups + 1):
                for clip in range(1, config.clips + 1):
                    rel = video_name(name, group, clip)
                    (test.append(rel) if group in held_out else train.append(f"{rel} {cid}"))
        _write_text(lists / f"trainlist0{split}.txt", train)
        _write_text(lists / f"testlist0{split}.txt", test)


def _existing(out_dir: Path, config: ToyConfig) -> dict | None:
    """The info of a complete toy dataset with this exact config in ``out_dir``, else None (or raise)."""
    marker = out_dir / MARKER
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return None
    expected = _info(config)
    if info.get("version") != FORMAT_VERSION or info.get("config") != expected["config"]:
        return None
    missing = [
        rel for name in expected["classes"] for g in range(1, config.groups + 1)
        for c in range(1, config.clips + 1) if not (out_dir / (rel := video_name(name, g, c))).is_file()
    ]
    if missing:
        raise UserError(
            f"the toy dataset in {out_dir} is incomplete: {len(missing)} video(s) missing, e.g. {missing[0]}",
            "delete the directory and generate it again",
        )
    return info


def generate_toy(
    out_dir: str | Path,
    config: ToyConfig = ToyConfig(),
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the toy dataset to ``out_dir`` (new or empty); return its info (also in ``.actiontk-toy.json``).

    If ``out_dir`` already holds a complete toy dataset with the same config, nothing is written and its
    info comes back with ``"reused": True``. ``workers`` processes render and encode in parallel (default:
    the CPU count; 1 = in this process); the files are identical whatever the count. ``progress(done,
    total)`` is called once with ``done=0`` and then after every finished video.
    """
    config.validate()
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"{out_dir} is not a directory", "choose an empty directory")
        existing = _existing(out_dir, config)
        if existing is not None:
            return {**existing, "root": str(out_dir), "reused": True}
        if any(out_dir.iterdir()):
            ours = (out_dir / MARKER).exists()
            what = "a toy dataset made with a different config or version" if ours else "files"
            raise UserError(f"{out_dir} is not empty (it holds {what})", "choose an empty directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = [
        (motion, group, clip)
        for motion in range(config.classes)
        for group in range(1, config.groups + 1)
        for clip in range(1, config.clips + 1)
    ]
    total = len(jobs)
    sizes: dict[str, int] = {}
    if progress:
        progress(0, total)
    n_workers = min(workers or os.cpu_count() or 1, total)
    if n_workers == 1:
        for job in jobs:
            rel, nbytes = _make_video(str(out_dir), config, *job)
            sizes[rel] = nbytes
            if progress:
                progress(len(sizes), total)
    else:
        # "spawn", not fork: the caller may be a CLI with a progress-bar thread or torch's thread pools,
        # and forking a multi-threaded process can deadlock the child.
        pool = ProcessPoolExecutor(n_workers, mp_context=get_context("spawn"))
        try:
            pending = {pool.submit(_make_video, str(out_dir), config, *job) for job in jobs}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    rel, nbytes = future.result()  # re-raises a worker's error
                    sizes[rel] = nbytes
                    if progress:
                        progress(len(sizes), total)
        except BaseException as exc:
            # don't render the remaining videos after an error or Ctrl-C
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, BrokenProcessPool):
                # the usual cause: a script without a main guard, which every spawned worker re-runs
                raise RuntimeError(
                    "a toy-dataset worker process died; when calling generate_toy from a script, call it "
                    "under `if __name__ == '__main__':` (workers re-import the main module) or pass workers=1"
                ) from exc
            raise
        pool.shutdown(wait=True)

    _write_lists(out_dir, config)
    info = _info(config)
    info["bytes"] = sum(sizes.values())
    # the marker goes last and atomically: its presence means the dataset is complete
    atomic_write_text(out_dir / MARKER, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return {**info, "root": str(out_dir), "reused": False}
