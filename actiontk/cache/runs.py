"""Run directories keyed by content.

A run's key is the sha256 of the sorted JSON of everything that changes its output: the stage name, the
stage's schema version, the fully resolved config (preprocessing included), the keys of the upstream runs
it read and the identity of its raw inputs. The same key means the same output, so the run is reused.
The run lives at ``<cache root>/<stage>/<key[:16]>/`` with ``run.json`` beside its outputs.

A process that opens a run holds a shared ``flock`` on its ``lock.open`` until it exits (the kernel drops it
when the process dies, killed or not), so ``actiontk status`` can tell a run being written from one whose
writer is gone, and ``status --gc`` never removes a run some process has open.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from actiontk import __version__
from actiontk.errors import UserError

RUN_FILE = "run.json"
ENV_CACHE = "ACTIONTK_CACHE"
OPEN_LOCK = "lock.open"  # shared flock of every process that has the run open (see run_in_use)

# runs this process has open: folder -> the lock file it holds (a flock lasts as long as its file stays open)
_held: dict[str, Any] = {}


def content_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical (sorted, compact) JSON of ``payload``."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_cache_root() -> Path:
    """``$ACTIONTK_CACHE``, else the checkout's top-level ``cache/``, else ``~/.cache/actiontk``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    checkout_cache = Path(__file__).resolve().parents[2] / "cache"
    if (checkout_cache / ".gitignore").is_file():
        return checkout_cache
    return Path.home() / ".cache" / "actiontk"


def resolve_cache_root(cache: str | Path | None) -> Path:
    root = Path(cache).expanduser() if cache else default_cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        hint = "pass --cache DIR or set ACTIONTK_CACHE"
        raise UserError(f"cannot create the cache folder {root}: {e.strerror}", hint) from None
    if not os.access(root, os.W_OK):
        raise UserError(f"the cache folder {root} is not writable", "pass --cache DIR or set ACTIONTK_CACHE")
    return root


# -- writing a file atomically: the one way every module writes a finished file ----------------------------


def temp_path(path: Path) -> Path:
    """The name ``path`` is written under before it is complete: hidden, in the same folder (so that
    ``os.replace`` is a rename on one filesystem), and per process (two writers never share one)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename in the folder ``path`` durable; best effort (some filesystems cannot open a folder)."""
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


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *,
                 before_replace: Callable[[], object] | None = None) -> None:
    """Write a file through ``write(f)`` (``f`` open for binary writing) under :func:`temp_path`, fsync it, then
    ``os.replace`` it onto ``path``: a reader, or a resume after a kill, sees the old file or the new one, never a
    torn one. ``before_replace`` runs between the fsync and the rename (a checksum sidecar that must list the new
    digest before the new file appears). On any failure the temporary file is removed and the error raised."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """For a writer that needs a path, not a file object (an encoder): yields a temporary path beside ``path``
    (ending in ``suffix``, for writers that pick the format by extension); when the block ends without an error
    the file there is fsynced and renamed onto ``path``, otherwise removed."""
    tmp = temp_path(path).with_name(temp_path(path).name + suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes | memoryview, *,
                       before_replace: Callable[[], object] | None = None) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data), before_replace=before_replace)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of ``text`` in UTF-8, lines ending in ``\\n`` as given."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# -- checksums of single files (checkpoints): PATH.sha256 beside PATH ----------------------------------


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, read in 1 MiB blocks (checkpoints are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def accepted_digests(path: Path) -> list[str] | None:
    """The digests ``path`` may have (its ``.sha256`` file), or None when it has no such file."""
    try:
        return checksum_path(path).read_text().split()
    except FileNotFoundError:
        return None


def verify_checksum(path: Path) -> str | None:
    """Why ``path`` does not match its ``.sha256`` file (None: it matches, or it has none: an older actiontk)."""
    accepted = accepted_digests(path)
    if accepted is None:
        return None
    if file_sha256(path) not in accepted:
        return "does not match its checksum (it was changed or damaged after it was written)"
    return None


@dataclass(frozen=True)
class Run:
    """A run directory and what its ``run.json`` says."""

    path: Path
    info: dict[str, Any]

    @property
    def key(self) -> str:
        return self.info["key"]

    @property
    def stage(self) -> str:
        return self.info["stage"]

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def short(self) -> str:
        return f"{self.stage}/{self.path.name}"


def _payload(stage: str, schema: int, config: dict[str, Any], upstream: dict[str, str] | None,
             inputs: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    payload = {"stage": stage, "schema": schema, "config": config, "upstream": upstream or {},
               "inputs": inputs or {}}
    return payload, content_key(payload)


def find_run(root: Path, stage: str, schema: int, config: dict[str, Any], upstream: dict[str, str] | None = None,
             inputs: dict[str, Any] | None = None) -> Run | None:
    """The run :func:`open_run` would return for this config if it exists already, else None (nothing is made)."""
    _, key = _payload(stage, schema, config, upstream, inputs)
    run_file = root / stage / key[:16] / RUN_FILE
    try:
        info = json.loads(run_file.read_text())
    except (OSError, ValueError):
        return None
    return Run(run_file.parent, info) if info.get("key") == key else None


def open_run(root: Path, stage: str, schema: int, config: dict[str, Any], upstream: dict[str, str] | None = None,
             inputs: dict[str, Any] | None = None) -> Run:
    """The run of ``stage`` for this config: the existing directory when the key matches, else a new one."""
    payload, key = _payload(stage, schema, config, upstream, inputs)
    path = root / stage / key[:16]
    run_file = path / RUN_FILE
    _hold(path)  # before run.json is read or written: `status --gc` removes a run only under the exclusive lock
    if run_file.is_file():
        info = json.loads(run_file.read_text())
        if info.get("key") != key:
            raise UserError(f"{run_file} belongs to another run (key prefix collision)", "remove that folder")
        return Run(path, info)
    path.mkdir(parents=True, exist_ok=True)
    info = {**payload, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "actiontk": __version__}
    atomic_write_json(run_file, info)
    return Run(path, info)


def _hold(path: Path) -> None:
    """Take this process's shared lock on the run at ``path`` (creating the folder), kept until exit."""
    if _id(path) in _held:
        return
    while True:
        path.mkdir(parents=True, exist_ok=True)
        fh = open(path / OPEN_LOCK, "a+")  # noqa: SIM115 - held for the life of the process
        fcntl.flock(fh, fcntl.LOCK_SH)  # blocks only while `status --gc` is removing this very run
        try:
            current = os.stat(path / OPEN_LOCK).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            _held[_id(path)] = fh
            return
        fh.close()  # we locked the file of a run that was removed meanwhile: start over


def _id(path: Path) -> str:
    return os.path.realpath(path)


def held_runs() -> list[Path]:
    """The run folders this process has open (and holds the open lock of), in the order it opened them."""
    return [Path(p) for p in _held]


def release(path: Path) -> None:
    """Drop this process's open lock on the run at ``path`` (if it holds one)."""
    fh = _held.pop(_id(path), None)
    if fh is not None:
        fh.close()


def _lock_taken(lock_file: Path) -> bool:
    """Whether some open file holds a flock on ``lock_file`` (ours included: flock locks belong to open files)."""
    try:
        fh = open(lock_file)  # noqa: SIM115 - read-only: probing never creates a file
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def _others_share(fh) -> bool:
    """Whether another open file holds a lock on the file that ``fh`` holds shared: try to make ours exclusive,
    then share it again (a failed conversion drops the old lock, hence the unconditional re-lock)."""
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        fcntl.flock(fh, fcntl.LOCK_SH)


def run_in_use(path: Path) -> bool:
    """True while another process holds a lock of the run: it has the run open (``lock.open``) or is writing
    its shards (extract's ``lock.rNNN``). This process's own open lock does not count: whatever it did with
    the run is over by the time it asks."""
    own = _held.get(_id(path))
    for lock_file in sorted(path.glob("lock.*")):
        if own is not None and lock_file.name == OPEN_LOCK:
            if _others_share(own):
                return True
        elif _id(lock_file) in _writers:  # a writer lock this very process holds
            continue
        elif _lock_taken(lock_file):
            return True
    return False


class WriterLock:
    """The exclusive lock of one writer of a run: ``lock.rNNN`` for rank NNN, held by extract while it writes
    shards and by a training stage from its start to its completion. The holder writes its PID into the file,
    so that a second process refused the lock can say whose it is."""

    def __init__(self, path: Path, rank: int, fh):
        self.path, self.rank, self._fh = path, rank, fh

    def release(self) -> None:
        _writers.pop(_id(self.path), None)
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()


_writers: dict[str, WriterLock] = {}  # lock files this process holds: path -> lock


def writer_lock_name(rank: int) -> str:
    return f"lock.r{rank:03d}"


def lock_writer(run_dir: Path, rank: int = 0, *, what: str = "a process") -> WriterLock:
    """Take rank ``rank``'s writer lock of the run at ``run_dir`` (this process may already hold it: a command
    run again in the same process); a UserError naming the PID that holds it otherwise."""
    path = Path(run_dir) / writer_lock_name(rank)
    held = _writers.get(_id(path))
    if held is not None:
        return held
    try:
        fh = open(path, "a+")  # noqa: SIM115 - held until released or the process exits
    except OSError as e:
        raise UserError(f"cannot create the lock file {path}: {e.strerror}",
                        "make the cache folder writable, or point --cache at another one") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise UserError(f"the run {run_dir} is in use by PID {pid} ({what} on it has not finished)",
                        "wait for that process to finish (`actiontk status` shows the run as running), "
                        "or stop it and run this command again to resume") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    lock = _writers[_id(path)] = WriterLock(path, rank, fh)
    return lock


def release_writer(run_dir: Path) -> None:
    """Release every writer lock this process holds on the run at ``run_dir``."""
    folder = _id(Path(run_dir))
    for key, lock in list(_writers.items()):
        if os.path.dirname(key) == folder:
            lock.release()


def writer_locked(run_dir: Path) -> bool:
    """True while some open file (this process's included) holds a writer lock (``lock.rNNN``) of the run at
    ``run_dir``: an extraction or a training is writing it."""
    return any(_lock_taken(p) for p in Path(run_dir).glob("lock.r*"))


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Hold the run's open lock exclusively, so that no process can open the run meanwhile; yields False
    (holding nothing) when some process has it open or holds one of its other locks."""
    release(path)
    fh = open(path / OPEN_LOCK, "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield not any(_lock_taken(f) for f in sorted(path.glob("lock.*")) if f.name != OPEN_LOCK)
    finally:
        fh.close()


def list_runs(root: Path, stage: str | None = None) -> list[Run]:
    """Every run under ``root`` (of ``stage``), newest first; folders without a readable run.json are skipped."""
    runs = []
    stages = [root / stage] if stage else [p for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    for stage_dir in stages:
        if not stage_dir.is_dir():
            continue
        for d in stage_dir.iterdir():
            try:
                info = json.loads((d / RUN_FILE).read_text())
            except (OSError, ValueError):
                continue
            runs.append(Run(d, info))
    runs.sort(key=lambda r: (r.info.get("created", ""), (r.path / RUN_FILE).stat().st_mtime), reverse=True)
    return runs


def run_by_name(root: Path, name: str, stages: tuple[str, ...] | list[str], what: str) -> Run:
    """The run ``name`` names: a run folder (any stage: the caller checks it is of a kind it reads), or a
    ``STAGE/KEY`` or ``KEY`` prefix among the runs of ``stages`` under ``root``. ``what`` names the runs looked
    for in the errors (e.g. "training run"): none found, or a prefix that matches several."""
    path = Path(name).expanduser()
    if (path / RUN_FILE).is_file():
        try:
            return Run(path.resolve(), json.loads((path / RUN_FILE).read_text()))
        except ValueError:
            raise UserError(f"{path / RUN_FILE} is not valid JSON", "remove that folder") from None
    stage, _, prefix = name.rpartition("/")
    matches = [r for s in stages for r in list_runs(root, s)
               if (not stage or r.stage == stage) and prefix and r.key.startswith(prefix)]
    if not matches:
        raise UserError(f"no {what} named {name!r} in {root}",
                        "give a run folder or STAGE/KEY prefix; `actiontk status` lists the runs")
    if len(matches) > 1:
        raise UserError(f"{name!r} matches {len(matches)} runs: {', '.join(r.short for r in matches[:5])}",
                        "give more of the key")
    return matches[0]


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.stat(os.path.join(dirpath, f)).st_size
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The well-formed object lines of a JSONL file (a torn or foreign line is skipped; no file: [])."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records
