"""The report's pictures: attention maps laid over the frames and images they were computed on.

Frames come from the dataset itself (the root recorded in the run's inputs): a video is decoded with
:mod:`actiontk.video.readers` (decord, then PyAV) at the extract run's frame stride, an image is read with
Pillow. Both are center-cropped to a square, as extract's preprocessing does, so that the attention grid
covers exactly what the network saw. A map is upsampled bilinearly to the tile, scaled to [0, 1] (divided
by its maximum, or min-max when it has negative values, as a top-down map may), coloured with the
``jet`` colormap and blended over the frame with weight :data:`ALPHA`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from actiontk.datasets.base import safe_rel

TILE = 128  # side of a picture in the report, pixels
ALPHA = 0.5  # weight of the heat map in the blend
BACKGROUND = 128  # grey under a map whose frame could not be read


def image_path(dataset: str, root: str | Path, rel: str) -> Path | None:
    """The file of image ``rel``: ``ROOT/images/rel`` (MPII's layout) or else ``ROOT/rel``; None when neither
    exists or ``rel`` would leave the root. ``dataset`` is accepted for the record; both layouts are tried
    for every dataset."""
    safe = safe_rel(str(rel))
    if safe is None:
        return None
    base = Path(root).expanduser()
    for candidate in (base / "images" / safe, base / safe):
        if candidate.is_file():
            return candidate
    return None


def square_crop(frame: np.ndarray) -> np.ndarray:
    """The central square of an (H, W, C) frame."""
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return frame[top:top + s, left:left + s]


def to_tile(frame: np.ndarray, size: int = TILE) -> np.ndarray:
    """Center-crop and resize a uint8 RGB frame to (size, size, 3)."""
    from PIL import Image

    square = np.ascontiguousarray(square_crop(frame))
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))


def upsample(att: np.ndarray, size: int = TILE) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map to (size, size), float32."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(att, dtype=np.float32))  # float32 -> mode "F"
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)


def scale01(a: np.ndarray) -> np.ndarray:
    """``a`` in [0, 1]: divided by its maximum when it is non-negative, min-max otherwise; all-zero → zeros."""
    a = np.asarray(a, np.float64)
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return a / hi if hi > 0 else np.zeros_like(a)


def colorize(a01: np.ndarray) -> np.ndarray:
    """uint8 RGB of a [0, 1] map through the jet colormap."""
    from matplotlib import colormaps

    return (colormaps["jet"](np.clip(a01, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def overlay(tile: np.ndarray | None, att: np.ndarray, size: int = TILE) -> np.ndarray:
    """The attention map ``att`` (h, w) blended over ``tile`` (size, size, 3), or over grey when None."""
    heat = colorize(scale01(upsample(att, size))).astype(np.float32)
    base = np.full((size, size, 3), BACKGROUND, np.float32) if tile is None else tile.astype(np.float32)
    return ((1 - ALPHA) * base + ALPHA * heat).round().clip(0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def strip(tiles: Iterable[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tiles side by side on white, ``gap`` pixels apart (one picture per sample for the Markdown report)."""
    tiles = list(tiles)
    h = max(t.shape[0] for t in tiles)
    w = sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for t in tiles:
        out[:t.shape[0], x:x + t.shape[1]] = t
        x += t.shape[1] + gap
    return out


def read_image(path: Path) -> np.ndarray:
    """An image file as uint8 RGB (H, W, 3); raises OSError when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError as e:
        raise OSError(str(e)) from None


def read_clip(path: Path, start: int, count: int, stride: int = 1,
              backends: tuple[str, ...] = ("decord", "pyav")) -> np.ndarray:
    """Frames ``start .. start + count - 1`` of a video as decoded at ``stride`` (the frames extract kept),
    uint8 (n, H, W, 3) with 1 <= n <= count (a short video gives fewer: the clip was padded with its last
    frame). Raises :class:`~actiontk.video.readers.DecodeError` when every backend fails or the video ends before
    ``start``."""
    from actiontk.video.readers import DecodeError, get_reader

    error: DecodeError | None = None
    for name in backends:
        kept: list[np.ndarray] = []
        seen = 0
        try:
            for chunk in get_reader(name).iter_chunks(path, stride=stride, chunk=32):
                lo, hi = max(start - seen, 0), min(start + count - seen, len(chunk))
                if lo < hi:
                    kept.append(chunk[lo:hi])
                seen += len(chunk)
                if seen >= start + count:
                    break
        except DecodeError as e:
            error = e
            continue
        if kept:
            return np.concatenate(kept)
        error = DecodeError(path, name, f"the video has {seen} frames at stride {stride}, none at or after {start}")
    assert error is not None
    raise error
