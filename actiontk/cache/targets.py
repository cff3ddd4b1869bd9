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


def extract_state(run: Run) -> dict[str, Any]:
    """Counts and state of an extract run: done / failed / total over the videos its splits asked for."""
    index = store.load_index(run.path)
    targets = read_targets(run.path)
    wanted = set().union(*map(set, targets.values())) if targets else set(index.videos) | set(index.failed)
    done = len(wanted & set(index.videos))
    failed = len(wanted & set(index.failed))
    incomplete = list(store.shard_dir(run.path).glob("*.incomplete")) if store.shard_dir(run.path).is_dir() else []
    if writer_locked(run.path):
        state = "running"
    elif done + failed == len(wanted) and not incomplete and not index.damaged:
        state = "complete"
    else:
        state = "partial"
        if incomplete:
            state += f" ({len(incomplete)} unfinished shard(s): rerun the same command to resume)"
        if index.damaged:
            state += f" ({len(index.damaged)} damaged shard(s): rerun the same command to re-compute their videos)"
    return {"done": done, "failed": failed, "total": len(wanted), "state": state,
            "splits": sorted(targets, key=int) if targets else [], "damaged": index.damaged}


