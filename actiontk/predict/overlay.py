"""Pictures of where the model looked: the attention map blended over the input.

- Video: every frame of the input (all of them, not only the sampled ones, at the input's size and rate) with the
  joint LSTM's attention of its sampled frame (overlapping clips averaged) blended over the region the backbone saw
  (the centre square for extract's shorter-side resize and crop, the whole frame for ``resize = square``), and the
  running top-1 label with its probability (the mean per-step softmax of the sampled frames so far) drawn in the
  corner. PyAV encodes it: H.264 (libx264) where FFmpeg has it, MPEG-4 Part 2 otherwise, in an ``.mp4``.
- Image: a PNG of the image with the GAP map (top-down map of the predicted class x bottom-up map) blended over
  the crop the network saw.

The maps are scaled and coloured as in the evaluation report (:mod:`actiontk.report.media`: divided by their
maximum, min-max when negative, ``jet``, blended at half weight).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from actiontk.cache.runs import atomic_path
from actiontk.report.media import ALPHA, colorize, scale01

H264, MPEG4 = "libx264", "mpeg4"


def video_codec() -> str:
    """The encoder used for overlay videos: H.264 where this FFmpeg has libx264, MPEG-4 Part 2 otherwise."""
    import av

    return H264 if H264 in av.codecs_available else MPEG4


def frame_rate(path: Path) -> float:
    """The input's average frame rate (25 when the container does not say)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            return float(rate) if rate else 25.0
    except Exception:
        return 25.0


def crop_box(h: int, w: int, square: bool, fraction: float = 1.0) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region the backbone saw in an ``h`` x ``w`` frame: the whole frame when
    it was resized to a square, else the centred square of the shorter side (times ``fraction`` for a fine-tuned
    run's crop / resize)."""
    if square:
        return 0, 0, h, w
    side = max(1, int(round(min(h, w) * fraction)))
    return (h - side) // 2, (w - side) // 2, side, side


def _resize_map(att: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(att, dtype=np.float32))
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)


def blend(frame: np.ndarray, att: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``frame`` (H, W, 3) uint8 with ``att`` (h, w) upsampled to ``box`` and blended over it there."""
    top, left, bh, bw = box
    out = frame.astype(np.float32)
    heat = colorize(scale01(_resize_map(att, bh, bw))).astype(np.float32)
    region = out[top:top + bh, left:left + bw]
    out[top:top + bh, left:left + bw] = (1 - ALPHA) * region + ALPHA * heat
    return out.round().clip(0, 255).astype(np.uint8)


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """``text`` drawn in white on a dark band at the top left of ``frame``."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    size = max(10, min(frame.shape[0], frame.shape[1]) // 14)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((0, 0, min(frame.shape[1], x1 + 3), y1 + 3), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def running_labels(result) -> list[tuple[int, float]]:
    """Per sampled frame: the top-1 class and probability of the mean per-step softmax over the sampled frames so
    far (frames no clip covers carry the last value)."""
    scores = result.frame_scores
    total = np.zeros(scores.shape[1], np.float64)
    seen = 0
    out: list[tuple[int, float]] = []
    for row in scores:
        if not np.isnan(row).any():
            total += row
            seen += 1
        mean = total / seen if seen else np.asarray(result.scores, np.float64)
        k = int(mean.argmax())
        out.append((k, float(mean[k])))
    return out


def write_video_overlay(result, frames: Iterator[np.ndarray], out_path: Path, *, fps: float, square: bool) -> int:
    """Encode the overlay of a video's ``result`` over its full-rate ``frames`` (chunks (n, H, W, 3)) into
    ``out_path`` (written under a temporary name, then renamed); returns the number of frames written."""
    import av

    stride = max(1, result.frame_stride)
    labels = running_labels(result)
    codec = video_codec()
    n = 0
    with atomic_path(out_path, ".mp4") as tmp:
        with av.open(str(tmp), mode="w") as container:
            stream = None
            for chunk in frames:
                for frame in chunk:
                    if stream is None:
                        h, w = frame.shape[:2]
                        stream = container.add_stream(codec, rate=max(1, round(fps)))
                        stream.height, stream.width = h - h % 2, w - w % 2  # yuv420p: even sides
                        stream.pix_fmt = "yuv420p"
                        if codec == H264:
                            stream.options = {"preset": "veryfast", "crf": "20"}
                        else:
                            stream.bit_rate = max(400_000, 6 * stream.width * stream.height)
                        box = crop_box(h, w, square)
                    j = min(n // stride, result.frames - 1)
                    k, p = labels[j]
                    img = caption(blend(frame, result.frame_attention[j], box), f"{result.classes[k]} {100 * p:.0f}%")
                    img = np.ascontiguousarray(img[:stream.height, :stream.width])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                    n += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        if n == 0:
            raise ValueError("no frames to draw on")
    return n


def image_overlay(result, image: np.ndarray, *, square: bool = False, fraction: float = 1.0) -> np.ndarray:
    """The image (H, W, 3) with its GAP map blended over the crop the network saw and the label drawn on it."""
    h, w = image.shape[:2]
    out = blend(image, result.attention, crop_box(h, w, square, fraction))
    k = result.label
    return caption(out, f"{result.classes[k]} {100 * float(result.scores[k]):.0f}%")


def write_png(rgb: np.ndarray, out_path: Path) -> None:
    from actiontk.cache.runs import atomic_write_bytes
    from actiontk.report.media import png_bytes

    atomic_write_bytes(out_path, png_bytes(rgb))
