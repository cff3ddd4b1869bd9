from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.datasets import UCF101, get_dataset
from actiontk.datasets.base import safe_rel
from actiontk.errors import UserError
from tests.conftest import ODD_NAMES, touch, write_lines

LISTS = "ucfTrainTestlist"


def test_parses_official_layout_with_odd_names(ucf_root: Path):
    ds = UCF101(ucf_root)
    assert ds.classes() == ["ApplyEyeMakeup", "Jump", "Run"]
    idx = ds.load(1)
    assert (len(idx.train), len(idx.test)) == (6, 3)
    assert idx.problems == []
    jump_train = sorted(s.rel for s in idx.train if s.class_name == "Jump")
    assert jump_train == sorted(f"Jump/{n}" for n in ODD_NAMES[1:])
    for s in idx.train + idx.test:
        assert s.path.is_file()
        assert s.path == ucf_root / "UCF-101" / s.rel
        assert ds.classes()[s.label] == s.class_name
    # each split holds out a different video per class; train and test never overlap
    tests = [{s.rel for s in ds.load(k).test} for k in (1, 2, 3)]
    assert len(set.union(*tests)) == 9
    for k in (1, 2, 3):
        i = ds.load(k)
        assert not {s.rel for s in i.train} & {s.rel for s in i.test}


def test_videos_directly_in_root_and_lists_in_root(tmp_path: Path):
    root = tmp_path / "flat"
    write_lines(root / "classInd.txt", ["1 A", "2 B"])
    touch(root / "A" / "a.avi")
    touch(root / "B" / "b.avi")
    write_lines(root / "trainlist01.txt", ["A/a.avi 1"])
    write_lines(root / "testlist01.txt", ["B/b.avi"])
    idx = UCF101(root).load(1)
    assert [s.rel for s in idx.train] == ["A/a.avi"] and [s.label for s in idx.test] == [1]


def problems_of(root: Path, split: int = 1):
    return UCF101(root).index(split).problems


def edit_list(root: Path, name: str, lines: list[str]) -> Path:
    return write_lines(root / LISTS / name, lines)


@pytest.mark.parametrize(
    "line, kind",
    [
        ("Run/v_Run_g02_c01.avi x", "malformed"),
        ("v_Run_g02_c01.avi 3", "malformed"),
        ("Swim/v_Swim_g01_c01.avi 3", "unknown-class"),
        ("Run/v_Run_g02_c01.avi 1", "label-mismatch"),
        ("../outside/v_Run_g02_c01.avi 3", "outside-root"),
        ("/etc/passwd 3", "outside-root"),
        ("Run/../../escape.avi 3", "outside-root"),
        ("Run/v_Run_g09_c01.avi 3", "missing"),
    ],
)
def test_each_malformed_train_line_is_reported_with_file_and_line(ucf_root: Path, line: str, kind: str):
    good = "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi 1"
    path = edit_list(ucf_root, "trainlist01.txt", [good, line])
    probs = problems_of(ucf_root)
    assert [(p.kind, p.file, p.line) for p in probs] == [(kind, path, 2)]
    with pytest.raises(UserError) as err:
        UCF101(ucf_root).load(1)
    assert "trainlist01.txt:2: " in str(err.value) and "datasets check ucf101" in str(err.value)


def test_duplicates_within_and_across_lists(ucf_root: Path):
    edit_list(ucf_root, "trainlist01.txt", ["Run/v_Run_g02_c01.avi 3", "Run/v_Run_g02_c01.avi 3"])
    edit_list(ucf_root, "testlist01.txt", ["Run/v_Run_g02_c01.avi", "Run/v_Run_g01_c01.avi"])
    probs = problems_of(ucf_root)
    assert [(p.kind, p.file.name, p.line) for p in probs] == [
        ("duplicate", "trainlist01.txt", 2),
        ("duplicate", "testlist01.txt", 1),
    ]
    assert "first at trainlist01.txt:1" in probs[0].message


def test_test_list_with_label_column_is_checked(ucf_root: Path):
    edit_list(ucf_root, "testlist01.txt", ["Run/v_Run_g01_c01.avi 3", "Jump/v_Jump (1)_g01_c01.avi 1"])
    probs = problems_of(ucf_root)
    assert [(p.kind, p.line) for p in probs] == [("label-mismatch", 2)]


@pytest.mark.parametrize("split", [0, 4, -1])
def test_split_out_of_range(ucf_root: Path, split: int):
    with pytest.raises(UserError, match=f"split {split} does not exist"):
        UCF101(ucf_root).index(split)


@pytest.mark.parametrize(
    "lines, message",
    [
        (["1 A", "x B"], "classInd.txt:2: expected '<id> <ClassName>'"),
        (["1 A", "1 B"], "class id 1 appears twice"),
        (["1 A", "2 A"], "class 'A' appears twice"),
        (["1 A", "3 B"], "must be 1..2"),
        ([], "no classes listed"),
    ],
)
def test_bad_class_index(ucf_root: Path, lines: list[str], message: str):
    write_lines(ucf_root / LISTS / "classInd.txt", lines)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        UCF101(ucf_root).classes()


def test_missing_list_files_name_the_file(ucf_root: Path, tmp_path: Path):
    (ucf_root / LISTS / "testlist02.txt").unlink()
    with pytest.raises(UserError, match="testlist02.txt"):
        UCF101(ucf_root).index(2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="classInd.txt not found"):
        UCF101(empty).index(1)
    with pytest.raises(UserError, match="does not exist"):
        UCF101(tmp_path / "nope")


def test_not_utf8_list_is_a_clear_error(ucf_root: Path):
    (ucf_root / LISTS / "trainlist01.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        UCF101(ucf_root).index(1)


def test_unknown_dataset_lists_known_ones(tmp_path: Path):
    with pytest.raises(UserError) as err:
        get_dataset("kinetics", tmp_path)
    assert "ucf101" in str(err.value) and "hmdb51" in str(err.value)


@pytest.mark.parametrize(
    "entry, expected",
    [("A/b.avi", "A/b.avi"), ("A//./b.avi", "A/b.avi"), ("A\\b.avi", "A/b.avi"), ("../b.avi", None),
     ("A/../../b.avi", None), ("/abs.avi", None), ("C:/x.avi", None), ("..", None), (".", None)],
)
def test_safe_rel(entry: str, expected: str | None):
    assert safe_rel(entry) == expected
