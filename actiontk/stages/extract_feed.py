"""The data path of ``actiontk extract``: decoder threads stream frames to the main thread, which batches them
through the backbone (:class:`~actiontk.stages.extract_batch.Batcher`) and writes each video's maps to the
feature store.

The protocol between a decoder thread and the main loop is a stream of :class:`Msg` per video: ``start``, then
``chunk`` messages (uint8 frames, (n, H, W, 3)), then ``end`` (the backend that decoded it) or ``fail`` (why);
``restart`` drops what was sent of a video when its primary decoder failed mid-stream and the fallback starts
it over. Each thread owns a :class:`~actiontk.video.SafeDecoder` worker process (timeout, fallback backend).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actiontk.cache import features as store
from actiontk.datasets import Sample
from actiontk.errors import UserError, storage_problem
from actiontk.stages.registry import EXTRACT

if TYPE_CHECKING:
    from actiontk.stages.extract import ExtractConfig
    from actiontk.stages.extract_batch import Batcher


@dataclass
class Msg:
    kind: str  # start | chunk | end | fail | restart
    vid: int
    data: Any = None


def _decode_thread(samples: list[Sample], next_index: Callable[[], int | None], out: queue.Queue,
                   cfg: ExtractConfig, stop: threading.Event, image: bool) -> None:
    """Decode the videos handed out by ``next_index`` and stream their frames to ``out``."""
    from actiontk.video import SafeDecoder

    fallback = decoder_fallback(cfg.backend)
    decoder = None if image else SafeDecoder(backend=cfg.backend, fallback=fallback, timeout=cfg.timeout)

    def put(msg: Msg) -> bool:
        """Blocking put that gives up when the main loop has stopped (so this thread can exit)."""
        while not stop.is_set():
            try:
                out.put(msg, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not stop.is_set() and (i := next_index()) is not None:
            if not put(Msg("start", i)):
                return
            try:
                _decode_one(samples[i].path, i, put, cfg, decoder, fallback, image)
            except Exception as e:  # a bug: fail this video rather than lose it silently, go on with the next
                put(Msg("fail", i, f"internal error while decoding: {type(e).__name__}: {e}"))
    finally:
        if decoder is not None:
            decoder.close()


def _decode_one(path: Path, i: int, put: Callable[[Msg], bool], cfg: ExtractConfig, decoder, fallback: str | None,
                image: bool) -> None:
    from actiontk.video import DecodeError, SafeDecoder

    if image:
        try:
            frames = load_image(path)
        except (OSError, ValueError) as e:
            put(Msg("fail", i, f"cannot read image: {e}"))
            return
        put(Msg("chunk", i, frames)) and put(Msg("end", i, {"backend": "pil"}))
        return
    delivered = 0
    try:
        for chunk in decoder.iter_chunks(path, stride=cfg.frame_stride, chunk=16):
            delivered += len(chunk)
            if not put(Msg("chunk", i, chunk)):
                return
        put(Msg("end", i, {"backend": decoder.last_backend,
                            "fallback_after": [list(f) for f in decoder.last_failures]}))
        return
    except DecodeError as e:
        if not (delivered and fallback):
            put(Msg("fail", i, e.reason))
            return
        first = e
    # the primary failed mid-stream, after frames were delivered: start the video over with the fallback alone
    put(Msg("restart", i))
    try:
        with SafeDecoder(backend=fallback, fallback=None, timeout=cfg.timeout) as second:
            for chunk in second.iter_chunks(path, stride=cfg.frame_stride, chunk=16):
                if not put(Msg("chunk", i, chunk)):
                    return
        put(Msg("end", i, {"backend": fallback, "fallback_after": [[cfg.backend, first.reason]]}))
    except DecodeError as e2:
        put(Msg("fail", i, f"{cfg.backend}: {first.reason}; {fallback}: {e2.reason}"))


def load_image(path: Path) -> np.ndarray:
    from actiontk.data.images import load_rgb

    return np.asarray(load_rgb(path))[None]  # (1, H, W, 3), upright (EXIF orientation applied)


def decoder_fallback(backend: str) -> str:
    """The backend extract retries a video with when ``backend`` fails on it (or fails verification)."""
    from actiontk.video.readers import other_backend

    return other_backend(backend)


def feed(samples: list[Sample], cfg: ExtractConfig, batcher: Batcher, writer: store.ShardWriter,
         failed: dict[str, str], strict: bool, image: bool, console, log) -> int:
    """Extract ``samples`` through ``batcher`` into ``writer`` with ``cfg.workers`` decoder threads; failures go
    to ``failed`` (rel -> reason; ``strict``: the first one stops the run). Returns the videos stored."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out: queue.Queue = queue.Queue(maxsize=max(8, 4 * cfg.workers))
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(len(samples)))

    def next_index() -> int | None:
        with lock:
            return next(counter, None)

    n_threads = min(cfg.workers, len(samples))
    threads = [threading.Thread(target=_decode_thread, args=(samples, next_index, out, cfg, stop, image),
                                daemon=True, name=f"decode-{k}") for k in range(n_threads)]
    for t in threads:
        t.start()

    slots: dict[int, store.VideoWriter] = {}
    ended: dict[int, dict] = {}
    extracted = 0
    t_start = time.perf_counter()

    def finish_ready() -> None:
        nonlocal extracted
        for vid in [v for v in ended if not batcher.has_pending(v)]:
            meta = ended.pop(vid)
            slot = slots.pop(vid)
            if slot.frames == 0:  # every chunk was empty: nothing decoded
                slot.fail("no frames decoded", fingerprint=store.fingerprint(samples[vid].path))
                failed[samples[vid].rel] = "no frames decoded"
                continue
            slot.finish(**meta)
            extracted += 1
            bar.advance(task)

    def consume(flush: bool) -> None:
        for vid, maps in batcher.run(flush=flush):
            slot = slots.get(vid)
            if slot is not None:
                slot.append(maps)
        elapsed = max(time.perf_counter() - t_start, 1e-9)
        bar.update(task, fps=f"{batcher.frames_done / elapsed:.1f}")
        finish_ready()

    progress = Progress(TextColumn(EXTRACT), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]} fr/s"),
                        TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress as bar:
            task = bar.add_task(EXTRACT, total=len(samples), fps="-")
            alive = len(threads)
            while alive or batcher.pending_frames:
                try:
                    msg = out.get(timeout=0.2)
                except queue.Empty:
                    alive = sum(t.is_alive() for t in threads)
                    if not alive and out.empty():
                        consume(flush=True)
                        if not batcher.pending_frames and not ended:
                            break
                    elif batcher.pending_frames and out.empty():
                        consume(flush=True)  # decoders are slow: don't let the model idle on a partial batch
                    continue
                s = samples[msg.vid]
                fp = store.fingerprint(s.path)
                if msg.kind == "start":
                    slots[msg.vid] = writer.start(s.rel, fingerprint=fp, label=s.label, class_name=s.class_name,
                                                  frame_stride=cfg.frame_stride)
                elif msg.kind == "chunk":
                    batcher.add(msg.vid, msg.data)
                    if batcher.ready():
                        consume(flush=False)
                elif msg.kind == "restart":
                    batcher.drop(msg.vid)
                    slots[msg.vid].discard()
                    slots[msg.vid] = writer.start(s.rel, fingerprint=fp, label=s.label, class_name=s.class_name,
                                                  frame_stride=cfg.frame_stride)
                elif msg.kind == "end":
                    batcher.end(msg.vid)  # a clip batcher queues a short video's one, padded clip
                    ended[msg.vid] = msg.data
                    finish_ready()
                elif msg.kind == "fail":
                    batcher.drop(msg.vid)
                    slots.pop(msg.vid).fail(msg.data, fingerprint=fp)
                    failed[s.rel] = msg.data
                    bar.console.print(f"[yellow]failed[/yellow]: {_escape(s.rel)}: {_escape(msg.data)}")
                    bar.advance(task)
                    if strict:
                        raise UserError(f"cannot decode {s.path}: {msg.data}",
                                        "finished shards are kept; drop --strict to record and skip failures")
            consume(flush=True)
    except (OSError, RuntimeError) as e:
        if (disk := storage_problem(e)) is not None:  # full disk, file-size limit, permission denied
            raise UserError(disk.replace("finished work is kept", "finished shards are intact")) from None
        raise
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    return extracted


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
