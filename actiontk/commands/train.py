"""Bodies of ``actiontk train-3d``, ``train-lstm`` and ``train-gap``: resolve configs, run the stage, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def _dataset_for_preset(cache_root: Path, dataset: str | None, stage_before: str) -> str:
    """The dataset whose preset applies: the one asked for, else that of the newest upstream run."""
    from actiontk.cache.runs import list_runs

    if dataset:
        return dataset.lower()
    for run in list_runs(cache_root, stage_before):
        name = run.info.get("inputs", {}).get("dataset")
        if name:
            return name
    return "toy"


def run_train_3d(dataset: str | None, split: int | None, *, features: str | None, attention_from: str | None,
                 resume: bool, cache: Path | None, config: Path | None, overrides: dict[str, Any]) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_3d import Train3DConfig, train_3d

    root = resolve_cache_root(cache)
    console = Console(stderr=True)
    preset = _dataset_for_preset(root, dataset, "extract")
    cfg, tcfg = resolve_stage_configs(preset, "train-3d", Train3DConfig, config, overrides)
    run, cubes = train_3d(cfg, tcfg, root, dataset=dataset, split=split, features=features,
                          attention_from=attention_from, resume=resume, log=lambda m: console.print(escape(m)),
                          console=console)
    print(f"train-3d run: {run.path}\ncubes: {cubes.path}\nnext: actiontk train-lstm --fusion late")


def run_train_lstm(dataset: str | None, split: int | None, *, cubes: str | None, resume: bool, cache: Path | None,
                   config: Path | None, overrides: dict[str, Any]) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm

    root = resolve_cache_root(cache)
    console = Console(stderr=True)
    preset = _dataset_for_preset(root, dataset, "cubes")
    cfg, tcfg = resolve_stage_configs(preset, "train-lstm", TrainLSTMConfig, config, overrides)
    run = train_lstm(cfg, tcfg, root, dataset=dataset, split=split, cubes=cubes, resume=resume,
                     log=lambda m: console.print(escape(m)), console=console)
    print(f"train-lstm run: {run.path}\npredictions: {run.path / 'predictions.npz'}")


def run_train_gap(dataset: str | None, *, root: Path | None, features: str | None, resume: bool, cache: Path | None,
                  config: Path | None, overrides: dict[str, Any]) -> None:
    from actiontk.cache.runs import list_runs, resolve_cache_root
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_gap import IMAGE_DATASETS, TrainGAPConfig, train_gap

    root_cache = resolve_cache_root(cache)
    console = Console(stderr=True)
    preset = dataset.lower() if dataset else next(
        (r.info["inputs"]["dataset"] for r in list_runs(root_cache, "extract")
         if r.info.get("inputs", {}).get("dataset") in IMAGE_DATASETS), "mpii")
    cfg, tcfg = resolve_stage_configs(preset, "train-gap", TrainGAPConfig, config, overrides)
    run = train_gap(cfg, tcfg, root_cache, dataset=dataset, root=root, features=features, resume=resume,
                    log=lambda m: console.print(escape(m)), console=console)
    print(f"train-gap run: {run.path}\npredictions: {run.path / 'predictions.npz'}\nnext: actiontk evaluate")
