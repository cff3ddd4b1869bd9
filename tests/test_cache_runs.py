"""``actiontk.cache.runs``' atomic writes: the one way a finished file is written."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import actiontk
from actiontk.cache import runs
from actiontk.cache.runs import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text, temp_path


def test_writes_replace_the_file_whole(tmp_path: Path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode()
    atomic_write_bytes(path, memoryview(b"\x00\x01"))
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def half(f):
        f.write(b"new, but")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]


def test_before_replace_runs_after_the_data_is_durable_and_before_the_rename(tmp_path: Path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"old")
    seen, synced = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(runs.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    def check():
        seen.append((path.read_bytes(), temp_path(path).read_bytes(), len(synced)))

    atomic_write_bytes(path, b"new", before_replace=check)
    assert seen == [(b"old", b"new", 1)] and path.read_bytes() == b"new"
    assert temp_path(path).name == f".ckpt.pt.{os.getpid()}.tmp"


def test_no_other_module_renames_files_into_place():
    """A finished file is written by cache.runs' helpers; only the streaming writers (HDF5 shards, encoded videos)
    keep their own temporary file, because their writer needs a path, not a buffer."""
    root = Path(actiontk.__file__).parent
    own = {"cache/runs.py", "cache/features.py", "video/writer.py"}
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            # os.replace(a, b) or Path.replace(target) (one argument: str.replace takes two)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace" \
                    and (ast.unparse(node.func.value) == "os" or len(node.args) == 1) and rel not in own:
                found.append(f"{rel}:{node.lineno}")
    assert found == [], f"renames outside cache.runs: {found}"


def test_atomic_path_publishes_on_success_and_keeps_the_old_file_on_failure(tmp_path: Path):
    from actiontk.cache.runs import atomic_path

    out = tmp_path / "a.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(out, ".mp4") as tmp:
        assert tmp.name.endswith(".mp4") and tmp.parent == tmp_path and tmp != out
        tmp.write_bytes(b"half")
        raise RuntimeError("encoder failed")
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    with atomic_path(out, ".mp4") as tmp:
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
