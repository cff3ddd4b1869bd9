"""Body of ``actiontk extract``: resolve the config from the preset and options, run the stage, report."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def prefer_passive_openmp() -> bool:
    """Let torch's OpenMP threads sleep instead of spinning while they wait; True when that is in effect.

    Must run before ``import torch`` (libgomp reads its environment once, when torch loads it; importing
    ``actiontk.stages.extract`` imports torch), so it is called first thing in the command body. On CPU the
    stage's two torch threads share the cores with its decoder processes and, on a shared machine, with
    other jobs: with libgomp's default policy a thread waiting for a descheduled partner spins through the
    time slice that the partner (or a decoder) needed. PASSIVE costs nothing measurable at the stage's batch
    sizes and made the pipeline 5-12% faster whenever another process took a core, ~2% on an idle machine
    (bench/extract.py, docs/performance.md). A user's own OMP_WAIT_POLICY is kept.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def run_extract(dataset: str, root: Path, split: int, *, cache: Path | None, config: Path | None, strict: bool,
                retry_failed: bool, overrides: dict[str, Any]) -> None:
    prefer_passive_openmp()
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.config import load_preset, resolve
    from actiontk.stages.extract import ExtractConfig, extract, summary_line
    from actiontk.stages.registry import EXTRACT

    preset, source = load_preset(dataset.lower(), config)
    cfg = resolve(ExtractConfig, preset.get(EXTRACT, {}), overrides, source=str(source or "options"))
    console = Console(stderr=True)
    result = extract(cfg, resolve_cache_root(cache), dataset=dataset, root=root, split=split, strict=strict,
                     retry_failed=retry_failed, log=lambda m: console.print(escape(m)), console=console)
    if result.failed:
        console.print(f"[yellow]{len(result.failed)} failed[/yellow] (recorded; `actiontk extract ... --retry-failed` "
                      "tries them again):")
        for rel, reason in sorted(result.failed.items()):
            console.print(f"  {escape(rel)}: {escape(reason)}")
    print(summary_line(result))
