"""The papers' published figures, shown in the report beside a run's own numbers (never mixed with them).

"Action Recognition with Joint Attention on Multi-Level Deep Features": top-1 video accuracy, mean over the three
official splits. The generalized attentional pooling paper (Table I): MPII validation set, mAP and accuracy. All
values in percent.

A published row is marked as "this run's method" only when the run's *whole* configuration that the row
describes is the same (:func:`method_of` reads it from the run and every run upstream of it): for the video
paper the backbone, the set of feature levels, the temporal module (3D convnet, 2D convnet or none), whether
the 3D convnet was attention-regularized, the fusion and the LSTM's loss; for the image paper the backbone, the
head, the bottom-up form, pose and how pose is used. A run that differs in any of them matches no row, and the
report says so, rather than pointing at a neighbouring one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actiontk.stages.registry import EXTRACT, TRAIN_3D


@dataclass(frozen=True)
class Row:
    name: str
    values: dict[str, float]  # column -> percent
    match: dict[str, Any] = field(default_factory=dict)  # method_of() values of this row's method
    table: str = ""  # where in the paper the figure is printed


@dataclass(frozen=True)
class Table:
    source: str
    protocol: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]


_JOINT = ('"Action Recognition with Joint Attention on Multi-Level Deep Features" (joint attention LSTM on VGG16 '
          'pool4 + conv5_3, 3D convnet regularized by the attention)')
_GAP = "Generalized attentional pooling (GAP) on ResNet-101 features"
_FINAL = "final results (3-split mean)"

# The full video method: both levels, the regularized 3D convnet, the LSTM's loss as printed (no attention term).
_JOINT_METHOD = {"backbone": "vgg16", "levels": ("conv5_3", "pool4"), "temporal": "3d", "regularized": True,
                 "lstm_attention_term": False}
_GAP_METHOD = {"backbone": "resnet101", "form": "activations", "depth": 3}  # T = 3: stages/mpii.toml

PUBLISHED: dict[str, Table] = {
    "ucf101": Table(_JOINT, "top-1 video accuracy, mean over the 3 official splits", ("accuracy",), (
        Row("early fusion", {"accuracy": 90.3}, {**_JOINT_METHOD, "fusion": "early"}, _FINAL),
        Row("late fusion", {"accuracy": 90.6}, {**_JOINT_METHOD, "fusion": "late"}, _FINAL),
    )),
    "hmdb51": Table(_JOINT, "top-1 video accuracy, mean over the 3 official splits", ("accuracy",), (
        Row("early fusion", {"accuracy": 61.2}, {**_JOINT_METHOD, "fusion": "early"}, _FINAL),
        Row("late fusion", {"accuracy": 61.7}, {**_JOINT_METHOD, "fusion": "late"}, _FINAL),
    )),
    "mpii": Table(_GAP, "MPII validation set", ("mAP", "accuracy"), (
        Row("GAP-CNN", {"mAP": 30.6, "accuracy": 36.0}, {**_GAP_METHOD, "head": "gap", "pose": False}, "Table I"),
        Row("GAP-CNN + Pose", {"mAP": 31.6, "accuracy": 36.9},
            {**_GAP_METHOD, "head": "gap", "pose": True, "pose_attention": False}, "Table I"),
        Row("Attn. Pool. (rank-1)", {"mAP": 30.3, "accuracy": 35.3},
            {"backbone": "resnet101", "head": "attn", "pose": False}, "Table I"),
        Row("Attn. Pool. + Pose", {"mAP": 30.6, "accuracy": 35.7},
            {"backbone": "resnet101", "head": "attn", "pose": True, "pose_attention": False}, "Table I"),
        Row("ResNet-101 mean-pool baseline", {"mAP": 26.2}, {"backbone": "resnet101", "head": "mean", "pose": False},
            "Table I"),
    )),
}

# The run figure that corresponds to each published column.
COLUMN_METRIC = {"video": {"accuracy": "top1_vote", "mAP": "mAP"}, "image": {"accuracy": "top1", "mAP": "mAP"}}


def method_of(kind: str, provenance: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a run's method is, in the terms the published rows use, from its provenance chain (the run first,
    then every run upstream of it, as :func:`actiontk.stages.evaluate.provenance` lists them). Keys that cannot
    be told (an upstream run no longer in the cache) are left out, so that no row matches on a guess."""
    runs = [p for p in provenance if p.get("found")]
    if not runs:
        return {}
    top = runs[0]
    by_stage: dict[str, dict[str, Any]] = {}
    for p in runs:
        by_stage.setdefault(p["stage"], p)  # the nearest run of each stage (depth first from the top)
    extract = by_stage.get(EXTRACT)
    extract_backbone = _get(extract, "config", "backbone") or {}
    out: dict[str, Any] = {}
    model = _get(top, "config", "model") or {}
    if kind == "image":
        out["head"] = model.get("head")
        out["pose"] = bool(model.get("pose"))
        out["pose_attention"] = bool(model.get("pose_attention")) and out["pose"]
        out["form"] = model.get("form", "activations")
        out["depth"] = model.get("depth") if model.get("depth") is not None else (3 if out["head"] == "gap" else None)
        backbone = model.get("backbone") if model.get("finetune") else extract_backbone.get("backbone")
        if backbone:
            out["backbone"] = backbone
        return out
    out["fusion"] = model.get("fusion")
    out["lstm_attention_term"] = float(model.get("att_lambda") or 0) > 0
    ups = top.get("upstream", {})
    three_d = by_stage.get(TRAIN_3D)
    levels = model.get("levels")
    if EXTRACT in ups:
        out["temporal"], out["regularized"] = "none", False
    elif three_d is not None:
        m3 = _get(three_d, "config", "model") or {}
        out["temporal"] = "2d" if m3.get("temporal_kernel", 3) == 1 else "3d"
        out["regularized"] = "attention" in three_d.get("upstream", {}) and float(m3.get("att_lambda") or 0) > 0
        levels = levels or m3.get("levels")
    if extract is not None:
        levels = levels or extract_backbone.get("layers")
        if extract_backbone.get("backbone"):
            out["backbone"] = extract_backbone["backbone"]
    if levels:
        out["levels"] = tuple(sorted(levels))
    return out


def _get(run: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = run
    for k in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(k)
    return value


def matches(row: Row, method: dict[str, Any]) -> bool:
    """Every setting the row states is the run's (a setting the run does not state never matches)."""
    return bool(row.match) and all(k in method and method[k] == v for k, v in row.match.items())


def comparison(dataset: str | None, kind: str, method: dict[str, Any], summary: dict[str, Any],
               over_splits: dict[str, Any] | None) -> dict[str, Any] | None:
    """The published table for ``dataset`` with this run's figures as extra rows, or None when the papers
    report no figure for it. Values are percent strings; ``highlight`` marks the row of the run's method
    (see :func:`method_of`); ``matched`` is False when no row describes this run's configuration."""
    table = PUBLISHED.get((dataset or "").lower())
    if table is None:
        return None
    metric_of = COLUMN_METRIC[kind]

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}"

    rows = [{"name": r.name, "table": r.table,
             "values": [f"{r.values[c]:.1f}" if c in r.values else "—" for c in table.columns],
             "highlight": matches(r, method)} for r in table.rows]
    ours = [{"name": "this run", "values": [pct(summary.get(metric_of.get(c, ""))) for c in table.columns]}]
    if over_splits:
        ours.append({"name": "this config, mean ± std over splits 1-3",
                     "values": [_mean_std(over_splits, metric_of.get(c, "")) for c in table.columns]})
    return {"source": table.source, "protocol": table.protocol, "columns": list(table.columns), "published": rows,
            "ours": ours, "matched": any(r["highlight"] for r in rows),
            "method": ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(method.items()))}


def _fmt(value: Any) -> str:
    return "+".join(value) if isinstance(value, tuple) else str(value)


def _mean_std(over: dict[str, Any], key: str) -> str:
    if key not in over.get("mean", {}):
        return "—"
    return f"{100 * over['mean'][key]:.1f} ± {100 * over['std'][key]:.1f}"
