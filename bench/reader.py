"""Is the cache reader ever the bottleneck of training? Clips/s the DataLoader delivers vs clips/s the model
consumes, measured in one run on the same synthetic cube cache.

    python bench/reader.py [--videos 48] [--frames 90] [--clip-len 30] [--hidden 1024] [--workers 0 2]

It writes a cube cache like train-3d's (two levels of (T, 256, 7, 7) float16), then times
(a) iterating a DataLoader over :class:`ClipDataset` (batch 16, shuffled) with each ``--workers`` value, and
(b) training steps of the joint attention LSTM on batches already in memory. It prints (a)/(b) for each worker
count: above 1 the reader keeps up; below 1 it would starve the model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from actiontk.cache.features import FeatureReader, ShardWriter, write_manifest
from actiontk.data.clips import ClipDataset, collate_clips
from actiontk.models.joint_lstm import JointAttentionLSTM, JointLSTMConfig

LEVELS = ("pool4", "conv5_3")


def make_cache(root: Path, videos: int, frames: int, grid: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    shape = (256, grid, grid)
    writer = ShardWriter(root, {lv: shape for lv in LEVELS}, videos_per_shard=16)
    out = []
    for v in range(videos):
        rel = f"C{v % 10}/v{v:04d}.avi"
        slot = writer.start(rel, label=v % 10)
        for start in range(0, frames, 30):
            n = min(30, frames - start)
            slot.append({lv: np.maximum(rng.standard_normal((n, *shape)), 0).astype(np.float16) for lv in LEVELS})
        slot.finish()
        out.append((rel, v % 10))
    writer.close()
    write_manifest(root)
    return out


def reader_rate(ds: ClipDataset, workers: int, batch: int, seconds: float) -> float:
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate_clips,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    n, t0 = 0, None
    while True:
        for i, b in enumerate(loader):
            if t0 is None and i == 1:  # skip the first batch: worker start-up and file opening
                t0 = time.perf_counter()
            elif t0 is not None:
                n += len(b["label"])
                if time.perf_counter() - t0 > seconds:
                    return n / (time.perf_counter() - t0)


def model_rate(ds: ClipDataset, hidden: int, batch: int, steps: int) -> float:
    grid = ds.reader.layers()[LEVELS[0]][1:]
    model = JointAttentionLSTM(JointLSTMConfig(hidden=hidden, layers=3), [256, 256], tuple(grid), 10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    b = collate_clips([ds[i] for i in range(batch)])
    xs = [b["x"][lv] for lv in LEVELS]
    y = b["label"]

    def step():
        logits, _ = model(xs)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(logits.shape[1]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--grid", type=int, default=7)
    ap.add_argument("--clip-len", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = make_cache(Path(tmp), args.videos, args.frames, args.grid)
        ds = ClipDataset(FeatureReader(Path(tmp)), videos, list(LEVELS), clip_len=args.clip_len,
                         clip_stride=args.clip_len // 2)
        consume = model_rate(ds, args.hidden, args.batch, args.steps)
        print(f"model consumes {consume:.1f} clips/s (joint LSTM, hidden {args.hidden}, 3 layers, training steps)")
        for w in args.workers:
            deliver = reader_rate(ds, w, args.batch, args.seconds)
            print(f"reader delivers {deliver:.1f} clips/s with {w} worker(s): reader/model = {deliver / consume:.1f}x")


if __name__ == "__main__":
    main()
