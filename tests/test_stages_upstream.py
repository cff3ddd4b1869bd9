"""The upstream finder: a run chosen once is passed down as a Run and not looked up again."""

from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.cache import lifecycle
from actiontk.cache.runs import open_run, release
from actiontk.errors import UserError
from actiontk.stages import upstream


def make(cache: Path, stage: str, n: int, complete: bool = True):
    run = open_run(cache, stage, 1, {"n": n}, inputs={"dataset": "toy", "split": 1})
    release(run.path)
    if complete:
        lifecycle.mark_complete(run, {})
    return run


def test_a_run_object_is_used_as_it_is(tmp_path: Path, monkeypatch):
    older, newer = make(tmp_path, "cubes", 1), make(tmp_path, "cubes", 2)
    monkeypatch.setattr(upstream, "list_runs", lambda *a, **k: pytest.fail("the cache was searched again"))
    chosen, split = upstream.pick_run(tmp_path, "cubes", dataset=None, split=None, run=older, next_step="x",
                                      log=lambda m: None)
    assert chosen is older and split == 1 and newer.path.is_dir()
    with pytest.raises(UserError, match="is a cubes run, not a train-lstm run"):
        upstream.pick_run(tmp_path, "train-lstm", dataset=None, split=None, run=older, next_step="x",
                          log=lambda m: None)


def test_an_unfinished_run_object_is_refused(tmp_path: Path):
    partial = make(tmp_path, "cubes", 3, complete=False)
    with pytest.raises(UserError, match="is not complete"):
        upstream.pick_run(tmp_path, "cubes", dataset=None, split=None, run=partial, next_step="x",
                          log=lambda m: None)
