"""Stage configuration: dataclass configs whose defaults come from a dataset's TOML preset in ``stages/``.

Resolution order (later wins): the dataclass defaults, the preset's ``[<stage>]`` table (``stages/<dataset>.toml``
or the file given with ``--config``), then the command-line options the user actually gave. The resolved
config is what a run's cache key is computed from and what is saved beside its outputs.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from actiontk.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")
ENV_STAGES = "ACTIONTK_STAGES"

# The tables a preset may hold and the config dataclasses whose fields their keys set ("module:Class"). A
# training stage's table sets both its model options and the shared TrainConfig.
def _stage_tables() -> dict[str, tuple[str, ...]]:
    """Each stage's preset table: its config dataclass (and TrainConfig for a trained stage); [run] the pipeline's."""
    from actiontk.stages.registry import STAGES

    tables = {name: (stage.config_path, *(("actiontk.train.engine:TrainConfig",) if stage.trains else ()))
              for name, stage in STAGES.items() if stage.config_path}
    return {**tables, "run": ("actiontk.stages.pipeline:RunConfig",)}


TABLES: dict[str, tuple[str, ...]] = _stage_tables()


# The datasets whose preset ships with actiontk (the files of the top-level stages/ folder; a test keeps this list
# in step with them). For these a missing file is an error, never a silent run on the dataclass defaults.
PRESET_DATASETS = ("hmdb51", "mpii", "toy", "toy-mpii", "ucf101")


def presets_dir() -> Path:
    """``$ACTIONTK_STAGES``; else the checkout's top-level ``stages/`` folder (a source tree or an editable
    install); else the copies inside the installed package, ``actiontk/presets/`` (see setup.py)."""
    env = os.environ.get(ENV_STAGES)
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "stages"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "presets"


def load_preset(dataset: str, config_file: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """The preset tables for ``dataset`` and the file they came from (None when there is no preset)."""
    path = config_file if config_file is not None else presets_dir() / f"{dataset}.toml"
    if not path.is_file():
        if config_file is not None:
            raise UserError(f"config file not found: {path}", "check the --config path")
        if dataset.lower() in PRESET_DATASETS:
            raise UserError(f"the {dataset} preset (the paper's settings) is missing: no {path}",
                            "reinstall actiontk (its presets ship inside the package), point ACTIONTK_STAGES at a "
                            "folder of presets, or pass --config FILE")
        return {}, None
    try:
        preset = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid TOML ({e})", "fix the file or pass another --config") from None
    except OSError as e:
        raise UserError(f"cannot read the config file {path}: {e.strerror}", "check the --config path") from None
    check_preset(preset, path)
    return preset, path


def check_preset(preset: dict[str, Any], path: Path | str) -> None:
    """Every table, key and value of a preset against the config dataclasses' fields and annotations
    (:data:`TABLES`), so that a typo or a value of the wrong type stops a command before it does any work,
    with an error naming the file, the key and the type expected."""
    fix = f"fix it in {path}"
    for table, values in preset.items():
        if table not in TABLES:
            what = f"unknown table [{table}]" if isinstance(values, dict) else f"top-level key {table!r}"
            raise UserError(f"{path}: {what}", f"a preset holds the tables {_tables()}; {fix}")
        if not isinstance(values, dict):
            raise UserError(f"{path}: {table} must be a table ([{table}]), got {_toml_kind(values)}", fix)
        hints = _field_hints(table)
        for key, value in values.items():
            if key not in hints:
                raise UserError(f"{path}: [{table}] has unknown option {key!r}",
                                f"known: {', '.join(sorted(hints))}; {fix}")
            if not _matches(value, hints[key]):
                raise UserError(f"{path}: [{table}] {key} must be {_describe(hints[key])}, got "
                                f"{_toml_kind(value)}", fix)
            if hints[key] is float or float in typing.get_args(hints[key]):
                values[key] = float(value) if isinstance(value, int) else value  # 1 and 1.0 key the same run


def _tables() -> str:
    return ", ".join(f"[{t}]" for t in TABLES)


def _field_hints(table: str) -> dict[str, Any]:
    """Field name -> resolved annotation, over the dataclasses that ``[table]`` sets."""
    hints: dict[str, Any] = {}
    for spec in TABLES[table]:
        module, _, name = spec.partition(":")
        cls = getattr(importlib.import_module(module), name)
        resolved = typing.get_type_hints(cls)
        hints.update({f.name: resolved[f.name] for f in dataclasses.fields(cls)})
    return hints


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a field annotation (bool is not an int; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # TOML has no null: an optional value is set or left out
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin in (list, tuple):
        return f"an array of {_plural(args[0]) if args else 'values'}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    return {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(hint, "values")


def _toml_kind(value: Any) -> str:
    """A TOML value as the file shows it and its kind, e.g. ``true (a boolean)``."""
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    kinds = {int: "an integer", float: "a number", str: "a string"}
    for t, kind in kinds.items():
        if isinstance(value, t):
            shown = repr(value) if t is not str else '"' + value[:40] + '"'
            return f"{shown} ({kind})"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"{value} (a date/time)"
    return type(value).__name__


def resolve(cls: type[T], preset: dict[str, Any], overrides: dict[str, Any], *, source: str = "preset") -> T:
    """Build ``cls`` from a preset table and the options given on the command line (None = not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(preset) - names)
    if unknown:
        raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}", f"known: {', '.join(sorted(names))}")
    values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"{source}: {e}") from None
