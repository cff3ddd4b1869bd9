"""Body of ``actiontk predict``: gather the inputs, load the run through the Python API
(:func:`actiontk.predict.api.load`), predict each input with progress on stderr, and render the results (rich
tables, JSON lines, overlays and their ``index.html``)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from actiontk.errors import ProblemsFound, UserError
from actiontk.stages import registry

DEFAULT_OUT = Path("actiontk-predict")


@dataclass
class Inputs:
    usable: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def gather(paths: list[str]) -> tuple[list[Path], list[Path]]:
    """(files, folders walked) of the PATH arguments: folders recursively, in sorted order; a missing path is an
    error before anything is computed."""
    files: list[Path] = []
    folders: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            folders.append(p)
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")))
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"no such file or folder: {text}", "give video or image files, or folders holding them")
    seen, unique = set(), []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, folders


def split_kinds(files: list[Path], kind: str) -> Inputs:
    from actiontk.predict.api import kind_of

    out = Inputs()
    for f in files:
        k = kind_of(f)
        if k == kind:
            out.usable.append(f)
        else:
            why = f"a {k}, and the run predicts {kind}s" if k else f"not a {kind} file (by its extension)"
            out.skipped.append((f, why))
    return out


def _safe_name(i: int, path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "input"
    return f"{i:03d}-{stem[:60]}"


def _table(result, k: int) -> Table:
    table = Table()
    table.add_column("class", overflow="fold")
    table.add_column("probability", justify="right")
    for name, p in result.top_k(k):
        table.add_row(escape(name), f"{100 * p:.1f}%")
    return table


def _summary(result) -> str:
    if result.kind == "video":
        return (f"video label: {result.classes[result.label_vote]} (paper's rule: clip votes), "
                f"{result.classes[result.label_mean]} (mean score); {result.clips} clip(s) of {result.frames} "
                f"sampled frames (frame stride {result.frame_stride})")
    return f"label: {result.label_name}"


def run_predict(items: list[str], *, top_k: int, as_json: bool, out: Path | None, overlay: bool, device: str,
                batch_size: int | None, cache_features: bool, cache: Path | None) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.predict import api

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    cache_root = resolve_cache_root(cache)
    run_name = None
    if items and api.looks_like_run(items[0], cache_root):
        run_name, items = items[0], items[1:]
    if not items:
        raise UserError("no input given", "actiontk predict [RUN] PATH... (video or image files, or folders)")
    files, folders = gather(items)
    if run_name is not None:
        kinds = ("video", "image")
    else:  # the newest run of the kind the inputs are
        present = tuple(k for k in ("video", "image") if any(api.kind_of(f) == k for f in files))
        if not present:
            where = ", ".join(map(str, folders or files[:3]))
            raise UserError(f"nothing to predict in {where}: {len(files)} file(s), none a video or image by its "
                            "extension", "give video files (.mp4, .avi, ...) or images (.jpg, .png, ...)")
        kinds = present
    console = Console(stderr=True)
    run = api.find_run(cache_root, run_name, kinds)
    kind = "video" if run.stage == registry.TRAIN_LSTM else "image"
    inputs = split_kinds(files, kind)
    if not inputs.usable:
        where = ", ".join(map(str, folders or files[:3]))
        raise UserError(f"nothing to predict in {where}: no {kind} among {len(files)} file(s) ({run.short} predicts "
                        f"{kind}s)", f"give {kind} files, or name a {'train-gap' if kind == 'video' else 'train-lstm'} "
                                     "run for the others")
    from actiontk.report import out_dir as make_out_dir

    holds = "the predictions and overlays"
    out_dir = make_out_dir(out.expanduser(), holds) if out is not None else \
        (make_out_dir(DEFAULT_OUT, holds) if overlay else None)

    def log(message: str) -> None:
        console.print(escape(message))

    predictor = api.load(run, cache=cache_root, device=device, batch_size=batch_size, log=log)
    log(f"using {predictor.describe()} (created {run.info.get('created', '?')[:19]})")
    for path, why in inputs.skipped:
        console.print(f"[yellow]skipped[/yellow]: {escape(str(path))}: {escape(why)}")
    try:
        results, failures = _predict_all(predictor, inputs.usable, console, cache_features)
        entries = _write_overlays(predictor, inputs.usable, results, failures, out_dir, console) if overlay else None
    finally:
        predictor.close()
    _emit(inputs.usable, results, failures, top_k, as_json, out_dir)
    if overlay and out_dir is not None:
        from actiontk.predict.index import write_index

        page = write_index(out_dir, run.short, entries, [f"{p}: {why}" for p, why in inputs.skipped])
        console.print(f"overlays and index: {escape(str(page))}")
    if failures:
        console.print(f"[red]{len(failures)} of {len(inputs.usable)} input(s) failed[/red]")
        raise ProblemsFound(f"{len(failures)} input(s) failed")


def _predict_all(predictor, paths: list[Path], console: Console, cache_features: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from actiontk.predict.api import InputError

    results: dict[int, object] = {}
    failures: dict[int, str] = {}
    estimates = [_frames_estimate(p, predictor) for p in paths]
    total_frames = sum(estimates)
    progress = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[what]}"),
                        TextColumn("{task.fields[fps]}"), TimeRemainingColumn(), console=console,
                        transient=False)
    import time

    start = time.perf_counter()
    done_frames = 0
    with progress as bar:
        task = bar.add_task("predict", total=len(paths), what="", fps="")
        frames_task = bar.add_task("frames", total=max(1, total_frames), what="frames", fps="", visible=False) \
            if predictor.kind == "video" else None
        if frames_task is not None:
            bar.update(frames_task, visible=True)
        for i, path in enumerate(paths):
            base = done_frames

            def tick(frames: int, base=base) -> None:
                elapsed = max(time.perf_counter() - start, 1e-9)
                rate = f"{(base + frames) / elapsed:.1f} frames/s"
                if frames_task is not None:
                    bar.update(frames_task, completed=base + frames, fps=rate)
                else:
                    bar.update(task, fps=rate.replace("frames", "images"))

            bar.update(task, what=escape(path.name[-40:]))
            try:
                result = predictor.predict(path, progress=tick, cache_features=cache_features)
                results[i] = result
                done_frames += getattr(result, "frames", 1)
            except InputError as e:
                failures[i] = str(e)
                done_frames += estimates[i]
                bar.console.print(f"[yellow]failed[/yellow]: {escape(str(path))}: {escape(str(e))}")
            if frames_task is not None:
                bar.update(frames_task, completed=done_frames, total=max(done_frames, total_frames))
            bar.advance(task)
    return results, failures


def _frames_estimate(path: Path, predictor) -> int:
    if predictor.kind != "video":
        return 1
    from actiontk.video.readers import estimated_frames

    try:
        n = estimated_frames(path) or 0
    except Exception:
        n = 0
    return max(1, n // max(1, predictor.frame_stride))


def _emit(paths: list[Path], results: dict, failures: dict, k: int, as_json: bool, out_dir: Path | None) -> None:
    lines = []
    for i, path in enumerate(paths):
        if i in results:
            lines.append(json.dumps(results[i].to_dict(k), ensure_ascii=False))
        else:
            lines.append(json.dumps({"input": str(path), "error": failures[i]}, ensure_ascii=False))
    if out_dir is not None:
        from actiontk.cache.runs import atomic_write_text

        atomic_write_text(out_dir / "predictions.jsonl", "".join(line + "\n" for line in lines))
    if as_json:
        if out_dir is None:
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
        return
    console = Console()
    for i in range(len(paths)):
        if i in results:
            console.print(f"[bold]{escape(str(results[i].source))}[/bold]", soft_wrap=True)
            console.print(_table(results[i], k))
            console.print(escape(_summary(results[i])), soft_wrap=True)


def _write_overlays(predictor, paths: list[Path], results: dict, failures: dict, out_dir: Path, console: Console):
    from actiontk.predict import overlay as ov
    from actiontk.predict.api import InputError
    from actiontk.predict.index import Entry

    entries = []
    for i, path in enumerate(paths):
        entry = Entry(name=str(path))
        if i in failures:
            entry.error = failures[i]
            entries.append(entry)
            continue
        r = results[i]
        entry.top = r.top_k(5)
        name = _safe_name(i, path)
        try:
            if r.kind == "video":
                entry.headline = (f"{r.classes[r.label_vote]} (paper's rule), {r.classes[r.label_mean]} "
                                  "(mean score)")
                entry.detail = f"{r.clips} clips, {r.frames} sampled frames (stride {r.frame_stride})"
                target = out_dir / f"{name}.overlay.mp4"
                spec = predictor.spec
                ov.write_video_overlay(r, predictor.frames(path, stride=1), target, fps=ov.frame_rate(path),
                                       square=spec.square)
                entry.overlay, entry.video = target, True
            else:
                entry.headline = r.label_name
                target = out_dir / f"{name}.overlay.png"
                import numpy as np

                img = np.asarray(predictor.read_image(path))
                m = predictor.image
                fraction = m.crop / m.resize if m.finetune else 1.0
                ov.write_png(ov.image_overlay(r, img, fraction=fraction), target)
                entry.overlay = target
        except (InputError, OSError, ValueError) as e:
            entry.detail += f" (no overlay: {e})"
            console.print(f"[yellow]no overlay[/yellow] for {escape(str(path))}: {escape(str(e))}")
        entries.append(entry)
    return entries
