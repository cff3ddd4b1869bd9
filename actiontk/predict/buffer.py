"""A growing array of frames (maps or cubes of one video) that keeps a bounded amount in memory.

A video's maps are small per frame after pooling to the grid, but a long video has many frames: the first
``memory_bytes`` stay in memory, the rest go to an anonymous temporary file (deleted when closed) and are read
back by range. Page-cache pages of that file are the kernel's, not the process's, so the resident memory of a
prediction does not grow with the length of the video.
"""

from __future__ import annotations

import tempfile

import numpy as np
import contextlib

DEFAULT_MEMORY = 16 << 20  # bytes kept in memory per buffer


class FrameBuffer:
    """Frames ``(C, h, w)`` (any fixed shape and dtype) appended in order and read back by range."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY):
        self.memory_bytes = memory_bytes
        self._chunks: list[tuple[int, np.ndarray | int]] = []  # (first frame, array in memory | file offset)
        self._sizes: list[int] = []
        self._file = None
        self._in_memory = 0
        self.shape: tuple[int, ...] | None = None
        self.dtype: np.dtype | None = None
        self.frames = 0

    def __len__(self) -> int:
        return self.frames

    def append(self, a: np.ndarray) -> None:
        if len(a) == 0:
            return
        if self.shape is None:
            self.shape, self.dtype = tuple(a.shape[1:]), a.dtype
        elif tuple(a.shape[1:]) != self.shape or a.dtype != self.dtype:
            raise ValueError(f"frames of shape {a.shape[1:]} {a.dtype} after {self.shape} {self.dtype}")
        a = np.ascontiguousarray(a)
        if self._in_memory + a.nbytes <= self.memory_bytes:
            self._chunks.append((self.frames, a.copy()))
            self._in_memory += a.nbytes
        else:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="actiontk-predict-")  # noqa: SIM115 - closed by close()
            self._file.seek(0, 2)
            offset = self._file.tell()
            self._file.write(a.tobytes())
            self._chunks.append((self.frames, offset))
        self._sizes.append(len(a))
        self.frames += len(a)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1`` (clipped to what was appended) as one array."""
        start, stop = max(0, start), min(stop, self.frames)
        assert self.shape is not None and self.dtype is not None, "read from an empty buffer"
        per_frame = int(np.prod(self.shape)) * self.dtype.itemsize
        parts = []
        for (first, where), n in zip(self._chunks, self._sizes, strict=True):
            lo, hi = max(start, first), min(stop, first + n)
            if lo >= hi:
                continue
            if isinstance(where, np.ndarray):
                parts.append(where[lo - first:hi - first])
            else:
                self._file.seek(where + (lo - first) * per_frame)
                data = self._file.read((hi - lo) * per_frame)
                parts.append(np.frombuffer(bytearray(data), dtype=self.dtype).reshape(hi - lo, *self.shape))
        if not parts:
            return np.empty((0, *self.shape), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks, self._sizes = [], []

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
