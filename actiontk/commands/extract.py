"""Body of ``actiontk extract``: resolve the config from the preset and options, run the stage, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape



def run_extract(dataset: str, root: Path, split: int, *, cache: Path | None, config: Path | None, strict: bool,
                retry_failed: bool, overrides: dict[str, Any]) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.config import load_preset, resolve
    from actiontk.stages.extract import ExtractConfig, extract, summary_line

    preset, source = load_preset(dataset.lower(), config)
    cfg = resolve(ExtractConfig, preset.get("extract", {}), overrides, source=str(source or "options"))
    console = Console(stderr=True)
    result = extract(dataset, root, split, cfg, resolve_cache_root(cache), strict=strict,
                     retry_failed=retry_failed, log=lambda m: console.print(escape(m)), progress_console=console)
    if result.failed:
        console.print(f"[yellow]{len(result.failed)} failed[/yellow] (recorded; `actiontk extract ... --retry-failed` "
                      "tries them again):")
        for rel, reason in sorted(result.failed.items()):
            console.print(f"  {escape(rel)}: {escape(reason)}")
    print(summary_line(result))
