"""Reports of an evaluated run: one self-contained HTML page and a Markdown summary with PNG figures.

:func:`build` gathers everything once (the metrics of :mod:`actiontk.stages.evaluate`, the training curves
from ``metrics.jsonl``, attention maps laid over frames decoded from the dataset); :func:`write_html` and
:func:`write_markdown` render it with the Jinja2 templates shipped in ``templates/``.

The HTML page needs no network: styles and script are inline, pictures are ``data:`` URIs, and a
Content-Security-Policy allows nothing else (the one script is allowed by its sha256). Class names and
file names come from datasets and are untrusted: the HTML environment autoescapes everything, data for
the script travels as JSON in a ``<script type="application/json">`` block (Jinja's ``tojson`` escapes
``<``, ``>``, ``&`` and ``'``), and the script writes names with ``textContent`` only. The Markdown
environment backslash-escapes Markdown and HTML punctuation in such text (the ``md`` filter).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.errors import UserError
from actiontk.report import media
from actiontk.stages import registry
from actiontk.stages.evaluate import ATTENTION_SAMPLES, SUMMARY_LABELS, Evaluation

TEMPLATES = Path(__file__).parent / "templates"
FORMATS = ("html", "json", "md")
SAMPLES_EACH = 4  # attention samples shown: up to this many correctly and this many wrongly classified
FRAMES_SHOWN = 6  # frames shown per video clip


@dataclass
class Tile:
    caption: str
    rgb: np.ndarray  # (TILE, TILE, 3) uint8


@dataclass
class AttentionItem:
    """One test item's attention figure: a row of tiles (frames of a clip, or an image and its maps)."""

    rel: str
    label: str
    pred: str
    correct: bool
    tiles: list[Tile]
    detail: str = ""  # e.g. the video's voted label beside the clip's prediction
    note: str | None = None  # why the frame could not be shown, when it could not
    on_frames: bool = False  # the maps are laid over the dataset's real pixels


@dataclass
class ReportData:
    ev: Evaluation
    context: dict[str, Any]
    curves: bytes | None
    attention: list[AttentionItem] = field(default_factory=list)


# -- gathering -------------------------------------------------------------------------------------------


def build(ev: Evaluation, *, log: Callable[[str], None] = print) -> ReportData:
    """Everything the reports show, computed once for all formats."""
    from actiontk.report import figures
    from actiontk.report.published import comparison, method_of

    m = ev.metrics
    summary = m["summary"]
    records = figures.read_metrics_log(ev.run.path / "metrics.jsonl")
    items, attention_note = attention_items(ev, log=log)
    config = ev.run.info.get("config")
    model_config = config.get("model", {}) if isinstance(config, dict) else {}
    K = len(m["classes"])
    cm = np.asarray(m["confusion"], np.int64)
    nz = np.argwhere(cm > 0)
    over = m.get("over_splits")
    context = {
        "title": f"{m.get('dataset') or 'dataset'} split {m.get('split')}",
        "run": m["run"]["name"],
        "run_path": m["run"]["path"],
        "dataset": m.get("dataset"),
        "split": m.get("split"),
        "kind": m["kind"],
        "created": m["run"].get("created"),
        "evaluated": m["evaluated"],
        "counts": m["counts"],
        "headline": [{"key": k, "label": SUMMARY_LABELS[k], "value": summary[k]}
                     for k in SUMMARY_LABELS if k in summary],
        "map": m["map"],
        "rule": m["rule"],
        "over_splits": _over_splits_rows(over) if over else None,
        "published": comparison(m.get("dataset"), m["kind"], method_of(m["kind"], ev.provenance), summary, over),
        "per_class": m["per_class"],
        "confused": m["most_confused"],
        "cm": {"classes": m["classes"], "support": cm.sum(1).tolist(),
               "cells": [[int(i), int(j), int(cm[i, j])] for i, j in nz]},
        "cm_cell": int(np.clip(800 // max(K, 1), 3, 28)),
        "has_curves": bool(records),
        "attention_note": attention_note,
        "provenance": [_provenance_row(p) for p in ev.provenance],
        "inputs": ev.run.info.get("inputs", {}),
        "versions": m["versions"],
        "model_config": model_config,
    }
    return ReportData(ev, context, figures.curves_png(records), items)


def _over_splits_rows(over: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for k in SUMMARY_LABELS:
        if k in over["mean"]:
            rows.append({"label": SUMMARY_LABELS[k], "splits": [over["per_split"][s][k] for s in ("1", "2", "3")],
                         "mean": over["mean"][k], "std": over["std"][k]})
    return {"runs": over["runs"], "rows": rows}


def _provenance_row(p: dict[str, Any]) -> dict[str, Any]:
    if not p.get("found"):
        return {**p, "config_text": ""}
    return {**p, "config_text": json.dumps(p.get("config", {}), indent=2, sort_keys=True, default=str)}


def _pick(correct: np.ndarray, rel: np.ndarray, n_each: int) -> list[int]:
    """Up to ``n_each`` correctly then ``n_each`` wrongly classified samples, in file order, taking one per
    video or image before taking a second from any."""
    picked: list[int] = []
    for group in (np.flatnonzero(correct), np.flatnonzero(~correct)):
        first: list[int] = []
        rest: list[int] = []
        seen: set[str] = set()
        for i in group:
            (rest if str(rel[i]) in seen else first).append(int(i))
            seen.add(str(rel[i]))
        picked += (first + rest)[:n_each]
    return picked


def _frame_stride(ev: Evaluation) -> int:
    for p in ev.provenance:
        if p.get("found") and p.get("stage") == registry.EXTRACT:
            return int(p.get("config", {}).get("frame_stride") or 1)
    return 1


def attention_items(ev: Evaluation, *, log: Callable[[str], None] = print) -> tuple[list[AttentionItem], str | None]:
    """The attention figures of the run's sample test items, and a note when there are none."""
    path = ev.run.path / ATTENTION_SAMPLES
    if not path.is_file():
        return [], f"this run has no {ATTENTION_SAMPLES}"
    try:
        with np.load(path, allow_pickle=False) as f:
            a = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        return [], f"cannot read {ATTENTION_SAMPLES}: {e}"
    if "attention" in a:
        return _video_items(ev, a, log), None
    if "topdown" in a and "bottomup" in a:
        return _image_items(ev, a), None
    return [], f"{ATTENTION_SAMPLES} holds no attention maps (keys: {', '.join(sorted(a))})"


def _class(classes: list[str], k: int) -> str:
    return classes[k] if 0 <= k < len(classes) else f"class {k}"


def _video_items(ev: Evaluation, a: dict[str, np.ndarray], log: Callable[[str], None]) -> list[AttentionItem]:
    from actiontk.datasets import get_dataset
    from actiontk.datasets.base import safe_rel
    from actiontk.video.readers import DecodeError

    classes = ev.predictions.classes
    inputs = ev.run.info.get("inputs", {})
    stride = _frame_stride(ev)
    video_root, root_note = None, None
    try:
        video_root = get_dataset(str(inputs.get("dataset")), inputs.get("root", "")).video_root
    except UserError as e:
        root_note = f"frames unavailable: {e}"
        log(f"attention maps are shown without their frames: {e}")
    items = []
    for i in _pick(a["pred"] == a["label"], a["rel"], SAMPLES_EACH):
        att = a["attention"][i]  # (L, H, W)
        rel, start, L = str(a["rel"][i]), int(a["start"][i]), att.shape[0]
        frames, note = None, root_note
        if video_root is not None:
            safe = safe_rel(rel)
            try:
                if safe is None:
                    raise DecodeError(rel, "-", "the path leaves the dataset root")
                frames = media.read_clip(video_root / safe, start, L, stride)
            except DecodeError as e:
                note = f"frames unavailable: {e}"
        tiles = []
        for t in np.unique(np.linspace(0, L - 1, min(FRAMES_SHOWN, L)).round().astype(int)):
            tile = media.to_tile(frames[min(t, len(frames) - 1)]) if frames is not None else None
            padded = frames is not None and t >= len(frames)
            caption = f"frame {(start + t) * stride}" + (" (padding)" if padded else "")
            tiles.append(Tile(caption, media.overlay(tile, att[t])))
        label, pred = int(a["label"][i]), int(a["pred"][i])
        detail = f"clip from frame {start * stride}"
        if "video_pred" in a:
            detail += f"; the video's vote: {_class(classes, int(a['video_pred'][i]))}"
        items.append(AttentionItem(rel, _class(classes, label), _class(classes, pred), label == pred, tiles,
                                   detail, note, frames is not None))
    return items


def _image_items(ev: Evaluation, a: dict[str, np.ndarray]) -> list[AttentionItem]:
    classes = ev.predictions.classes
    inputs = ev.run.info.get("inputs", {})
    items = []
    for i in _pick(a["pred"] == a["label"], a["rel"], SAMPLES_EACH):
        rel = str(a["rel"][i])
        tile, note = None, None
        path = media.image_path(str(inputs.get("dataset")), inputs.get("root", ""), rel)
        if path is None:
            note = f"image unavailable: {rel} not found under {inputs.get('root')}/images or {inputs.get('root')}"
        else:
            try:
                tile = media.to_tile(media.read_image(path))
            except OSError as e:
                note = f"image unavailable: {e}"
        td, bu = a["topdown"][i].astype(np.float32), a["bottomup"][i].astype(np.float32)
        grey = np.full((media.TILE, media.TILE, 3), media.BACKGROUND, np.uint8)
        tiles = [Tile("image", tile if tile is not None else grey),
                 Tile("top-down (predicted class)", media.overlay(tile, td)),
                 Tile("bottom-up", media.overlay(tile, bu)),
                 Tile("top-down × bottom-up", media.overlay(tile, td * bu))]
        label, pred = int(a["label"][i]), int(a["pred"][i])
        items.append(AttentionItem(rel, _class(classes, label), _class(classes, pred), label == pred, tiles,
                                   "", note, tile is not None))
    return items


# -- rendering -------------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


_MD_SPECIAL = set("\\`*_{}[]<>()#+!|~&$")


def md_escape(text: Any) -> str:
    """Text from datasets made inert in Markdown: one line, punctuation that Markdown or HTML reads
    backslash-escaped (CommonMark shows ``\\<`` as ``<``)."""
    s = " ".join(str(text).split())
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in s)


def _environment(markdown: bool):
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=not markdown, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["pct"] = _pct
    env.filters["md"] = md_escape
    return env


def out_dir(out: Path, holds: str = "the reports") -> Path:
    """The ``--out`` folder, made if missing; a file in its place, or a folder that cannot be made, is a
    one-line error (``holds`` says what the folder is for)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file", f"give a folder for {holds}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder {out} for {holds}: {e.strerror}", "give another --out") from None
    return out


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(data: ReportData) -> str:
    env = _environment(markdown=False)
    script = (TEMPLATES / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    attention = [{"item": it, "tiles": [{"caption": t.caption, "src": _data_uri(media.png_bytes(t.rgb))}
                                        for t in it.tiles]} for it in data.attention]
    return env.get_template("report.html.j2").render(
        **data.context, attention=attention, curves_src=_data_uri(data.curves) if data.curves else None,
        script=script, script_hash=f"sha256-{digest}")


def write_html(data: ReportData, out: Path) -> Path:
    """``out/report.html``, one self-contained file."""
    from actiontk.cache.runs import atomic_write_text

    path = out_dir(out) / "report.html"
    atomic_write_text(path, render_html(data))
    return path


def write_markdown(data: ReportData, out: Path) -> Path:
    """``out/report.md`` with its figures beside it: confusion.png, curves.png, attention-NN.png."""
    from actiontk.cache.runs import atomic_write_bytes, atomic_write_text
    from actiontk.report import figures

    out = out_dir(out)
    m = data.ev.metrics
    atomic_write_bytes(out / "confusion.png", figures.confusion_png(np.asarray(m["confusion"]), m["classes"]))
    curves = None
    if data.curves:
        curves = "curves.png"
        atomic_write_bytes(out / curves, data.curves)
    attention = []
    for n, it in enumerate(data.attention, 1):
        name = f"attention-{n:02d}.png"
        atomic_write_bytes(out / name, media.png_bytes(media.strip(t.rgb for t in it.tiles)))
        attention.append({"item": it, "file": name, "captions": [t.caption for t in it.tiles]})
    text = _environment(markdown=True).get_template("report.md.j2").render(
        **data.context, attention=attention, curves_file=curves, confusion_file="confusion.png")
    path = out / "report.md"
    atomic_write_text(path, text)
    return path


# -- a run's own reports, rendered again only when what they show changed -------------------------------------

REPORT_SIGNATURE = ".signature"  # in a report folder: what the reports there were rendered from


def report_signature(ev: Evaluation, formats: Sequence[str]) -> str:
    """What a run's reports depend on: its metrics (less the evaluation time), the runs they came from, the
    requested formats, and the code that renders them (actiontk's version and the templates' text)."""
    from actiontk import __version__

    digest = hashlib.sha256()
    for path in sorted(TEMPLATES.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    metrics = {k: v for k, v in ev.metrics.items() if k != "evaluated"}
    payload = {"metrics": metrics, "formats": sorted(formats), "actiontk": __version__,
               "templates": digest.hexdigest(), "provenance": [p.get("key") for p in ev.provenance]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest() + "\n"


def write_run_reports(ev: Evaluation, formats: Sequence[str], *,
                      log: Callable[[str], None] = print) -> tuple[Path | None, bool]:
    """The ``html`` / ``md`` reports of ``formats`` in the evaluate run's ``report/`` folder, unless the ones there were
    rendered from the same inputs (:func:`report_signature`): (the first report, whether it was rendered now)."""
    from actiontk.cache.runs import atomic_write_text

    out = ev.out.path / "report"
    wanted = [out / name for fmt, name in (("html", "report.html"), ("md", "report.md")) if fmt in formats]
    signature = report_signature(ev, formats)
    stamp = out / REPORT_SIGNATURE
    if all(p.is_file() for p in wanted) and stamp.is_file() and stamp.read_text() == signature:
        log(f"the report of {ev.run.short} is up to date: {wanted[0]}")
        return wanted[0], False
    report = None
    data = build(ev, log=log)
    if "html" in formats:
        report = write_html(data, out)
    if "md" in formats:
        path = write_markdown(data, out)
        report = report or path
    atomic_write_text(stamp, signature)
    return report, True
