"""Pieces the training stages share: splitting a flat preset table into model and training configs, and
the train/test videos of a split that an upstream feature run holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actiontk.cache.features import FeatureReader
from actiontk.config import load_preset, resolve
from actiontk.datasets import get_dataset
from actiontk.errors import UserError



def resolve_stage_configs(dataset: str, section: str, model_cls: type, config_file: Path | None,
                          overrides: dict[str, Any]):
    """(model config, TrainConfig) from ``[section]`` of the dataset's preset plus the CLI overrides."""
    from actiontk.train.engine import TrainConfig

    preset, source = load_preset(dataset, config_file)
    table = dict(preset.get(section, {}))
    model_names = {f.name for f in dataclasses.fields(model_cls)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(table) - model_names - train_names)
    if unknown:
        raise UserError(f"{source}: [{section}] has unknown option(s) {', '.join(unknown)}",
                        f"known: {', '.join(sorted(model_names | train_names))}")
    where = f"{source} [{section}]" if source else "options"
    model_cfg = resolve(model_cls, {k: v for k, v in table.items() if k in model_names},
                        {k: v for k, v in overrides.items() if k in model_names}, source=where)
    train_cfg = resolve(TrainConfig, {k: v for k, v in table.items() if k in train_names},
                        {k: v for k, v in overrides.items() if k in train_names}, source=where)
    return model_cfg, train_cfg


def train_key(train_cfg) -> dict[str, Any]:
    """The TrainConfig fields that change what a run learns (its run key's training part)."""
    from actiontk.train.engine import TRAINING_FIELDS

    return {k: v for k, v in dataclasses.asdict(train_cfg).items() if k in TRAINING_FIELDS}


def split_videos(dataset: str, root: str, split: int, reader: FeatureReader,
                 log: Callable[[str], None]) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
    """(classes, train videos, test videos) of ``split`` that ``reader`` holds, as (rel, label) pairs."""
    ds = get_dataset(dataset, root)
    index = ds.load(split)
    train = [(s.rel, s.label) for s in index.train if s.rel in reader]
    test = [(s.rel, s.label) for s in index.test if s.rel in reader]
    missing = len(index.train) + len(index.test) - len(train) - len(test)
    if missing:
        log(f"{missing} video(s) of split {split} have no features (failed to decode) and are left out")
    if not train or not test:
        raise UserError(f"split {split} of {dataset} has {len(train)} train and {len(test)} test videos with features",
                        "check the extract run with `actiontk status`")
    return index.classes, train, test


def clip_maps(run) -> bool:
    """Whether an extract run holds one map per clip of a video backbone (r3d_18, s3d, ...) rather than one per
    frame: its key records the clip length then (``actiontk.stages.extract.key_config``)."""
    return "clip" in run.info.get("config", {})


def per_frame_extract(complete: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``complete`` narrowed to extract runs of per-frame maps (what train-3d and the joint LSTM read)."""
    return lambda run: not clip_maps(run) and complete(run)


def not_per_frame(stage: str) -> Callable[[Any], UserError | None]:
    """The error for a named extract run that holds a video backbone's clip maps, which ``stage`` cannot read."""

    def check(run) -> UserError | None:
        if not clip_maps(run):
            return None
        clip = run.info["config"]["clip"]
        return UserError(f"{run.short} holds clip-level maps of a video backbone (clips of {clip['len']} frames); "
                         f"{stage} reads one map per frame",
                         "extract with an image backbone (e.g. --backbone vgg16, convnext_tiny) for training; "
                         "clip-level features are for your own models (docs/cache-format.md)")

    return check
