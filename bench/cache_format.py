"""Benchmark of the feature cache's HDF5 layout: chunk length x compression, by measurement.

For every chunk_frames in --chunks and compression in --compressions, at each map resolution in --res
(pool4 + conv5_3 of VGG16: 512 x 14 x 14 at 224 px, 512 x 7 x 7 at 112 px), this writes the same videos
through ``actiontk.cache.features.ShardWriter`` exactly as the extract stage does (a stream of 32-frame
batches cut across videos, so appends are not aligned to chunks; shards finalised and fsynced) and reads
them back through ``FeatureReader`` the way the training stages will: windows of 16 or 30 consecutive
frames of both layers at random offsets of random videos. It reports

* write throughput (MB/s of float16 maps, finalisation and fsync included) and frames/s;
* file size (all shards) relative to the raw float16 bytes;
* random-window reads per second, warm (shards in the OS page cache: the cost of HDF5 + decompression)
  and cold (every shard evicted from the page cache with posix_fadvise(DONTNEED) before each window:
  the cost of the disk on top; the run's own files only, nothing else is dropped).

The maps are either ``real``: VGG16 feature maps (random weights, seeded: no download) of the frames of
generated toy videos, tiled into longer videos; or ``sparse``: synthetic post-ReLU maps (a temporally
smooth Gaussian field, thresholded to --sparsity zeros, log-normal magnitudes). The zero fraction of the
maps used is printed, because it decides how well they compress. Results: docs/cache-format.md.

    .venv/bin/python bench/cache_format.py              # real maps, both resolutions
    .venv/bin/python bench/cache_format.py --data sparse --sparsity 0.85
    .venv/bin/python bench/cache_format.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

LAYERS = ("pool4", "conv5_3")
BATCH = 32  # the extract stage's default batch: appends are cut at these boundaries across videos


def real_pool(size: int, frames: int, tmp: Path) -> dict[str, np.ndarray]:
    """VGG16 (random weights, seed 0) maps of ``frames`` consecutive toy frames at ``size`` px, float16."""
    import torch

    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.models.backbones import build_backbone
    from actiontk.video import get_reader

    root = tmp / "toy"
    generate_toy(root, ToyConfig(classes=6, groups=3, clips=1, frames=32, size=112), workers=1)
    reader = get_reader("decord")
    video = np.concatenate([reader.read(p) for p in sorted(root.glob("*/*.avi"))])[:frames]
    model = build_backbone("vgg16", list(LAYERS), "none")
    transform = model.preprocess(size)
    out: dict[str, list[np.ndarray]] = {k: [] for k in LAYERS}
    with torch.inference_mode():
        for i in range(0, len(video), BATCH):
            maps = model(transform(torch.from_numpy(video[i:i + BATCH]).permute(0, 3, 1, 2)))
            for k in LAYERS:
                out[k].append(maps[k].to(torch.float16).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def sparse_pool(side: int, frames: int, sparsity: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Synthetic post-ReLU maps: AR(1) in time (rho 0.9), thresholded to ``sparsity`` zeros, log-normal values."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in LAYERS:
        shape = (512, side, side)
        x = rng.standard_normal(shape, dtype=np.float32)
        thr = float(np.quantile(rng.standard_normal(200_000), sparsity))
        maps = np.empty((frames, *shape), np.float16)
        for t in range(frames):
            x = 0.9 * x + np.sqrt(1 - 0.81) * rng.standard_normal(shape, dtype=np.float32)
            mag = np.exp(rng.normal(0.0, 1.0, shape)).astype(np.float32)
            maps[t] = np.where(x > thr, (x - thr) * mag * 4.0, 0.0)
        out[k] = maps
    return out


def video_lengths(n: int, lo: int, hi: int, seed: int = 1) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(lo, hi + 1, n)]


def frames_of(pool: dict[str, np.ndarray], start: int, n: int) -> dict[str, np.ndarray]:
    """``n`` consecutive frames of the pool starting at ``start``, wrapping around."""
    idx = (start + np.arange(n)) % len(pool[LAYERS[0]])
    return {k: a[idx] for k, a in pool.items()}


def write(run: Path, pool, lengths: list[int], chunk: int, compression: str | None) -> float:
    """Write the videos like the extract stage (32-frame batches across videos); seconds, fsync included."""
    from actiontk.cache.features import ShardWriter

    shapes = {k: tuple(a.shape[1:]) for k, a in pool.items()}
    # the videos' maps are prepared before the clock: only the store's work is timed
    videos = [frames_of(pool, 37 * i, n) for i, n in enumerate(lengths)]
    t0 = time.perf_counter()
    writer = ShardWriter(run, shapes, videos_per_shard=32, chunk_frames=chunk, compression=compression)
    slots = [writer.start(f"class/v{i:03d}.avi", fingerprint=[i, 0]) for i in range(len(videos))]
    room = BATCH
    for slot, maps in zip(slots, videos, strict=True):
        done, total = 0, len(maps[LAYERS[0]])
        while done < total:
            n = min(room, total - done)
            slot.append({k: a[done:done + n] for k, a in maps.items()})
            done += n
            room = room - n or BATCH
        slot.finish()
    writer.close()
    return time.perf_counter() - t0


def evict(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_windows(run: Path, lengths: list[int], window: int, count: int, cold: bool, seed: int) -> float:
    """Windows of both layers per second, at random offsets of random videos."""
    from actiontk.cache.features import FeatureReader, shard_dir

    shards = sorted(shard_dir(run).glob("*.h5"))
    reader = FeatureReader(run)
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(count):
        v = int(rng.integers(len(lengths)))
        picks.append((f"class/v{v:03d}.avi", int(rng.integers(0, lengths[v] - window + 1))))
    if not cold:
        for rel, start in picks[:5]:  # open the files, load HDF5 metadata
            for k in LAYERS:
                reader.read(rel, k, start, start + window)
    busy = 0.0
    for rel, start in picks:
        if cold:
            evict(shards)
        t0 = time.perf_counter()
        for k in LAYERS:
            a = reader.read(rel, k, start, start + window)
            assert a.shape[0] == window
        busy += time.perf_counter() - t0
    reader.close()
    return count / busy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="224,112", help="input sizes whose maps are written (default 224,112)")
    p.add_argument("--chunks", default="1,4,16", help="chunk_frames values (default 1,4,16)")
    p.add_argument("--compressions", default="none,lzf,gzip", help="compression filters (default none,lzf,gzip)")
    p.add_argument("--data", choices=("real", "sparse"), default="real")
    p.add_argument("--sparsity", type=float, default=0.85, help="zero fraction of --data sparse (default 0.85)")
    p.add_argument("--videos", type=int, default=12, help="videos per configuration (default 12)")
    p.add_argument("--min-frames", type=int, default=60)
    p.add_argument("--max-frames", type=int, default=180)
    p.add_argument("--pool", type=int, default=96, help="distinct frames of maps, tiled into the videos")
    p.add_argument("--windows", type=int, default=300, help="random windows per warm read test (cold: a third)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of each write and read; medians are reported")
    p.add_argument("--quick", action="store_true", help="6 videos, 1 repeat, 100 windows")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.quick:
        args.videos, args.repeats, args.windows, args.pool = 6, 1, 100, 64
    chunks = [int(x) for x in args.chunks.split(",")]
    comps = [None if c in ("none", "None") else c for c in args.compressions.split(",")]
    sizes = [int(x) for x in args.res.split(",")]
    lengths = video_lengths(args.videos, args.min_frames, args.max_frames)
    rows = []
    with tempfile.TemporaryDirectory(prefix="actiontk-cachefmt-") as tmp_name:
        tmp = Path(tmp_name)
        for size in sizes:
            side = size // 16
            pool = real_pool(size, args.pool, tmp) if args.data == "real" else \
                sparse_pool(side, args.pool, args.sparsity)
            zeros = float(np.mean([np.mean(a == 0) for a in pool.values()]))
            per_frame = sum(a[0].nbytes for a in pool.values())
            raw = per_frame * sum(lengths)
            print(f"{size} px: maps {'+'.join(f'{k} {tuple(a.shape[1:])}' for k, a in pool.items())}, {args.data} "
                  f"data, {zeros:.0%} zeros; {len(lengths)} videos, {sum(lengths)} frames, "
                  f"{raw / 2**20:.0f} MiB raw float16", flush=True)
            print(f"  {'chunk':>5} {'compr':>5} {'write MB/s':>10} {'size':>6} {'16-win/s warm':>13} "
                  f"{'30-win/s warm':>13} {'16-win/s cold':>13} {'30-win/s cold':>13}", flush=True)
            for chunk in chunks:
                for comp in comps:
                    w_times, sizes_b, reads = [], [], {}
                    for r in range(args.repeats):
                        run = tmp / f"run-{size}-{chunk}-{comp}-{r}"
                        w_times.append(write(run, pool, lengths, chunk, comp))
                        sizes_b.append(sum(f.stat().st_size for f in (run / "shards").glob("*.h5")))
                        for window in (16, 30):
                            for cold in (False, True):
                                n = args.windows if not cold else max(20, args.windows // 3)
                                reads.setdefault((window, cold), []).append(
                                    read_windows(run, lengths, window, n, cold, seed=r))
                        for f in run.rglob("*"):
                            if f.is_file():
                                f.unlink()
                    wt = statistics.median(w_times)
                    row = {"size": size, "chunk_frames": chunk, "compression": comp or "none", "zeros": zeros,
                           "raw_bytes": raw, "file_bytes": statistics.median(sizes_b),
                           "write_mb_s": raw / wt / 1e6, "write_frames_s": sum(lengths) / wt,
                           **{f"read{w}_{'cold' if c else 'warm'}_per_s": statistics.median(v)
                              for (w, c), v in reads.items()}}
                    rows.append(row)
                    print(f"  {chunk:>5} {row['compression']:>5} {row['write_mb_s']:>10.0f} "
                          f"{row['file_bytes'] / raw:>6.2f} {row['read16_warm_per_s']:>13.0f} "
                          f"{row['read30_warm_per_s']:>13.0f} {row['read16_cold_per_s']:>13.0f} "
                          f"{row['read30_cold_per_s']:>13.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
