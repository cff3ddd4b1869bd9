"""Reading still images upright: the EXIF orientation that phone cameras write is applied on load.

A phone stores a portrait photo as landscape pixels plus an EXIF ``Orientation`` tag (values 2..8: mirror
and/or quarter turns, EXIF 2.32 Sec. 4.6.4 A, "Orientation"); viewers apply it, so the person who labelled
the image saw it upright. Every loader of dataset images goes through :func:`load_rgb` (pixels) and
:func:`image_size` (the upright size, from the header only), so that extracted features, fine-tuning crops
and keypoint geometry all see the same upright image.
"""

from __future__ import annotations

from pathlib import Path

ORIENTATION_TAG = 0x0112  # EXIF "Orientation"
# Orientations that swap width and height (a quarter turn, possibly mirrored).
_TRANSPOSED = {5, 6, 7, 8}


def orientation(im) -> int:
    """The EXIF orientation of an open PIL image, 1 (as stored) when absent or invalid."""
    try:
        value = int(im.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # unreadable EXIF block: treat the pixels as upright, as viewers do
        return 1
    return value if 1 <= value <= 8 else 1


def load_rgb(path: str | Path):
    """The image at ``path`` as an upright RGB PIL image (EXIF orientation applied, then converted)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im) if orientation(im) != 1 else im
        return upright.convert("RGB")  # convert() loads the pixels: the file can close


def image_size(path: str | Path) -> tuple[int, int]:
    """The upright (H, W) of the image at ``path``, read from its header (no pixels decoded)."""
    from PIL import Image

    with Image.open(path) as im:
        h, w = im.height, im.width
        return (w, h) if orientation(im) in _TRANSPOSED else (h, w)
