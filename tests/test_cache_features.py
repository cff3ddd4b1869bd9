"""The HDF5 feature store: shards renamed into place, a self-describing index, a lazy per-process reader."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from actiontk.cache.features import (
    MANIFEST,
    FeatureReader,
    ShardWriter,
    load_index,
    remove_incomplete,
    scan,
    shard_dir,
    write_manifest,
)
from actiontk.cache.runs import content_key, open_run

SHAPES = {"pool4": (4, 3, 3), "conv5_3": (2, 3, 3)}


def maps(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, *s)).astype(np.float16) for k, s in SHAPES.items()}


def write_videos(run: Path, rels: list[str], per_shard: int = 2, frames: int = 5) -> None:
    w = ShardWriter(run, SHAPES, videos_per_shard=per_shard)
    for i, rel in enumerate(rels):
        v = w.start(rel, fingerprint=[i, i])
        for start in range(0, frames, 2):
            chunk = maps(i, frames)
            v.append({k: a[start:start + 2] for k, a in chunk.items()})
        v.finish()
    w.close()


def test_roundtrip_shards_and_partial_reads(tmp_path: Path):
    rels = ["A/a (1).avi", "A/b&c.avi", "B/it's.avi"]
    write_videos(tmp_path, rels)
    names = sorted(p.name for p in shard_dir(tmp_path).iterdir())
    assert len(names) == 2 and all(n.endswith(".h5") for n in names)  # 2 per shard: 2 + 1
    reader = FeatureReader(tmp_path)
    assert reader.videos() == sorted(rels)
    for i, rel in enumerate(rels):
        expected = maps(i, 5)
        assert reader.num_frames(rel) == 5
        for layer in SHAPES:
            np.testing.assert_array_equal(reader.read(rel, layer), expected[layer])
            np.testing.assert_array_equal(reader.read(rel, layer, 1, 3), expected[layer][1:3])
    assert reader.layers() == SHAPES
    # the reader pickles without open handles and reopens lazily on the other side
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._files == {}
    np.testing.assert_array_equal(clone.read(rels[0], "pool4", 0, 1), maps(0, 5)["pool4"][:1])


def test_failed_videos_are_recorded_and_newest_entry_wins(tmp_path: Path):
    w = ShardWriter(tmp_path, SHAPES, videos_per_shard=4)
    v = w.start("A/x.avi")
    v.append(maps(0, 2))
    v.fail("cannot decode: moov atom not found")
    w.start("A/y.avi").fail("timeout")
    w.close()
    idx = scan(tmp_path)
    assert idx.videos == {} and set(idx.failed) == {"A/x.avi", "A/y.avi"}
    assert idx.failed["A/x.avi"]["reason"].startswith("cannot decode")
    write_videos(tmp_path, ["A/x.avi"])  # re-extracted later: the newer shard wins
    idx = scan(tmp_path)
    assert set(idx.videos) == {"A/x.avi"} and set(idx.failed) == {"A/y.avi"}


def test_manifest_is_used_only_when_it_matches_the_shards(tmp_path: Path):
    write_videos(tmp_path, ["A/1.avi", "A/2.avi"])
    write_manifest(tmp_path)
    assert (tmp_path / MANIFEST).is_file()
    assert set(load_index(tmp_path).videos) == {"A/1.avi", "A/2.avi"}
    write_videos(tmp_path, ["A/3.avi"])  # a shard the manifest does not know: rescan
    assert set(load_index(tmp_path).videos) == {"A/1.avi", "A/2.avi", "A/3.avi"}


def test_unfinished_shard_is_discarded_on_close(tmp_path: Path):
    w = ShardWriter(tmp_path, SHAPES, videos_per_shard=4)
    w.start("A/1.avi").append(maps(0, 1))  # never finished
    w.close()
    assert list(shard_dir(tmp_path).iterdir()) == []


KILLED_WRITER = """
import sys, numpy as np
from actiontk.cache.features import ShardWriter
from tests.test_cache_features import SHAPES, maps
w = ShardWriter(sys.argv[1], SHAPES, videos_per_shard=2)
i = 0
while True:  # write forever; the test kills us mid-shard
    v = w.start(f"V/{i}.avi", fingerprint=[i, i])
    for _ in range(50):
        v.append(maps(i, 1))
    v.finish()
    i += 1
    print(i, flush=True)
"""


def test_sigkill_leaves_finished_shards_readable(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[1])
    try:
        for line in proc.stdout:
            if int(line) >= 5:  # two shards finished, the third in progress
                break
        time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    incomplete = list(shard_dir(tmp_path).glob("*.incomplete"))
    assert incomplete, "the kill should have caught a shard in progress"
    idx = scan(tmp_path)
    assert len(idx.shards) >= 2
    reader = FeatureReader(tmp_path, idx)
    for rel in reader.videos():
        assert reader.num_frames(rel) == 50
        with h5py.File(shard_dir(tmp_path) / idx.videos[rel]["shard"], "r") as f:
            assert f.attrs["format"] == "actiontk-features"
    assert remove_incomplete(tmp_path, rank=0) == sorted(incomplete)
    assert not list(shard_dir(tmp_path).glob("*.incomplete"))


def test_append_rejects_mismatched_layers(tmp_path: Path):
    w = ShardWriter(tmp_path, SHAPES)
    v = w.start("A/1.avi")
    with pytest.raises(ValueError):
        v.append({"pool4": maps(0, 2)["pool4"]})
    w.abort()


def test_run_keys(tmp_path: Path):
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})
    r1 = open_run(tmp_path, "extract", 1, {"size": 112})
    r2 = open_run(tmp_path, "extract", 1, {"size": 112})
    r3 = open_run(tmp_path, "extract", 1, {"size": 128})
    assert r1.path == r2.path != r3.path and r1.key == r2.key
    assert open_run(tmp_path, "extract", 2, {"size": 112}).path != r1.path  # schema version is in the key


def test_the_documented_plain_h5py_reader_works(tmp_path: Path):
    """docs/cache-format.md shows how to read the cache without actiontk: run that very code."""
    doc = (Path(__file__).parents[1] / "docs" / "cache-format.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(code, namespace)
    write_videos(tmp_path, ["A/1.avi", "A/2.avi", "B/3.avi"])
    write_videos(tmp_path, ["A/2.avi"])  # re-extracted: the newer shard must win
    w = ShardWriter(tmp_path, SHAPES)
    w.start("B/3.avi").fail("decoded nothing")  # a later failure supersedes the earlier entry
    w.close()
    reader = FeatureReader(tmp_path)
    for rel in ("A/1.avi", "A/2.avi"):
        for layer in SHAPES:
            got = namespace["read_frames"](tmp_path, rel, layer, 1, 4)
            np.testing.assert_array_equal(got, reader.read(rel, layer, 1, 4))
    assert reader.index.videos["A/2.avi"]["shard"] == store_last_shard(tmp_path, "A/2.avi")
    with pytest.raises(KeyError):
        namespace["read_frames"](tmp_path, "B/3.avi", "pool4", 0, 1)


def store_last_shard(run: Path, rel: str) -> str:
    names = [s for s in sorted(p.name for p in shard_dir(run).glob("*.h5")) if rel in json.loads(
        h5py.File(shard_dir(run) / s, "r")["index"][()])["videos"]]
    return names[-1]
