"""Stage configuration: dataclass configs whose defaults come from a dataset's TOML preset in ``stages/``.

Resolution order (later wins): the dataclass defaults, the preset's ``[<stage>]`` table (``stages/<dataset>.toml``
or the file given with ``--config``), then the command-line options the user actually gave. The resolved
config is what a run's cache key is computed from and what is saved beside its outputs.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from actiontk.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")
ENV_STAGES = "ACTIONTK_STAGES"


def presets_dir() -> Path:
    """``$ACTIONTK_STAGES``, else the checkout's top-level ``stages/`` folder."""
    env = os.environ.get(ENV_STAGES)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "stages"


def load_preset(dataset: str, config_file: Path | None = None) -> tuple[dict[str, Any], Path | None]:
    """The preset tables for ``dataset`` and the file they came from (None when there is no preset)."""
    path = config_file if config_file is not None else presets_dir() / f"{dataset}.toml"
    if not path.is_file():
        if config_file is not None:
            raise UserError(f"config file not found: {path}", "check the --config path")
        return {}, None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: invalid TOML ({e})", "fix the file or pass another --config") from None


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


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
