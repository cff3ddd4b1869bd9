"""What the cache's integrity checks cost: HDF5's Fletcher-32 filter on the feature datasets, and the reader's
check that every value it returns is finite.

    python bench/checksums.py [--side 14] [--videos 12] [--frames 120] [--window 30] [--windows 300]

Maps of VGG16's two levels at 224 px (pool4 and conv5_3, 512 x 14 x 14; ``--side 7`` for 112 px), post-ReLU
(half zeros, the rest log-normal), float16, one frame per chunk as extract writes them. The same videos are
written twice with plain h5py, with and without ``fletcher32``, then read back as training reads them: windows
of ``--window`` consecutive frames of both levels at random offsets, warm (files in the page cache, which is
where the filter's cost shows; from a disk the read itself dominates). Printed ratios:

* write with / without the checksum filter;
* read with / without it (raw h5py);
* ``FeatureReader.read`` (checksummed shard, plus its finite-values check) / raw h5py read of the same
  checksummed shard.

Medians of ``--repeats`` runs. Results: docs/cache-format.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from actiontk.cache.features import FeatureReader, ShardWriter, write_manifest

LEVELS = ("pool4", "conv5_3")


def make_maps(side: int, frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, 1.0, (frames, 512, side, side)).astype(np.float32)
    a[rng.random(a.shape) < 0.5] = 0.0
    return a.astype(np.float16)


def write_plain(path: Path, videos: list[np.ndarray], fletcher32: bool) -> float:
    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        for i, maps in enumerate(videos):
            g = f.create_group(f"v{i:05d}")
            for layer in LEVELS:
                ds = g.create_dataset(layer, shape=(0, *maps.shape[1:]), maxshape=(None, *maps.shape[1:]),
                                      dtype=np.float16, chunks=(1, *maps.shape[1:]), fletcher32=fletcher32)
                for start in range(0, len(maps), 32):  # extract appends batches of 32 frames
                    part = maps[start:start + 32]
                    ds.resize(start + len(part), axis=0)
                    ds[start:] = part
    return time.perf_counter() - t0


def windows(videos: list[np.ndarray], window: int, count: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        v = int(rng.integers(len(videos)))
        out.append((v, int(rng.integers(0, len(videos[v]) - window + 1))))
    return out


def read_plain(path: Path, picks: list[tuple[int, int]], window: int) -> float:
    with h5py.File(path, "r") as f:
        for v, s in picks[:10]:  # warm the page cache and HDF5's metadata
            for layer in LEVELS:
                f[f"v{v:05d}"][layer][s:s + window]
        t0 = time.perf_counter()
        for v, s in picks:
            for layer in LEVELS:
                f[f"v{v:05d}"][layer][s:s + window]
        return time.perf_counter() - t0


def read_reader(run: Path, rels: list[str], picks: list[tuple[int, int]], window: int) -> float:
    reader = FeatureReader(run)
    for v, s in picks[:10]:
        for layer in LEVELS:
            reader.read(rels[v], layer, s, s + window)
    t0 = time.perf_counter()
    for v, s in picks:
        for layer in LEVELS:
            reader.read(rels[v], layer, s, s + window)
    elapsed = time.perf_counter() - t0
    reader.close()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--side", type=int, default=14, help="map side: 14 (224 px input) or 7 (112 px)")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--windows", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    videos = [make_maps(args.side, args.frames, seed=i) for i in range(args.videos)]
    rels = [f"C{i % 3}/v{i}.avi" for i in range(args.videos)]
    picks = windows(videos, args.window, args.windows, seed=1)
    results: dict[str, list[float]] = {k: [] for k in ("write_on", "write_off", "read_on", "read_off", "reader",
                                                       "read_shard")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = tmp / "run"
        w = ShardWriter(run, {layer: (512, args.side, args.side) for layer in LEVELS}, videos_per_shard=args.videos)
        for rel, maps in zip(rels, videos, strict=True):
            slot = w.start(rel)
            slot.append({layer: maps for layer in LEVELS})
            slot.finish()
        w.close()
        write_manifest(run)
        shard = next((run / "shards").glob("*.h5"))
        for r in range(args.repeats):
            for on in (True, False):
                results["write_on" if on else "write_off"].append(write_plain(tmp / f"{on}{r}.h5", videos, on))
        for _ in range(args.repeats):
            results["read_on"].append(read_plain(tmp / "True0.h5", picks, args.window))
            results["read_off"].append(read_plain(tmp / "False0.h5", picks, args.window))
            results["reader"].append(read_reader(run, rels, picks, args.window))
            results["read_shard"].append(read_plain(shard, picks, args.window))  # groups v00000.. as written
    med = {k: statistics.median(v) for k, v in results.items()}
    mb = sum(v.nbytes for v in videos) * len(LEVELS) / 1e6
    read_mb = args.windows * args.window * 512 * args.side ** 2 * 2 * len(LEVELS) / 1e6
    print(f"maps 512x{args.side}x{args.side} x2 levels, {args.videos} videos x {args.frames} frames ({mb:.0f} MB); "
          f"{args.windows} windows of {args.window} frames ({read_mb:.0f} MB), warm; medians of {args.repeats}")
    print(f"write  with fletcher32 {mb / med['write_on']:8.0f} MB/s   without {mb / med['write_off']:8.0f} MB/s   "
          f"ratio with/without {med['write_on'] / med['write_off']:.2f}")
    print(f"read   with fletcher32 {read_mb / med['read_on']:8.0f} MB/s   "
          f"without {read_mb / med['read_off']:8.0f} MB/s   "
          f"ratio with/without {med['read_on'] / med['read_off']:.2f}")
    print(f"FeatureReader.read (checksums + finite check) / raw h5py read of the same shard: "
          f"{med['reader'] / med['read_shard']:.2f}  ({read_mb / med['reader']:.0f} MB/s)")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "seconds": med}, indent=2))


if __name__ == "__main__":
    main()
