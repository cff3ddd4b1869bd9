"""Body of ``actiontk status``: every cached run, what it holds and whether it is complete."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text


def show_status(cache: Path | None) -> None:
    from actiontk.cache.runs import dir_size, human_bytes, list_runs, resolve_cache_root
    from actiontk.stages.extract import extract_state

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
