"""Body of ``actiontk status``: renders every cached run, what it holds and its state (computed by
:mod:`actiontk.stages.lifecycle`, where the states are defined); ``--gc`` removes the dead ones after asking.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from actiontk.cache.runs import human_bytes
from actiontk.errors import ProblemsFound, UserError
from actiontk.stages.lifecycle import (  # noqa: F401 (current_schemas, interrupted_runs, STAGE_ORDER: this API)
    BEST,
    CHECKPOINT,
    REMOVABLE,
    STAGE_ORDER,
    RunStatus,
    age_s,
    current_schemas,
    downstream,
    human_age,
    inspect_runs,
    interrupted_runs,
)

STYLES = {"complete": "green", "partial": "yellow", "running": "cyan", "stale": "red", "unknown": "magenta"}


# -- the command ------------------------------------------------------------------------------------------


def show_status(cache: Path | None, *, gc: bool = False, yes: bool = False, as_json: bool = False,
                verify: bool = False) -> None:
    from actiontk.cache.runs import human_bytes, resolve_cache_root

    if yes and not gc:
        raise UserError("--yes only applies with --gc", "actiontk status --gc --yes")
    if as_json and gc:
        raise UserError("--json lists the runs; it does not combine with --gc", "run `actiontk status --json`")
    if verify and gc:
        raise UserError("--verify checks the runs; it does not combine with --gc",
                        "run `actiontk status --verify` first, then `actiontk status --gc`")
    root = resolve_cache_root(cache)
    console = Console()
    damaged, problems = verify_cache(root, console=Console(stderr=True)) if verify else (0, {})
    statuses = inspect_runs(root)
    for st in statuses:
        st.why.extend(problems.get(st.run.key, []))
    if as_json:
        now = time.time()
        print(json.dumps({"cache": str(root), "runs": [s.as_json(now) for s in statuses]}, indent=2))
        if damaged:
            raise ProblemsFound()
        return
    if gc:
        collect_garbage(statuses, yes=yes, console=console)
        return
    if not statuses:
        console.print(f"no runs in {escape(str(root))} yet: start with `actiontk extract DATASET --root DIR`")
        return
    print_runs(console, statuses, title=f"runs in {root}")
    dead = [s for s in statuses if s.removable]
    if dead:
        total = human_bytes(sum(s.size for s in dead))
        console.print(f"{len(dead)} partial or stale run(s), {total}: `actiontk status --gc` removes them "
                      "(a partial run resumes when its command is run again)")
    if damaged:
        raise ProblemsFound()


WIDE = 140  # columns from which the runs are a table; narrower terminals and pipes get one block per run


NBSP = "\u00a0"  # textwrap does not break here: it joins the words of one value while a block is wrapped


def _unit(value: str) -> str:
    return value.replace(" ", NBSP)


def print_runs(console: Console, statuses: list[RunStatus], *, title: str) -> None:
    """The runs as a table on a wide terminal, else one block each that wraps between words, never inside one:

    ``extract/1a2b3c4d5e6f7a8b  complete  72/72 videos  9.7 MiB  29 min ago``
    ``    toy split 1 · vgg16 pool4+conv5_3 @384px ...``
    """
    now = time.time()
    if console.width >= WIDE:
        table = Table(title=escape(title))
        table.add_column("run", no_wrap=True)
        for col in ("dataset", "split", "what", "state", "progress", "size", "age"):
            table.add_column(col, overflow="fold")
        for st in statuses:
            table.add_row(escape(st.run.short), escape(st.dataset), escape(st.split), escape(st.what),
                          f"[{STYLES[st.state]}]{escape(st.state_text())}[/]", escape(st.progress),
                          human_bytes(st.size), human_age(age_s(st, now)))
        console.print(table)
        return
    import textwrap

    from rich.text import Text

    def wrapped(text: str, indent: str) -> str:  # breaks between words only; no trailing spaces
        return textwrap.fill(text, width=max(console.width, 40), subsequent_indent="    ", initial_indent=indent,
                             break_long_words=False, break_on_hyphens=False)

    console.print(Text(title, style="bold"), soft_wrap=True)
    for st in statuses:
        state = st.state + (f", {st.failed} failed" if st.state == "complete" and st.failed else "") \
            + (" (in use)" if st.in_use and st.state != "running" else "")
        # each value stays on one line ("1 min ago", "4.1 MiB"); a progress text may break after its commas
        fields = (st.run.short, _unit(state), ", ".join(map(_unit, st.progress.split(", "))) if st.progress else "",
                  _unit(human_bytes(st.size)), _unit(human_age(age_s(st, now))))
        head = Text(wrapped("  ".join(x for x in fields if x), "").replace(NBSP, " "))
        head.stylize("bold", 0, len(st.run.short))
        head.stylize(STYLES[st.state], len(st.run.short) + 2, len(st.run.short) + 2 + len(state))
        console.print(head, soft_wrap=True)
        where = " ".join(x for x in (st.dataset, f"split {st.split}" if st.split else "") if x)
        for line in (" · ".join(x for x in (where, st.what) if x), *(f"why: {w}" for w in st.why)):
            if line:
                console.print(Text(wrapped(line, "    ")), soft_wrap=True)


def verify_cache(root: Path, *, console: Console) -> tuple[int, dict[str, list[str]]]:
    """``status --verify``: read every shard of every feature store (each chunk through its checksum, every
    value checked finite) and every checkpoint against its ``.sha256``. Damaged shards are recorded in their
    run's ``damaged.json``, so the states shown next (and the next extract or train-3d) see them. Returns the
    number of damaged files and the problems to add to the table per run key (damaged checkpoints); prints one
    line of totals."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from actiontk.cache import features as store
    from actiontk.cache.runs import human_bytes, list_runs, verify_checksum

    stores, files = [], []  # (store folder, shard name), (run, checkpoint file)
    for run in list_runs(root):
        for folder in (run.path, run.path / "attention"):
            for name in store.finished_shards(folder):
                stores.append((folder, name))
        for name in (CHECKPOINT, BEST):
            if (run.path / name).is_file():
                files.append((run, run.path / name))
    problems: dict[str, list[str]] = {}
    damaged, size = 0, 0
    progress = Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), console=console, transient=True)
    with progress:
        task = progress.add_task("verify", total=len(stores) + len(files))
        for folder, name in stores:
            path = store.shard_dir(folder) / name
            size += path.stat().st_size
            reason = store.verify_shard(path)
            if reason is not None:
                damaged += 1
                store.record_damage(folder, name, reason)
            progress.advance(task)
        for run, path in files:
            size += path.stat().st_size
            reason = verify_checksum(path)
            if reason is not None:
                damaged += 1
                problems.setdefault(run.key, []).append(f"{path.name} {reason}: a resume of this run fails; "
                                                         "rerun its command with --no-resume to train it again")
            progress.advance(task)
    console.print(f"verified {len(stores)} shard(s) and {len(files)} checkpoint(s), {human_bytes(size)}: "
                  + (f"{damaged} damaged" if damaged else "all intact"), markup=False, highlight=False)
    return damaged, problems


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def collect_garbage(statuses: list[RunStatus], *, yes: bool, console: Console) -> None:
    """List the partial and stale runs no process is using, ask, remove them and say what that freed."""
    import typer

    from actiontk.cache.runs import exclusive, human_bytes

    doomed = [s for s in statuses if s.removable]
    for s in statuses:
        if s.in_use and s.state in (*REMOVABLE, "running"):
            console.print(f"kept {escape(s.run.short)} ({s.state}): a process is using it")
    if not doomed:
        console.print("nothing to remove: no partial or stale runs")
        return
    table = Table(title="partial and stale runs to remove")
    table.add_column("run", no_wrap=True)
    for col in ("dataset", "split", "state", "size"):
        table.add_column(col, overflow="fold")
    for s in doomed:
        table.add_row(escape(s.run.short), escape(s.dataset), escape(s.split),
                      f"[{STYLES[s.state]}]{escape(s.state_text())}[/]", human_bytes(s.size))
    console.print(table)
    total = sum(s.size for s in doomed)
    console.print(f"total: {len(doomed)} run(s), {human_bytes(total)}")
    orphans = downstream(statuses, {s.run.key for s in doomed})
    for s, up in orphans:
        console.print(f"[red]{escape(s.run.short)}[/] ({s.state}) reads {escape(up.run.short)}: it will be stale "
                      "(kept; `actiontk status --gc` again removes it)")
    if not yes:
        if not _interactive():
            raise UserError("status --gc asks before removing anything and stdin is not a terminal",
                            "pass --yes to remove without asking")
        if not typer.confirm(f"remove these {len(doomed)} run(s) ({human_bytes(total)})?", default=False):
            console.print("nothing removed")
            return
    freed, removed = 0, set()
    for s in doomed:
        path = s.run.path
        with exclusive(path) as free:
            if not free:  # a process opened it since we looked
                console.print(f"kept {escape(s.run.short)}: a process is using it now")
                continue
            try:
                shutil.rmtree(path)
            except OSError as e:
                console.print(f"[red]could not remove {escape(str(path))}[/]: {escape(str(e))}")
                continue
        freed += s.size
        removed.add(s.run.key)
        console.print(f"removed {escape(s.run.short)} ({human_bytes(s.size)})")
    console.print(f"removed {len(removed)} run(s), freed {human_bytes(freed)}")
    for s, up in downstream(statuses, removed):
        console.print(f"now stale: {escape(s.run.short)} (it reads {escape(up.run.short)})")
