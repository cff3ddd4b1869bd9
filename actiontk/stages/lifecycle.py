"""The life of a cached run: what state it is in (complete / partial / running / stale, and why), what it holds,
and which runs read it. ``actiontk status`` renders this; ``status --gc`` and an interrupted command's message
use it too. The stages themselves are described by :mod:`actiontk.stages.registry`.

A run's state (docs/status.md):

- **running**: a process holds one of its locks (it has the run open, or is writing shards) and it is not
  complete;
- **stale**: it is out of date, for the reasons listed: its stage schema is older than this code's, its
  dataset root is gone, or an upstream run it read is gone, was re-made after it, or is itself stale;
- **complete**: its stage finished: it wrote ``complete.json`` last (:mod:`actiontk.cache.lifecycle`) and, for
  extract, every video its splits asked for is stored or recorded as failed (the failures are counted apart);
- **partial**: started and not finished, with no process on it (killed, crashed): rerun the same command to
  resume it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from actiontk.cache.runs import Run, read_jsonl
from actiontk.stages import registry

REMOVABLE = ("partial", "stale")
STAGE_ORDER = registry.ORDER
# what the training engine writes (actiontk.train.engine, which imports torch: status stays light)
CHECKPOINT, BEST, METRICS_LOG = "checkpoint.pt", "best.pt", "metrics.jsonl"


ROOT_GONE = "dataset root"  # the stale reason --gc alone does not act on (see RunStatus.removable)
ROOT_ONLY = " (its dataset root is gone)"


def root_only(reason: str) -> bool:
    return reason.startswith(ROOT_GONE) or reason.endswith(ROOT_ONLY)


@dataclass
class RunStatus:
    """What ``status`` shows of one run."""

    run: Run
    state: str  # complete | partial | running | stale | unknown (a stage this code does not know)
    why: list[str] = field(default_factory=list)  # stale: the reasons; partial: what is missing
    dataset: str = ""
    split: str = ""
    what: str = ""  # the key settings, compactly
    progress: str = ""
    failed: int | None = None  # extract: videos that could not be decoded
    size: int = 0
    created: datetime | None = None
    in_use: bool = False  # some other process holds one of the run's locks

    @property
    def removable(self) -> bool:
        # A dataset root that is gone may only be unmounted: that alone never gets computed work deleted.
        only_root = self.state == "stale" and self.why and all(map(root_only, self.why))
        return self.state in REMOVABLE and not self.in_use and not only_root

    def state_text(self) -> str:
        text = self.state
        if self.state == "complete" and self.failed:
            text += f", {self.failed} failed"
        if self.why:
            text += ": " + "; ".join(self.why)
        if self.in_use and self.state != "running":
            text += " (in use)"
        return text

    def as_json(self, now: float) -> dict[str, Any]:
        return {"run": self.run.short, "path": str(self.run.path), "stage": self.run.stage, "key": self.run.key,
                "dataset": self.dataset, "split": self.split, "what": self.what, "state": self.state,
                "why": self.why, "progress": self.progress, "failed": self.failed, "size_bytes": self.size,
                "created": self.run.info.get("created"), "age_s": age_s(self, now), "in_use": self.in_use,
                "upstream": self.run.info.get("upstream", {})}


# -- inspecting the cache ---------------------------------------------------------------------------------


def current_schemas() -> dict[str, int]:
    """The schema version this code writes, per stage."""
    return registry.schemas()


def inspect_runs(root: Path) -> list[RunStatus]:
    """The status of every run under ``root``, in pipeline order (newest first within a stage)."""
    from actiontk.cache.runs import dir_size, list_runs, run_in_use

    runs = list_runs(root)
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    runs.sort(key=lambda r: order.get(r.stage, len(order)))  # stable: list_runs' newest-first order stays
    schemas = current_schemas()
    statuses = {}
    for run in runs:
        st = _describe(run, schemas)
        st.size = dir_size(run.path)
        st.created = _created(run)
        st.in_use = run_in_use(run.path)
        statuses[run.key] = st
    memo: dict[str, list[str]] = {}
    for st in statuses.values():
        if st.state == "unknown":
            continue
        reasons = _stale_reasons(st, statuses, schemas, memo)
        complete = st.state == "complete"
        if st.in_use and not complete:
            st.state, st.why = "running", []
        elif reasons:
            st.state, st.why = "stale", reasons
    return list(statuses.values())


def interrupted_runs() -> str:
    """What the runs this process opened have saved, for the message of an interrupted command: each unfinished
    one with its progress and folder (e.g. ``extract/1a2b... (toy split 1) stopped at 6/18 videos, kept in
    /cache/extract/1a2b...``); '' when it opened none."""
    from actiontk.cache.runs import RUN_FILE, held_runs

    schemas = current_schemas()
    parts, complete = [], []
    for path in held_runs():
        try:
            run = Run(path, json.loads((path / RUN_FILE).read_text()))
        except (OSError, ValueError):
            continue
        st = _describe(run, schemas)
        if st.state == "complete":
            complete.append(run.short)
            continue
        what = " ".join(x for x in (st.dataset, f"split {st.split}" if st.split else "") if x)
        parts.append(f"{run.short}{f' ({what})' if what else ''} stopped at {st.progress or 'its start'}, "
                     f"kept in {run.path}")
    if complete and not parts:
        parts.append(f"{', '.join(complete)} complete")
    return "; ".join(parts)


def _stale_reasons(st: RunStatus, statuses: dict[str, RunStatus], schemas: dict[str, int],
                   memo: dict[str, list[str]]) -> list[str]:
    run = st.run
    if run.key in memo:
        return memo[run.key]
    reasons = []
    schema = run.info.get("schema")
    if isinstance(schema, int) and schema < schemas.get(run.stage, schema):
        reasons.append(f"schema {schema} is older than this actiontk's {schemas[run.stage]}")
    root = run.info.get("inputs", {}).get("root")
    if root and not Path(root).exists():
        reasons.append(f"{ROOT_GONE} {root} is gone")
    for name, key in sorted(run.info.get("upstream", {}).items()):
        up = statuses.get(key)
        if up is None:
            reasons.append(f"upstream {name} run {key[:16]} is gone from the cache")
            continue
        label = up.run.short + (f" ({name})" if name != up.run.stage else "")
        if up.created and st.created and up.created > st.created:
            reasons.append(f"upstream {label} was re-made after it")
        elif up.state != "unknown" and (up_reasons := _stale_reasons(up, statuses, schemas, memo)):
            reasons.append(f"upstream {label} is stale" + (ROOT_ONLY if all(map(root_only, up_reasons)) else ""))
    memo[run.key] = reasons
    return reasons


def _describe(run: Run, schemas: dict[str, int]) -> RunStatus:
    """State (complete / partial / unknown), settings and progress from the files the run's stage writes."""
    inputs = run.info.get("inputs", {})
    st = RunStatus(run, "partial", dataset=str(inputs.get("dataset", "")), split=str(inputs.get("split", "")))
    if run.stage not in schemas:
        st.state, st.why = "unknown", [f"stage {run.stage!r} is not known to this actiontk"]
        return st
    try:
        if run.stage == registry.EXTRACT:
            _describe_extract(run, st)
        elif run.stage == registry.CUBES:
            _describe_cubes(run, st)
        elif run.stage == registry.EVALUATE:
            _describe_evaluate(run, st)
        else:
            _describe_training(run, st)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # e.g. a run.json of another version: keep it
        st.state, st.why = "unknown", [f"unreadable ({type(e).__name__}: {e})"]
    return st


def _describe_extract(run: Run, st: RunStatus) -> None:
    from actiontk.cache import features as store
    from actiontk.cache.targets import target_counts

    cfg = run.config
    bb = cfg.get("backbone", {})
    st.what = (f"{bb.get('backbone')} {'+'.join(bb.get('layers', []))} @{bb.get('size')}px {bb.get('weights_id')} "
               f"stride {cfg.get('frame_stride')}" + (f" grid {cfg['grid']}" if cfg.get("grid") else ""))
    es = target_counts(run)
    st.split = ",".join(es["splits"])
    st.failed = es["failed"]
    st.progress = f"{es['done']}/{es['total']} videos" + (f", {es['failed']} failed" if es["failed"] else "")
    if registry.is_complete(run):  # marked (complete.json) and every target stored or failed
        st.state = "complete"
        return
    if es["state"] == "complete" and es["total"] > 0:  # all stored, not marked: an extraction is on it
        st.why = ["not marked complete yet"]
        return
    left = es["total"] - es["done"] - es["failed"]
    shards = store.shard_dir(run.path)
    unfinished = len(list(shards.glob(f"*{store.INCOMPLETE}"))) if shards.is_dir() else 0
    st.why = [x for x in (_damage(es["damaged"], "rerun its extract command to re-compute their videos"),
                          f"{left} video(s) to go" if left else "",
                          f"{unfinished} unfinished shard(s)" if unfinished else "") if x] or ["nothing extracted yet"]


def _damage(damaged: dict[str, str], repair: str) -> str:
    """'2 damaged shard(s) (s0001.h5 is truncated (...), ...): REPAIR', or '' when none is."""
    if not damaged:
        return ""
    first, reason = next(iter(sorted(damaged.items())))
    more = f", and {len(damaged) - 1} more" if len(damaged) > 1 else ""
    return f"{len(damaged)} damaged shard(s) ({first} {reason}{more}): {repair}"


def _describe_cubes(run: Run, st: RunStatus) -> None:
    from actiontk.cache import features as store
    from actiontk.cache.lifecycle import completion, is_complete

    st.what = f"from train-3d/{run.info.get('upstream', {}).get('train-3d', '?')[:16]}"
    index = store.load_index(run.path)
    done = len(index.videos)
    if index.damaged:
        st.progress = f"{done} videos intact"
        st.why = [_damage(index.damaged, "rerun the train-3d command that made them to rewrite their cubes")]
    elif is_complete(run):
        st.state = "complete"
        st.progress = f"{completion(run).get('videos', done)} videos"
    else:
        st.progress = f"{done} videos written"
        st.why = ["cubes not all written"]


def _describe_training(run: Run, st: RunStatus) -> None:
    from actiontk.cache.lifecycle import completion, is_complete

    model, train = run.config.get("model", {}), run.config.get("train", {})
    epochs = train.get("epochs")
    if run.stage == registry.TRAIN_3D:
        st.what = (f"ch {model.get('channels')} clip {model.get('clip_len')}"
                   + (" +attention" if "attention" in run.info.get("upstream", {}) else "")
                   + (" warm" if "init" in run.info.get("upstream", {}) else ""))
    elif run.stage == registry.TRAIN_LSTM:
        st.what = f"{model.get('fusion')} {model.get('hidden')}x{model.get('layers')}"
    else:  # train-gap
        depth = model.get("depth")
        depth = f" depth {3 if depth is None else depth}" if model.get("head") == "gap" else ""  # 3: GAPConfig's
        st.what = (f"{model.get('head', '?')}{depth}" + (" pose" if model.get("pose") else "")
                   + (" finetune" if model.get("finetune") else " cached"))
    st.what += f" {epochs} ep"
    if is_complete(run):
        st.state = "complete"
        summary = completion(run)
        st.progress = f"{epochs}/{epochs} epochs" + _accuracy(summary)
        return
    done = 0
    if (run.path / CHECKPOINT).is_file():  # epochs past the checkpoint are dropped when the run resumes
        done = max((int(r.get("epoch", 0)) for r in read_jsonl(run.path / METRICS_LOG) if r.get("split") == "train"),
                   default=0)
    st.progress = f"epoch {done}/{epochs}"
    st.why = ["training not finished" if not epochs or done < epochs else
              ("cubes not written" if run.stage == registry.TRAIN_3D else "predictions not written")]


def _describe_evaluate(run: Run, st: RunStatus) -> None:
    from actiontk.cache.lifecycle import completion, is_complete

    st.what = "of " + ", ".join(f"{stage}/{key[:16]}" for stage, key in sorted(run.info.get("upstream", {}).items()))
    if is_complete(run):
        st.state = "complete"
        summary = completion(run)
        top1 = summary.get("top1_vote", summary.get("top1"))
        st.progress = ("" if top1 is None else f"top-1 {top1:.3f}") + (
            f" mAP {summary['mAP']:.3f}" if summary.get("mAP") is not None else "")
        return
    st.why = ["metrics not written"]


def _accuracy(summary: dict) -> str:
    if "video_accuracy_vote" in summary:
        return f", video acc {summary['video_accuracy_vote']:.3f}"
    if "accuracy" in summary:
        return f", acc {summary['accuracy']:.3f}" + (f" mAP {summary['mAP']:.3f}" if "mAP" in summary else "")
    return ""




def _created(run: Run) -> datetime | None:
    try:
        return datetime.strptime(run.info.get("created", ""), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None


def age_s(st: RunStatus, now: float) -> float | None:
    return None if st.created is None else max(0.0, now - st.created.timestamp())


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return f"{int(seconds)} s ago"


def downstream(statuses: list[RunStatus], removed: set[str]) -> list[tuple[RunStatus, RunStatus]]:
    """(run that stays, the removed or newly stale run it reads), for every run that the removal makes stale."""
    by_key = {s.run.key: s for s in statuses}
    gone = set(removed)
    hit: list[tuple[RunStatus, RunStatus]] = []
    changed = True
    while changed:  # transitively: a run reading a newly stale run is stale too
        changed = False
        for s in statuses:
            if s.run.key in gone:
                continue
            for key in s.run.info.get("upstream", {}).values():
                if key in gone and key in by_key:
                    hit.append((s, by_key[key]))
                    gone.add(s.run.key)
                    changed = True
                    break
    return hit


