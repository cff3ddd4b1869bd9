from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.datasets import FolderDataset
from actiontk.datasets.folder import hashed_subset
from actiontk.errors import UserError
from tests.conftest import touch, write_lines


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "mine"
    for c in ("dance", "wave hands"):
        for k in range(10):
            touch(root / c / f"clip ({k}).mp4")
    touch(root / "notes" / "readme.txt")  # not a class: no videos
    return root


def test_classes_are_sorted_video_folders(folder: Path):
    assert FolderDataset(folder).classes() == ["dance", "wave hands"]


def test_hash_split_without_lists_is_stable_and_complete(folder: Path):
    idx = FolderDataset(folder).load(1)
    assert len(idx.train) + len(idx.test) == 20
    assert all(hashed_subset(s.rel) == "test" for s in idx.test)
    assert all(hashed_subset(s.rel) == "train" for s in idx.train)
    # adding a file never moves another one
    touch(folder / "dance" / "new.mp4")
    again = FolderDataset(folder).load(1)
    assert {s.rel for s in idx.test} <= {s.rel for s in again.test}
    with pytest.raises(UserError, match="only split 1"):
        FolderDataset(folder).load(2)


def test_lists(folder: Path):
    write_lines(folder / "train.txt", ["dance/clip (0).mp4", "wave hands/clip (1).mp4"])
    write_lines(folder / "test.txt", ["dance/clip (2).mp4", "salsa/x.mp4", "dance/clip (0).mp4", "../x.mp4"])
    idx = FolderDataset(folder).index(1)
    assert [s.rel for s in idx.train] == ["dance/clip (0).mp4", "wave hands/clip (1).mp4"]
    assert [s.label for s in idx.train] == [0, 1]
    assert [s.rel for s in idx.test] == ["dance/clip (2).mp4"]
    assert [(p.kind, p.line) for p in idx.problems] == [("unknown-class", 2), ("duplicate", 3), ("outside-root", 4)]
    with pytest.raises(UserError, match="no train2.txt"):
        FolderDataset(folder).index(2)
    write_lines(folder / "train2.txt", ["dance/clip (5).mp4"])
    write_lines(folder / "test2.txt", ["dance/clip (6).mp4"])
    assert len(FolderDataset(folder).load(2).test) == 1


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="no videos found"):
        FolderDataset(tmp_path).classes()
