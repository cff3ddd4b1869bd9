"""Bodies of ``actiontk datasets list | check | toy | toy-mpii``."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from actiontk.errors import ProblemsFound, UserError

MAX_LISTED = 20  # problems shown per kind; the rest are counted


def list_datasets() -> None:
    from actiontk.datasets import DATASETS

    table = Table(title="Datasets", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("what")
    table.add_column("expected layout (--root ROOT)", overflow="fold")
    for name, cls in DATASETS.items():
        table.add_row(name, Text(cls.title), Text(cls.layout))
    Console().print(table)
    print("Details and exact file names: docs/datasets.md")


def _workers(workers: int | None) -> int:
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    return workers or os.cpu_count() or 1


def check_dataset(
    name: str,
    root: Path,
    split: int,
    *,
    decode: bool,
    backend: str,
    timeout: float,
    workers: int | None,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from actiontk.datasets import get_dataset
    from actiontk.datasets.check import check
    from actiontk.video import get_reader

    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}")
    n_workers = _workers(workers)
    if decode:
        get_reader(backend)  # an unknown backend is an error before any work starts
    ds = get_dataset(name, root)
    console = Console()
    with Progress(
        TextColumn("decoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True, disable=not decode,
    ) as bar:
        task = bar.add_task("decode", total=None)
        report = check(
            ds, split, decode=decode, backend=backend, timeout=timeout, workers=n_workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    index = report.index

    table = Table(title=f"{ds.title} split {split} ({ds.root})")
    table.add_column("#", justify="right", style="dim")
    table.add_column("class")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    table.add_column("problems", justify="right")
    for i, (cls, n_train, n_test, n_bad) in enumerate(report.class_counts(), start=1):
        table.add_row(str(i), Text(cls), str(n_train), str(n_test), Text(str(n_bad), style="red" if n_bad else ""))
    table.add_section()
    table.add_row("", Text(f"{len(index.classes)} classes", style="bold"), str(len(index.train)),
                  str(len(index.test)), str(len(report.problems)))
    console.print(table)
    if index.unused:
        console.print(f"{len(index.unused)} listed videos are marked unused (code 0) in this split.")
    for remark in index.remarks:
        console.print(Text(remark), soft_wrap=True)
    if decode:
        console.print(f"decoded {report.decoded} of {len(index.videos())} videos with {backend}"
                      f"{' (fallback to pyav where it failed)' if backend != 'pyav' else ''}")
        for sample, why in report.fallbacks:
            console.print(Text(f"  needed the pyav fallback: {sample.rel} ({why})", style="yellow"))

    if report.ok:
        console.print(Text("no problems found", style="green bold"))
        return
    by_kind = defaultdict(list)
    for p in report.problems:
        by_kind[p.kind].append(p)
    for kind, problems in by_kind.items():
        console.print(Text(f"{kind} ({len(problems)}):", style="red bold"))
        for p in problems[:MAX_LISTED]:
            console.print(Text(f"  {p}"), soft_wrap=True)
        if len(problems) > MAX_LISTED:
            console.print(f"  ... and {len(problems) - MAX_LISTED} more")
    console.print(Text(f"{len(report.problems)} problem(s) found", style="red bold"))
    raise ProblemsFound(f"{len(report.problems)} problem(s) found")


def _generate_with_bar(what: str, generate: Callable[[Callable[[int, int], None]], dict]) -> dict:
    """Run ``generate(progress)`` under a transient progress bar on stderr; its summary comes back."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"generating {what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(what, total=None)
        return generate(lambda done, total: bar.update(task, completed=done, total=total))


def make_toy(out: Path, *, workers: int | None, **config) -> None:
    from actiontk.datasets.toy import ToyConfig, generate_toy

    cfg = ToyConfig(**config)
    info = _generate_with_bar("toy videos", lambda progress: generate_toy(out, cfg, workers=_workers(workers),
                                                                         progress=progress))
    verb = "already there, reused" if info.get("reused") else "written"
    print(f"toy dataset {verb}: {out} ({info.get('videos', '?')} videos, {len(info.get('classes', []))} classes)")
    print(f"next: actiontk datasets check toy --root {out} --split 1 --decode")


def make_toy_mpii(out: Path, **config) -> None:
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii

    cfg = ToyMPIIConfig(**config)
    info = _generate_with_bar("toy MPII images", lambda progress: generate_toy_mpii(out, cfg, progress=progress))
    verb = "already there, reused" if info.get("reused") else "written"
    print(f"toy MPII dataset {verb}: {out} ({info.get('images', '?')} images: {info.get('labelled', '?')} labelled in "
          f"{len(info.get('classes', []))} classes, {info.get('unlabelled', '?')} unlabelled)")
    print(f"next: actiontk datasets check mpii --root {out}")
