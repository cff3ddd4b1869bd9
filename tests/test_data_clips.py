"""Clips over a feature cache: exact starts, padding of short videos, windowed reads, workers, extra readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from actiontk.cache.features import FeatureReader, ShardWriter
from actiontk.data.clips import ClipDataset, ClipSampler, ClipSpec, clip_starts, collate_clips, derive_seed
from actiontk.errors import UserError

SHAPES = {"pool4": (3, 2, 2), "conv5_3": (2, 2, 2)}


def frame_value(video: int, t: int, offset: float = 0.0) -> float:
    """Every frame holds one value naming its video and index (exact in float16 for these sizes)."""
    return video * 100 + t + offset


def write_cache(run: Path, frames: dict[str, int], shapes: dict[str, tuple[int, int, int]] = SHAPES,
                offset: float = 0.0) -> FeatureReader:
    w = ShardWriter(run, shapes, videos_per_shard=2)
    for v, (rel, n) in enumerate(frames.items()):
        vw = w.start(rel)
        values = np.array([frame_value(v, t, offset) for t in range(n)], dtype=np.float32)
        for a in range(0, n, 4):  # appended in pieces, like the extractor does
            vals = values[a:a + 4]
            vw.append({k: np.broadcast_to(vals[:, None, None, None], (len(vals), *s)).astype(np.float16)
                       for k, s in shapes.items()})
        vw.finish()
    w.close()
    return FeatureReader(run)


FRAMES = {"A/a (1).avi": 10, "A/b&c.avi": 11, "B/it's.avi": 3, "B/d.avi": 4}


@pytest.fixture
def reader(tmp_path: Path) -> FeatureReader:
    return write_cache(tmp_path / "feat", FRAMES)


def videos() -> list[tuple[str, int]]:
    return [(rel, i % 2) for i, rel in enumerate(FRAMES)]


@pytest.mark.parametrize(("T", "L", "s", "starts"), [
    (10, 4, 2, [0, 2, 4, 6]),
    (10, 4, 3, [0, 3, 6]),         # the last clip ends exactly at T
    (11, 4, 3, [0, 3, 6]),         # frame 10 is not covered: no clip is added to reach the end
    (4, 4, 1, [0]),
    (3, 4, 2, [0]),                # shorter than L: one (padded) clip
    (30, 30, 8, [0]),
    (31, 30, 1, [0, 1]),
    (100, 30, 15, [0, 15, 30, 45, 60]),
])
def test_clip_starts(T, L, s, starts):
    assert clip_starts(T, L, s) == starts


def test_dataset_clips_and_items(reader: FeatureReader):
    ds = ClipDataset(reader, videos(), ["pool4", "conv5_3"], clip_len=4, clip_stride=3)
    expected = []
    for v, (rel, label) in enumerate(videos()):
        expected += [ClipSpec(rel, label, v, s) for s in clip_starts(FRAMES[rel], 4, 3)]
    assert ds.clips == expected
    assert len(ds) == 3 + 3 + 1 + 1
    assert ds.padded == ["B/it's.avi"]

    item = ds[1]  # video 0, start 3
    assert set(item) == {"x", "label", "video", "start"}
    assert (item["label"], item["video"], item["start"]) == (0, 0, 3)
    assert item["x"]["pool4"].shape == (4, 3, 2, 2) and item["x"]["conv5_3"].shape == (4, 2, 2, 2)
    assert item["x"]["pool4"].dtype == torch.float32
    for t in range(4):
        assert torch.all(item["x"]["pool4"][t] == frame_value(0, 3 + t))


def test_short_video_padded_with_last_frame(reader: FeatureReader):
    ds = ClipDataset(reader, videos(), ["pool4"], clip_len=6, clip_stride=2, dtype=torch.float16)
    assert ds.padded == ["B/it's.avi", "B/d.avi"]  # 3 and 4 frames < 6
    i = next(k for k, c in enumerate(ds.clips) if c.rel == "B/it's.avi")
    x = ds[i]["x"]["pool4"]
    assert x.shape == (6, 3, 2, 2) and x.dtype == torch.float16
    got = [float(x[t].unique()) for t in range(6)]
    assert got == [frame_value(2, t) for t in (0, 1, 2, 2, 2, 2)]


def test_reads_only_the_window(reader: FeatureReader, monkeypatch):
    calls = []
    real = reader.read

    def recording(rel, layer, start=0, stop=None):
        calls.append((rel, layer, start, stop))
        return real(rel, layer, start, stop)

    monkeypatch.setattr(reader, "read", recording)
    ds = ClipDataset(reader, videos(), ["pool4"], clip_len=4, clip_stride=2)
    for i, clip in enumerate(ds.clips):
        calls.clear()
        ds[i]
        stop = min(clip.start + 4, FRAMES[clip.rel])
        assert calls == [(clip.rel, "pool4", clip.start, stop)], clip


def test_collate_shapes(reader: FeatureReader):
    ds = ClipDataset(reader, videos(), ["pool4", "conv5_3"], clip_len=4, clip_stride=4)
    batch = collate_clips([ds[i] for i in range(3)])
    assert batch["x"]["pool4"].shape == (3, 4, 3, 2, 2)
    assert batch["x"]["conv5_3"].shape == (3, 4, 2, 2, 2)
    for key in ("label", "video", "start"):
        assert batch[key].shape == (3,) and batch[key].dtype == torch.long
    assert batch["start"].tolist() == [c.start for c in ds.clips[:3]]


def test_two_workers_give_the_same_batches(reader: FeatureReader):
    ds = ClipDataset(reader, videos(), ["pool4", "conv5_3"], clip_len=4, clip_stride=2)
    ds[0]  # the parent process has HDF5 files open before the workers fork

    def batches(workers: int) -> list[dict]:
        sampler = ClipSampler(len(ds), seed=3)
        sampler.set_epoch(1)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=collate_clips, num_workers=workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == -(-len(ds) // 3)
    for a, b in zip(serial, parallel, strict=True):
        for layer in ("pool4", "conv5_3"):
            assert torch.equal(a["x"][layer], b["x"][layer])
        for key in ("label", "video", "start"):
            assert torch.equal(a[key], b[key])


def test_extra_readers_are_aligned(tmp_path: Path, reader: FeatureReader):
    att = write_cache(tmp_path / "att", FRAMES, {"att": (1, 2, 2)}, offset=0.5)
    ds = ClipDataset(reader, videos(), ["pool4"], clip_len=4, clip_stride=3, extra={"att": att})
    for i, clip in enumerate(ds.clips):
        item = ds[i]
        assert item["att"].shape == (4, 1, 2, 2)
        # the same frames as x (offset by 0.5), padded the same way for the short video
        assert torch.equal(item["att"][:, 0, 0, 0] - 0.5, item["x"]["pool4"][:, 0, 0, 0]), clip
    batch = collate_clips([ds[0], ds[1]])
    assert batch["att"].shape == (2, 4, 1, 2, 2)


def test_missing_videos_raise_clear_key_errors(tmp_path: Path, reader: FeatureReader):
    partial = write_cache(tmp_path / "att", {"A/a (1).avi": 10}, {"att": (1, 2, 2)})
    with pytest.raises(KeyError, match=r"extra reader 'att'.*3 of 4 videos are not in the feature cache"):
        ClipDataset(reader, videos(), ["pool4"], clip_len=4, clip_stride=2, extra={"att": partial})
    with pytest.raises(KeyError, match=r"1 of 5 videos are not in the feature cache .*'C/missing.avi'"):
        ClipDataset(reader, [*videos(), ("C/missing.avi", 0)], ["pool4"], clip_len=4, clip_stride=2)


def test_bad_options(reader: FeatureReader):
    with pytest.raises(UserError, match="--clip-len"):
        ClipDataset(reader, videos(), ["pool4"], clip_len=0, clip_stride=1)
    with pytest.raises(UserError, match="--clip-stride"):
        ClipDataset(reader, videos(), ["pool4"], clip_len=4, clip_stride=0)
    with pytest.raises(UserError, match="no layer fc7.*it has pool4, conv5_3"):
        ClipDataset(reader, videos(), ["fc7"], clip_len=4, clip_stride=1)


def test_sampler_depends_on_seed_and_epoch_only():
    def order(seed, epoch, **kw):
        s = ClipSampler(10, seed=seed, **kw)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 0) == order(0, 0)
    assert sorted(order(0, 0)) == list(range(10))
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert order(0, 1) != order(1, 0)  # the seed and the epoch are mixed, not added
    assert derive_seed(0, 1) != derive_seed(1, 0)

    # ranks take slices of one padded permutation: equal lengths, every index covered
    full = ClipSampler(10, seed=5)
    full.set_epoch(2)
    ranks = [order(5, 2, rank=r, world=3) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]
    padded = full.order() + full.order()[:2]
    assert [padded[r::3] for r in range(3)] == ranks

    # evaluation: no shuffle, no padding, each sample exactly once
    val = [list(ClipSampler(10, shuffle=False, rank=r, world=3, pad=False)) for r in range(3)]
    assert sorted(sum(val, [])) == list(range(10))
    assert [len(ClipSampler(10, shuffle=False, rank=r, world=3, pad=False)) for r in range(3)] == [4, 3, 3]
