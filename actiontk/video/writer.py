"""Writing real encoded videos with PyAV (used by the toy dataset and the tests)."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable

import numpy as np

# codec -> (pixel format, encoder options, fixed quantizer or None). ffv1 and png are lossless in RGB, which
# the tests rely on to check decoded values exactly; mpeg4 (in .avi) is what UCF101 and HMDB51 ship.
CODECS: dict[str, tuple[str, dict[str, str], int | None]] = {
    "mpeg4": ("yuv420p", {}, 3),
    "ffv1": ("bgr0", {}, None),
    "png": ("rgb24", {}, None),
    "libx264": ("yuv420p", {"preset": "ultrafast", "crf": "18"}, None),
}
FF_QP2LAMBDA = 118  # FFmpeg's quantizer-to-lambda factor: global_quality = q * FF_QP2LAMBDA


def _set_quantizer(stream, q: int) -> None:
    """Constant quantizer q (like ``ffmpeg -q:v q``). A plain "qscale" entry in ``stream.options`` is silently
    ignored by the mpeg4 encoder, which then drifts to a low bit rate and visibly smears motion."""
    ctx = stream.codec_context
    if hasattr(ctx, "qscale"):
        ctx.qscale = True
        ctx.global_quality = q * FF_QP2LAMBDA
    else:  # older PyAV: no qscale flag, ask for a generous bit rate instead
        stream.bit_rate = 8 * stream.width * stream.height * int(stream.rate or 25) // q


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25,
    codec: str = "mpeg4",
) -> int:
    """Encode uint8 RGB frames of shape (H, W, 3) to ``path``; returns the number of frames written.

    The container is chosen by the file extension (``.avi``, ``.mkv``, ``.mp4``). H and W must be even for
    the yuv420p codecs. The encoder runs single-threaded: FFmpeg's mpeg4 encoder cuts each frame into one
    slice per thread, so with its automatic thread count the bytes would depend on the machine's cores.
    The file is written under a temporary name and renamed, so a killed writer leaves no truncated video.
    """
    import av  # heavy import kept local

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    pix_fmt, options, quantizer = CODECS[codec]
    path = Path(path)
    tmp = path.with_name(path.name + ".incomplete" + path.suffix)
    n = 0
    with av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            if stream is None:
                stream = container.add_stream(codec, rate=round(fps))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pix_fmt
                stream.options = dict(options)
                stream.codec_context.thread_count = 1
                if quantizer is not None:
                    _set_quantizer(stream, quantizer)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():  # flush delayed frames
                container.mux(packet)
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"no frames given for {path}")
    tmp.replace(path)
    return n
