"""The stage registry is the one list of stages: status, evaluate, the config checker and the upstream finder
read it, and each record agrees with its stage's module."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import subprocess
import sys

import pytest

from actiontk.errors import UserError
from actiontk.stages import registry


def test_every_record_agrees_with_its_module():
    for name, stage in registry.STAGES.items():
        module = importlib.import_module(stage.module)
        assert stage.schema == module.SCHEMA
        assert callable(stage.run_fn), name
        if stage.config is not None:
            assert dataclasses.is_dataclass(stage.config_class), name
        assert all(up in registry.STAGES for up in stage.upstream), name
    assert importlib.import_module("actiontk.stages.train_3d").CUBES == registry.CUBES
    for module, name in (("extract", "extract"), ("train_3d", "train-3d"), ("train_lstm", "train-lstm"),
                         ("train_gap", "train-gap")):
        stage_name = importlib.import_module(f"actiontk.stages.{module}").STAGE
        assert stage_name == name


def test_every_entry_point_follows_the_calling_convention():
    """``entry([cfg, [tcfg,]] cache_root, *, [dataset=None, split=None,] <inputs>, log=print, console=None)``,
    returning a result dataclass with a ``run`` field (the registry module's docstring)."""
    for name, stage in registry.STAGES.items():
        fn = stage.run_fn
        params = list(inspect.signature(fn).parameters.values())
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        expected = ["cfg"] * (stage.config is not None) + ["tcfg"] * stage.trains + ["cache_root"]
        assert positional == expected, (name, positional)
        assert params[:len(expected)] == [p for p in params if p.kind != p.KEYWORD_ONLY], name  # no *args, **kw
        keyword = {p.name: p for p in params if p.kind == p.KEYWORD_ONLY}
        assert list(keyword)[-2:] == ["log", "console"], (name, list(keyword))
        assert keyword["log"].default is print and keyword["console"].default is None, name
        by = [k for k in keyword if k in ("dataset", "split")]  # where the stage picks its upstream runs by them
        assert by == list(keyword)[:len(by)], (name, "dataset and split come first")
        assert all(keyword[k].default in (None, inspect.Parameter.empty) for k in by), name
        module = importlib.import_module(stage.module)
        returned = eval(inspect.signature(fn).return_annotation, vars(module))  # the annotation's text, resolved
        assert dataclasses.is_dataclass(returned), (name, returned)
        assert "run" in {f.name for f in dataclasses.fields(returned)}, (name, returned)


def test_the_toolkit_reads_its_lists_from_the_registry():
    from actiontk.commands.status import STAGE_ORDER, current_schemas
    from actiontk.config import TABLES
    from actiontk.stages.evaluate import TRAIN_STAGES

    assert STAGE_ORDER == registry.ORDER
    assert current_schemas() == registry.schemas()
    assert TRAIN_STAGES == registry.PREDICTING == ("train-lstm", "train-gap")
    assert set(TABLES) == {n for n, s in registry.STAGES.items() if s.config} | {"run"}
    assert all(("actiontk.train.engine:TrainConfig" in TABLES[n]) == s.trains
               for n, s in registry.STAGES.items() if s.config)


def test_unknown_stage_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown stage 'train-4d'") as e:
        registry.get("train-4d")
    assert all(name in e.value.hint for name in registry.STAGES)


def test_importing_the_registry_is_cheap():
    code = ("import sys, json; import actiontk.stages.registry as r; r.STAGES; "
            "print(json.dumps(sorted(m for m in ('torch', 'h5py', 'numpy') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_completion_follows_each_stages_rule(tmp_path):
    from actiontk.cache.runs import open_run, release
    from actiontk.cache.lifecycle import mark_complete

    lstm = open_run(tmp_path, "train-lstm", 1, {"x": 1}, inputs={"dataset": "toy", "split": 1})
    release(lstm.path)
    assert not registry.is_complete(lstm)
    mark_complete(lstm, {})
    assert registry.is_complete(lstm)
    extract = open_run(tmp_path, "extract", 1, {"x": 1}, inputs={"dataset": "toy", "kind": "video"})
    release(extract.path)
    (extract.path / "complete.json").write_text("{}")  # not how an extract run completes: its videos decide
    assert not registry.is_complete(extract)
