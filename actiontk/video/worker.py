"""Decoding in a killable worker process, with a per-video timeout and a fallback backend.

Some videos make a decoder hang (a FIFO or a stalled network mount blocks in ``open``) or crash the whole
process (a segfault in native code). Neither can be interrupted from Python inside the process, so
:class:`SafeDecoder` runs the reader in one persistent child process and talks to it over a pipe:

* the parent waits for each message with a deadline; when the video's time budget is spent it kills the
  worker, records a :class:`DecodeTimeout` and moves on to the fallback backend;
* a worker that dies (negative exit code = killed by a signal) becomes a :class:`DecodeError`
  ``decoder process died (signal N)``, and the next call starts a fresh worker;
* the worker is reused across videos (starting a Python interpreter per video would dominate the cost
  of small clips) and started lazily on first use.

The ``spawn`` start method is used because forking a parent that runs torch (or any other threaded
library) can deadlock the child on locks held by threads that do not exist in it. A consequence, as for
any spawn-based multiprocessing: a script using SafeDecoder at its top level must guard its entry point
with ``if __name__ == "__main__":``. The child inherits the parent's ``sys.path``, so plug-in readers
(``"package.module:ClassName"``) importable in the parent are importable in the worker.

Frames cross the pipe as a small pickled header (shape, dtype) followed by the raw buffer
(``send_bytes``): pickling large arrays would copy them several times over.

The worker sends its fd 2 to ``/dev/null`` because FFmpeg writes ``[mpeg4 @ 0x...]`` noise there that
would otherwise interleave with progress bars; set ``ACTIONTK_DECODER_STDERR=1`` to keep it when
debugging a backend.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.errors import UserError
from actiontk.video.readers import (
    DecodeError,
    DecodeTimeout,
    SizeArg,
    VideoReader,
    announced_frames,
    check_chunk,
    check_size,
    check_stride,
    exception_reason,
    get_reader,
)

# How long a fresh worker may take to import numpy and the readers and say it is ready. Generous because
# a loaded machine (several extraction jobs) can be slow to start interpreters, and this is not the
# per-video timeout: a worker that never starts is a broken environment, not a bad video.
_START_TIMEOUT = 60.0
# How long close() waits for a worker to exit on request before killing it.
_EXIT_GRACE = 2.0


@dataclass
class DecodeResult:
    """What :meth:`SafeDecoder.decode` returns.

    ``frames``: uint8 (T, H, W, 3); ``backend``: the backend that produced them; ``failures``: the
    ``(backend, reason)`` of attempts that failed before it (empty when the primary succeeded);
    ``announced_frames``: the container's own frame count as read by the worker (None when unknown), to
    compare with the decoded count when flagging truncated files (only meaningful with ``stride=1``).
    """

    frames: np.ndarray
    backend: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    announced_frames: int | None = None


# ---------------------------------------------------------------------------------------------------------
# the worker side


def _silence_stderr() -> None:
    if os.environ.get("ACTIONTK_DECODER_STDERR"):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def _worker_main(conn: Any) -> None:
    """Entry point of the worker process: serve decode requests until told to stop or the parent goes."""
    _silence_stderr()
    # Ctrl-C reaches the whole foreground process group; the parent decides what to do (it kills us),
    # so the worker must not die on its own with a half-sent chunk.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    readers: dict[str, VideoReader] = {}
    try:
        conn.send(("ready", os.getpid()))
        while True:
            request = conn.recv()
            if request is None:
                return
            _, backend, path, size, stride, chunk = request
            try:
                if backend not in readers:
                    readers[backend] = get_reader(backend)
                n = 0
                for arr in readers[backend].iter_chunks(path, size=size, stride=stride, chunk=chunk):
                    # A plug-in may override iter_chunks and bypass the base class checks.
                    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 4 or (
                        arr.shape[-1] != 3
                    ):
                        desc = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                        raise DecodeError(path, backend, f"reader produced {desc}, expected uint8 (n, H, W, 3)")
                    if len(arr) == 0:
                        continue
                    arr = np.ascontiguousarray(arr)
                    conn.send(("chunk", arr.shape, arr.dtype.str))
                    # A 1-D view: Connection slices multi-dimensional buffers along their first axis.
                    conn.send_bytes(arr.reshape(-1))
                    n += len(arr)
                if n == 0:
                    raise DecodeError(path, backend, "no frames decoded")
                conn.send(("done", n, _announced_or_none(path)))
            except DecodeError as exc:
                conn.send(("error", exc.reason))
            except UserError as exc:
                conn.send(("error", str(exc)))
            except Exception as exc:  # a plug-in reader's bug must not take the worker down
                conn.send(("error", exception_reason(exc)))
    except (EOFError, OSError):
        return  # the parent closed the pipe or went away: nothing left to serve


def _announced_or_none(path: str) -> int | None:
    try:
        return announced_frames(path)
    except Exception:
        return None  # e.g. a plug-in reader's input that FFmpeg cannot open: metadata just unknown


# ---------------------------------------------------------------------------------------------------------
# the parent side


class SafeDecoder:
    """Decode videos in a killable worker process, falling back to a second backend on failure.

    ``backend`` and ``fallback`` are reader names as accepted by :func:`get_reader` (``fallback=None``
    disables the retry). ``timeout`` is in seconds **per video and per backend attempt**: the time the
    parent spends waiting for the worker while one backend decodes one whole video (not per frame or per
    chunk); time a consumer of :meth:`iter_chunks` spends between chunks is not counted. So a video that
    hangs both backends costs about ``2 * timeout``. ``timeout=None`` waits forever.

    One worker process is owned per instance and reused; it is started on first use and restarted after it
    is killed (timeout) or dies (crash). Use as a context manager or call :meth:`close`. Not thread-safe,
    and one decode at a time: an :meth:`iter_chunks` generator must be finished or closed before the next
    call.
    """

    def __init__(self, backend: str = "pyav", fallback: str | None = "decord", timeout: float | None = 120.0):
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
            timeout = float(timeout)
        # Resolve names now so a typo is a UserError at construction, not a failure on every video.
        get_reader(backend)
        if fallback is not None:
            get_reader(fallback)
        self.backend = backend
        # Retrying with the same backend would only repeat the failure (or the hang) at double the cost.
        self.fallback = fallback if fallback != backend else None
        self.timeout = timeout
        #: after an :meth:`iter_chunks` generator is exhausted: which backend produced the frames, and the
        #: attempts that failed before it.
        self.last_backend: str | None = None
        self.last_failures: list[tuple[str, str]] = []
        self._proc: Any = None
        self._conn: Any = None
        self._owner_pid = os.getpid()
        self._busy = False

    # -- public ------------------------------------------------------------------------------------------

    def decode(self, path: str | Path, *, size: SizeArg = None, stride: int = 1) -> DecodeResult:
        """Decode a whole video; on failure of the primary backend (error, timeout or crash) retry with
        the fallback. Raises :class:`DecodeError` (:class:`DecodeTimeout` when every attempt timed out)
        whose reason lists every backend's reason."""
        size, stride, path = check_size(size), check_stride(stride), str(path)
        errors: list[DecodeError] = []
        for backend in self._backends():
            chunks: list[np.ndarray] = []
            try:
                with contextlib.closing(self._attempt(backend, path, size, stride, 32)) as attempt:
                    while True:
                        try:
                            chunks.append(next(attempt))
                        except StopIteration as stop:
                            announced = stop.value
                            break
            except DecodeError as exc:
                errors.append(exc)
                continue
            frames = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            return DecodeResult(frames, backend, _failures(errors), announced)
        raise _combined(path, errors)

    def iter_chunks(
        self, path: str | Path, *, size: SizeArg = None, stride: int = 1, chunk: int = 32
    ) -> Iterator[np.ndarray]:
        """Stream a video as uint8 chunks ``(n, H, W, 3)``, ``n <= chunk``, as the worker decodes them.

        Fallback rule: if the primary backend fails before yielding anything, the fallback decodes the
        video from frame 0 and the caller never sees the failure (it is recorded in
        :attr:`last_failures`). If it fails after chunks were already yielded, the caller holds partial
        data that a restart could not splice onto, so :class:`DecodeError` is raised instead (the reason
        says how many frames were delivered). Stopping early (``break``/``close()``) kills the worker
        mid-video; the next call starts a fresh one.
        """
        size, stride, chunk, path = check_size(size), check_stride(stride), check_chunk(chunk), str(path)
        errors: list[DecodeError] = []
        self.last_backend = None
        self.last_failures = []
        for backend in self._backends():
            delivered = 0
            try:
                with contextlib.closing(self._attempt(backend, path, size, stride, chunk)) as attempt:
                    for arr in attempt:
                        delivered += len(arr)
                        yield arr
            except DecodeError as exc:
                if delivered:
                    errors.append(
                        type(exc)(path, backend, f"{exc.reason} (after {delivered} frames were delivered)")
                    )
                    raise _combined(path, errors) from exc
                errors.append(exc)
                self.last_failures = _failures(errors)
                continue
            self.last_backend = backend
            self.last_failures = _failures(errors)
            return
        raise _combined(path, errors)

    def close(self) -> None:
        """Stop the worker (politely, then by force). The decoder can still be used afterwards: the next
        call starts a new worker."""
        proc, conn = self._proc, self._conn
        if proc is None or self._owner_pid != os.getpid():
            self._forget_worker()
            return
        with contextlib.suppress(OSError, ValueError):  # already dead or closed: the kill below settles it
            conn.send(None)
        proc.join(_EXIT_GRACE)
        self._kill_worker()

    def __enter__(self) -> SafeDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort for decoders dropped without close(): do not leave a process per forgotten instance
        # in a long-running program. Never raise from a finaliser.
        with contextlib.suppress(Exception):
            self._kill_worker()

    def __repr__(self) -> str:
        return f"SafeDecoder(backend={self.backend!r}, fallback={self.fallback!r}, timeout={self.timeout!r})"

    # -- internals ---------------------------------------------------------------------------------------

    def _backends(self) -> list[str]:
        return [self.backend] if self.fallback is None else [self.backend, self.fallback]

    def _attempt(
        self, backend: str, path: str, size: SizeArg, stride: int, chunk: int
    ) -> Iterator[np.ndarray]:
        """One backend's try at one video: yields chunks, returns the announced frame count, raises
        DecodeError (DecodeTimeout on expiry). Kills the worker unless the attempt ended cleanly, since
        its state mid-video (half-sent chunk, still decoding) cannot be resynchronised."""
        if self._busy:
            raise RuntimeError(
                "SafeDecoder is already decoding a video (an iter_chunks generator is still open); "
                "exhaust or close it before starting another"
            )
        self._busy = True
        clean = False
        try:
            self._ensure_worker(path, backend)
            request = ("decode", backend, path, size, stride, chunk)
            try:
                self._conn.send(request)
            except OSError:
                # The idle worker died between videos (OOM killer, ...): one fresh start, then give up.
                self._kill_worker()
                self._ensure_worker(path, backend)
                self._conn.send(request)
            waited = [0.0]
            while True:
                message = self._receive(path, backend, waited)
                kind = message[0]
                if kind == "chunk":
                    arr = np.empty(message[1], dtype=np.dtype(message[2]))
                    self._receive_into(path, backend, arr)
                    yield arr
                elif kind == "done":
                    clean = True
                    return message[2]
                elif kind == "error":
                    clean = True  # the worker caught the failure and is ready for the next video
                    raise DecodeError(path, backend, message[1])
                else:
                    raise DecodeError(path, backend, f"unexpected message from decoder process: {kind!r}")
        finally:
            self._busy = False
            if not clean:
                self._kill_worker()

    def _receive(self, path: str, backend: str, waited: list[float]) -> Any:
        conn = self._conn
        if self.timeout is None:
            ready = conn.poll(None)
        else:
            start = time.monotonic()
            ready = conn.poll(max(0.0, self.timeout - waited[0]))
            waited[0] += time.monotonic() - start
        if not ready:
            self._kill_worker()
            raise DecodeTimeout(path, backend, f"timed out after {self.timeout:g} s (decoder process killed)")
        try:
            return conn.recv()
        except (EOFError, OSError):
            raise self._death(path, backend) from None

    def _receive_into(self, path: str, backend: str, arr: np.ndarray) -> None:
        # The buffer follows its header immediately, so no deadline here; a death mid-send shows as EOF.
        try:
            self._conn.recv_bytes_into(arr.reshape(-1))
        except (EOFError, OSError):
            raise self._death(path, backend) from None

    def _death(self, path: str, backend: str) -> DecodeError:
        proc = self._proc
        proc.join(5.0)
        if proc.exitcode is None:  # closed its pipe yet still running: not trustworthy, end it
            proc.kill()
            proc.join(5.0)
        code = proc.exitcode
        self._kill_worker()
        if code is not None and code < 0:
            return DecodeError(path, backend, f"decoder process died (signal {-code})")
        return DecodeError(path, backend, f"decoder process died (exit code {code})")

    def _ensure_worker(self, path: str, backend: str) -> None:
        if self._owner_pid != os.getpid():
            # We are a forked copy of the owner: that worker is not our child and its pipe is shared with
            # the owner, so leave both alone and start our own.
            self._forget_worker()
            self._owner_pid = os.getpid()
        if self._proc is not None:
            if self._proc.is_alive():
                return
            self._kill_worker()
        if not threading.main_thread().is_alive():
            # The program is exiting (an interrupt, say) while a decoding thread carries on: a worker spawned now
            # would lose its parent mid-start and print a traceback of its own under the caller's last words.
            raise DecodeError(path, backend, "decoder process not started: the program is exiting")
        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_main, args=(child_conn,), name="actiontk-decoder", daemon=True)
        proc.start()
        # Drop our copy of the child's end, or a dead worker would never show up as EOF on our end.
        child_conn.close()
        self._proc, self._conn = proc, parent_conn
        if not parent_conn.poll(_START_TIMEOUT):
            self._kill_worker()
            raise DecodeError(path, backend, f"decoder process did not start within {_START_TIMEOUT:g} s")
        try:
            parent_conn.recv()
        except (EOFError, OSError):
            raise self._death(path, backend) from None

    def _kill_worker(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join(5.0)
            with contextlib.suppress(ValueError):  # still running after SIGKILL + 5 s: leave it be
                proc.close()
        if conn is not None:
            conn.close()

    def _forget_worker(self) -> None:
        self._proc = self._conn = None


def _failures(errors: list[DecodeError]) -> list[tuple[str, str]]:
    return [(e.backend, e.reason) for e in errors]


def _combined(path: str, errors: list[DecodeError]) -> DecodeError:
    """One error for a video every backend failed on; DecodeTimeout only if every attempt timed out."""
    cls = DecodeTimeout if all(isinstance(e, DecodeTimeout) for e in errors) else DecodeError
    if len(errors) == 1:
        return cls(path, errors[0].backend, errors[0].reason)
    backends = "+".join(e.backend for e in errors)
    return cls(path, backends, "; ".join(f"{e.backend}: {e.reason}" for e in errors))
