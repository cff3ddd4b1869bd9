"""The end of a run's life, the same for every stage: a stage that finished writes ``complete.json`` (its
summary) last, through :func:`mark_complete`; whoever changes a run after that (extract asked for another split,
or repairing damaged shards) removes it first (:func:`unmark`). A run is complete when it is marked and what
its stage adds to the rule (a check the stage's record names, :mod:`actiontk.stages.registry`) agrees.

A stage whose runs were complete before it marked them (extract, whose runs an older actiontk completed by
their videos alone) names a rule for an unmarked run too, so an existing cache does not look unfinished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from actiontk.cache.runs import Run, atomic_write_json, release_writer

COMPLETE = "complete.json"  # written last by a stage that finished; holds its summary


def mark_complete(run: Run, summary: dict[str, Any]) -> None:
    """Mark ``run`` complete with ``summary``, then release this process's writer locks on it (the training lock,
    :class:`actiontk.train.engine.Trainer`, is held until here)."""
    atomic_write_json(run.path / COMPLETE, summary)
    release_writer(run.path)


def unmark(run: Run) -> None:
    """Take the mark off ``run`` before changing what it holds."""
    (run.path / COMPLETE).unlink(missing_ok=True)


def is_marked(run: Run) -> bool:
    return (run.path / COMPLETE).is_file()


def completion(run: Run) -> dict[str, Any]:
    """The summary ``run`` was marked complete with ({} when it is not marked, or the file is unreadable)."""
    try:
        summary = json.loads((run.path / COMPLETE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def is_complete(run: Run, check: Callable[[Run], bool] | None = None,
                unmarked: Callable[[Run], bool] | None = None) -> bool:
    """The one rule: ``run`` is marked and its stage's ``check`` (None: nothing to add) agrees. An unmarked run is
    complete only by its stage's ``unmarked`` rule (a run made before the stage marked its runs)."""
    if not is_marked(run):
        return unmarked is not None and unmarked(run)
    return check is None or check(run)
