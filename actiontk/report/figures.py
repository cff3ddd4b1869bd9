"""Matplotlib figures of the report (training curves, confusion matrix) as PNG bytes.

Drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so no global
backend is set and no window can open. matplotlib is imported here only, when a report is made. Text from
datasets (class names) is drawn with mathtext parsing off, so a ``$`` in a name stays a dollar sign.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; unreadable lines (a write cut short) are skipped."""
    from actiontk.cache.runs import read_jsonl

    return [rec for rec in read_jsonl(path) if "epoch" in rec and "split" in rec]


def curves_series(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """{"loss"|"acc": {split: [(epoch, value), ...]}} with the last record of each (epoch, split) winning
    (a resumed run may have logged an epoch twice)."""
    last: dict[tuple[str, int], dict] = {}
    for rec in records:
        last[(str(rec["split"]), int(rec["epoch"]))] = rec
    out: dict[str, dict[str, list[tuple[int, float]]]] = {"loss": {}, "acc": {}}
    for (split, epoch), rec in sorted(last.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for metric in out:
            value = rec.get(metric)
            if isinstance(value, (int, float)) and np.isfinite(value):
                out[metric].setdefault(split, []).append((epoch, float(value)))
    return out


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def curves_png(records: list[dict[str, Any]]) -> bytes | None:
    """Loss and accuracy per epoch, one line per split; None when the log has neither."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = curves_series(records)
    if not any(series.values()):
        return None
    names = {"train": "train", "val": "test split (val)"}
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(9, 3.2), dpi=100, layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, (metric, title) in zip(axes, (("loss", "loss"), ("acc", "accuracy")), strict=True):
            for split, points in sorted(series[metric].items()):
                x, y = zip(*points, strict=True)
                ax.plot(x, y, marker="o", markersize=3, label=names.get(split, split))
            ax.set_title(f"{title} per epoch")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if series[metric]:
                ax.legend(fontsize="small")
        if series["acc"]:
            axes[1].set_ylim(-0.02, 1.02)
        return _png(fig)


def confusion_png(cm: np.ndarray, classes: list[str], max_labels: int = 40) -> bytes:
    """The row-normalized confusion matrix (fraction of each true class); class names on the axes up to
    ``max_labels`` classes."""
    import matplotlib
    from matplotlib.figure import Figure

    cm = np.asarray(cm, np.float64)
    support = cm.sum(1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    n = len(classes)
    side = float(np.clip(n * 0.22 + 2.5, 4.5, 14))
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(side + 1.2, side), dpi=100, layout="constrained")
        ax = fig.subplots()
        im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if n <= max_labels:
            ax.set_xticks(range(n), labels=classes, rotation=90, fontsize=7)
            ax.set_yticks(range(n), labels=classes, fontsize=7)
        else:
            ax.set_title(f"{n} classes in the order of the class list (names in the per-class table)")
        return _png(fig)
