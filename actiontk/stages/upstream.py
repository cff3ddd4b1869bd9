"""Finding the upstream run a stage reads: named explicitly, or the most recent compatible complete one.

This is what lets ``actiontk train-lstm --fusion late`` run with no other argument: it takes the newest
complete run of the stage before it (matching ``--dataset`` / ``--split`` when given) and says which.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from actiontk.cache.runs import Run, list_runs, run_by_name
from actiontk.cache.targets import target_splits
from actiontk.errors import UserError


def run_dataset(run: Run) -> str | None:
    return run.info.get("inputs", {}).get("dataset")


def run_splits(run: Run) -> list[int]:
    """The splits a run serves: an extract run every split it was asked for, a training run its own."""
    inputs = run.info.get("inputs", {})
    if "split" in inputs:
        return [int(inputs["split"])]
    return target_splits(run.path)


def pick_run(cache_root: Path, stage: str, *, dataset: str | None, split: int | None, run: str | Run | None,
             next_step: str, log: Callable[[str], None], complete: Callable[[Run], bool] | None = None,
             unsuitable: Callable[[Run], UserError | None] | None = None) -> tuple[Run, int]:
    """The run of ``stage`` to read and the split to use.

    ``run`` is one already chosen (a :class:`Run`, e.g. by the command that resolved the preset from it, so a
    run is looked up once), or names one (its folder path or ``STAGE/KEY`` prefix); otherwise the newest complete
    run matching ``dataset`` / ``split``. The split defaults to the newest the run serves. ``complete`` is
    the stage's own rule (:mod:`actiontk.stages.registry`) unless the caller narrows it; ``unsuitable``
    says why a run named explicitly is of the wrong kind for the caller (None: it is not).
    """
    if complete is None:
        from actiontk.stages.registry import get

        complete = get(stage).is_complete
    if isinstance(run, Run):
        if run.stage != stage:
            raise UserError(f"{run.short} is a {run.stage} run, not a {stage} run", f"name a {stage} run")
        chosen = run
    elif run is not None:
        chosen = run_by_name(cache_root, run, (stage,), f"{stage} run")
        if chosen.stage != stage:
            raise UserError(f"{chosen.short} is a {chosen.stage} run, not a {stage} run", f"name a {stage} run")
    else:
        fitting = [r for r in list_runs(cache_root, stage)
                   if (dataset is None or run_dataset(r) == dataset.lower())
                   and (split is None or split in run_splits(r))]
        matching = [r for r in fitting if complete(r)]
        if not matching:
            what = " ".join(x for x in (dataset, f"split {split}" if split else None) if x) or "any dataset"
            if fitting:  # say which run is unfinished (killed, or shards damaged since): `status` says why
                raise UserError(f"no complete {stage} run for {what} in {cache_root}: the newest, {fitting[0].short}, "
                                "is not complete (`actiontk status` says why)", f"run `{next_step}` to finish it")
            raise UserError(f"no complete {stage} run for {what} in {cache_root}", f"run `{next_step}` first")
        chosen = matching[0]
    if run is not None and unsuitable is not None and (error := unsuitable(chosen)) is not None:
        raise error
    splits = run_splits(chosen)
    use_split = split if split is not None else (splits[-1] if splits else 1)
    if split is not None and splits and split not in splits:
        raise UserError(f"{chosen.short} was made for split(s) {splits}, not split {split}",
                        f"run `{next_step}` for split {split}")
    if not complete(chosen):
        raise UserError(f"{chosen.short} is not complete", f"finish it first: `{next_step}`")
    log(f"using {stage} run {chosen.short} ({run_dataset(chosen)} split {use_split}, created "
        f"{chosen.info.get('created', '?')[:19]})")
    return chosen, use_split

