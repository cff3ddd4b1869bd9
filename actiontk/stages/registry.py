"""The stages of actiontk, one :class:`Stage` record each, registered here and nowhere else.

A stage is what makes one kind of run directory in the cache (``<cache>/<stage>/<key>``). Its record says
what the rest of the toolkit needs to know without reading the stage's code: its name and schema version, the
config dataclass that holds its options (the preset table of the same name), the stages it reads, whether it
serves videos or images, how a run of it is complete, and the function that runs it. ``status``, ``run``,
``evaluate``, the config checker and the upstream-run finder loop over :data:`STAGES` instead of keeping lists
of their own.

Every entry point is called the same way::

    entry([cfg, [tcfg,]] cache_root, *, [dataset=None, split=None,] <its inputs>, log=print, console=None)

- ``cfg`` is the stage's config (an instance of its ``config`` class), first, when the record names one;
  ``tcfg`` (:class:`actiontk.train.engine.TrainConfig`) follows it when the stage ``trains``; ``cache_root`` is
  the last positional parameter. A stage without options of its own (cubes, evaluate) starts at ``cache_root``.
- Everything else is keyword-only: ``dataset`` and ``split`` where the stage picks its upstream runs by them
  (``None``: the newest complete one), then its inputs (an upstream run as a ``Run`` or its name, a folder,
  flags), then ``log`` (one line per message) and ``console`` (a rich Console for progress displays; ``None``:
  the stage's default).
- It returns a result object with a ``run`` field: the run it made (:class:`StageOutput` for the training
  stages and cubes, with train-3d's cubes run in ``products``; :class:`~actiontk.stages.extract.ExtractResult`
  for extract, with its counts). Evaluate's :class:`~actiontk.stages.evaluate.Evaluation` is the one whose
  ``run`` is what it read (the training run evaluated, as the reports show it); the run it made is ``out``.

``tests/test_stages_registry.py`` checks every registered entry point against this, so a new stage cannot drift.

Importing this module is cheap: the stage modules (which import torch) are imported only when a record's
schema, config class or entry point is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actiontk.errors import UserError

if TYPE_CHECKING:
    from actiontk.cache.runs import Run

EXTRACT, TRAIN_3D, CUBES, TRAIN_LSTM, TRAIN_GAP = "extract", "train-3d", "cubes", "train-lstm", "train-gap"
EVALUATE = "evaluate"


@dataclass(frozen=True)
class StageOutput:
    """What a training stage's (and the cubes stage's) entry point returns (see the module docstring)."""

    run: Run  # the run it made (or found complete)
    products: dict[str, Run] = field(default_factory=dict)  # further runs it made, by stage: train-3d's cubes


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline (see the module docstring)."""

    name: str  # the run directory's stage name, e.g. "train-3d"
    module: str  # the module holding its SCHEMA, config class and entry point
    config: str | None  # its config dataclass in ``module`` (None: no options of its own)
    entry: str  # the function in ``module`` that runs it
    upstream: tuple[str, ...]  # stages whose runs it reads
    kind: str  # "video", "image" or "both": the datasets it serves
    trains: bool  # trained by actiontk.train.engine: TrainConfig options in its preset table, checkpoints
    predicts: bool  # writes test predictions that evaluate reads
    description: str  # one line, for listings
    check: str | None = None  # "module:function(run) -> bool": what the stage adds to the completion rule
    unmarked: str | None = None  # "module:function(run) -> bool": when a run without complete.json is complete

    def _module(self):
        return importlib.import_module(self.module)

    @property
    def schema(self) -> int:
        """The schema version this code writes (a run with an older one is stale)."""
        return int(self._module().SCHEMA)

    @property
    def config_class(self) -> type | None:
        return None if self.config is None else getattr(self._module(), self.config)

    @property
    def config_path(self) -> str | None:
        """``module:Class`` of its config dataclass, for code that must not import the module."""
        return None if self.config is None else f"{self.module}:{self.config}"

    @property
    def run_fn(self) -> Callable[..., Any]:
        return getattr(self._module(), self.entry)

    def is_complete(self, run: Run) -> bool:
        """Whether ``run`` finished, by the one rule of :func:`actiontk.cache.lifecycle.is_complete`: it wrote
        ``complete.json`` last, and the stage's own ``check`` (extract: every video its splits asked for is
        stored or failed) agrees."""
        from actiontk.cache.lifecycle import is_complete

        return is_complete(run, _function(self.check), _function(self.unmarked))


def _function(path: str | None) -> Callable[..., Any] | None:
    if path is None:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage(EXTRACT, "actiontk.stages.extract", "ExtractConfig", "extract", (), "both", False, False,
          "per-frame CNN feature maps of a dataset (HDF5 shards)",
          check="actiontk.cache.targets:all_stored", unmarked="actiontk.cache.targets:complete_unmarked"),
    Stage(TRAIN_3D, "actiontk.stages.train_3d", "Train3DConfig", "train_3d", (EXTRACT, TRAIN_LSTM, TRAIN_3D),
          "video", True, False, "the deeply supervised 3D convnet per feature level (reads the LSTM's attention "
          "and a previous round's weights in a regularized round)"),
    Stage(CUBES, "actiontk.stages.train_3d", None, "write_cubes", (TRAIN_3D,), "video", False, False,
          "the 3D-conv outputs of every video of a split, written by train-3d for train-lstm"),
    Stage(TRAIN_LSTM, "actiontk.stages.train_lstm", "TrainLSTMConfig", "train_lstm", (CUBES, EXTRACT), "video",
          True, True, "the joint attention LSTM on cubes (or on feature maps), test predictions and attention"),
    Stage(TRAIN_GAP, "actiontk.stages.train_gap", "TrainGAPConfig", "train_gap", (EXTRACT,), "image", True, True,
          "the attentional pooling head on cached maps or end to end, test predictions"),
    Stage(EVALUATE, "actiontk.stages.evaluate", None, "evaluate", (TRAIN_LSTM, TRAIN_GAP), "both", False, False,
          "the metrics of a training run's test predictions (metrics.json) and its reports"),
)}

ORDER: tuple[str, ...] = tuple(STAGES)  # pipeline order, as status lists runs
PREDICTING: tuple[str, ...] = tuple(name for name, s in STAGES.items() if s.predicts)  # what evaluate reads


def get(name: str) -> Stage:
    """The stage called ``name``; an unknown name is an error that lists the known ones."""
    try:
        return STAGES[name]
    except KeyError:
        raise UserError(f"unknown stage {name!r}", f"known stages: {', '.join(STAGES)}") from None


def schemas() -> dict[str, int]:
    """The schema version this code writes, per stage."""
    return {name: stage.schema for name, stage in STAGES.items()}


def is_complete(run: Run) -> bool:
    """Whether ``run`` finished, by its own stage's rule (False for a stage this code does not know)."""
    stage = STAGES.get(run.stage)
    return stage is not None and stage.is_complete(run)
