"""Video readers: one interface over decord and PyAV, with one error type for every decoding failure.

Every reader streams a video as fixed-size chunks of uint8 RGB frames ``(n, H, W, 3)`` so that memory is
bounded by the chunk size, not the video length. Whatever goes wrong inside a backend (a file that cannot
be opened, a decoder exception mid-stream, a file that yields no frames at all) comes out as a
:class:`DecodeError` naming the path, the backend and the reason, never as a backend-specific exception:
callers such as the feature extractor only need to catch one type to skip or flag a video.

Frame counts come from decoding (:meth:`VideoReader.count_frames`), because container metadata lies for
truncated or re-muxed files; :func:`announced_frames` exposes that metadata separately so it can be
compared against the decoded count.

Frames are verified, not trusted. Both backends check the decoder's timestamps (present, strictly
increasing, spaced as the stream's frame rate says, see :func:`timestamp_problem`), and decord's first frames
are compared with PyAV's, because decord can return a stream shifted by a whole GOP and padded with copies of
the last frame while its timestamp table looks perfect (seen on MPEG transport streams). A video that fails
verification raises :class:`DecodeError`, so the caller falls back to the other backend instead of storing
wrong frames. Both backends return frames upright: the rotation of the stream's display matrix (phone videos)
is applied.

Readers open regular files only: a FIFO or a device node is refused before any backend touches it.

Backends are imported inside methods so that importing this module (and hence ``actiontk --help``) stays
fast.

These readers run in the calling process; a file that makes a backend hang (a FIFO, a broken network
mount) hangs the caller. :class:`actiontk.video.worker.SafeDecoder` runs them in a killable process.
"""

from __future__ import annotations

import abc
import importlib
import os
import stat
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from actiontk.errors import UserError, one_line

SizeArg = int | Sequence[int] | None  # None = native, int = shorter side, (H, W) = exact

# The default comes first: PyAV decoded every container of bench/decoders.py correctly and faster than decord
# (docs/performance.md, "decoders").
BACKENDS: tuple[str, ...] = ("pyav", "decord")
DEFAULT_BACKEND = BACKENDS[0]


def other_backend(name: str) -> str | None:
    """The backend to fall back to when ``name`` fails: the other built-in one (PyAV for a plug-in)."""
    return "decord" if name == "pyav" else "pyav"

# Backend error messages (decord's in particular) can carry a multi-line C++ stack trace; one line of
# bounded length is enough to tell the user what happened and keeps reports readable.
_MAX_REASON = 300


class DecodeError(Exception):
    """A video could not be decoded (fully) by a backend.

    ``str(error)`` is one readable line: ``cannot decode PATH with BACKEND: REASON``.
    """

    def __init__(self, path: str | Path, backend: str, reason: str):
        self.path = str(path)
        self.backend = backend
        self.reason = _one_line(reason) or "unknown error"
        super().__init__(self.path, self.backend, self.reason)

    def __str__(self) -> str:
        return f"cannot decode {self.path} with {self.backend}: {self.reason}"

    def __reduce__(self):
        # Errors cross process boundaries (worker -> parent); rebuilding from the three fields keeps
        # subclasses and attributes intact whatever Exception.__reduce__ would do with custom __init__s.
        return (type(self), (self.path, self.backend, self.reason))


class DecodeTimeout(DecodeError):
    """Decoding took longer than the allowed time and was abandoned (the worker process was killed)."""


def _one_line(text: str) -> str:
    return one_line(text, _MAX_REASON, first_line=True)


def exception_reason(exc: BaseException) -> str:
    """A one-line description of a backend exception, naming its type (``RuntimeError: ...``)."""
    message = _one_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# argument handling shared by readers and the worker


def check_size(size: SizeArg) -> None | int | tuple[int, int]:
    """Validate ``size`` and normalise it to None, an int, or an ``(H, W)`` tuple; ValueError if bad."""
    if size is None:
        return None
    # bool is an int subclass; size=True is certainly a mistake.
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        return int(size)
    if (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"size must be None, a positive int (shorter side) or (height, width), got {size!r}")


def check_stride(stride: int) -> int:
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    return int(stride)


def check_chunk(chunk: int) -> int:
    if not isinstance(chunk, (int, np.integer)) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    return int(chunk)


def _even(x: float) -> int:
    # Half-up rounding to an even number, at least 2: yuv420p encoders and many models need even sides.
    return max(2, int(x / 2 + 0.5) * 2)


def target_size(native: tuple[int, int], size: SizeArg) -> tuple[int, int]:
    """The (H, W) a frame of native (H, W) is decoded to for a ``size`` argument (see VideoReader)."""
    size = check_size(size)
    h, w = native
    if size is None:
        return h, w
    if isinstance(size, tuple):
        return size
    if h <= w:
        return _even(size), _even(size * w / h)
    return _even(size * h / w), _even(size)


# ---------------------------------------------------------------------------------------------------------
# the interface


class VideoReader(abc.ABC):
    """Decodes a video file to uint8 RGB frames.

    Subclasses implement :meth:`iter_frames` (one frame at a time); chunking, argument checking and the
    translation of every failure into :class:`DecodeError` live here so all backends behave alike. A
    plug-in reader (``get_reader("pkg.mod:Class")``) subclasses this and needs a no-argument constructor.

    Arguments common to the methods:

    * ``size``: None keeps the native size; an int resizes so the shorter side is that value, keeping the
      aspect ratio, both sides rounded to even; an ``(H, W)`` tuple resizes to exactly that.
    * ``stride``: keep frames 0, S, 2S, ... (S >= 1).
    """

    name: str = "abstract"

    @abc.abstractmethod
    def iter_frames(self, path: str, *, size: SizeArg = None, stride: int = 1) -> Iterator[np.ndarray]:
        """Yield the kept frames one by one as uint8 (H, W, 3) arrays, all of the same shape.

        May raise anything; :meth:`iter_chunks` wraps it into :class:`DecodeError`.
        """

    def iter_chunks(
        self, path: str | Path, *, size: SizeArg = None, stride: int = 1, chunk: int = 32
    ) -> Iterator[np.ndarray]:
        """Yield uint8 arrays ``(n, H, W, 3)`` with ``1 <= n <= chunk``, holding one chunk at a time.

        Raises ValueError for bad arguments (before touching the file) and :class:`DecodeError` for any
        decoding failure, including a video that yields no frame at all.
        """
        size = check_size(size)
        stride = check_stride(stride)
        chunk = check_chunk(chunk)
        path = str(path)
        frames = self.iter_frames(path, size=size, stride=stride)
        buf: np.ndarray | None = None
        n = 0
        total = 0
        try:
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except DecodeError:
                    raise
                except Exception as exc:  # any backend failure becomes our one error type
                    raise DecodeError(path, self.name, exception_reason(exc)) from exc
                if buf is None:
                    frame = _check_frame(path, self.name, frame, None)
                    buf = np.empty((chunk, *frame.shape), dtype=np.uint8)
                else:
                    _check_frame(path, self.name, frame, buf.shape[1:])
                buf[n] = frame
                n += 1
                total += 1
                if n == chunk:
                    yield buf
                    # A fresh buffer per chunk: the consumer may keep the one it was given.
                    buf = np.empty_like(buf)
                    n = 0
        finally:
            frames.close()  # release the backend's file handle even if the consumer stops early
        if total == 0:
            raise DecodeError(path, self.name, "no frames decoded")
        if n:
            # Copy the partial tail so it does not pin a full chunk-sized buffer.
            yield buf[:n].copy()

    def read(self, path: str | Path, *, size: SizeArg = None, stride: int = 1) -> np.ndarray:
        """All kept frames as one uint8 array (T, H, W, 3)."""
        chunks = list(self.iter_chunks(path, size=size, stride=stride, chunk=256))
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def count_frames(self, path: str | Path) -> int:
        """The number of frames the file really decodes to (not the container's claim)."""
        return sum(len(c) for c in self.iter_chunks(path, chunk=64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_frame(path: str, backend: str, frame: object, shape: tuple[int, ...] | None) -> np.ndarray:
    # Guards against plug-in readers returning the wrong thing and against streams whose resolution
    # changes mid-way, which would otherwise fail later with an unhelpful numpy broadcasting error.
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise DecodeError(path, backend, f"reader produced {desc}, expected uint8 (H, W, 3)")
    if shape is not None and frame.shape != tuple(shape):
        raise DecodeError(path, backend, f"frame shape changed mid-stream from {tuple(shape)} to {frame.shape}")
    return frame


# ---------------------------------------------------------------------------------------------------------
# verification


def require_regular_file(path: str, backend: str) -> None:
    """Raise :class:`DecodeError` unless ``path`` (after symlinks) is a regular file.

    FFmpeg opens anything it is given: a FIFO blocks it forever, a device node is read as a stream.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DecodeError(path, backend, exception_reason(exc)) from exc
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else (
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")
        raise DecodeError(path, backend, f"not a regular file ({kind}); only video files are decoded")


def timestamp_problem(times: Sequence[float | None], rate: float | None) -> str | None:
    """What is wrong with a decoder's presentation timestamps (seconds, one per decoded frame), or None.

    They must be present and finite, strictly increasing (each frame shown once, in order), and spaced as
    the stream's frame rate says: the median interval within a factor of 2 of ``1 / rate`` (variable
    frame rate videos hold some frames longer, but their typical interval is still the nominal one).
    """
    known = [t for t in times if t is not None]
    if len(known) < len(times):
        return f"{len(times) - len(known)} of {len(times)} frames have no timestamp"
    t = np.asarray(known, dtype=np.float64)
    if not np.isfinite(t).all():
        return "non-finite frame timestamps"
    if len(t) < 2:
        return None
    gaps = np.diff(t)
    if (gaps <= 0).any():
        i = int(np.argmax(gaps <= 0)) + 1
        what = "repeats" if gaps[i - 1] == 0 else "goes backwards"
        return (f"frame timestamps are not increasing: frame {i}'s timestamp {t[i]:.6g} s {what} "
                f"(previous {t[i - 1]:.6g} s)")
    if rate and rate > 0:
        ratio = float(np.median(gaps)) * rate
        if not 0.5 <= ratio <= 2.0:
            return (f"frame timestamps are {float(np.median(gaps)):.4g} s apart but the stream says "
                    f"{rate:.4g} frames/s")
    return None


def _thumb(frame: np.ndarray, grid: int = 8) -> np.ndarray:
    """Mean colour of each cell of a grid x grid partition of an (H, W, 3) frame (the last H % grid rows and
    W % grid columns left out): insensitive to the interpolation and colour-conversion details in which two
    decoders may differ."""
    h, w = frame.shape[0] // grid, frame.shape[1] // grid
    if h == 0 or w == 0:  # smaller than the grid: compare the frames as they are
        return frame.astype(np.float32)
    c = frame.shape[2]
    rows = frame[: h * grid, : w * grid].reshape(grid, h, w * grid, c).sum(axis=1, dtype=np.uint32)  # (gy, W', C)
    cells = rows.reshape(grid, grid, w, c).sum(axis=2)  # (gy, gx, C)
    return cells.astype(np.float32) / (h * w)


# Frames of decord compared with PyAV's at the start of each video, and how far apart (mean absolute
# difference of 8x8 cell means, in 0..255 levels) two decodings of the same frame may be. The window spans
# two GOPs of a typical MPEG-2 stream (12 frames), the shift seen in practice; the tolerance is well above
# what 10-bit dithering differences give (about 1) and well below what a shift in a moving video gives.
ANCHOR_FRAMES = 25
ANCHOR_TOLERANCE = 6.0


def frames_mismatch(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> str | None:
    """Why the frames ``got`` are not the frames ``want`` (same shapes, close cell means), or None."""
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a.shape != b.shape:
            return f"frame {i} is {a.shape[1]}x{a.shape[0]}, PyAV's is {b.shape[1]}x{b.shape[0]} (rotation?)"
        diff = float(np.abs(_thumb(a) - _thumb(b)).mean())
        if diff > ANCHOR_TOLERANCE:
            return f"frame {i} differs from PyAV's frame {i} (mean difference {diff:.1f} levels): frames shifted"
    if len(got) != len(want):
        return f"{len(got)} frames where PyAV decodes {len(want)}"
    return None


# ---------------------------------------------------------------------------------------------------------
# backends


class DecordReader(VideoReader):
    """decord backend: resizes inside the decoder, skips colour conversion for strided-out frames.

    With ``verify`` (the default) a video is refused (:class:`DecodeError`) unless decord's timestamp table
    passes :func:`timestamp_problem` and its first ``ANCHOR_FRAMES`` kept frames match PyAV's. On MPEG
    program streams with B-frames decord's table holds missing timestamps (and its random access returns
    wrong frames); on an MPEG transport stream it started 12 frames late and repeated the last frame to keep
    the count, with a perfect table — hence the comparison. ``verify=False`` is for measuring decord itself.
    """

    name = "decord"

    def __init__(self, verify: bool = True):
        self.verify = verify

    def _open(self, path: str, hw: tuple[int, int] | None):
        import decord

        require_regular_file(path, self.name)
        try:
            if hw is None:
                return decord.VideoReader(path)
            return decord.VideoReader(path, width=hw[1], height=hw[0])
        except Exception as exc:
            raise DecodeError(path, self.name, exception_reason(exc)) from exc

    def _check_timestamps(self, path: str, vr) -> None:
        try:
            n = len(vr)
            times = vr.get_frame_timestamp(list(range(n)))[:, 0].tolist() if n else []
            rate = float(vr.get_avg_fps())
        except Exception as exc:
            raise DecodeError(path, self.name, f"no frame timestamps: {exception_reason(exc)}") from exc
        problem = timestamp_problem(times, rate)
        if problem:
            raise DecodeError(path, self.name, f"frames cannot be verified: {problem}")

    def iter_frames(self, path: str, *, size: SizeArg = None, stride: int = 1) -> Iterator[np.ndarray]:
        frames = self._iter_unverified(path, size=size, stride=stride)
        if not self.verify:
            yield from frames
            return
        # Compare the start of the video with PyAV before yielding anything, so that a refusal happens
        # before any frame was delivered and the caller's fallback starts cleanly.
        head: list[np.ndarray] = []
        for frame in frames:
            head.append(frame)
            if len(head) == ANCHOR_FRAMES:
                break
        if head:
            reference = PyAVReader(verify=False).iter_frames(path, size=size, stride=stride)
            try:
                want = [f for _, f in zip(range(ANCHOR_FRAMES), reference, strict=False)]
            except Exception as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else exception_reason(exc)
                raise DecodeError(path, self.name, f"frames cannot be verified: PyAV cannot decode them ({reason})") \
                    from exc
            finally:
                reference.close()
            problem = frames_mismatch(head, want)
            if problem:
                raise DecodeError(path, self.name, f"frames fail verification against PyAV: {problem}")
        yield from head
        yield from frames

    def _iter_unverified(self, path: str, *, size: SizeArg, stride: int) -> Iterator[np.ndarray]:
        size = check_size(size)
        hw = size if isinstance(size, tuple) else None
        vr = self._open(path, hw)
        if self.verify:
            self._check_timestamps(path, vr)
        if isinstance(size, int):
            # decord only resizes to an explicit (W, H) fixed at open time and has no public way to ask
            # the native size, so decode the first frame natively, then reopen at the derived size.
            try:
                first = vr.next().asnumpy()
            except StopIteration:
                return  # no frames: iter_chunks reports it
            del vr
            wanted = target_size(first.shape[:2], size)
            vr = self._open(path, wanted if wanted != first.shape[:2] else None)
        while True:
            try:
                frame = vr.next()
            except StopIteration:
                return
            yield frame.asnumpy()
            if stride > 1:
                # Skipped frames are still decoded (later frames depend on them) but not converted or
                # resized. skip_frames is silent past the end; the next next() raises StopIteration.
                vr.skip_frames(stride - 1)

    def count_frames(self, path: str | Path) -> int:
        if self.verify:  # the count of verified frames: decord pads shifted streams to the announced count
            return super().count_frames(path)
        # decord's skip_frames cannot be used for counting (it does not report the end of the stream),
        # so frames are pulled one by one at native size.
        path = str(path)
        vr = self._open(path, None)
        n = 0
        try:
            while True:
                try:
                    vr.next()
                except StopIteration:
                    break
                n += 1
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(path, self.name, exception_reason(exc)) from exc
        if n == 0:
            raise DecodeError(path, self.name, "no frames decoded")
        return n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(verify={self.verify})"


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) backend, the default: decoded every container of bench/decoders.py correctly.

    Frames are turned upright by the display matrix's rotation (``frame.rotation``), and with ``verify``
    (the default) the decoded frames' timestamps must pass :func:`timestamp_problem`; order is checked as
    frames arrive, spacing when the stream ends.
    """

    name = "pyav"

    def __init__(self, verify: bool = True):
        self.verify = verify

    def _open(self, path: str):
        import av

        require_regular_file(path, self.name)
        try:
            container = av.open(path, metadata_errors="ignore")
        except Exception as exc:
            raise DecodeError(path, self.name, exception_reason(exc)) from exc
        if not container.streams.video:
            container.close()
            raise DecodeError(path, self.name, "no video stream")
        return container

    def iter_frames(self, path: str, *, size: SizeArg = None, stride: int = 1) -> Iterator[np.ndarray]:
        size = check_size(size)
        container = self._open(path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame+slice threading; same output, faster on long videos
            hw: tuple[int, int] | None = None
            turns = 0
            times: list[float | None] = []
            for i, frame in enumerate(container.decode(stream)):
                if self.verify:
                    t = frame.time
                    if t is not None and times and times[-1] is not None and t <= times[-1]:
                        what = "repeats" if t == times[-1] else "goes backwards"
                        raise DecodeError(path, self.name, f"frames fail verification: frame {i}'s timestamp "
                                                           f"{t:.6g} s {what} (previous {times[-1]:.6g} s)")
                    times.append(t)
                if i % stride:
                    continue  # decoded (unavoidable) but never converted to RGB
                if hw is None:
                    # Fix the output size and orientation from the first frame so a mid-stream resolution
                    # change still yields uniformly shaped frames.
                    turns = _quarter_turns(frame)
                    upright = (frame.width, frame.height) if turns % 2 else (frame.height, frame.width)
                    hw = target_size(upright, size)
                    if turns % 2:
                        hw = (hw[1], hw[0])  # resize in the coded orientation, then turn
                rgb = frame.to_ndarray(format="rgb24", width=hw[1], height=hw[0])
                yield np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            if self.verify and times and any(t is not None for t in times):
                rate = stream.average_rate or stream.guessed_rate
                problem = timestamp_problem(times, float(rate) if rate else None)
                if problem:
                    raise DecodeError(path, self.name, f"frames fail verification: {problem}")
        finally:
            container.close()

    def count_frames(self, path: str | Path) -> int:
        if self.verify:
            return super().count_frames(path)
        path = str(path)
        container = self._open(path)
        n = 0
        try:
            for _ in container.decode(container.streams.video[0]):
                n += 1
        except Exception as exc:
            raise DecodeError(path, self.name, exception_reason(exc)) from exc
        finally:
            container.close()
        if n == 0:
            raise DecodeError(path, self.name, "no frames decoded")
        return n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(verify={self.verify})"


def _quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns (0..3) that make a PyAV frame upright, from its display matrix.
    Rotations that are not a multiple of 90 degrees are rare enough (none from phones) to be left alone."""
    degrees = getattr(frame, "rotation", 0) or 0  # PyAV >= 14; older versions: no rotation support
    turns, rest = divmod(round(degrees), 90)
    return int(turns) % 4 if rest == 0 else 0


def announced_frames(path: str | Path) -> int | None:
    """The frame count the container claims for its first video stream, or None when it does not say.

    Used to flag truncated files (decoded count < announced count). Matroska, for instance, stores no
    count. Raises :class:`DecodeError` when the file cannot be opened. Runs in the calling process: a
    path that makes FFmpeg block (a FIFO) blocks here too; :class:`SafeDecoder` reports this number from
    its worker instead.
    """
    container = PyAVReader()._open(str(path))
    try:
        frames = int(container.streams.video[0].frames or 0)
    finally:
        container.close()
    return frames if frames > 0 else None


# A coded frame plus its index entries takes at least this many bytes in any container (an H.264 skipped
# frame is a few bytes, an MP4 sample-size entry 4): a count beyond file size / this is a corrupt header.
MIN_BYTES_PER_FRAME = 4


def estimated_frames(path: str | Path) -> int | None:
    """A plausible frame count for sizing a cache, from the container's metadata only (no decoding).

    The announced count is used when it agrees with the container's duration x frame rate (within 1.5x)
    and fits in the file's size; otherwise duration x rate when that fits in the file; otherwise None. A
    header claiming 2e9 frames in a 50 kB file is thus ignored here: such a video is decoded and judged
    on its own. Raises :class:`DecodeError` when the file cannot be opened.
    """
    path = str(path)
    container = PyAVReader()._open(path)
    try:
        stream = container.streams.video[0]
        announced = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        seconds = None
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            seconds = container.duration / 1_000_000  # AV_TIME_BASE
    finally:
        container.close()
    limit = os.path.getsize(path) / MIN_BYTES_PER_FRAME
    from_duration = seconds * float(rate) if seconds and rate and seconds > 0 else None
    if from_duration is not None and not 0 < from_duration <= limit:
        from_duration = None
    if 0 < announced <= limit and (from_duration is None or announced <= 1.5 * from_duration + 2):
        return announced
    return int(round(from_duration)) if from_duration else None


# ---------------------------------------------------------------------------------------------------------
# registry

_BUILTIN: dict[str, type[VideoReader]] = {"decord": DecordReader, "pyav": PyAVReader}


def get_reader(name: str) -> VideoReader:
    """A reader by name: ``"decord"``, ``"pyav"``, or ``"package.module:ClassName"`` for a user's own
    :class:`VideoReader` subclass (instantiated without arguments). Unknown names raise UserError."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    known = ", ".join(BACKENDS)
    hint = f"use one of {known}, or 'package.module:ClassName' for your own VideoReader subclass"
    if not isinstance(name, str) or ":" not in name:
        raise UserError(f"unknown video backend {name!r}", hint=hint)
    module_name, _, class_name = name.partition(":")
    if not module_name or not class_name:
        raise UserError(f"malformed video backend {name!r}", hint=hint)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"cannot import module {module_name!r} for video backend {name!r}: {exc}", hint=hint
        ) from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, VideoReader)):
        raise UserError(
            f"unknown video backend {name!r}: {module_name} has no VideoReader subclass {class_name!r}",
            hint=hint,
        )
    try:
        reader = cls()
    except Exception as exc:
        raise UserError(f"cannot create video backend {name!r}: {exception_reason(exc)}") from exc
    if not getattr(reader, "name", None) or reader.name == VideoReader.name:
        # Results and errors are labelled with the reader's name; default to what the user typed.
        reader.name = name
    return reader
