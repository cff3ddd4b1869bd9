"""Video decoding: readers over decord and PyAV, a killable worker process, and a test-video writer.

Nothing here imports decord, PyAV or torch at import time (the backends are imported inside the methods
that use them), so importing :mod:`actiontk.video` is cheap and ``actiontk --help`` stays fast.
"""

from __future__ import annotations

from actiontk.video.readers import (
    BACKENDS,
    DecodeError,
    DecodeTimeout,
    DecordReader,
    PyAVReader,
    VideoReader,
    announced_frames,
    get_reader,
)
from actiontk.video.worker import DecodeResult, SafeDecoder
from actiontk.video.writer import write_video

__all__ = [
    "BACKENDS",
    "DecodeError",
    "DecodeResult",
    "DecodeTimeout",
    "DecordReader",
    "PyAVReader",
    "SafeDecoder",
    "VideoReader",
    "announced_frames",
    "get_reader",
    "write_video",
]
