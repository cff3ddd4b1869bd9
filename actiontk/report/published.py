"""The papers' published figures, shown in the report beside a run's own numbers (never mixed with them).

Joint attention on multi-level deep features: top-1 video accuracy, mean over the three official splits.
Generalized attentional pooling: MPII validation set, mAP and accuracy. All values in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Row:
    name: str
    values: dict[str, float]  # column -> percent
    match: dict[str, Any] = field(default_factory=dict)  # run.json config["model"] values of this row's method


@dataclass(frozen=True)
class Table:
    source: str
    protocol: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


_JOINT = "Joint attention on multi-level deep features (joint attention LSTM on VGG16 pool4 + conv5_3)"
_GAP = "Generalized attentional pooling (GAP) on ResNet-101 features"

PUBLISHED: dict[str, Table] = {
    "ucf101": Table(_JOINT, "top-1 video accuracy, mean over the 3 official splits", ("accuracy",), (
        Row("early fusion", {"accuracy": 90.3}, {"fusion": "early"}),
        Row("late fusion", {"accuracy": 90.6}, {"fusion": "late"}),
    )),
    "hmdb51": Table(_JOINT, "top-1 video accuracy, mean over the 3 official splits", ("accuracy",), (
        Row("early fusion", {"accuracy": 61.2}, {"fusion": "early"}),
        Row("late fusion", {"accuracy": 61.7}, {"fusion": "late"}),
    )),
    "mpii": Table(_GAP, "MPII validation set", ("mAP", "accuracy"), (
        Row("GAP-CNN", {"mAP": 30.6, "accuracy": 36.0}, {"head": "gap", "pose": False}),
        Row("GAP-CNN + Pose", {"mAP": 31.6, "accuracy": 36.9}, {"head": "gap", "pose": True}),
        Row("rank-1 attentional pooling", {"mAP": 30.3, "accuracy": 35.3}, {"head": "attn"}),
        Row("ResNet-101 mean-pool baseline", {"mAP": 26.2}, {"head": "mean"}),
    )),
}

# The run figure that corresponds to each published column.
COLUMN_METRIC = {"video": {"accuracy": "top1_vote", "mAP": "mAP"}, "image": {"accuracy": "top1", "mAP": "mAP"}}


def comparison(dataset: str | None, kind: str, model_config: dict[str, Any], summary: dict[str, Any],
               over_splits: dict[str, Any] | None) -> dict[str, Any] | None:
    """The published table for ``dataset`` with this run's figures as extra rows, or None when the papers
    report no figure for it. Values are percent strings; ``highlight`` marks the row of the run's method."""
    table = PUBLISHED.get((dataset or "").lower())
    if table is None:
        return None
    metric_of = COLUMN_METRIC[kind]

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}"

    rows = [{"name": r.name, "values": [f"{r.values[c]:.1f}" if c in r.values else "—" for c in table.columns],
             "highlight": bool(r.match) and all(model_config.get(k) == v for k, v in r.match.items())}
            for r in table.rows]
    ours = [{"name": "this run", "values": [pct(summary.get(metric_of.get(c, ""))) for c in table.columns]}]
    if over_splits:
        ours.append({"name": "this config, mean ± std over splits 1-3",
                     "values": [_mean_std(over_splits, metric_of.get(c, "")) for c in table.columns]})
    return {"source": table.source, "protocol": table.protocol, "columns": list(table.columns), "published": rows,
            "ours": ours}


def _mean_std(over: dict[str, Any], key: str) -> str:
    if key not in over.get("mean", {}):
        return "—"
    return f"{100 * over['mean'][key]:.1f} ± {100 * over['std'][key]:.1f}"
