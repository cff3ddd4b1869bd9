"""Writing real encoded videos with PyAV (used by the toy dataset and the tests)."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterable

import numpy as np

# codec -> (pixel format, encoder options). ffv1 and png are lossless in RGB, which the tests rely on to
# check decoded values exactly; mpeg4 (in .avi) is what UCF101 and HMDB51 ship.
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "mpeg4": ("yuv420p", {"qscale": "3"}),
    "ffv1": ("bgr0", {}),
    "png": ("rgb24", {}),
    "libx264": ("yuv420p", {"preset": "ultrafast", "crf": "18"}),
}


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 25,
    codec: str = "mpeg4",
) -> int:
    """Encode uint8 RGB frames of shape (H, W, 3) to ``path``; returns the number of frames written.

    The container is chosen by the file extension (``.avi``, ``.mkv``, ``.mp4``). H and W must be even for
    the yuv420p codecs.
    """
    import av  # heavy import kept local

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    pix_fmt, options = CODECS[codec]
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
