"""Body of ``actiontk evaluate``: pick the run, compute its metrics, write the reports asked for."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from actiontk.errors import UserError


def parse_formats(reports: list[str] | None) -> list[str]:
    """``--report`` values (repeatable, comma-separated allowed) in a fixed order, without duplicates."""
    from actiontk.report import FORMATS

    asked = [p.strip().lower() for r in reports or [] for p in r.split(",") if p.strip()]
    unknown = [f for f in asked if f not in FORMATS]
    if unknown:
        raise UserError(f"unknown --report {unknown[0]!r}", f"choose from {', '.join(FORMATS)} (repeat for several)")
    return [f for f in FORMATS if f in asked]


def run_evaluate(run: str | None, *, reports: list[str] | None, out: Path | None, open_report: bool,
                 cache: Path | None) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.evaluate import METRICS, SUMMARY_LABELS, evaluate, metrics_text

    formats = parse_formats(reports)
    if open_report and "html" not in formats:
        formats.insert(0, "html")
    if out is not None and out.expanduser().exists() and not out.expanduser().is_dir():
        raise UserError(f"--out {out} is a file", "give a folder for the reports")
    console = Console(stderr=True)

    def log(message: str) -> None:
        console.print(escape(message))

    ev = evaluate(resolve_cache_root(cache), trained=run, log=log, console=console)
    written = [ev.out.path / METRICS]
    html = None
    if "html" in formats or "md" in formats:
        from actiontk.report import build, write_html, write_markdown

        target = out.expanduser() if out is not None else ev.out.path / "report"
        data = build(ev, log=log)
        if "html" in formats:
            html = write_html(data, target)
            written.append(html)
        if "md" in formats:
            written.append(write_markdown(data, target))

    summary = ev.metrics["summary"]
    lines = [f"{SUMMARY_LABELS[k]}: " + ("—" if summary[k] is None else f"{100 * summary[k]:.1f}%")
             for k in SUMMARY_LABELS if k in summary]
    over = ev.metrics.get("over_splits")
    if over:
        lines += [f"{SUMMARY_LABELS[k]} over splits 1-3: {100 * over['mean'][k]:.1f} ± {100 * over['std'][k]:.1f}%"
                  for k in SUMMARY_LABELS if k in over["mean"]]
    lines += [f"wrote {p}" for p in written]
    if "json" in formats:  # stdout carries the JSON alone, for scripts; the rest goes to stderr
        sys.stdout.write(metrics_text(ev.metrics))
        sys.stdout.flush()
        for line in lines:
            log(line)
    else:
        print("\n".join(lines))
    if open_report and html is not None:
        import webbrowser

        if not webbrowser.open(html.resolve().as_uri()):
            log(f"could not start a browser; open {html} yourself")
