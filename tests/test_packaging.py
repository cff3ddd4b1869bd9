"""An installed actiontk (a wheel, not the checkout) carries the papers' presets and resolves them as the
checkout does; a known dataset without its preset is an error, never a silent run on the dataclass defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actiontk.cli import run as cli_run
from actiontk.config import PRESET_DATASETS, load_preset, presets_dir
from actiontk.errors import UserError

REPO = Path(__file__).resolve().parents[1]

RESOLVE = """
import json, sys
import actiontk
from actiontk.config import load_preset, presets_dir
from actiontk.stages.common import resolve_stage_configs
from actiontk.stages.extract import ExtractConfig
from actiontk.config import resolve
from actiontk.stages.train_3d import Train3DConfig
preset, source = load_preset("ucf101")
ex = resolve(ExtractConfig, preset["extract"], {})
m3, t3 = resolve_stage_configs("ucf101", "train-3d", Train3DConfig, None, {})
print(json.dumps({"package": actiontk.__file__, "presets": str(presets_dir()), "source": str(source),
                  "extract": [ex.size, ex.resize, ex.grid], "train3d": [m3.clip_len, m3.att_lambda, t3.batch_size]}))
"""


def test_the_preset_list_is_the_stages_folder():
    assert sorted(p.stem for p in (REPO / "stages").glob("*.toml")) == sorted(PRESET_DATASETS)


def test_a_missing_preset_of_a_known_dataset_is_an_error(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("ACTIONTK_STAGES", str(tmp_path))  # a folder without presets, as a broken install would be
    with pytest.raises(UserError, match="the ucf101 preset .* is missing"):
        load_preset("ucf101")
    assert load_preset("folder") == ({}, None)  # datasets without a preset resolve to the defaults, as before
    assert cli_run(["train-3d", "--dataset", "ucf101", "--cache", str(tmp_path / "cache")]) == 2
    assert "preset (the paper's settings) is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_wheel_resolves_the_presets_of_the_checkout(tmp_path: Path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("actiontk-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "ACTIONTK_STAGES"}
    env["PYTHONPATH"] = str(site)  # ahead of the editable checkout on sys.path
    out = subprocess.run([sys.executable, "-c", RESOLVE], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    installed = json.loads(out.stdout.strip().splitlines()[-1])
    assert installed["package"].startswith(str(site)), installed
    assert installed["presets"] == str(site / "actiontk" / "presets")
    # the same values the checkout resolves (its presets are the top-level stages/ folder)
    local = subprocess.run([sys.executable, "-c", RESOLVE], capture_output=True, text=True, cwd=REPO, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "ACTIONTK_STAGES"})
    assert local.returncode == 0, local.stderr[-2000:]
    checkout = json.loads(local.stdout.strip().splitlines()[-1])
    assert checkout["presets"] == str(presets_dir()) == str(REPO / "stages")
    assert installed["extract"] == checkout["extract"] == [384, "square", 11]
    assert installed["train3d"] == checkout["train3d"] == [30, 1000.0, 64]
