"""``actiontk evaluate``: the metrics of a training run's test predictions, written to ``metrics.json`` in a run of
its own (``<cache>/evaluate/<key>``, keyed by this stage's schema and the training run's key).

Reads ``predictions.npz`` of a ``train-lstm`` run (video: per clip scores, per video labels) or a
``train-gap`` run (still images: per image labels and softmax scores) — the format is told apart by the
arrays the file holds — and computes with :mod:`actiontk.metrics`:

- video: clip accuracy with the paper's clip label (hard vote of the last L2 steps, Sec. 3.5) and with
  the mean softmax (ours); top-1 video accuracy by the majority over clip labels (ours: the paper does not
  say how clips make a video's label) and by mean clip score (ours); mean class accuracy, mAP, per-class AP
  and accuracy, the confusion matrix, top-k accuracy; per-class accuracy, mean class accuracy and the
  confusion matrix use the voted labels, AP and top-k the mean clip softmax;
- images: top-1, mean class accuracy, mAP, per-class figures, confusion matrix, top-k (no voting).

When complete runs of the same stage exist for splits 1, 2 and 3 of the same dataset, with the same
config all the way upstream (see :func:`config_signature`), the headline figures are also given per split
with their mean ± standard deviation. The result goes to ``metrics.json`` in the evaluate run, beside the
``report/`` folder the reports (:mod:`actiontk.report`) built from it are written to.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actiontk import __version__
from actiontk import metrics as M
from actiontk.cache import lifecycle
from actiontk.cache.lifecycle import mark_complete, unmark
from actiontk.cache.runs import RUN_FILE, Run, atomic_write_text, list_runs, open_run, run_by_name
from actiontk.errors import UserError
from actiontk.stages import registry

TRAIN_STAGES = registry.PREDICTING  # the stages whose runs hold predictions
PREDICTIONS = "predictions.npz"
ATTENTION_SAMPLES = "attention_samples.npz"
METRICS = "metrics.json"
SCHEMA = 1
SPLITS = (1, 2, 3)
CONFUSED_PAIRS = 15  # most-confused pairs listed

VIDEO_KEYS = ("classes", "clip_video", "clip_pred", "clip_scores", "video_rel", "video_label")
IMAGE_KEYS = ("classes", "image_rel", "image_label", "image_scores")

# The headline figures, in display order, with their labels (fractions in [0, 1]).
SUMMARY_LABELS = {
    "top1_vote": "top-1 accuracy (clip voting)",  # clips: the paper's hard vote; clips -> video: majority (ours)
    "top1_mean_score": "top-1 accuracy (mean score, ours)",
    "top1": "top-1 accuracy",
    "clip_accuracy": "clip accuracy (hard vote)",
    "clip_accuracy_mean": "clip accuracy (mean score, ours)",
    "mean_class_accuracy": "mean class accuracy",
    "mAP": "mAP",
    **{f"top{k}": f"top-{k} accuracy" for k in M.TOP_KS},
}

NEXT_STEP = "run `actiontk train-lstm` (video) or `actiontk train-gap` (images) first"


# -- predictions -----------------------------------------------------------------------------------------


@dataclass
class Predictions:
    """The test predictions of one run, as the arrays metrics are computed from."""

    kind: str  # "video" or "image"
    classes: list[str]
    rel: np.ndarray  # (N,) item paths relative to the dataset's root
    labels: np.ndarray  # (N,) int
    scores: np.ndarray  # (N, K) softmax per item (video: mean over its clips)
    preds: np.ndarray  # (N,) the headline rule's prediction (video: clip voting; image: argmax)
    mean_preds: np.ndarray | None = None  # video: argmax of the mean clip score
    clip_video: np.ndarray | None = None  # video: (C,) video index of each clip
    clip_scores: np.ndarray | None = None  # video: (C, K)
    clip_preds: np.ndarray | None = None  # video: (C,) clip labels by the paper's hard vote


def load_predictions(path: Path) -> Predictions:
    """Read a ``predictions.npz`` (no pickles), telling the video and the image format apart by its keys."""
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}", "the run may have been interrupted; run its stage again") from None
    if all(k in data for k in VIDEO_KEYS):
        kind = "video"
    elif all(k in data for k in VIDEO_KEYS if k != "clip_pred"):
        raise UserError(f"{path} has no clip_pred: it was written by an older actiontk whose clip rule averaged "
                        "softmax scores instead of the paper's hard vote", "run its train-lstm stage again")
    elif all(k in data for k in IMAGE_KEYS):
        kind = "image"
    else:
        raise UserError(f"{path} holds neither video nor image predictions (keys: {', '.join(sorted(data))})",
                        f"expected {', '.join(VIDEO_KEYS)} or {', '.join(IMAGE_KEYS)}")
    classes = [str(c) for c in data["classes"]]
    K = len(classes)

    def bad(what: str) -> UserError:
        return UserError(f"{path}: {what}", "the file does not match its run; run its stage again")

    if kind == "video":
        labels = data["video_label"].astype(np.int64)
        clip_video = data["clip_video"].astype(np.int64)
        clip_scores = data["clip_scores"].astype(np.float64)
        clip_preds = data["clip_pred"].astype(np.int64)
        if clip_scores.ndim != 2 or clip_scores.shape[1] != K or len(clip_video) != len(clip_scores):
            raise bad(f"clip_scores has shape {clip_scores.shape} for {len(clip_video)} clips and {K} classes")
        out_of_range = len(clip_preds) and (clip_preds.min() < 0 or clip_preds.max() >= K)
        if clip_preds.shape != clip_video.shape or out_of_range:
            raise bad(f"clip_pred has shape {clip_preds.shape} or classes outside 0..{K - 1}")
        if len(data["video_rel"]) != len(labels):
            raise bad(f"{len(data['video_rel'])} video_rel for {len(labels)} video_label")
        if len(clip_video) and (clip_video.min() < 0 or clip_video.max() >= len(labels)):
            raise bad(f"clip_video refers to videos outside 0..{len(labels) - 1}")
        try:
            voted, mean_pred, mean_scores = M.video_predictions(clip_video, clip_scores, len(labels), clip_preds)
        except ValueError as e:
            raise bad(str(e)) from None
        pred = Predictions(kind, classes, data["video_rel"], labels, mean_scores, voted, mean_pred, clip_video,
                           clip_scores, clip_preds)
    else:
        labels = data["image_label"].astype(np.int64)
        scores = data["image_scores"].astype(np.float64)
        if scores.ndim != 2 or scores.shape != (len(labels), K) or len(data["image_rel"]) != len(labels):
            raise bad(f"image_scores has shape {scores.shape} for {len(labels)} images and {K} classes")
        pred = Predictions(kind, classes, data["image_rel"], labels, scores, scores.argmax(1))
    if len(labels) == 0:
        raise bad("no test items")
    if labels.min() < 0 or labels.max() >= K:
        raise bad(f"labels outside 0..{K - 1}")
    return pred


def summary(pred: Predictions, result: dict | None = None) -> dict[str, float | None]:
    """The headline figures of ``pred`` (see :data:`SUMMARY_LABELS`)."""
    r = result or M.classification(pred.labels, pred.preds, pred.scores)
    out: dict[str, float | None] = {}
    if pred.kind == "video":
        out["top1_vote"] = r["accuracy"]
        out["top1_mean_score"] = M.accuracy(pred.labels, pred.mean_preds)
        out["clip_accuracy"] = M.accuracy(pred.labels[pred.clip_video], pred.clip_preds)
        out["clip_accuracy_mean"] = M.accuracy(pred.labels[pred.clip_video], pred.clip_scores.argmax(1))
    else:
        out["top1"] = r["accuracy"]
    out["mean_class_accuracy"] = r["mean_class_accuracy"]
    out["mAP"] = r["mAP"]
    out.update({f"top{k}": v for k, v in r["top_k"].items()})
    return out


def compute_metrics(pred: Predictions) -> dict[str, Any]:
    """Every figure of ``pred`` as JSON-ready data (NaN becomes None)."""
    r = M.classification(pred.labels, pred.preds, pred.scores)
    names = pred.classes
    skipped = [names[k] for k in r["skipped"]]
    per_class = [{"class": names[k], "support": int(r["support"][k]), "ap": _num(r["ap"][k]),
                  "accuracy": _num(r["class_accuracy"][k])} for k in range(len(names))]
    confused = [{"true": names[i], "predicted": names[j], "count": c, "fraction": c / int(r["support"][i])}
                for i, j, c in M.most_confused(r["confusion"], CONFUSED_PAIRS)]
    out = {
        "kind": pred.kind,
        "classes": names,
        "counts": {"items": len(pred.labels), "classes": len(names),
                   "classes_with_items": len(names) - len(skipped),
                   **({"clips": len(pred.clip_video)} if pred.kind == "video" else {})},
        "summary": summary(pred, r),
        "map": {"value": r["mAP"], "classes": len(names) - len(skipped), "skipped": skipped,
                "reason": "no positive (test item of the class) in this split, so its AP is undefined"},
        "rule": ("clip label by the paper's hard vote of the last L2 steps (Sec. 3.5), video label by the majority "
                 "over its clips (ours; ties by summed softmax): per-class accuracy, mean class accuracy and the "
                 "confusion matrix; AP and top-k use the mean clip softmax (ours)"
                 if pred.kind == "video" else "argmax of the softmax"),
        "per_class": per_class,
        "confusion": r["confusion"].tolist(),
        "most_confused": confused,
    }
    return out


def _num(x: float | None) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


# -- finding runs ----------------------------------------------------------------------------------------


def has_predictions(run: Run) -> bool:
    return (run.path / PREDICTIONS).is_file()


def _training_runs(cache_root: Path) -> list[Run]:
    runs = [r for stage in TRAIN_STAGES for r in list_runs(cache_root, stage)]
    runs.sort(key=lambda r: (r.info.get("created", ""), (r.path / RUN_FILE).stat().st_mtime), reverse=True)
    return runs


def describe(run: Run) -> str:
    inputs = run.info.get("inputs", {})
    return (f"{run.short} ({inputs.get('dataset', '?')} split {inputs.get('split', '?')}, created "
            f"{run.info.get('created', '?')[:19]})")


def find_run(cache_root: Path, name: str | None, log: Callable[[str], None], *, dataset: str | None = None,
             split: int | None = None) -> Run:
    """The run to evaluate: ``name`` (a run folder, ``STAGE/KEY`` or a key prefix), else the newest complete
    training run with predictions (of ``dataset`` and ``split`` when given); says which."""
    if name is None:
        runs = [r for r in _training_runs(cache_root)
                if (dataset is None or r.info.get("inputs", {}).get("dataset") == dataset.lower())
                and (split is None or r.info.get("inputs", {}).get("split") == split)]
        usable = [r for r in runs if has_predictions(r) and lifecycle.is_complete(r)]
        if not usable:
            unfinished = f" ({len(runs)} unfinished: {', '.join(r.short for r in runs[:3])})" if runs else ""
            of = "".join([f" of {dataset}" if dataset else "", f" split {split}" if split is not None else ""])
            raise UserError(f"no finished training run{of} with predictions in {cache_root}{unfinished}", NEXT_STEP)
        run = usable[0]
        log(f"evaluating the newest training run with predictions: {describe(run)}")
        return run
    run = run_by_name(cache_root, name, TRAIN_STAGES, "training run")
    if run.stage not in TRAIN_STAGES:
        raise UserError(f"{run.short} is a {run.stage} run; evaluate reads {' or '.join(TRAIN_STAGES)} runs",
                        "`actiontk status` lists the runs")
    if not has_predictions(run):
        raise UserError(f"{run.short} has no {PREDICTIONS} (its training has not finished)",
                        f"finish it: `actiontk {run.stage}`")
    if not lifecycle.is_complete(run):
        log(f"warning: {run.short} is not marked complete; its predictions may be partial")
    log(f"evaluating {describe(run)}")
    return run


# -- provenance and splits -------------------------------------------------------------------------------


def run_index(cache_root: Path) -> dict[str, Run]:
    return {r.info.get("key"): r for r in list_runs(cache_root) if r.info.get("key")}


def provenance(run: Run, index: dict[str, Run]) -> list[dict[str, Any]]:
    """The run and every run upstream of it (depth first), each with its stage, key, config and inputs.

    An upstream run no longer in the cache appears with ``found`` False and only its key.
    """
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(r: Run, via: str | None) -> None:
        seen.add(r.key)
        chain.append({"via": via, "found": True, "stage": r.stage, "run": r.short, "key": r.key,
                      "created": r.info.get("created"), "actiontk": r.info.get("actiontk"),
                      "config": r.info.get("config", {}), "inputs": r.info.get("inputs", {}),
                      "upstream": r.info.get("upstream", {})})
        for name, key in sorted(r.info.get("upstream", {}).items()):
            if key in seen:
                continue
            if key in index:
                visit(index[key], name)
            else:
                seen.add(key)
                chain.append({"via": name, "found": False, "key": key})

    visit(run, None)
    return chain


def config_signature(run: Run, index: dict[str, Run], _memo: dict[str, str] | None = None) -> str:
    """What must match for runs of different splits to be averaged: stage, schema, config and dataset of the
    run and, recursively, of every run upstream of it (their splits, roots and keys may differ)."""
    memo = {} if _memo is None else _memo
    if run.key in memo:
        return memo[run.key]
    ups = {}
    for name, key in sorted(run.info.get("upstream", {}).items()):
        ups[name] = config_signature(index[key], index, memo) if key in index else f"missing {key}"
    sig = json.dumps({"stage": run.stage, "schema": run.info.get("schema"), "config": run.info.get("config"),
                      "dataset": run.info.get("inputs", {}).get("dataset"), "upstream": ups},
                     sort_keys=True, default=str)
    memo[run.key] = sig
    return sig


def _split_of(run: Run) -> int | None:
    try:
        return int(run.info.get("inputs", {}).get("split"))
    except (TypeError, ValueError):
        return None


def split_runs(run: Run, index: dict[str, Run]) -> dict[int, Run]:
    """The complete runs with predictions of splits 1-3 that share ``run``'s config signature (newest per
    split; ``run`` itself for its own split)."""
    memo: dict[str, str] = {}
    sig = config_signature(run, index, memo)
    found: dict[int, Run] = {}
    own = _split_of(run)
    if own in SPLITS:
        found[own] = run
    candidates = sorted((r for r in index.values() if r.stage == run.stage),
                        key=lambda r: r.info.get("created", ""), reverse=True)
    for r in candidates:
        split = _split_of(r)
        if split not in SPLITS or split in found or not (has_predictions(r) and lifecycle.is_complete(r)):
            continue
        if config_signature(r, index, memo) == sig:
            found[split] = r
    return found


def over_splits(run: Run, index: dict[str, Run], own_summary: dict[str, float | None],
                log: Callable[[str], None]) -> dict[str, Any] | None:
    """Per-split headline figures and their mean ± std when all three splits were run, else None."""
    runs = split_runs(run, index)
    if set(runs) != set(SPLITS):
        return None
    per_split = {}
    for split, r in sorted(runs.items()):
        try:
            per_split[split] = own_summary if r.key == run.key else summary(load_predictions(r.path / PREDICTIONS))
        except UserError as e:
            log(f"warning: no mean over splits: {e}")
            return None
    keys = [k for k in SUMMARY_LABELS if all(per_split[s].get(k) is not None for s in SPLITS)]
    mean, std = {}, {}
    for k in keys:
        mean[k], std[k] = M.mean_std([per_split[s][k] for s in SPLITS])
    log(f"splits 1-3 were all run with this config: mean ± std over {', '.join(runs[s].short for s in SPLITS)}")
    return {"runs": {str(s): runs[s].short for s in SPLITS},
            "per_split": {str(s): {k: per_split[s].get(k) for k in keys} for s in SPLITS},
            "mean": mean, "std": std, "std_ddof": 1}


# -- the stage -------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """An evaluated run: its predictions, what went to metrics.json, and where it came from. ``run`` is the
    training run evaluated; ``out`` is the evaluate run (``<cache>/evaluate/<key>``) holding ``metrics.json``,
    the ``report/`` folder and ``complete.json``."""

    run: Run
    cache_root: Path
    predictions: Predictions
    metrics: dict[str, Any]
    provenance: list[dict[str, Any]]
    out: Run

    @property
    def kind(self) -> str:
        return self.predictions.kind


def versions() -> dict[str, str]:
    """Versions of the packages behind the figures, read from their metadata (nothing heavy is imported)."""
    from importlib import metadata

    out = {"actiontk": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scikit-learn", "torch", "torchvision", "jinja2", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def open_evaluation(cache_root: Path, run: Run) -> Run:
    """The evaluate run of the training run ``run``: keyed by this stage's schema and ``run``'s key."""
    inputs = run.info.get("inputs", {})
    return open_run(cache_root, registry.EVALUATE, SCHEMA, {}, upstream={run.stage: run.key},
                    inputs={"dataset": inputs.get("dataset"), "split": inputs.get("split")})


def evaluate_run(run: Run, *, log: Callable[[str], None] = print) -> Evaluation:
    """Compute the metrics of the training run ``run`` and write them to ``metrics.json`` in its evaluate run,
    marked complete with the headline figures."""
    cache_root = run.path.parent.parent  # runs live at <cache root>/<stage>/<key[:16]>
    pred = load_predictions(run.path / PREDICTIONS)
    body = compute_metrics(pred)
    index = run_index(cache_root)
    index.setdefault(run.key, run)
    inputs = run.info.get("inputs", {})
    metrics = {
        "schema": SCHEMA,
        "run": {"name": run.short, "key": run.key, "stage": run.stage, "path": str(run.path),
                "created": run.info.get("created")},
        "dataset": inputs.get("dataset"),
        "split": inputs.get("split"),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        **body,
        "over_splits": over_splits(run, index, body["summary"], log),
    }
    metrics = _json_ready(metrics)
    out = open_evaluation(cache_root, run)
    unmark(out)  # metrics.json is rewritten (the mean over splits may have changed); complete.json comes last
    atomic_write_text(out.path / METRICS, metrics_text(metrics))
    mark_complete(out, {"kind": pred.kind, **metrics["summary"]})
    return Evaluation(run, cache_root, pred, metrics, provenance(run, index), out)


def evaluate(cache_root: Path, *, dataset: str | None = None, split: int | None = None,
             trained: str | Run | None = None, log: Callable[[str], None] = print, console=None) -> Evaluation:
    """Evaluate ``trained`` (a training run or its name; None: the newest complete one with predictions, of
    ``dataset`` and ``split`` when given) into its evaluate run (``.out`` of the result); ``console`` shows a
    status line while the metrics are computed (None: none)."""
    import contextlib

    name = str(trained.path) if isinstance(trained, Run) else trained  # a Run is checked as its folder is
    run = find_run(cache_root, name, log, dataset=dataset, split=split)
    with console.status(f"evaluating {run.short}") if console is not None else contextlib.nullcontext():
        return evaluate_run(run, log=log)


def metrics_text(metrics: dict[str, Any]) -> str:
    """The JSON text of metrics.json (what ``--report json`` prints)."""
    return json.dumps(metrics, indent=2, sort_keys=True) + "\n"


def _json_ready(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_ready(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    return x
