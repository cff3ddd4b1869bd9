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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actiontk.cache import features as store
from actiontk.cache.runs import Run, atomic_write_json, dir_size, human_bytes, lock_writer, open_run
from actiontk.cache.space import check_disk
from actiontk.cache.lifecycle import mark_complete, unmark
from actiontk.cache.targets import TARGETS, extract_state, record_targets, target_counts  # noqa: F401 (read here)
from actiontk.datasets import Dataset, get_dataset
from actiontk.errors import UserError
from actiontk.runtime import dist_info, resolve_device, resolve_precision
from actiontk.stages import registry  # light: it imports the stage modules only when asked
from actiontk.stages.extract_batch import Batcher
from actiontk.stages.extract_feed import decoder_fallback, feed

SCHEMA = 2  # 2: verified, upright frames (display-matrix rotation, EXIF orientation); decoders in the key
STAGE = registry.EXTRACT


@dataclass
class ExtractConfig:
    """Options of ``actiontk extract``; defaults come from ``stages/<dataset>.toml`` ``[extract]``."""

    backbone: str = "vgg16"
    """vgg16, resnet101, resnet50, resnet18 (the papers'), or any torchvision classification or video model by name
    (`actiontk backbones` lists them)."""
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
    clip_len: int = 16
    """Frames per clip of a video backbone (r3d_18, s3d, mvit_*, swin3d_*...): one (C, t, h, w) map per clip."""
    clip_stride: int | None = None
    """Frames between the starts of a video backbone's clips (unset: clip_len, clips side by side)."""

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
            (self.clip_len >= 1, f"--clip-len must be at least 1, got {self.clip_len}"),
            (self.clip_stride is None or self.clip_stride >= 1,
             f"--clip-stride must be at least 1, got {self.clip_stride}"),
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


# -- the stage ------------------------------------------------------------------------------------------
def key_config(cfg: ExtractConfig, precision: str, image: bool = False) -> dict[str, Any]:
    """The part of the config that changes the stored features (what the run key is computed from)."""
    from actiontk.models import backbones
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
        # a video backbone's clips (absent for frame backbones: their keys are unchanged)
        **({"clip": {"len": cfg.clip_len, "stride": cfg.clip_stride or cfg.clip_len}}
           if backbones.is_video(cfg.backbone) else {}),
    }


def extract(
    cfg: ExtractConfig,
    cache_root: Path,
    *,
    dataset: str,
    split: int,
    root: Path,
    strict: bool = False,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    console=None,
) -> ExtractResult:
    """Extract the feature maps of ``dataset``'s ``split`` (the dataset in folder ``root``) into an extract run
    of ``cache_root``, resuming the run of the same config; ``console`` shows the progress bar."""
    from actiontk.models import backbones

    t0 = time.perf_counter()
    ds: Dataset = get_dataset(dataset, root)
    index = ds.load(split)
    samples = index.videos()
    image = ds.kind == "image"
    if image and cfg.resize == "square":
        raise UserError("--resize square is for videos: the image pipeline's pose targets follow the shorter-side "
                        "resize and centre crop", "drop --resize (or set resize = \"shorter\")")
    video_model = backbones.is_video(cfg.backbone)
    if video_model and image:
        raise UserError(f"{cfg.backbone} is a video model: {ds.name} holds still images",
                        "use an image backbone (`actiontk backbones` lists them)")
    backbones.validate(cfg.backbone, cfg.layers, cfg.size, cfg.grid, frames=cfg.clip_len if video_model else None)
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
        if rank == 0:  # the run changes from here: complete again once marked below (the one rule, cache.lifecycle)
            unmark(run)
            record_targets(run.path, split, [s.rel for s in samples])
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
        shapes = _level_shapes(backbones, cfg, video_model)
        if not todo:
            log(f"nothing to do: all {len(samples)} {ds.kind}s of {ds.title} split {split} are in {run.path}"
                + (f" ({failed_before} failed earlier; --retry-failed tries them again)" if failed_before else ""))
            if rank == 0:
                store.write_manifest(run.path)
                _mark_if_done(run)
            return ExtractResult(run, len(samples), cached, 0, {}, failed_before, 0, time.perf_counter() - t0)

        # on every rank: a refusal on one alone would hang the rest
        # a video backbone stores one map per clip: one per clip_stride frames
        check_disk(run.path, todo, shapes, cfg.frame_stride * ((cfg.clip_stride or cfg.clip_len) if video_model else 1),
                   image)
        log(f"extracting {len(todo)} of {len(samples)} {ds.kind}s ({cached} cached) with {cfg.backbone} "
            f"{'+'.join(cfg.layers)} at {cfg.size}px on {device} ({precision}) into {run.path}"
            + (f" — rank {rank}/{world}: {len(mine)}" if world > 1 else ""))
        if cfg.weights == "none":
            log("weights: none — random features (seeded); use --weights imagenet or --weights PATH for real ones")

        import torch

        threads_before = torch.get_num_threads()
        if device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):  # the user's OMP_NUM_THREADS wins
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
        model = backbones.build_backbone(cfg.backbone, cfg.layers, cfg.weights, seed=cfg.seed, size=cfg.size,
                                         frames=cfg.clip_len if video_model else None)
        # channels_last on CUDA, and on the CPU for the families it was measured faster for (backbones.memory_format)
        model = model.to(device).use_memory_format(backbones.memory_format(cfg.backbone, device))
        transform = model.preprocess(cfg.size, square=cfg.resize == "square")  # the weights' own; runs on the device
        if video_model:  # batch_size frames per forward, as whole clips
            from actiontk.stages.extract_clips import ClipBatcher

            batcher = ClipBatcher(model, transform, device, precision, cfg.grid, cfg.batch_size // cfg.clip_len,
                                  cfg.clip_len, cfg.clip_stride or cfg.clip_len)
        else:
            batcher = Batcher(model, transform, device, precision, cfg.grid, cfg.batch_size)
        writer = store.ShardWriter(run.path, shapes, rank=rank, videos_per_shard=cfg.videos_per_shard,
                                   chunk_frames=cfg.chunk_frames, compression=cfg.compression,
                                   attrs={"run_key": run.key})
        failed: dict[str, str] = {}
        try:
            extracted = feed(mine, cfg, batcher, writer, failed, strict, image, console, log)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            torch.set_num_threads(threads_before)  # a caller that trains next keeps its own setting
        if dist is not None:
            dist.barrier()
        if rank == 0:  # after the barrier: every rank's shards are closed, so rank 0 sees all the targets
            store.write_manifest(run.path)
            _mark_if_done(run)
        return ExtractResult(run, len(samples), cached, extracted, failed, failed_before, batcher.frames_done,
                             time.perf_counter() - t0)
    finally:
        lock.release()


def _mark_if_done(run: Run) -> None:
    """Mark ``run`` complete when every video its splits asked for is stored or recorded failed (a run killed
    earlier, or asked for a split another invocation is still extracting, stays unmarked)."""
    counts = target_counts(run)
    if counts["state"] == "complete" and counts["total"] > 0:
        mark_complete(run, {"stored": counts["done"], "failed": counts["failed"], "videos": counts["total"],
                            "splits": counts["splits"]})


def _level_shapes(backbones, cfg: ExtractConfig, video: bool) -> dict[str, tuple[int, ...]]:
    """The stored shape of each level: (C, h, w) per frame, or (C, t, h, w) per clip of a video backbone."""
    if not video:
        return {layer: (backbones.channels(cfg.backbone, layer), *_map_hw(backbones, cfg, layer))
                for layer in cfg.layers}
    shapes = {layer: backbones.level_shape(cfg.backbone, layer, cfg.size, cfg.clip_len) for layer in cfg.layers}
    return {layer: (s[0], s[1], cfg.grid, cfg.grid) if cfg.grid is not None else s for layer, s in shapes.items()}


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


def summary_line(result: ExtractResult) -> str:
    size = human_bytes(dir_size(result.run.path))
    rate = result.frames / result.seconds if result.seconds else 0.0
    return (f"{result.extracted} extracted, {result.cached} cached, {len(result.failed)} failed"
            + (f", {result.failed_before} failed earlier" if result.failed_before else "")
            + f" — {result.frames} frames in {result.seconds:.1f}s ({rate:.1f} frames/s); cache {size} at "
              f"{result.run.path}")
