"""Body of ``actiontk status``: every cached run, what it holds and whether it is complete."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text


def extract_state(run) -> dict:
    """Counts and state of an extract run: done / failed / total over the videos its splits asked for."""
    from actiontk.cache import features as store
    from actiontk.stages.extract import TARGETS, lock_is_held

    index = store.load_index(run.path)
    try:
        targets = json.loads((run.path / TARGETS).read_text())
    except (OSError, ValueError):
        targets = {}
    wanted = set().union(*map(set, targets.values())) if targets else set(index.videos) | set(index.failed)
    done = len(wanted & set(index.videos))
    failed = len(wanted & set(index.failed))
    incomplete = list(store.shard_dir(run.path).glob("*.incomplete")) if store.shard_dir(run.path).is_dir() else []
    if lock_is_held(run.path):
        state = "running"
    elif done + failed == len(wanted) and not incomplete:
        state = "complete"
    else:
        state = "partial"
        if incomplete:
            state += f" ({len(incomplete)} unfinished shard(s): rerun the same command to resume)"
    return {"done": done, "failed": failed, "total": len(wanted), "state": state,
            "splits": sorted(targets, key=int) if targets else []}


def show_status(cache: Path | None) -> None:
    from actiontk.cache.runs import dir_size, human_bytes, list_runs, resolve_cache_root

    root = resolve_cache_root(cache)
    runs = list_runs(root)
    console = Console()
    if not runs:
        console.print(f"no runs in {root} yet: start with `actiontk extract DATASET --root DIR`")
        return
    table = Table(title=f"runs in {root}")
    for col in ("run", "dataset", "what", "videos done / failed / total", "state", "size", "created"):
        table.add_column(col, overflow="fold")
    for run in runs:
        inputs = run.info.get("inputs", {})
        if run.stage == "extract":
            bb = run.config.get("backbone", {})
            what = (f"{bb.get('backbone')} {'+'.join(bb.get('layers', []))} @{bb.get('size')}px "
                    f"{bb.get('weights_id')} stride {run.config.get('frame_stride')}"
                    + (f" grid {run.config['grid']}" if run.config.get("grid") else ""))
            st = extract_state(run)
            counts = f"{st['done']} / {st['failed']} / {st['total']}"
            dataset = f"{inputs.get('dataset')} (splits {','.join(st['splits']) or '-'})"
            state = Text(st["state"], style="green" if st["state"] == "complete" else "yellow")
        else:
            what, counts, dataset, state = "", "", str(inputs.get("dataset", "")), Text("")
        table.add_row(run.short, Text(dataset), Text(what), counts, state, human_bytes(dir_size(run.path)),
                      run.info.get("created", "")[:19])
    console.print(table)
