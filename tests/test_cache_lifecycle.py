"""The one completion rule of actiontk.cache.lifecycle: a run is complete when marked and its stage's check agrees."""

from __future__ import annotations

from pathlib import Path

from actiontk.cache.lifecycle import completion, is_complete, is_marked, mark_complete, unmark
from actiontk.cache.runs import lock_writer, open_run, writer_locked


def test_mark_check_unmarked_rule_and_unmark(tmp_path: Path):
    run = open_run(tmp_path, "train-lstm", 1, {"x": 1})
    lock = lock_writer(run.path, 0, what="a test")
    assert writer_locked(run.path) and not is_complete(run) and completion(run) == {}
    assert is_complete(run, unmarked=lambda r: True)  # a stage's rule for runs from before it marked them
    mark_complete(run, {"epochs": 2})
    assert not writer_locked(run.path)  # marking releases the writer's lock
    assert is_complete(run) and completion(run) == {"epochs": 2}
    assert not is_complete(run, check=lambda r: False)  # what the stage adds must agree too
    assert not is_complete(run, check=lambda r: False, unmarked=lambda r: True)  # the unmarked rule is not a bypass
    unmark(run)
    assert not is_marked(run) and not is_complete(run)
    unmark(run)  # unmarking an unmarked run is fine
    lock.release()


def test_one_line_and_run_by_name(tmp_path: Path):
    import pytest

    from actiontk.cache.runs import run_by_name
    from actiontk.errors import UserError, one_line

    assert one_line("a\n  b\tc") == "a b c" and one_line("\n first \nsecond", first_line=True) == "first"
    assert one_line("x" * 10, 5) == "xxxx…" and one_line(ValueError("bad  value")) == "bad value"
    a = open_run(tmp_path, "train-lstm", 1, {"x": 1})
    b = open_run(tmp_path, "train-gap", 1, {"x": 1})
    assert run_by_name(tmp_path, a.short, ("train-lstm", "train-gap"), "training run").path == a.path
    assert run_by_name(tmp_path, str(b.path), ("train-lstm",), "training run").path == b.path  # a folder: any stage
    assert run_by_name(tmp_path, b.key[:6], ("train-lstm", "train-gap"), "training run").path == b.path
    with pytest.raises(UserError, match="no training run named 'zz'"):
        run_by_name(tmp_path, "zz", ("train-lstm",), "training run")
    with pytest.raises(UserError, match="not valid JSON"):
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "run.json").write_text("{")
        run_by_name(tmp_path, str(tmp_path / "broken"), ("train-lstm",), "training run")
