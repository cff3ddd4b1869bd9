"""Bodies of ``actiontk train-3d``, ``train-lstm`` and ``train-gap``: resolve configs, run the stage, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from actiontk.stages import registry


def _upstream_for_preset(cache_root: Path, dataset: str | None, stage_before: str, *, run, split: int | None,
                         complete, default: str = "toy"):
    """(the dataset whose preset applies, the upstream run to hand the stage).

    With ``--dataset`` that dataset's preset, and the stage finds its run. Without it, the upstream run the stage
    will read (the one named, else the newest complete one) is looked up here, once: its dataset names the
    preset and the Run itself is handed down. When there is none, the stage says so with the command to run."""
    from actiontk.errors import UserError
    from actiontk.stages.upstream import pick_run, run_dataset

    if dataset:
        return dataset.lower(), run
    try:
        chosen, _ = pick_run(cache_root, stage_before, dataset=None, split=split, run=run,
                             complete=complete, next_step="", log=lambda m: None)
    except UserError:  # no usable upstream run: the stage itself says so, with the command to run first
        return default, run
    return run_dataset(chosen) or default, chosen


def _dataset_for_preset(cache_root: Path, dataset: str | None, stage_before: str, *, run: str | None,
                        split: int | None, complete, default: str = "toy") -> str:
    """The dataset whose preset applies (see :func:`_upstream_for_preset`)."""
    return _upstream_for_preset(cache_root, dataset, stage_before, run=run, split=split, complete=complete,
                                default=default)[0]


def run_train_3d(dataset: str | None, split: int | None, *, features: str | None, attention_from: str | None,
                 resume: bool, cache: Path | None, config: Path | None, overrides: dict[str, Any],
                 init_from: str | None = None) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.common import per_frame_extract, resolve_stage_configs
    from actiontk.stages.train_3d import Train3DConfig, extract_complete, train_3d

    root = resolve_cache_root(cache)
    console = Console(stderr=True)
    preset, features = _upstream_for_preset(root, dataset, registry.EXTRACT, run=features, split=split,
                                            complete=per_frame_extract(extract_complete))
    cfg, tcfg = resolve_stage_configs(preset, registry.TRAIN_3D, Train3DConfig, config, overrides)
    made = train_3d(cfg, tcfg, root, dataset=dataset, split=split, features=features,
                    attention_from=attention_from, init_from=init_from, resume=resume,
                    log=lambda m: console.print(escape(m)), console=console)
    run, cubes = made.run, made.products[registry.CUBES]
    print(f"train-3d run: {run.path}\ncubes: {cubes.path}\nnext: actiontk train-lstm --fusion late")


def run_train_lstm(dataset: str | None, split: int | None, *, cubes: str | None, resume: bool, cache: Path | None,
                   config: Path | None, overrides: dict[str, Any], features: str | None = None) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm
    from actiontk.cache.lifecycle import is_complete

    root = resolve_cache_root(cache)
    console = Console(stderr=True)
    if features is not None:
        from actiontk.stages.common import per_frame_extract
        from actiontk.stages.train_3d import extract_complete

        preset, features = _upstream_for_preset(root, dataset, registry.EXTRACT, run=features, split=split,
                                                complete=per_frame_extract(extract_complete))
    else:
        preset, cubes = _upstream_for_preset(root, dataset, registry.CUBES, run=cubes, split=split,
                                             complete=is_complete)
    cfg, tcfg = resolve_stage_configs(preset, registry.TRAIN_LSTM, TrainLSTMConfig, config, overrides)
    run = train_lstm(cfg, tcfg, root, dataset=dataset, split=split, cubes=cubes, features=features, resume=resume,
                     log=lambda m: console.print(escape(m)), console=console).run
    print(f"train-lstm run: {run.path}\npredictions: {run.path / 'predictions.npz'}")


def run_train_gap(dataset: str | None, *, root: Path | None, features: str | None, resume: bool, cache: Path | None,
                  config: Path | None, overrides: dict[str, Any]) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_gap import TrainGAPConfig, _is_image_extract, train_gap

    root_cache = resolve_cache_root(cache)
    console = Console(stderr=True)
    preset, features = _upstream_for_preset(root_cache, dataset, registry.EXTRACT, run=features, split=None,
                                            complete=_is_image_extract, default="mpii")
    cfg, tcfg = resolve_stage_configs(preset, registry.TRAIN_GAP, TrainGAPConfig, config, overrides)
    run = train_gap(cfg, tcfg, root_cache, dataset=dataset, root=root, features=features, resume=resume,
                    log=lambda m: console.print(escape(m)), console=console).run
    print(f"train-gap run: {run.path}\npredictions: {run.path / 'predictions.npz'}\nnext: actiontk evaluate")
