"""actiontk.options: every config option is written once, as a dataclass field with its docstring, and the CLI is
generated from it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from actiontk import cli
from actiontk.cli import run
from actiontk.options import Expose, config_options, expose, field_docs

COMMAND = typer.main.get_command(cli.app)

# What each command offers from the config dataclasses: the CLI surface as it was when the options were written
# by hand (a change here is a change of the CLI, on purpose).
TRAINING = ["epochs", "batch_size", "lr", "device", "num_workers", "seed"]
SURFACE = {
    "extract": ("ExtractConfig", ["backbone", "layers", "size", "resize", "frame_stride", "grid", "weights",
                                  "precision", "device", "batch_size", "workers", "backend", "timeout",
                                  "videos_per_shard", "clip_len", "clip_stride"]),
    "train-3d": ("Train3DConfig", ["levels", "temporal_kernel", "clip_len", "clip_stride", "att_lambda", *TRAINING]),
    "train-lstm": ("TrainLSTMConfig", ["fusion", "levels", "hidden", "layers", "clip_len", "clip_stride", "last",
                                       "att_lambda", *TRAINING]),
    "train-gap": ("TrainGAPConfig", ["head", "depth", "pose", "pose_weight", "pose_attention", "form", "standardize",
                                     "dropout", "width", "finetune", "backbone", "weights", "resize", "crop",
                                     *TRAINING]),
    "run": ("RunConfig", ["attention_rounds"]),
}


def _params(name: str) -> dict:
    return {p.name: p for p in COMMAND.commands[name].params}


def _docstring_of_imported(ref: str, field: str) -> str:
    """The field's docstring read from the imported class (not from the file next to the package, as the CLI
    reads it), whitespace collapsed."""
    module, _, name = ref.partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert field in {f.name for f in dataclasses.fields(cls)}
    for owner in cls.__mro__:  # the class that declares the field (a stage config inherits the model's)
        if field not in vars(owner).get("__annotations__", {}):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(owner))).body[0].body
        for node, after in zip(body, body[1:], strict=False):
            if isinstance(node, ast.AnnAssign) and node.target.id == field:
                return " ".join(after.value.value.split())
    raise AssertionError(f"{ref}.{field} has no docstring")


def _exposed() -> list[tuple[str, Expose]]:
    return [(name, e) for name, c in COMMAND.commands.items() for e in getattr(c.callback, "exposed", ())]


def test_each_command_exposes_its_fields_and_only_those():
    for name, (cls_name, fields) in SURFACE.items():
        exposed = [e for n, e in _exposed() if n == name]
        assert [e.field for e in exposed] == fields, name
        assert {e.config.rsplit(":", 1)[1] for e in exposed} <= {cls_name, "TrainConfig"}, name
    assert {n for n, _ in _exposed()} == set(SURFACE)


def test_every_exposed_option_has_its_fields_docstring_as_help():
    checked = 0
    for name, e in _exposed():
        param = _params(name)[e.field]
        assert param.help == _docstring_of_imported(e.config, e.field), (name, e.field)
        assert len(param.help) > 10
        checked += 1
    assert checked == sum(len(fields) for _, fields in SURFACE.values())


def test_option_names_and_kinds():
    p = _params("train-gap")
    assert p["num_workers"].opts == ["--num-workers"] and p["batch_size"].opts == ["--batch-size"]
    assert p["pose"].opts == ["--pose"] and p["pose"].secondary_opts == ["--no-pose"]
    assert p["finetune"].opts == ["--finetune"] and p["finetune"].secondary_opts == ["--cached"]
    assert all(param.default is None for n, param in p.items() if n in SURFACE["train-gap"][1])
    assert _params("extract")["layers"].multiple and _params("train-3d")["levels"].multiple
    assert _kind(_params("train-lstm")["layers"]) is int and _kind(_params("extract")["timeout"]) is float


def _kind(param) -> type:
    """The Python type of an option (Typer >= 0.24 keeps it in type_descriptor; older ones have click's type)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return descriptor.annotation
    return {"integer": int, "float": float, "text": str}[param.type.name.lower()]


def test_reading_only_the_class_body_gives_what_the_whole_file_gives():
    """The CLI parses only the class's lines (a whole module costs tens of ms per invocation): same result."""
    for ref in {e.config for _, e in _exposed()}:
        module, _, name = ref.partition(":")
        fields: list[str] = []
        for owner in reversed(getattr(importlib.import_module(module), name).__mro__[:-1]):  # bases first
            tree = ast.parse(Path(inspect.getfile(owner)).read_text())
            cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner.__name__)
            fields += [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and n.target.id not in fields]
        assert list(field_docs(ref)) == fields, ref
        assert fields == [f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))]


# -- an option given on the command line reaches the stage's config -------------------------------------------


class _Captured(typer.Exit):
    def __init__(self):
        super().__init__(0)


@pytest.fixture
def capture(monkeypatch):
    """Replace a stage function with one that records what it was given, then stops the command."""
    seen: dict = {}

    def patch(module: str, attr: str):
        def fake(*args, **kwargs):
            seen.update(args=args, kwargs=kwargs)
            raise _Captured()

        monkeypatch.setattr(importlib.import_module(module), attr, fake)
        return seen

    return patch


def test_train_3d_options_reach_the_configs(capture, tmp_path):
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_3d import Train3DConfig

    seen = capture("actiontk.stages.train_3d", "train_3d")
    assert run(["train-3d", "--cache", str(tmp_path), "--dataset", "toy", "--clip-len", "7", "--levels",
                "pool4,conv5_3", "--num-workers", "3", "--lr", "0.25", "--temporal-kernel", "1"]) == 0
    cfg, tcfg = seen["args"][:2]
    assert (cfg.clip_len, cfg.levels, cfg.temporal_kernel) == (7, ["pool4", "conv5_3"], 1)
    assert (tcfg.num_workers, tcfg.lr) == (3, 0.25)
    preset_cfg, preset_tcfg = resolve_stage_configs("toy", "train-3d", Train3DConfig, None, {})
    assert cfg.clip_stride == preset_cfg.clip_stride and tcfg.epochs == preset_tcfg.epochs  # not given: preset's


def test_train_lstm_repeated_list_option_and_ints(capture, tmp_path):
    seen = capture("actiontk.stages.train_lstm", "train_lstm")
    assert run(["train-lstm", "--cache", str(tmp_path), "--dataset", "toy", "--fusion", "late", "--levels", "pool4",
                "--levels", "conv5_3", "--layers", "2", "--last", "3", "--batch-size", "5"]) == 0
    cfg, tcfg = seen["args"][:2]
    assert (cfg.fusion, cfg.levels, cfg.layers, cfg.last, tcfg.batch_size) == ("late", ["pool4", "conv5_3"], 2, 3, 5)


def test_train_gap_flags_reach_the_config(capture, tmp_path):
    seen = capture("actiontk.stages.train_gap", "train_gap")
    assert run(["train-gap", "--cache", str(tmp_path), "--dataset", "toy-mpii", "--head", "gap", "--depth", "1",
                "--pose", "--pose-attention", "--no-standardize", "--cached", "--seed", "4"]) == 0
    cfg, tcfg = seen["args"][:2]
    assert (cfg.depth, cfg.pose, cfg.pose_attention, cfg.standardize, cfg.finetune) == (1, True, True, False, False)
    assert tcfg.seed == 4


def test_extract_options_reach_the_config(capture, tmp_path):
    seen = capture("actiontk.stages.extract", "extract")
    assert run(["extract", "toy", "--root", str(tmp_path), "--cache", str(tmp_path), "--layers", "pool4",
                "--layers", "pool5", "--grid", "3", "--frame-stride", "2", "--timeout", "9.5", "--backbone",
                "vgg16"]) == 0
    cfg = seen["args"][0]
    assert (cfg.layers, cfg.grid, cfg.frame_stride, cfg.timeout) == (["pool4", "pool5"], 3, 2, 9.5)


def test_run_attention_rounds_reach_the_run_table(capture, tmp_path):
    from actiontk.config import resolve
    from actiontk.stages.pipeline import RunConfig

    seen = capture("actiontk.stages.pipeline", "run_video")
    assert run(["run", "toy", "--root", str(tmp_path), "--cache", str(tmp_path), "--attention-rounds", "0"]) == 0
    assert seen["kwargs"]["overrides"] == {"run": {"attention_rounds": 0}}
    assert resolve(RunConfig, {"attention_rounds": 2}, seen["kwargs"]["overrides"]["run"]).attention_rounds == 0


# -- a new field is one edit: the dataclass ---------------------------------------------------------------------


@dataclasses.dataclass
class Throwaway:
    """A config class that exists only in this test."""

    frobnicate_level: int = 3
    """How hard to frobnicate
    (spread over two lines)."""
    loud: bool = False
    """Frobnicate loudly."""
    targets: list[str] | None = None
    """What to frobnicate, comma-separated or repeated."""
    ratio: float | None = None
    """Share of the targets."""


def _throwaway_app(*fields: str, seen: dict) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @config_options(expose(Throwaway, *fields))
    def frob(name: str = "x", overrides: dict = None) -> None:
        """Frobnicate."""
        seen.update(overrides, name=name)

    @app.command()
    def other() -> None:
        pass

    return app


def test_a_field_exposed_on_a_command_appears_in_help_with_its_docstring():
    seen: dict = {}
    app = _throwaway_app("frobnicate_level", "loud", "targets", "ratio", seen=seen)
    out = CliRunner().invoke(app, ["frob", "--help"], env={"COLUMNS": "200"}).output
    assert "--frobnicate-level" in out and "How hard to frobnicate (spread over two lines)." in out
    assert "--loud" in out and "--no-loud" in out and "Frobnicate loudly." in out
    result = CliRunner().invoke(app, ["frob", "--frobnicate-level", "5", "--loud", "--targets", "a,b", "--targets",
                                      "c", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert seen == {"frobnicate_level": 5, "loud": True, "targets": ["a", "b", "c"], "ratio": None, "name": "y"}
    # an option the command does not expose is not there
    narrow = _throwaway_app("loud", seen={})
    assert "--frobnicate-level" not in CliRunner().invoke(narrow, ["frob", "--help"]).output


def test_a_field_added_to_a_module_read_without_importing_it(tmp_path, monkeypatch):
    """A "module:Class" reference (as cli.py uses) picks up a field added to the class's source."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "throwaway_cfg.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            old: int = 1
            """The old option."""
            brand_new: str | None = None
            """Added after the CLI was written."""
            # a comment, then another field
            after: int = 2
            """Comes after a comment."""


        def unrelated():
            x: int = 3
            """Not a field."""
    '''))
    docs = field_docs("throwaway_cfg:Cfg")
    assert list(docs) == ["old", "brand_new", "after"]
    assert docs["brand_new"].doc == "Added after the CLI was written."
    assert "throwaway_cfg" not in sys.modules  # read, not imported

    app = typer.Typer()

    @app.command()
    @config_options(expose("throwaway_cfg:Cfg", "brand_new", "after"))
    def cmd(overrides: dict = None) -> None:
        print(overrides)

    @app.command()
    def other() -> None:
        pass

    out = CliRunner().invoke(app, ["cmd", "--help"], env={"COLUMNS": "200"}).output
    assert "--brand-new" in out and "Added after the CLI was written." in out and "--old" not in out
    assert CliRunner().invoke(app, ["cmd", "--brand-new", "v"]).output.strip() == "{'brand_new': 'v', 'after': None}"


def test_inherited_fields_are_read_from_the_base_class_module_without_importing_either(tmp_path, monkeypatch):
    """A stage config that extends a model config: the base's fields come first, with the base's docstrings."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "throwaway_base.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        @dataclass
        class Arch:
            width: int = 8
            """Width, declared once, in the base."""
            deep: bool = False
            """Depth switch."""
    '''))
    (tmp_path / "throwaway_child.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from throwaway_base import (
            Arch as Base,
        )

        @dataclass
        class Local:
            seed: int = 0
            """A base in the same module."""

        @dataclass
        class Stage(Base, Local):
            clip: int = 3
            """The stage's own option."""
    '''))
    docs = field_docs("throwaway_child:Stage")
    assert list(docs) == ["seed", "width", "deep", "clip"]  # dataclasses.fields' order: the last base first
    assert docs["width"].doc == "Width, declared once, in the base."
    assert docs["seed"].doc == "A base in the same module."
    assert docs["clip"].annotation == "int" and docs["clip"].doc == "The stage's own option."
    assert "throwaway_base" not in sys.modules and "throwaway_child" not in sys.modules


def test_mistakes_in_an_exposure_are_caught_when_the_cli_is_built():
    with pytest.raises(ValueError, match="no field 'nope'"):
        config_options(expose(Throwaway, "nope"))(lambda overrides=None: None)
    with pytest.raises(ValueError, match="exposed twice"):
        config_options(expose(Throwaway, "loud"), expose(Throwaway, "loud"))(lambda overrides=None: None)
    with pytest.raises(TypeError, match="both a parameter"):
        config_options(expose(Throwaway, "loud"))(lambda loud=False, overrides=None: None)


def test_training_help_imports_no_heavy_module():
    """The options are read from the config modules' source: their help does not import torch or h5py."""
    code = ("import sys\nfrom actiontk.cli import run\n"
            "for c in ('extract', 'train-3d', 'train-lstm', 'train-gap', 'run'):\n"
            "    assert run([c, '--help']) == 0\n"
            "print(sorted(m for m in ('torch', 'h5py', 'numpy', 'torchvision') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
