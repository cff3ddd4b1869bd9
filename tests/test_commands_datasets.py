"""`actiontk datasets toy` + `actiontk datasets check --decode` on real encoded videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actiontk.cli import run

TOY = ["--classes", "6", "--groups", "3", "--clips", "1", "--frames", "8", "--size", "32"]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("t") / "toy"
    assert run(["datasets", "toy", str(out), *TOY, "--workers", "1"]) == 0
    return out


def test_toy_then_check_with_decode_is_clean(toy_dir: Path, capsys):
    assert run(["datasets", "check", "ucf101", "--root", str(toy_dir), "--split", "1", "--decode"]) == 0
    out = capsys.readouterr().out
    assert "decoded 18 of 18 videos" in out and "no problems found" in out


def test_toy_is_reused_and_refuses_a_foreign_dir(toy_dir: Path, tmp_path: Path, capsys):
    assert run(["datasets", "toy", str(toy_dir), *TOY]) == 0
    assert "reused" in capsys.readouterr().out
    (tmp_path / "mine.txt").write_text("keep me")
    assert run(["datasets", "toy", str(tmp_path), *TOY]) == 2
    assert "empty" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_deleted_and_corrupt_videos_are_reported_with_exit_1(toy_dir: Path, tmp_path: Path, capsys):
    root = tmp_path / "toy"
    shutil.copytree(toy_dir, root)
    deleted = "MoveLeft/v_MoveLeft_g02_c01.avi"
    corrupt = "RotateClockwise/v_RotateClockwise_g01_c01.avi"
    truncated = "MoveUp/v_MoveUp_g03_c01.avi"
    (root / deleted).unlink()
    (root / corrupt).write_bytes(b"RIFF" + b"\x00" * 500)
    data = (root / truncated).read_bytes()
    (root / truncated).write_bytes(data[: int(len(data) * 0.85)])  # keeps the header, loses the last frames
    assert run(["datasets", "check", "toy", "--root", str(root), "--split", "1", "--decode", "--timeout", "30"]) == 1
    out = capsys.readouterr().out
    assert "missing (1)" in out and deleted in out
    assert "decode (1)" in out and corrupt in out
    assert "truncated (1)" in out and truncated in out
