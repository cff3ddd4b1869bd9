"""``actiontk extract``: per-frame CNN feature maps of a dataset's videos (or images) into the feature cache.

Data flow on one process::

    decode threads (each owns a SafeDecoder worker process: timeout, fallback to the other backend)
        │ uint8 frame chunks, bounded queue
        ▼
    main thread: batches frames across videos → device → weights' transform → backbone (AMP,
    channels_last on CUDA) → optional grid pooling → float16 → ShardWriter (all HDF5 I/O here)

The run is keyed by the backbone identity (weights included), the preprocessing, the frame stride, the grid,
the precision, the decoders (primary and fallback: they do not give bit-identical frames on every video)
and the dataset root — not by the split: videos are stored individually, so ``--split 2``
after ``--split 1`` extracts only the videos split 1 did not have. Under ``torchrun`` each rank extracts
``todo[rank::world]`` into its own shards.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache import features as store
from actiontk.cache.runs import Run, atomic_write_json, dir_size, human_bytes, lock_writer, open_run
from actiontk.datasets import Dataset, Sample, get_dataset
from actiontk.errors import UserError, storage_problem
from actiontk.runtime import dist_info, resolve_device, resolve_precision

SCHEMA = 2  # 2: verified, upright frames (display-matrix rotation, EXIF orientation); decoders in the key
STAGE = "extract"  # actiontk.stages.registry.EXTRACT (registry imports this module lazily)
TARGETS = "targets.json"  # which videos each split asked for: what "complete" means in `actiontk status`


@dataclass
class ExtractConfig:
    """Options of ``actiontk extract``; defaults come from ``stages/<dataset>.toml`` ``[extract]``."""

    backbone: str = "vgg16"
    """CNN: vgg16, resnet101, resnet50 or resnet18."""
    layers: list[str] = field(default_factory=lambda: ["pool4", "conv5_3"])
    """Layers whose maps are stored, comma-separated or repeated (vgg16: conv4_3 pool4 conv5_3 pool5; resnet*:
    layer1..layer4)."""
    size: int = 224
    """Frames are resized (shorter side) and center-cropped to size x size (see --resize)."""
    resize: str = "shorter"
    """shorter: resize the shorter side to size, centre crop (ours); square: resize the whole frame to
    size x size, aspect ratio not kept (the joint-attention paper, Sec. 4.2: 384 x 384). Videos only."""
    frame_stride: int = 1
    """Keep every S-th frame."""
    grid: int | None = None
    """Average-pool the stored maps to grid x grid (unset: the native resolution)."""
    weights: str = "imagenet"
    """imagenet (torchvision weights), none (random, seeded) or a path to a local state dict."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), fp32, bf16 or fp16."""
    batch_size: int = 32
    """Frames per forward pass (across videos)."""
    workers: int = 2
    """Decoder processes."""
    backend: str = "pyav"
    """Primary decoder: pyav or decord (the other one is the fallback), or module:Class."""
    timeout: float = 300.0
    """Seconds allowed to decode one video (per backend attempt)."""
    videos_per_shard: int = 32
    """Videos per HDF5 shard: a killed run loses at most the shards it had open."""
    chunk_frames: int = 1
    """HDF5 chunk length in frames (see docs/cache-format.md for the measurement behind it)."""
    compression: str | None = None
    """HDF5 compression filter: None, lzf or gzip."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    seed: int = 0
    """Seed of the random weights when weights = none."""

    def __post_init__(self) -> None:
        # "--layers a,b", "--layers a --layers b" and a TOML list all work
        names = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        self.layers = [x for name in names for x in str(name).replace(",", " ").split() if x]
        checks = [
            (self.size >= 1, f"--size must be positive, got {self.size}"),
            (self.resize in ("shorter", "square"), f"--resize must be shorter or square, got {self.resize!r}"),
            (self.frame_stride >= 1, f"--frame-stride must be at least 1, got {self.frame_stride}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.workers >= 1, f"--workers must be at least 1, got {self.workers}"),
            (self.timeout > 0, f"--timeout must be positive, got {self.timeout}"),
            (self.videos_per_shard >= 1, f"--videos-per-shard must be at least 1, got {self.videos_per_shard}"),
            (self.chunk_frames >= 1, f"chunk_frames must be at least 1, got {self.chunk_frames}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), f"--precision must be auto, fp32, bf16 or fp16, "
                                                                  f"got {self.precision!r}"),
            (self.compression in (None, "lzf", "gzip"), f"compression must be none, lzf or gzip, "
                                                         f"got {self.compression!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass
class ExtractResult:
    run: Run
    requested: int
    cached: int  # already in the cache before this invocation
    extracted: int
    failed: dict[str, str]  # rel -> reason, this invocation
    failed_before: int  # recorded as failed by an earlier invocation (not retried)
    frames: int
    seconds: float


# -- video/image sources --------------------------------------------------------------------------------


@dataclass
class _Msg:
    kind: str  # start | chunk | end | fail | restart
    vid: int
    data: Any = None


def _decode_thread(samples: list[Sample], next_index: Callable[[], int | None], out: queue.Queue,
                   cfg: ExtractConfig, stop: threading.Event, image: bool) -> None:
    """Decode the videos handed out by ``next_index`` and stream their frames to ``out``."""
    from actiontk.video import SafeDecoder

    fallback = decoder_fallback(cfg.backend)
    decoder = None if image else SafeDecoder(backend=cfg.backend, fallback=fallback, timeout=cfg.timeout)

    def put(msg: _Msg) -> bool:
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
            if not put(_Msg("start", i)):
                return
            try:
                _decode_one(samples[i].path, i, put, cfg, decoder, fallback, image)
            except Exception as e:  # a bug: fail this video rather than lose it silently, go on with the next
                put(_Msg("fail", i, f"internal error while decoding: {type(e).__name__}: {e}"))
    finally:
        if decoder is not None:
            decoder.close()


def _decode_one(path: Path, i: int, put: Callable[[_Msg], bool], cfg: ExtractConfig, decoder, fallback: str | None,
                image: bool) -> None:
    from actiontk.video import DecodeError, SafeDecoder

    if image:
        try:
            frames = _load_image(path)
        except (OSError, ValueError) as e:
            put(_Msg("fail", i, f"cannot read image: {e}"))
            return
        put(_Msg("chunk", i, frames)) and put(_Msg("end", i, {"backend": "pil"}))
        return
    delivered = 0
    try:
        for chunk in decoder.iter_chunks(path, stride=cfg.frame_stride, chunk=16):
            delivered += len(chunk)
            if not put(_Msg("chunk", i, chunk)):
                return
        put(_Msg("end", i, {"backend": decoder.last_backend,
                            "fallback_after": [list(f) for f in decoder.last_failures]}))
        return
    except DecodeError as e:
        if not (delivered and fallback):
            put(_Msg("fail", i, e.reason))
            return
        first = e
    # the primary failed mid-stream, after frames were delivered: start the video over with the fallback alone
    put(_Msg("restart", i))
    try:
        with SafeDecoder(backend=fallback, fallback=None, timeout=cfg.timeout) as second:
            for chunk in second.iter_chunks(path, stride=cfg.frame_stride, chunk=16):
                if not put(_Msg("chunk", i, chunk)):
                    return
        put(_Msg("end", i, {"backend": fallback, "fallback_after": [[cfg.backend, first.reason]]}))
    except DecodeError as e2:
        put(_Msg("fail", i, f"{cfg.backend}: {first.reason}; {fallback}: {e2.reason}"))


def _load_image(path: Path) -> np.ndarray:
    from actiontk.data.images import load_rgb

    return np.asarray(load_rgb(path))[None]  # (1, H, W, 3), upright (EXIF orientation applied)


def decoder_fallback(backend: str) -> str:
    """The backend extract retries a video with when ``backend`` fails on it (or fails verification)."""
    from actiontk.video.readers import other_backend

    return other_backend(backend)


# -- the main loop --------------------------------------------------------------------------------------


class _Batcher:
    """Runs the backbone on batches of frames drawn from several videos and routes the maps back."""

    def __init__(self, model, transform, device, precision: str, grid: int | None, batch_size: int):
        import torch

        self.torch = torch
        self.model, self.transform, self.device = model, transform, device
        self.grid, self.batch_size = grid, batch_size
        self.autocast = None
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            self.autocast = (device.type, dtype)
        self.pending: list[tuple[int, np.ndarray]] = []  # (vid, frames (n, H, W, 3) uint8) in arrival order
        self.pending_frames = 0
        self.frames_done = 0

    def add(self, vid: int, frames: np.ndarray) -> None:
        self.pending.append((vid, frames))
        self.pending_frames += len(frames)

    def drop(self, vid: int) -> None:
        self.pending = [(v, f) for v, f in self.pending if v != vid]
        self.pending_frames = sum(len(f) for _, f in self.pending)

    def has_pending(self, vid: int) -> bool:
        return any(v == vid for v, _ in self.pending)

    def ready(self) -> bool:
        return self.pending_frames >= self.batch_size

    def run(self, flush: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (vid, {layer: (n, C, h, w) float16}) for each full batch (and the remainder when flushing)."""
        while self.pending_frames >= self.batch_size or (flush and self.pending_frames):
            take, parts = self.batch_size, []
            while take and self.pending:
                vid, frames = self.pending[0]
                n = min(take, len(frames))
                parts.append((vid, frames[:n]))
                if n == len(frames):
                    self.pending.pop(0)
                else:
                    self.pending[0] = (vid, frames[n:])
                take -= n
                self.pending_frames -= n
            yield from self._forward(parts)

    def _forward(self, parts: list[tuple[int, np.ndarray]]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        out = self.compute(parts)
        start = 0
        for vid, frames in parts:
            n = len(frames)
            yield vid, {k: v[start:start + n] for k, v in out.items()}
            start += n
        self.frames_done += start

    def compute(self, parts: list[tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
        torch = self.torch
        groups: dict[tuple[int, int], list[np.ndarray]] = {}
        order = []
        for _, frames in parts:  # frames of different videos may differ in size: transform per shape
            key = frames.shape[1:3]
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(frames)
        batches = []
        for key in order:
            x = torch.from_numpy(np.concatenate(groups[key]))  # (B, H, W, 3) uint8
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = self.transform(x.permute(0, 3, 1, 2))  # (B, 3, S, S) float, normalized
            batches.append(x)
        x = torch.cat(batches) if len(batches) > 1 else batches[0]
        if len(order) > 1:  # restore arrival order when shapes were grouped
            x = _reorder(torch, x, parts, order)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ctx = torch.autocast(*self.autocast) if self.autocast else contextlib.nullcontext()
            with ctx:
                maps = self.model(x)
            result = {}
            for layer, m in maps.items():
                m = m.float()
                if self.grid is not None:
                    m = torch.nn.functional.adaptive_avg_pool2d(m, self.grid)
                half = m.to(torch.float16)
                if not bool(torch.isfinite(half).all()):
                    biggest = float(m.abs().max())
                    raise UserError(f"{layer} features do not fit in float16 (largest magnitude {biggest:.3g}, "
                                    "the cache's storage type): the weights give values out of range",
                                    "check the --weights file; the shards finished so far are kept")
                result[layer] = half.contiguous().cpu().numpy()  # (B, C, h, w)
        return result


def _reorder(torch, x, parts, order):
    """Rows of ``x`` are grouped by frame shape (in ``order``); put them back in the order of ``parts``."""
    offsets, pos = {}, 0
    for key in order:
        offsets[key] = pos
        pos += sum(len(f) for _, f in parts if f.shape[1:3] == key)
    index = []
    for _, frames in parts:
        key = frames.shape[1:3]
        index.extend(range(offsets[key], offsets[key] + len(frames)))
        offsets[key] += len(frames)
    return x[torch.as_tensor(index)]


# -- the stage ------------------------------------------------------------------------------------------


def lock_is_held(run_dir: Path) -> bool:
    """True while some process holds a rank lock of ``run_dir`` (an extraction is running)."""
    for p in run_dir.glob("lock.r*"):
        with open(p, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except BlockingIOError:
                return True
    return False


def extract_state(run) -> dict:
    """Counts and state of an extract run: done / failed / total over the videos its splits asked for."""
    index = store.load_index(run.path)
    try:
        targets = json.loads((run.path / TARGETS).read_text())
    except (OSError, ValueError):
        targets = {}
    wanted = set().union(*map(set, targets.values())) if targets else set(index.videos) | set(index.failed)
    done = len(wanted & set(index.videos))
    failed = len(wanted & set(index.failed))
    incomplete = list(store.shard_dir(run.path).glob("*.incomplete")) if store.shard_dir(run.path).is_dir() else []
    if lock_is_held(run.path):
        state = "running"
    elif done + failed == len(wanted) and not incomplete and not index.damaged:
        state = "complete"
    else:
        state = "partial"
        if incomplete:
            state += f" ({len(incomplete)} unfinished shard(s): rerun the same command to resume)"
        if index.damaged:
            state += f" ({len(index.damaged)} damaged shard(s): rerun the same command to re-compute their videos)"
    return {"done": done, "failed": failed, "total": len(wanted), "state": state,
            "splits": sorted(targets, key=int) if targets else [], "damaged": index.damaged}



def key_config(cfg: ExtractConfig, precision: str, image: bool = False) -> dict[str, Any]:
    """The part of the config that changes the stored features (what the run key is computed from)."""
    from actiontk.models.backbones import backbone_identity

    return {
        "backbone": backbone_identity(cfg.backbone, cfg.layers, cfg.weights, cfg.size, seed=cfg.seed,
                                      square=cfg.resize == "square"),
        # decord and PyAV differ on some videos (10-bit colour conversion, rotation of Matroska files), so
        # features decoded by one are not the other's; the fallback decides the frames of the videos the
        # primary refuses.
        "decoder": "pil" if image else {"backend": cfg.backend, "fallback": decoder_fallback(cfg.backend)},
        "frame_stride": cfg.frame_stride,
        "grid": cfg.grid,
        "precision": precision,
        "dtype": "float16",
    }


def estimate_bytes(samples: list[Sample], layer_shapes: dict[str, tuple[int, ...]], stride: int,
                   image: bool) -> int | None:
    """Rough size of the features of ``samples``: container frame counts of a sample of them, extrapolated.

    Counts come from :func:`estimated_frames`, which ignores a header's count that disagrees with the
    container's duration x rate or cannot fit in the file (a corrupt or hostile header claiming 2e9 frames
    must not block a whole dataset; that video is decoded and judged on its own)."""
    per_frame = sum(int(np.prod(s)) for s in layer_shapes.values()) * 2  # float16
    if image:
        return per_frame * len(samples)
    from actiontk.video.readers import estimated_frames

    picks = random.Random(0).sample(samples, min(16, len(samples)))
    counts: list[int] = []

    def probe() -> None:
        for s in picks:
            with contextlib.suppress(Exception):
                n = estimated_frames(s.path)
                if n:
                    counts.append(n)

    t = threading.Thread(target=probe, daemon=True)  # a hanging file must not block the estimate
    t.start()
    t.join(timeout=15)
    if not counts:
        return None
    frames = float(np.mean(counts)) / stride * len(samples)
    return int(frames * per_frame * 1.02)  # HDF5 metadata: ~2%


def extract(
    dataset: str,
    root: Path,
    split: int,
    cfg: ExtractConfig,
    cache_root: Path,
    *,
    strict: bool = False,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    progress_console=None,
) -> ExtractResult:
    from actiontk.models import backbones

    t0 = time.perf_counter()
    ds: Dataset = get_dataset(dataset, root)
    index = ds.load(split)
    samples = index.videos()
    image = ds.kind == "image"
    if image and cfg.resize == "square":
        raise UserError("--resize square is for videos: the image pipeline's pose targets follow the shorter-side "
                        "resize and centre crop", "drop --resize (or set resize = \"shorter\")")
    backbones.validate(cfg.backbone, cfg.layers, cfg.size, cfg.grid)
    if not image:  # an unknown --backend would otherwise fail in every decoder thread, after the run is made
        from actiontk.video import get_reader

        get_reader(cfg.backend)
    rank, world, local_rank, local_world = dist_info()
    device = resolve_device(cfg.device, local_rank)
    precision = resolve_precision(cfg.precision, device)

    run = open_run(cache_root, STAGE, SCHEMA, key_config(cfg, precision, image),
                   inputs={"dataset": ds.name, "root": str(ds.root), "kind": ds.kind})
    dist = _init_distributed(world, device)
    lock = lock_writer(run.path, rank, what="an extraction")  # one writer per rank
    try:
        _record_targets(run.path, split, samples, rank)
        if rank == 0:  # the resolved config of the latest invocation, beside the outputs
            atomic_write_json(run.path / "config.json", {"resolved": {**vars(cfg), "precision": precision},
                                                         "dataset": ds.name, "root": str(ds.root), "split": split})
        store.remove_incomplete(run.path, rank)
        if rank == 0:  # leftovers of ranks that no longer exist (an earlier run with a larger world)
            for r in _stale_ranks(run.path, world):
                store.remove_incomplete(run.path, r)
        store.repair(run.path, log)  # damaged shards (cheap checks, or a failed checksum on record) are redone
        done = store.load_index(run.path)
        todo, cached, failed_before = [], 0, 0
        for s in samples:
            fp = store.fingerprint(s.path)
            entry = done.videos.get(s.rel)
            if entry is not None and entry.get("fingerprint") == fp:
                cached += 1
            elif (f := done.failed.get(s.rel)) is not None and f.get("fingerprint") == fp and not retry_failed:
                failed_before += 1
            else:
                todo.append(s)
        if dist is not None:
            # every rank must partition the same todo list: none may finish a shard before all have read
            # the index, or the partitions would shift and leave videos to nobody
            dist.barrier()
        mine = todo[rank::world]
        shapes = {layer: (backbones.channels(cfg.backbone, layer), *_map_hw(backbones, cfg, layer))
                  for layer in cfg.layers}
        if not todo:
            log(f"nothing to do: all {len(samples)} {ds.kind}s of {ds.title} split {split} are in {run.path}"
                + (f" ({failed_before} failed earlier; --retry-failed tries them again)" if failed_before else ""))
            if rank == 0:
                store.write_manifest(run.path)
            return ExtractResult(run, len(samples), cached, 0, {}, failed_before, 0, time.perf_counter() - t0)

        _check_disk(run.path, todo, shapes, cfg, image)  # on every rank: a refusal on one alone would hang the rest
        log(f"extracting {len(todo)} of {len(samples)} {ds.kind}s ({cached} cached) with {cfg.backbone} "
            f"{'+'.join(cfg.layers)} at {cfg.size}px on {device} ({precision}) into {run.path}"
            + (f" — rank {rank}/{world}: {len(mine)}" if world > 1 else ""))
        if cfg.weights == "none":
            log("weights: none — random features (seeded); use --weights imagenet or --weights PATH for real ones")

        import torch

        threads_before = torch.get_num_threads()
        if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):  # the user's OMP_NUM_THREADS wins
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
        model = backbones.build_backbone(cfg.backbone, cfg.layers, cfg.weights, seed=cfg.seed).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        transform = model.preprocess(cfg.size, square=cfg.resize == "square")  # the weights' own; runs on the device
        batcher = _Batcher(model, transform, device, precision, cfg.grid, cfg.batch_size)
        writer = store.ShardWriter(run.path, shapes, rank=rank, videos_per_shard=cfg.videos_per_shard,
                                   chunk_frames=cfg.chunk_frames, compression=cfg.compression,
                                   attrs={"run_key": run.key})
        failed: dict[str, str] = {}
        try:
            extracted = _pipeline(mine, cfg, batcher, writer, failed, strict, image, progress_console, log)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            torch.set_num_threads(threads_before)  # a caller that trains next keeps its own setting
        if dist is not None:
            dist.barrier()
        if rank == 0:
            store.write_manifest(run.path)
        return ExtractResult(run, len(samples), cached, extracted, failed, failed_before, batcher.frames_done,
                             time.perf_counter() - t0)
    finally:
        lock.release()


def _map_hw(backbones, cfg: ExtractConfig, layer: str) -> tuple[int, int]:
    return (cfg.grid, cfg.grid) if cfg.grid is not None else backbones.layer_map_size(cfg.backbone, layer, cfg.size)


def _stale_ranks(run_dir: Path, world: int) -> set[int]:
    ranks = set()
    for p in store.shard_dir(run_dir).glob(f"*{store.INCOMPLETE}") if store.shard_dir(run_dir).is_dir() else []:
        with contextlib.suppress(IndexError, ValueError):
            r = int(p.name.split("-")[1].lstrip("r"))
            if r >= world:
                ranks.add(r)
    return ranks


def _init_distributed(world: int, device):
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist


def _record_targets(run_dir: Path, split: int, samples: list[Sample], rank: int) -> None:
    if rank != 0:
        return
    path = run_dir / TARGETS
    try:
        targets = json.loads(path.read_text())
    except (OSError, ValueError):
        targets = {}
    targets[str(split)] = [s.rel for s in samples]
    atomic_write_json(path, targets)


def _check_disk(run_dir: Path, todo: list[Sample], shapes, cfg: ExtractConfig, image: bool) -> None:
    need = estimate_bytes(todo, shapes, cfg.frame_stride, image)
    if need is None:
        return
    free = shutil.disk_usage(run_dir).free
    if need > free * 0.98:
        raise UserError(
            f"the features need about {human_bytes(need)} but only {human_bytes(free)} is free on {run_dir}",
            "shrink them with --frame-stride 2 or --grid 7, or use --cache on a bigger disk",
        )


def _pipeline(samples: list[Sample], cfg: ExtractConfig, batcher: _Batcher, writer: store.ShardWriter,
              failed: dict[str, str], strict: bool, image: bool, console, log) -> int:
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

    progress = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]} fr/s"),
                        TimeRemainingColumn(), console=console, transient=False)
    try:
        with progress as bar:
            task = bar.add_task("extract", total=len(samples), fps="-")
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


def summary_line(result: ExtractResult) -> str:
    size = human_bytes(dir_size(result.run.path))
    rate = result.frames / result.seconds if result.seconds else 0.0
    return (f"{result.extracted} extracted, {result.cached} cached, {len(result.failed)} failed"
            + (f", {result.failed_before} failed earlier" if result.failed_before else "")
            + f" — {result.frames} frames in {result.seconds:.1f}s ({rate:.1f} frames/s); cache {size} at "
              f"{result.run.path}")
