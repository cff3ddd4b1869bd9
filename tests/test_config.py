"""Presets: every table, key and value is checked against the config dataclasses before a command does any work,
with one error line naming the file, the key and the type expected -- for stages/*.toml and --config files alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.cli import run


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("actiontk: error: ") and "Traceback" not in err, err
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BAD_VALUES = [  # (table, line, key, words the error must carry)
    ("extract", "frame_stride = true", "frame_stride", ["an integer", "true (a boolean)"]),
    ("extract", "weights = 5", "weights", ["a string", "5 (an integer)"]),
    ("extract", "layers = [1, 2]", "layers", ["an array of strings"]),
    ("extract", "layers = \"pool4\"", "layers", ["an array of strings", "a string"]),
    ("extract", "size = 1.5", "size", ["an integer", "1.5 (a number)"]),
    ("train-3d", "seed = \"x\"", "seed", ["an integer", "\"x\" (a string)"]),
    ("train-3d", "standardize = 1", "standardize", ["true or false", "1 (an integer)"]),
    ("train-lstm", "hidden = { units = 64 }", "hidden", ["an integer", "a table"]),
    ("train-lstm", "lr = \"fast\"", "lr", ["a number"]),
    ("train-gap", "depth = \"3\"", "depth", ["an integer"]),
    ("train-gap", "pose = \"yes\"", "pose", ["true or false"]),
]

# a command that loads the preset of each table (the dataset root does not exist: nothing may be read before)
COMMANDS = {
    "extract": ["extract", "toy", "--root", "{tmp}/nowhere"],
    "train-3d": ["train-3d", "--dataset", "toy"],
    "train-lstm": ["train-lstm", "--dataset", "toy"],
    "train-gap": ["train-gap", "--dataset", "toy-mpii"],
}


@pytest.mark.parametrize(("table", "line", "key", "words"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_a_value_of_the_wrong_type_names_file_key_and_type(table, line, key, words, tmp_path: Path, capsys):
    cfg = write(tmp_path / "my preset.toml", f"[{table}]\n{line}\n")
    argv = [a.format(tmp=tmp_path) for a in COMMANDS[table]]
    assert run([*argv, "--config", str(cfg), "--cache", str(tmp_path / "cache")]) == 2
    msg = error_line(capsys)
    assert str(cfg) in msg and f"[{table}] {key} must be" in msg, msg
    for word in words:
        assert word in msg, msg
    assert not (tmp_path / "cache" / "extract").exists()  # no run was opened


def test_the_shipped_presets_are_checked_too(tmp_path: Path, monkeypatch, capsys):
    """stages/<dataset>.toml (here through $ACTIONTK_STAGES) goes through the same check as --config."""
    stages = tmp_path / "stages"
    write(stages / "toy.toml", "[train-3d]\nepochs = 2\nweight_decay = \"none\"\n")
    monkeypatch.setenv("ACTIONTK_STAGES", str(stages))
    assert run(["train-3d", "--dataset", "toy", "--cache", str(tmp_path / "cache")]) == 2
    msg = error_line(capsys)
    assert str(stages / "toy.toml") in msg and "weight_decay must be a number" in msg, msg


@pytest.mark.parametrize(("text", "words"), [
    ("[extract]\nframe_strid = 2\n", ["unknown option 'frame_strid'", "frame_stride"]),
    ("[extrct]\nsize = 32\n", ["unknown table [extrct]", "[extract]"]),
    ("size = 32\n", ["top-level key 'size'", "[extract]"]),
    ("extract = 3\n", ["extract must be a table", "3 (an integer)"]),
    ("[train-3d]\nfusion = \"late\"\n", ["[train-3d] has unknown option 'fusion'"]),
])
def test_unknown_tables_and_keys(text, words, tmp_path: Path, capsys):
    cfg = write(tmp_path / "p.toml", text)
    assert run(["extract", "toy", "--root", str(tmp_path / "nowhere"), "--config", str(cfg),
                "--cache", str(tmp_path / "cache")]) == 2
    msg = error_line(capsys)
    assert str(cfg) in msg
    for word in words:
        assert word in msg, msg


def test_run_checks_every_table_before_extracting(tmp_path: Path, capsys):
    """A bad [train-lstm] value stops `actiontk run` before extract, not after hours of it."""
    cfg = write(tmp_path / "p.toml", "[extract]\nsize = 32\n[train-lstm]\nlayers = 2.5\n")
    root = tmp_path / "toy"
    root.mkdir()
    assert run(["run", "toy", "--root", str(root), "--config", str(cfg), "--cache", str(tmp_path / "cache")]) == 2
    msg = error_line(capsys)
    assert "[train-lstm] layers must be an integer, got 2.5 (a number)" in msg, msg
    assert not (tmp_path / "cache" / "extract").exists()


def test_every_shipped_preset_passes():
    from actiontk.config import TABLES, load_preset, presets_dir

    paths = sorted(presets_dir().glob("*.toml"))
    assert {p.stem for p in paths} >= {"toy", "toy-mpii", "ucf101", "hmdb51", "mpii"}
    for path in paths:
        preset, source = load_preset(path.stem)
        assert source == path and set(preset) <= set(TABLES), path


def test_an_integer_for_a_number_is_a_float(tmp_path: Path):
    """`lr = 1` and `--lr 1` must key the same run as `lr = 1.0`: the check stores ints of float fields as floats."""
    from actiontk.config import check_preset, resolve
    from actiontk.train.engine import TrainConfig

    preset = {"train-3d": {"lr": 1, "epochs": 3, "grad_clip": 2}}
    check_preset(preset, "p.toml")
    cfg = resolve(TrainConfig, preset["train-3d"], {})
    assert type(cfg.lr) is float and type(cfg.grad_clip) is float and type(cfg.epochs) is int


def test_a_directory_given_as_config(tmp_path: Path, capsys):
    assert run(["extract", "toy", "--root", str(tmp_path), "--config", str(tmp_path)]) == 2
    assert "config file not found" in error_line(capsys)


# -- one declaration per model option; the run keys they make -----------------------------------------------------

STAGE_MODEL = [  # (stage config, the model config it extends)
    ("actiontk.stages.train_3d:Train3DConfig", "actiontk.models.configs:Conv3DConfig"),
    ("actiontk.stages.train_lstm:TrainLSTMConfig", "actiontk.models.configs:JointLSTMConfig"),
    ("actiontk.stages.train_gap:TrainGAPConfig", "actiontk.models.configs:GAPConfig"),
]


def _cls(ref: str) -> type:
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("stage_ref, model_ref", STAGE_MODEL)
def test_each_model_option_is_declared_once_in_the_model_config(stage_ref, model_ref):
    import dataclasses

    from actiontk.options import field_docs

    stage, model = _cls(stage_ref), _cls(model_ref)
    assert issubclass(stage, model)
    model_fields = [f.name for f in dataclasses.fields(model)]
    own = set(vars(stage).get("__annotations__", {}))
    assert not own & set(model_fields), f"{stage.__name__} re-declares {sorted(own & set(model_fields))}"
    # what the data decides is an argument of the model, not an option a preset or the CLI could set
    assert not {"in_channels", "num_classes", "grid", "joints"} & set(model_fields)
    # the CLI reads every option, inherited ones with the model config's docstring
    docs = field_docs(stage_ref)
    assert list(docs) == [f.name for f in dataclasses.fields(stage)]
    assert all(docs[name].doc == field_docs(model_ref)[name].doc != "" for name in model_fields)


def test_a_bad_model_option_in_a_preset_is_one_line_naming_it(tmp_path: Path, capsys):
    config = write(tmp_path / "bad.toml", "[train-3d]\ntemporal_kernel = 2\n")
    assert run(["train-3d", "--cache", str(tmp_path), "--dataset", "toy", "--config", str(config)]) == 2
    assert "--temporal-kernel must be 3 (3D convnet) or 1 (2D convnet), got 2" in error_line(capsys)


# The model part of the run keys of the toy presets, as they were before the stage configs extended the model
# configs: a field renamed, lost or added would change these keys and orphan every cached run.
TOY_MODEL_KEYS = {
    ("toy", "train-3d"): {
        "att_lambda": 1000.0, "channels": 64, "clip_len": 16, "clip_stride": 8, "dropout": 0.5, "hidden": 64,
        "levels": None, "over_time": "sum", "standardize": True, "temporal_center": True, "temporal_kernel": 3},
    ("toy", "train-lstm"): {
        "att_lambda": 0.0, "attention_samples": 24, "clip_len": 16, "clip_stride": 8, "dropout": 0.5,
        "fusion": "early", "hidden": 256, "last": 8, "layers": 3, "levels": None, "over_time": "sum", "pyramid": True},
    ("toy-mpii", "train-gap"): {
        "attention_samples": 24, "depth": None, "dropout": 0.3, "finetune": False, "form": "activations",
        "head": "gap", "layer": "layer4", "pose": True, "pose_attention": True, "pose_weight": 1e-06,
        "pose_width": 128, "sigma": 1.0, "standardize": True, "width": 256},
}


@pytest.mark.parametrize("dataset, section", list(TOY_MODEL_KEYS))
def test_the_toy_presets_key_their_runs_as_before(dataset, section):
    import dataclasses

    from actiontk.stages.common import resolve_stage_configs

    stage_ref = {"train-3d": STAGE_MODEL[0][0], "train-lstm": STAGE_MODEL[1][0], "train-gap": STAGE_MODEL[2][0]}
    cfg, _ = resolve_stage_configs(dataset, section, _cls(stage_ref[section]), None, {})
    key = cfg.key() if section == "train-gap" else dataclasses.asdict(cfg)  # what the stage puts in its run key
    assert key == TOY_MODEL_KEYS[(dataset, section)]
