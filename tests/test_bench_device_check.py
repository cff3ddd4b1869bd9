"""bench/device_check.sh, the one script for the GPU path: its syntax (``bash -n``), its CPU fallback end to end
(every step runs and the summary table comes out; the GPU figures need a GPU), and the table's verdict when a
step fails or a check misses its bar."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "device_check.sh"
STEPS = ("data", "extract", "lstm", "precision", "torchrun", "train")


def test_the_script_parses():
    assert shutil.which("bash"), "bash is needed to run bench/device_check.sh"
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # about a minute on 2 idle cores: six steps, each a fresh interpreter with torch
def test_cpu_fallback_runs_every_step_and_prints_one_table(tmp_path: Path):
    if not Path(sys.executable).with_name("torchrun").exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "COLUMNS": "200"}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu"], capture_output=True, text=True, env=env, timeout=900,
                          cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert out.count("bench/device_check.sh -- CPU fallback") == 1  # one summary table
    for step in STEPS:
        assert f"│ {step} " in out, (step, out)
    assert "FAILED" not in out and "all checks passed" in out
    for figure in ("backbone fp32", "(c)/(a)", "(c)/(d)", "joint / nn.LSTM slowdown", "features bf16 vs fp32",
                   "torchrun 1 process", "train-lstm video_accuracy_vote"):
        assert figure in out, (figure, out)
    assert not list(tmp_path.glob("actiontk-device-check.*"))  # the work folder is removed


def test_the_table_fails_on_a_failed_step_or_check(tmp_path: Path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "meta.json").write_text(json.dumps({"device": "cpu", "title": "test"}))
    (results / "data.status").write_text("0 3 1\n")
    (results / "extract.status").write_text("124 120 2\n")  # timed out
    (results / "precision.status").write_text("0 10 3\n")
    (results / "precision.json").write_text(json.dumps({"rows": [
        {"check": "features bf16 vs fp32", "value": "9e-02", "bar": "median <= 3e-02", "ok": False}]}))
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "device_check.py"), "table", str(results)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "timed out after 120 s" in proc.stdout and "2 check(s) FAILED" in proc.stdout
