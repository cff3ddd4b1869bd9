"""Run directories keyed by content.

A run's key is the sha256 of the sorted JSON of everything that changes its output: the stage name, the
stage's schema version, the fully resolved config (preprocessing included), the keys of the upstream runs
it read and the identity of its raw inputs. The same key means the same output, so the run is reused.
The run lives at ``<cache root>/<stage>/<key[:16]>/`` with ``run.json`` beside its outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actiontk import __version__
from actiontk.errors import UserError

RUN_FILE = "run.json"
ENV_CACHE = "ACTIONTK_CACHE"


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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


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


def open_run(root: Path, stage: str, schema: int, config: dict[str, Any], upstream: dict[str, str] | None = None,
             inputs: dict[str, Any] | None = None) -> Run:
    """The run of ``stage`` for this config: the existing directory when the key matches, else a new one."""
    payload = {"stage": stage, "schema": schema, "config": config, "upstream": upstream or {},
               "inputs": inputs or {}}
    key = content_key(payload)
    path = root / stage / key[:16]
    run_file = path / RUN_FILE
    if run_file.is_file():
        info = json.loads(run_file.read_text())
        if info.get("key") != key:
            raise UserError(f"{run_file} belongs to another run (key prefix collision)", "remove that folder")
        return Run(path, info)
    path.mkdir(parents=True, exist_ok=True)
    info = {**payload, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "actiontk": __version__}
    atomic_write_json(run_file, info)
    return Run(path, info)


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
