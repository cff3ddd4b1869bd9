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
cache of their union, used only while it lists exactly the shards present (names, sizes, modification
times) and its own digest matches its content, and rebuilt from the shards otherwise. A killed process
loses only the videos of the shards it had open.

Integrity: every feature dataset carries HDF5's Fletcher-32 checksum filter (per chunk), and the shard's
``index_sha256`` attribute is the sha256 of its ``/index``. A shard that fails the cheap checks (HDF5
signature, superblock end-of-file address against the file size) or a checksum is **damaged**: it is left
out of the index, so its videos count as missing, and ``extract`` (or ``write_cubes``) deletes it and
computes its videos again. A reader that meets a failed checksum or non-finite values records the shard
in ``damaged.json`` and stops with a :class:`ShardDamaged` error that names the shard and the repair.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache.runs import RUN_FILE, atomic_write_json, fsync_dir
from actiontk.errors import UserError

FORMAT = "actiontk-features"
FORMAT_VERSION = 2  # 2: Fletcher-32 on every feature dataset, index_sha256, manifest signatures and digest
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
DAMAGED = "damaged.json"  # {shard: reason} of shards a reader or `status --verify` found damaged
INCOMPLETE = ".incomplete"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def fingerprint(path: Path) -> list[int]:
    """What identifies a raw input without reading it: size and modification time (ns)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


# -- index ----------------------------------------------------------------------------------------------


@dataclass
class StoreIndex:
    """Union of the finished shards: where each video is, and which videos failed (with why)."""

    videos: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel -> {shard, group, frames, ...}
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # rel -> {reason, fingerprint, ...}
    shards: list[str] = field(default_factory=list)  # the shards the index is the union of
    damaged: dict[str, str] = field(default_factory=dict)  # shard -> why it was left out (not in the manifest)

    def to_json(self, signatures: dict[str, list[int]]) -> dict[str, Any]:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "shards": self.shards,
                "signatures": signatures, "videos": self.videos, "failed": self.failed}
        return {**data, "digest": _digest(data)}


def _digest(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``data`` (without its ``digest``): an edited manifest no longer matches."""
    body = {k: v for k, v in data.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def all_finite(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is finite. For float16 it tests the exponent bits (all ones: inf or NaN) on
    the integer view, about 6x faster than ``np.isfinite(a).all()`` (bench/checksums.py)."""
    if a.dtype == np.float16 and a.size:
        return int((np.ascontiguousarray(a).view(np.uint16) & 0x7C00).max()) != 0x7C00
    return bool(np.isfinite(a).all())


def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def shard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / SHARD_DIR


def finished_shards(run_dir: Path) -> list[str]:
    d = shard_dir(run_dir)
    return sorted(p.name for p in d.glob("*.h5")) if d.is_dir() else []


def check_shard_file(path: Path) -> str | None:
    """Why the finished shard at ``path`` cannot be whole, from its first bytes and its size alone (no HDF5):
    the HDF5 signature, then the end-of-file address the superblock records against the file's size (a
    truncated file is shorter). None when nothing is wrong that this can see."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(96)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if size == 0:
        return "is empty"
    if not head.startswith(HDF5_SIGNATURE):
        return "has no HDF5 header (signature not found)"
    eof = _superblock_eof(head)
    if eof is None:
        return "has a damaged HDF5 superblock"
    if size < eof:
        return f"is truncated ({size} of {eof} bytes)"
    return None


def _superblock_eof(head: bytes) -> int | None:
    """The end-of-file address of an HDF5 superblock at offset 0 (versions 0-3), or None if unreadable."""
    if len(head) < 12:
        return None
    version = head[8]
    if version in (0, 1):
        size_offsets = head[13]
        start = 24 + (4 if version == 1 else 0)  # base, free space, end of file, driver info addresses follow
        index = 2
    elif version in (2, 3):
        size_offsets = head[9]
        start = 12  # base, superblock extension, end of file, root object header addresses follow
        index = 2
    else:
        return None
    if size_offsets not in (2, 4, 8):
        return None
    at = start + index * size_offsets
    if len(head) < at + size_offsets:
        return None
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[size_offsets]
    base = struct.unpack_from(fmt, head, start)[0]
    return base + struct.unpack_from(fmt, head, at)[0]


def read_shard_index(path: Path) -> dict[str, Any]:
    """The shard's own index; ValueError when it does not match the shard's ``index_sha256``."""
    import h5py

    with h5py.File(path, "r") as f:
        return _index_of(f)


def _index_of(f) -> dict[str, Any]:
    raw = f["index"][()]
    raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    expected = f.attrs.get("index_sha256")
    if expected is not None:
        expected = expected.decode() if isinstance(expected, bytes) else str(expected)
        if hashlib.sha256(raw).hexdigest() != expected:
            raise ValueError("its index does not match its checksum")
    index = json.loads(raw)
    if not isinstance(index, dict) or not isinstance(index.get("videos"), dict) \
            or not isinstance(index.get("failed"), dict):
        raise ValueError("its index is not an actiontk shard index")
    return index


def recorded_damage(run_dir: Path) -> dict[str, str]:
    """The shards recorded as damaged by a reader or ``status --verify`` (``damaged.json``)."""
    try:
        data = json.loads((Path(run_dir) / DAMAGED).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_damage(run_dir: Path, shard: str, reason: str) -> bool:
    """Add ``shard`` to ``damaged.json`` (best effort: False when the run cannot be written)."""
    damaged = recorded_damage(run_dir)
    damaged[shard] = reason
    try:
        atomic_write_json(Path(run_dir) / DAMAGED, damaged)
        return True
    except OSError:
        return False


def _forget_damage(run_dir: Path, shards: list[str]) -> None:
    damaged = recorded_damage(run_dir)
    if not any(s in damaged for s in shards):
        return
    for s in shards:
        damaged.pop(s, None)
    path = Path(run_dir) / DAMAGED
    if damaged:
        atomic_write_json(path, damaged)
    else:
        path.unlink(missing_ok=True)


def scan(run_dir: Path, skip: dict[str, str] | None = None) -> StoreIndex:
    """Rebuild the index from the shard files. Shards sort by creation stamp, so a newer entry for the
    same video (re-extracted after its file changed) replaces the older one. A shard that does not open or
    whose index is unreadable (and those in ``skip``) is left out and listed in ``damaged``."""
    index = StoreIndex(damaged=dict(skip or {}))
    for name in finished_shards(run_dir):
        if name in index.damaged:
            continue
        try:
            shard = read_shard_index(shard_dir(run_dir) / name)
        except (OSError, ValueError, KeyError, TypeError) as e:
            index.damaged[name] = _reason(e)
            continue
        index.shards.append(name)
        for rel, entry in shard["videos"].items():
            index.videos[rel] = {**entry, "shard": name}
            index.failed.pop(rel, None)
        for rel, entry in shard["failed"].items():
            index.failed[rel] = {**entry, "shard": name}
            index.videos.pop(rel, None)
    return index


def _reason(e: BaseException) -> str:
    """One line for why a shard could not be read (h5py's messages span lines and name internal functions)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, KeyError):
        return "has no index"
    if "Fletcher32" in text or "checksum" in text.lower() or "filter" in text.lower():
        return "fails its checksum"
    if "signature" in text:
        return "has no HDF5 header (signature not found)"
    if "truncated" in text:
        return "is truncated"
    return text[:160]


def damaged_shards(run_dir: Path) -> dict[str, str]:
    """The finished shards that fail the cheap checks or were recorded as damaged, with why."""
    present = finished_shards(run_dir)
    recorded = recorded_damage(run_dir)
    damaged = {}
    for name in present:
        reason = check_shard_file(shard_dir(run_dir) / name)
        if reason is None and name in recorded:
            reason = recorded[name]
        if reason is not None:
            damaged[name] = reason
    return damaged


def load_index(run_dir: Path) -> StoreIndex:
    """The union of the sound finished shards. The manifest is used when it lists exactly those shards with
    their current sizes and modification times and its digest matches its content; otherwise the shards' own
    indexes are read, and the manifest is rebuilt from them (when the run is writable)."""
    run_dir = Path(run_dir)
    damaged = damaged_shards(run_dir)
    good = [n for n in finished_shards(run_dir) if n not in damaged]
    try:
        data = json.loads((run_dir / MANIFEST).read_text())
        sigs = {n: _signature(shard_dir(run_dir) / n) for n in good}
        if (isinstance(data, dict) and data.get("format_version") == FORMAT_VERSION and data.get("shards") == good
                and data.get("signatures") == sigs and data.get("digest") == _digest(data)):
            return StoreIndex(videos=data["videos"], failed=data["failed"], shards=data["shards"], damaged=damaged)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    index = scan(run_dir, skip=damaged)
    with contextlib.suppress(OSError):  # a read-only cache: the index is right, only its cached copy stays stale
        _write_manifest(run_dir, index)
    return index


def write_manifest(run_dir: Path, index: StoreIndex | None = None) -> StoreIndex:
    index = index if index is not None else scan(run_dir, skip=damaged_shards(run_dir))
    _write_manifest(Path(run_dir), index)
    return index


def _write_manifest(run_dir: Path, index: StoreIndex) -> None:
    sigs = {}
    for n in index.shards:
        try:
            sigs[n] = _signature(shard_dir(run_dir) / n)
        except OSError:  # removed meanwhile: the manifest will not match and the next reader rescans
            sigs[n] = [-1, -1]
    atomic_write_json(run_dir / MANIFEST, index.to_json(sigs))


def verify_shard(path: Path) -> str | None:
    """Read every byte of a finished shard: the cheap checks, the index against its checksum, every feature
    dataset through its Fletcher-32 checksums, and that every value is finite. None when it is sound."""
    import h5py

    reason = check_shard_file(path)
    if reason is not None:
        return reason
    try:
        with h5py.File(path, "r") as f:
            index = _index_of(f)
            for rel, entry in index["videos"].items():
                group = f[entry["group"]]
                for layer, ds in group.items():
                    if ds.shape[0] != entry["frames"]:
                        return f"{rel} {layer} holds {ds.shape[0]} frames, its index says {entry['frames']}"
                    for start in range(0, ds.shape[0], 256):
                        if not all_finite(ds[start:start + 256]):
                            return f"{rel} {layer} holds values that are not finite"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return _reason(e)
    return None


def repair(run_dir: Path, log=None) -> list[str]:
    """Delete the damaged shards of a run so that their videos are computed again: those failing the cheap
    checks, and those recorded as damaged that fail a full verification (a record whose shard verifies is
    dropped). Returns the names of the shards removed. Only a writer of the run calls this."""
    run_dir = Path(run_dir)
    recorded = recorded_damage(run_dir)
    removed, cleared = [], []
    for name in finished_shards(run_dir):
        path = shard_dir(run_dir) / name
        reason = check_shard_file(path)
        if reason is None and name in recorded:
            reason = verify_shard(path)
            if reason is None:
                cleared.append(name)
        if reason is None:
            continue
        path.unlink(missing_ok=True)
        removed.append(name)
        if log is not None:
            log(f"removed the damaged shard {name} ({reason}): its videos are computed again")
    _forget_damage(run_dir, removed + cleared + [n for n in recorded if not (shard_dir(run_dir) / n).exists()])
    if removed:
        fsync_dir(shard_dir(run_dir))
    return removed


class ShardDamaged(UserError):
    """A finished shard failed a checksum (or holds non-finite values) while being read. Constructed from the
    message alone, like any UserError, so that a DataLoader worker can hand it back to the main process."""


def shard_damaged(run_dir: Path, shard: str, reason: str) -> ShardDamaged:
    """The one-line error for a damaged shard: which shard of which run, why, and the command that repairs it."""
    where, hint = _repair_hint(Path(run_dir))
    return ShardDamaged(f"the shard {shard} of {where} is damaged: it {reason}", hint)


def _repair_hint(run_dir: Path) -> tuple[str, str]:
    """(how to name the run, what repairs it) from its run.json (an attention store sits inside its run)."""
    for d in (run_dir, run_dir.parent):
        try:
            info = json.loads((d / RUN_FILE).read_text())
            break
        except (OSError, ValueError):
            continue
    else:
        return str(run_dir), f"delete {run_dir} and compute it again"
    stage, inputs = info.get("stage", "?"), info.get("inputs", {})
    where = f"{stage} run {d}"
    if stage == "extract":
        cmd = f"actiontk extract {inputs.get('dataset', 'DATASET')} --root {inputs.get('root', 'DIR')}"
        return where, f"run the `{cmd}` command that made it again (same options and split): it re-computes that " \
                      "shard's videos"
    if stage == "cubes":
        return where, "run the train-3d command that made it again (same options): it rewrites that shard's cubes"
    if run_dir != d:
        return where + f" ({run_dir.name})", f"delete {d} and run its {stage} command again"
    return where, f"delete {d} and run its {stage} command again"


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
        self.objects: list[Any] = []  # h5py groups and datasets, freed only when the file is closed
        self.videos: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, dict[str, Any]] = {}

    @property
    def full(self) -> bool:
        return self.started >= self.capacity

    @property
    def done(self) -> bool:
        return not self.open_videos

    def finalize(self) -> None:
        text = json.dumps({"videos": self.videos, "failed": self.failed}, sort_keys=True)
        self.file.create_dataset("index", data=text)
        self.file.attrs["index_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self.file.flush()
        self.file.close()
        self.objects.clear()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)

    def discard(self) -> None:
        self.neutralize()  # nothing of it is kept: closing must not try (and fail) to write it again
        try:
            self.file.close()
        except Exception:  # noqa: S110 - the file is being thrown away; the error that led here is raised
            pass
        finally:
            self.objects.clear()
            self.tmp.unlink(missing_ok=True)

    def neutralize(self) -> None:
        """Point the HDF5 file's descriptor at /dev/null. After a failed write (full disk, EFBIG), HDF5 retries
        the writes whenever one of the file's objects is freed and, at exit, crashes the interpreter; writes to
        /dev/null succeed, so the objects close quietly. Only for a shard that will be discarded."""
        with contextlib.suppress(Exception):
            fd = self.file.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)


class VideoWriter:
    """Appends one video's feature maps, layer by layer, into its shard."""

    def __init__(self, writer: ShardWriter, shard: _Shard, rel: str, group: str, attrs: dict[str, Any]):
        self._writer, self._shard, self.rel, self.group, self.attrs = writer, shard, rel, group, attrs
        self.frames = 0
        g = shard.file.create_group(group)
        self._datasets = {}
        # The shard keeps every object it made alive until it closes: HDF5 writes an object's metadata when it is
        # freed, and a write failing there (full disk) cannot be caught -- it must happen inside close().
        shard.objects.append(g)
        for layer, shape in writer.layer_shapes.items():
            self._datasets[layer] = g.create_dataset(
                layer, shape=(0, *shape), maxshape=(None, *shape), dtype=np.float16,
                chunks=(writer.chunk_frames, *shape), compression=writer.compression,
                fletcher32=True,  # a checksum per chunk: a damaged chunk fails its read instead of returning junk
            )
            shard.objects.append(self._datasets[layer])

    def append(self, maps: dict[str, np.ndarray]) -> None:
        """Append (n, C, h, w) maps for every layer (the same n for all)."""
        counts = {layer: len(a) for layer, a in maps.items()}
        if set(counts) != set(self._datasets) or len(set(counts.values())) != 1:
            raise ValueError(f"expected the same number of frames for layers {sorted(self._datasets)}, got {counts}")
        n = next(iter(counts.values()))
        half = {layer: a.astype(np.float16, copy=False) for layer, a in maps.items()}
        for layer, a in half.items():
            if not all_finite(a):  # NaN or inf (or beyond float16's range) is never stored
                raise UserError(f"the {layer} maps of {self.rel} are not finite (NaN or inf, or beyond float16's "
                                "range); nothing of it was stored",
                                "the model or its weights produce them: check the weights and --lr; finished "
                                "shards are kept")
        try:
            for layer, a in half.items():
                ds = self._datasets[layer]
                ds.resize(self.frames + n, axis=0)
                ds[self.frames:] = a
        except (OSError, RuntimeError):  # h5py reports some failed writes as RuntimeError
            self._writer.write_failed()
            raise
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
        try:
            shard.finalize()
        except (OSError, RuntimeError):  # h5py reports some failed writes as RuntimeError
            self.write_failed()
            raise
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

    def write_failed(self) -> None:
        """A write failed (full disk, file-size limit): every open shard is lost, so detach them from the disk
        at once, before their objects are freed (see :meth:`_Shard.neutralize`)."""
        for shard in self._open:
            shard.neutralize()

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
        self._by_shard: dict[str, list[str]] | None = None  # shard -> its videos in ``index`` (built on first use)
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
            try:
                f = h5py.File(shard_dir(self.run_dir) / shard, "r")
                own = _index_of(f)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise self._damaged(shard, _reason(e)) from None
            self._cross_check(shard, own)
            self._files[shard] = f
        return f

    def _cross_check(self, shard: str, own: dict[str, Any]) -> None:
        """The index in use must say what the shard's own index says about the shard's videos; when it does
        not (a manifest edited or out of date), the manifest is rebuilt and the command has to start again,
        since clips were already cut from the wrong frame counts."""
        keys = ("group", "frames")
        if self._by_shard is None:
            self._by_shard = {}
            for rel, entry in self.index.videos.items():
                self._by_shard.setdefault(entry.get("shard"), []).append(rel)
        for rel in self._by_shard.get(shard, []):
            entry = self.index.videos[rel]
            mine = own["videos"].get(rel)
            if mine is None or any(mine.get(k) != entry.get(k) for k in keys):
                with contextlib.suppress(OSError):
                    write_manifest(self.run_dir)
                raise UserError(f"the manifest of {self.run_dir} disagreed with the shard {shard} about {rel} "
                                "(edited or out of date); it has been rebuilt from the shards",
                                "run the same command again")

    def _damaged(self, shard: str, reason: str) -> ShardDamaged:
        self._files.pop(shard, None)
        record_damage(self.run_dir, shard, reason)
        return shard_damaged(self.run_dir, shard, reason)

    def dataset(self, rel: str, layer: str):
        entry = self.index.videos.get(rel)
        if entry is None:
            raise KeyError(f"{rel!r} is not in the feature cache {self.run_dir}")
        return self._file(entry["shard"])[entry["group"]][layer]

    def read(self, rel: str, layer: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start:stop]`` of one layer as float16 (T, C, h, w); only those chunks are read, and
        checked: a failed checksum or a value that is not finite raises :class:`ShardDamaged`."""
        ds = self.dataset(rel, layer)
        shard = self.index.videos[rel]["shard"]
        try:
            a = ds[start:stop]
        except OSError as e:
            raise self._damaged(shard, f"{_reason(e)} (reading {rel} {layer})") from None
        if not all_finite(a):
            raise self._damaged(shard, f"holds values that are not finite ({rel} {layer})")
        return a

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
