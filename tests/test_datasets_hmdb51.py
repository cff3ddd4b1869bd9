from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.datasets import HMDB51
from actiontk.errors import UserError
from tests.conftest import write_lines

SPLITS = "testTrainMulti_7030_splits"


def test_parses_codes_and_odd_names(hmdb_root: Path):
    ds = HMDB51(hmdb_root)
    assert ds.classes() == ["brush_hair", "cartwheel", "pour"]
    idx = ds.load(1)
    assert idx.problems == []
    assert (len(idx.train), len(idx.test), len(idx.unused)) == (6, 3, 3)
    rels = {s.rel for s in idx.train}
    assert "cartwheel/Bodenturnen_2004_(Frauen)_cartwheel_f_cm_np1_le_med_0.avi" in rels
    assert "cartwheel/Rock & Roll!_0.avi" in rels
    assert {s.rel for s in idx.test} >= {"cartwheel/Tom's cartwheel_0.avi"}
    assert all(s.path == hmdb_root / s.rel for s in idx.train + idx.test)
    assert {s.label for s in idx.test} == {0, 1, 2}
    # split 2 rotates the codes: a different test set
    assert {s.rel for s in ds.load(2).test}.isdisjoint({s.rel for s in idx.test})


def test_split_dir_beside_root(hmdb_root: Path, tmp_path: Path):
    (hmdb_root / SPLITS).rename(tmp_path / SPLITS)
    assert len(HMDB51(hmdb_root).load(1).test) == 3


@pytest.mark.parametrize(
    "line, kind",
    [
        ("pour_0.avi 3", "malformed"),
        ("pour_0.avi", "malformed"),
        ("../brush_hair/brush_hair_0.avi 1", "outside-root"),
        ("sub/pour_0.avi 1", "outside-root"),
        ("pour_9.avi 1", "missing"),
        ("pour_1.avi 2", "duplicate"),
    ],
)
def test_bad_lines(hmdb_root: Path, line: str, kind: str):
    path = write_lines(hmdb_root / SPLITS / "pour_test_split1.txt", ["pour_0.avi 1", "pour_1.avi 1", line])
    probs = HMDB51(hmdb_root).index(1).problems
    assert [(p.kind, p.file, p.line) for p in probs] == [(kind, path, 3)]
    with pytest.raises(UserError, match="pour_test_split1.txt:3"):
        HMDB51(hmdb_root).load(1)


def test_unused_videos_need_not_exist(hmdb_root: Path):
    write_lines(hmdb_root / SPLITS / "pour_test_split1.txt", ["pour_0.avi 1", "gone.avi 0"])
    idx = HMDB51(hmdb_root).load(1)
    assert [s.rel for s in idx.unused if s.class_name == "pour"] == ["pour/gone.avi"]


def test_same_file_in_two_classes_is_a_duplicate_only_within_a_class(hmdb_root: Path):
    # the same file name under two classes is two different videos
    write_lines(hmdb_root / SPLITS / "pour_test_split1.txt", ["pour_0.avi 1"])
    assert HMDB51(hmdb_root).index(1).problems == []


def test_missing_files(hmdb_root: Path, tmp_path: Path):
    (hmdb_root / SPLITS / "pour_test_split3.txt").unlink()
    with pytest.raises(UserError, match="pour_test_split3.txt"):
        HMDB51(hmdb_root).index(3)
    with pytest.raises(UserError, match="split 5 does not exist"):
        HMDB51(hmdb_root).index(5)
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match=SPLITS):
        HMDB51(bare).index(1)
