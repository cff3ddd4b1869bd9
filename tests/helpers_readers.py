"""Misbehaving VideoReader plug-ins for the SafeDecoder tests.

They are referenced as ``"tests.helpers_readers:ClassName"``, which exercises the plug-in point and lets
the spawn-started worker import them (it inherits the parent's ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import numpy as np

from actiontk.video.readers import PyAVReader, VideoReader


class FailingReader(VideoReader):
    """Raises a plain (non-DecodeError) exception, as a buggy or strict backend would."""

    name = "failing"

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        raise RuntimeError("simulated backend failure")
        yield  # pragma: no cover - makes this a generator


class HangingReader(VideoReader):
    """Never returns, like a decoder stuck on a stalled file."""

    name = "hanging"

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        while True:
            time.sleep(3600)
        yield  # pragma: no cover


class SegfaultReader(VideoReader):
    """Kills its own process with SIGSEGV, as a crash in native decoder code does."""

    name = "segfault"

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered asynchronously; never get past this
        yield  # pragma: no cover


class ExitReader(VideoReader):
    """Exits the process abruptly without any cleanup."""

    name = "exit"

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        os._exit(3)
        yield  # pragma: no cover


class FailMidwayReader(VideoReader):
    """Delivers the first frames correctly (via PyAV), then fails: exercises the iter_chunks rule."""

    name = "failmidway"

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        for i, frame in enumerate(PyAVReader().iter_frames(path, size=size, stride=stride)):
            if i == 4:
                raise RuntimeError("simulated failure mid-stream")
            yield frame


class StallAfterTwoReader(VideoReader):
    """Decodes (via PyAV) the first two videos its process is given, then stalls like HangingReader: a run
    that has saved some work when the test interrupts it."""

    name = "stall-after-two"
    _videos = 0

    def iter_frames(self, path: str, *, size=None, stride: int = 1) -> Iterator[np.ndarray]:
        StallAfterTwoReader._videos += 1
        while StallAfterTwoReader._videos > 2:
            time.sleep(3600)
        yield from PyAVReader().iter_frames(path, size=size, stride=stride)
