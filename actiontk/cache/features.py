"""The feature store of an ``extract`` run: HDF5 shards, a manifest, and a lazy reader.

Layout of a run directory (documented for other tools in ``docs/cache-format.md``)::

    run.json                           what produced the run (stage, config, key)
    manifest.json                      index of finished shards and their videos (derived, rebuildable)
    shards/s<stamp>-r<rank>-<seq>.h5   finished shards, each self-describing
    shards/*.h5.incomplete             a shard being written (deleted when a resumed run starts)

Crash safety: a shard is written under ``.incomplete`` by exactly one process and renamed into place only
after it is complete, closed and fsynced, so a finished shard is never half-written (a killed HDF5 writer
can leave a file that does not open: the final name is never opened for writing). A shard holds its own
index (``/index``, JSON), so the store's truth is the set of finished shard files; ``manifest.json`` is a
cache of their union, rebuilt whenever it does not list exactly the shards present. A killed process
loses only the videos of the shards it had open.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache.runs import atomic_write_json

FORMAT = "actiontk-features"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
INCOMPLETE = ".incomplete"


def fingerprint(path: Path) -> list[int]:
    """What identifies a raw input without reading it: size and modification time (ns)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- index ----------------------------------------------------------------------------------------------


@dataclass
class StoreIndex:
    """Union of the finished shards: where each video is, and which videos failed (with why)."""

    videos: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel -> {shard, group, frames, ...}
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel -> {reason, fingerprint, ...}
    shards: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": self.shards,
                "videos": self.videos, "failed": self.failed}


def shard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / SHARD_DIR


def finished_shards(run_dir: Path) -> list[str]:
    d = shard_dir(run_dir)
    return sorted(p.name for p in d.glob("*.h5")) if d.is_dir() else []


def read_shard_index(path: Path) -> dict[str, Any]:
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f["index"][()])


def scan(run_dir: Path) -> StoreIndex:
    """Rebuild the index from the shard files. Shards sort by creation stamp, so a newer entry for the
    same video (re-extracted after its file changed) replaces the older one."""
    index = StoreIndex()
    for name in finished_shards(run_dir):
        shard = read_shard_index(shard_dir(run_dir) / name)
        index.shards.append(name)
        for rel, entry in shard["videos"].items():
            index.videos[rel] = {**entry, "shard": name}
            index.failed.pop(rel, None)
        for rel, entry in shard["failed"].items():
            index.failed[rel] = {**entry, "shard": name}
            index.videos.pop(rel, None)
    return index


def load_index(run_dir: Path) -> StoreIndex:
    """The manifest when it lists exactly the finished shards present, else a fresh scan."""
    manifest = Path(run_dir) / MANIFEST
    present = finished_shards(run_dir)
    try:
        data = json.loads(manifest.read_text())
        if data.get("format_version") == FORMAT_VERSION and data.get("shards") == present:
            return StoreIndex(videos=data["videos"], failed=data["failed"], shards=data["shards"])
    except (OSError, ValueError, KeyError):
        pass
    return scan(run_dir)


def write_manifest(run_dir: Path, index: StoreIndex | None = None) -> StoreIndex:
    index = index if index is not None else scan(run_dir)
    atomic_write_json(Path(run_dir) / MANIFEST, index.to_json())
    return index


# -- writer ---------------------------------------------------------------------------------------------


class _Shard:
    def __init__(self, path: Path, capacity: int, attrs: dict[str, Any]):
        import h5py

        self.final = path
        self.tmp = path.with_name(path.name + INCOMPLETE)
        self.file = h5py.File(self.tmp, "w")
        for k, v in attrs.items():
            self.file.attrs[k] = v
        self.capacity = capacity
        self.started = 0
        self.open_videos: set[str] = set()
        self.videos: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}

    @property
    def full(self) -> bool:
        return self.started >= self.capacity

    @property
    def done(self) -> bool:
        return not self.open_videos

    def finalize(self) -> None:
        index = {"videos": self.videos, "failed": self.failed}
        self.file.create_dataset("index", data=json.dumps(index, sort_keys=True))
        self.file.flush()
        self.file.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        _fsync_dir(self.final.parent)

    def discard(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class VideoWriter:
    """Appends one video's feature maps, layer by layer, into its shard."""

    def __init__(self, writer: ShardWriter, shard: _Shard, rel: str, group: str, attrs: dict[str, Any]):
        self._writer, self._shard, self.rel, self.group, self.attrs = writer, shard, rel, group, attrs
        self.frames = 0
        g = shard.file.create_group(group)
        self._datasets = {}
        for layer, shape in writer.layer_shapes.items():
            self._datasets[layer] = g.create_dataset(
                layer, shape=(0, *shape), maxshape=(None, *shape), dtype=np.float16,
                chunks=(writer.chunk_frames, *shape), compression=writer.compression,
            )

    def append(self, maps: dict[str, np.ndarray]) -> None:
        """Append (n, C, h, w) maps for every layer (the same n for all)."""
        counts = {layer: len(a) for layer, a in maps.items()}
        if set(counts) != set(self._datasets) or len(set(counts.values())) != 1:
            raise ValueError(f"expected the same number of frames for layers {sorted(self._datasets)}, got {counts}")
        n = next(iter(counts.values()))
        for layer, a in maps.items():
            ds = self._datasets[layer]
            ds.resize(self.frames + n, axis=0)
            ds[self.frames:] = a.astype(np.float16, copy=False)
        self.frames += n

    def finish(self, **attrs: Any) -> None:
        if self.frames == 0:
            raise ValueError(f"{self.rel}: no frames were written")
        entry = {**self.attrs, **attrs, "group": self.group, "frames": self.frames}
        self._shard.videos[self.rel] = entry
        self._writer._close_video(self._shard, self.rel)

    def fail(self, reason: str, **attrs: Any) -> None:
        """Record the video as failed (with ``reason``); whatever was appended is dropped."""
        del self._shard.file[self.group]
        self._shard.failed[self.rel] = {**self.attrs, **attrs, "reason": reason}
        self._writer._close_video(self._shard, self.rel)

    def discard(self) -> None:
        """Drop the video without recording anything (it will be started again)."""
        del self._shard.file[self.group]
        self._writer._close_video(self._shard, self.rel)


class ShardWriter:
    """Writes videos into shards of ``videos_per_shard``; each shard is renamed into place once every video
    assigned to it has finished or failed. Exactly one process writes a given shard."""

    def __init__(self, run_dir: Path, layer_shapes: dict[str, tuple[int, int, int]], *, rank: int = 0,
                 videos_per_shard: int = 32, chunk_frames: int = 1, compression: str | None = None,
                 attrs: dict[str, Any] | None = None):
        self.dir = shard_dir(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.layer_shapes = dict(layer_shapes)
        self.rank = rank
        self.videos_per_shard = max(1, videos_per_shard)
        self.chunk_frames = chunk_frames
        self.compression = compression
        self.attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "rank": rank,
                      "layers": json.dumps(self.layer_shapes), **(attrs or {})}
        self._stamp = time.time_ns()
        self._seq = 0
        self._open: list[_Shard] = []
        self.finished: list[Path] = []

    def start(self, rel: str, **attrs: Any) -> VideoWriter:
        if not self._open or self._open[-1].full:
            name = f"s{self._stamp:020d}-r{self.rank:03d}-{self._seq:05d}.h5"
            self._seq += 1
            self._open.append(_Shard(self.dir / name, self.videos_per_shard, self.attrs))
        shard = self._open[-1]
        group = f"v{shard.started:05d}"
        shard.started += 1
        shard.open_videos.add(rel)
        return VideoWriter(self, shard, rel, group, attrs)

    def _close_video(self, shard: _Shard, rel: str) -> None:
        shard.open_videos.discard(rel)
        if shard.full and shard.done:
            self._finalize(shard)

    def _finalize(self, shard: _Shard) -> None:
        shard.finalize()
        self._open.remove(shard)
        self.finished.append(shard.final)

    def close(self) -> None:
        """Finalize every open shard whose videos have all ended; discard the others (their videos are lost)."""
        for shard in list(self._open):
            if shard.done and (shard.videos or shard.failed):
                self._finalize(shard)
            else:
                shard.discard()
                self._open.remove(shard)

    def abort(self) -> None:
        """Discard every open shard (after an error): finished shards stay as they are."""
        for shard in self._open:
            shard.discard()
        self._open.clear()


def remove_incomplete(run_dir: Path, rank: int | None = None) -> list[Path]:
    """Delete leftovers of killed writers (of ``rank``, or all); returns what was removed."""
    d = shard_dir(run_dir)
    pattern = f"*-r{rank:03d}-*.h5{INCOMPLETE}" if rank is not None else f"*.h5{INCOMPLETE}"
    removed = sorted(d.glob(pattern)) if d.is_dir() else []
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


# -- reader ---------------------------------------------------------------------------------------------


class FeatureReader:
    """Read-only access to a run's features. Files open lazily, per process: the reader pickles without its
    handles, so each DataLoader worker opens its own."""

    def __init__(self, run_dir: Path, index: StoreIndex | None = None):
        self.run_dir = Path(run_dir)
        self.index = index if index is not None else load_index(self.run_dir)
        self._files: dict[str, Any] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __contains__(self, rel: str) -> bool:
        return rel in self.index.videos

    def videos(self) -> list[str]:
        return sorted(self.index.videos)

    def num_frames(self, rel: str) -> int:
        return int(self.index.videos[rel]["frames"])

    def layers(self) -> dict[str, tuple[int, ...]]:
        if not self.index.shards:
            return {}
        f = self._file(self.index.shards[0])
        return {k: tuple(v) for k, v in json.loads(f.attrs["layers"]).items()}

    def _file(self, shard: str):
        import h5py

        if self._pid != os.getpid():  # inherited through fork: never share HDF5 handles across processes
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = h5py.File(shard_dir(self.run_dir) / shard, "r")
        return f

    def dataset(self, rel: str, layer: str):
        entry = self.index.videos.get(rel)
        if entry is None:
            raise KeyError(f"{rel!r} is not in the feature cache {self.run_dir}")
        return self._file(entry["shard"])[entry["group"]][layer]

    def read(self, rel: str, layer: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start:stop]`` of one layer as float16 (T, C, h, w); only those chunks are read."""
        return self.dataset(rel, layer)[start:stop]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
