"""What an extract run was asked for and how much of it is stored: ``targets.json`` (``{split: [video rel, ...]}``,
the videos each split asked for, written by rank 0 of every ``extract`` invocation) against the feature store's
index. A run serves every split it was asked for: videos are stored individually, so ``--split 2`` after
``--split 1`` adds only the videos split 1 did not have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actiontk.cache import features as store
from actiontk.cache.runs import Run, atomic_write_json, writer_locked

TARGETS = "targets.json"


def read_targets(run_dir: Path) -> dict[str, list[str]]:
    """``{split: [rel, ...]}`` of the run at ``run_dir`` ({} when it has none or it is unreadable)."""
    try:
        targets = json.loads((Path(run_dir) / TARGETS).read_text())
    except (OSError, ValueError):
        return {}
    return targets if isinstance(targets, dict) else {}


def target_splits(run_dir: Path) -> list[int]:
    """The splits the run at ``run_dir`` was asked for, in order."""
    out = []
    for k in read_targets(run_dir):
        try:
            out.append(int(k))
        except ValueError:
            continue
    return sorted(out)


def record_targets(run_dir: Path, split: int, rels: list[str]) -> None:
    """Record that ``split`` asks for the videos ``rels`` (replacing what it asked for before)."""
    targets = read_targets(run_dir)
    targets[str(split)] = list(rels)
    atomic_write_json(Path(run_dir) / TARGETS, targets)


def target_counts(run: Run) -> dict[str, Any]:
    """Counts of an extract run over the videos its splits asked for: done, failed, total, the splits, the
    damaged shards, and its state: complete (every target stored or recorded failed, no unfinished or damaged
    shard) or partial (with what is left). Locks are not looked at (see :func:`extract_state`)."""
    index = store.load_index(run.path)
    targets = read_targets(run.path)
    wanted = set().union(*map(set, targets.values())) if targets else set(index.videos) | set(index.failed)
    done = len(wanted & set(index.videos))
    failed = len(wanted & set(index.failed))
    incomplete = list(store.shard_dir(run.path).glob("*.incomplete")) if store.shard_dir(run.path).is_dir() else []
    if done + failed == len(wanted) and not incomplete and not index.damaged:
        state = "complete"
    else:
        state = "partial"
        if incomplete:
            state += f" ({len(incomplete)} unfinished shard(s): rerun the same command to resume)"
        if index.damaged:
            state += f" ({len(index.damaged)} damaged shard(s): rerun the same command to re-compute their videos)"
    return {"done": done, "failed": failed, "total": len(wanted), "state": state,
            "splits": [str(s) for s in target_splits(run.path)], "damaged": index.damaged}


def extract_state(run: Run) -> dict[str, Any]:
    """:func:`target_counts`, with the state "running" while a writer lock of the run is held."""
    counts = target_counts(run)
    if writer_locked(run.path):
        counts["state"] = "running"
    return counts


def all_stored(run: Run) -> bool:
    """What extract adds to the completion rule: every video its splits asked for (at least one) is stored or
    recorded as failed, and no shard is unfinished or damaged. A marked run extended to a new split, or whose
    shards a reader or ``status --verify`` found damaged, is not complete."""
    counts = target_counts(run)
    return counts["state"] == "complete" and counts["total"] > 0


def complete_unmarked(run: Run) -> bool:
    """An extract run without ``complete.json`` (made before extract marked its runs, or killed between its
    last shard and the mark) is complete by its videos alone, when no extraction is writing it."""
    return not writer_locked(run.path) and all_stored(run)
