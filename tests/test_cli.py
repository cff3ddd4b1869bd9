"""The CLI's conventions: fast help, one-line errors with exit codes, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actiontk import __version__
from actiontk.cli import run
from tests.conftest import write_lines

HEAVY = ("torch", "torchvision", "h5py", "decord", "av", "sklearn", "matplotlib")


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actiontk", *args], capture_output=True, text=True, env=env)


def test_help_imports_no_heavy_module():
    code = (
        "import sys\n"
        "from actiontk.cli import run\n"
        "for argv in (['--help'], ['datasets', '--help'], ['datasets', 'check', '--help']):\n"
        "    assert run(argv) == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"actiontk {__version__}"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("actiontk: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_unknown_option_is_a_one_line_usage_error(capsys):
    assert run(["datasets", "check", "ucf101", "--root", ".", "--bogus"]) == 2
    assert "--bogus" in one_line_error(capsys)


def test_missing_root_is_a_one_line_error(capsys, tmp_path: Path):
    assert run(["datasets", "check", "ucf101", "--root", str(tmp_path / "nowhere")]) == 2
    line = one_line_error(capsys)
    assert "nowhere" in line and "--root" in line


def test_bad_split_and_unknown_dataset(capsys, ucf_root: Path):
    assert run(["datasets", "check", "ucf101", "--root", str(ucf_root), "--split", "4"]) == 2
    assert "--split 1 / 2 / 3" in one_line_error(capsys)
    assert run(["datasets", "check", "kinetics", "--root", str(ucf_root)]) == 2
    assert "ucf101" in one_line_error(capsys)


def test_unknown_backend_fails_before_work(capsys, ucf_root: Path):
    assert run(["datasets", "check", "ucf101", "--root", str(ucf_root), "--decode", "--backend", "ffmpeg"]) == 2
    assert "decord" in one_line_error(capsys)


def test_check_clean_dataset(capsys, ucf_root: Path):
    assert run(["datasets", "check", "ucf101", "--root", str(ucf_root)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "ApplyEyeMakeup" in out


def test_check_reports_missing_extra_and_malformed_with_exit_1(capsys, ucf_root: Path):
    (ucf_root / "UCF-101" / "Run" / "v_Run_g02_c01.avi").unlink()
    (ucf_root / "UCF-101" / "Run" / "v_Run_g07_c01.avi").write_bytes(b"x")
    lists = ucf_root / "ucfTrainTestlist"
    write_lines(lists / "testlist01.txt", (lists / "testlist01.txt").read_text().splitlines() + ["Run/[bold]x.avi 9"])
    assert run(["datasets", "check", "ucf101", "--root", str(ucf_root)]) == 1
    out = capsys.readouterr().out
    assert "missing (1)" in out and "v_Run_g02_c01.avi" in out
    assert "extra (1)" in out and "Run/v_Run_g07_c01.avi" in out
    assert "label-mismatch (1)" in out and "Run/[bold]x.avi" in out  # rich markup in names is shown as text
    assert "3 problem(s) found" in out


def test_malformed_class_index_is_exit_2(capsys, ucf_root: Path):
    write_lines(ucf_root / "ucfTrainTestlist" / "classInd.txt", ["1 A", "oops"])
    assert run(["datasets", "check", "ucf101", "--root", str(ucf_root)]) == 2
    assert "classInd.txt:2" in one_line_error(capsys)


def test_datasets_list(capsys):
    assert run(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("ucf101", "hmdb51", "toy", "folder", "testTrainMulti_7030_splits"):
        assert name in out


def test_subprocess_errors_and_debug_traceback(tmp_path: Path):
    plain = cli("datasets", "check", "hmdb51", "--root", str(tmp_path))
    assert plain.returncode == 2
    assert plain.stderr.count("\n") == 1 and "testTrainMulti_7030_splits" in plain.stderr
    debug = cli("--debug", "datasets", "check", "hmdb51", "--root", str(tmp_path))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "UserError" in debug.stderr


@pytest.mark.parametrize("args", [["datasets", "toy", "--help"], ["datasets", "check", "--help"]])
def test_subcommand_help(args: list[str], capsys):
    assert run(args) == 0
    assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize("exc, words", [
    (OSError(28, "No space left on device", "/cache/extract/x/shard-0003.h5.tmp"),
     ["out of disk space writing /cache/extract/x/shard-0003.h5.tmp", "status --gc", "resume"]),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text"),
     ["out of GPU memory: CUDA out of memory. Tried to allocate 2.00 GiB;", "--batch-size"]),
    (MemoryError(), ["out of memory: MemoryError", "--batch-size"]),
])
def test_out_of_disk_or_memory_is_a_one_line_error(exc, words, capsys, monkeypatch):
    def fail(*a, **k):
        raise exc

    monkeypatch.setattr("actiontk.commands.status.show_status", fail)
    assert run(["status"]) == 2
    err = one_line_error(capsys)
    for w in words:
        assert w in err, err
    assert "internal error" not in err


def test_a_bug_is_still_an_internal_error(capsys, monkeypatch):
    monkeypatch.setattr("actiontk.commands.status.show_status", lambda *a, **k: 1 / 0)
    assert run(["status"]) == 1
    assert "internal error: ZeroDivisionError" in one_line_error(capsys)


# -- bad input is refused before any work; an interrupt says where the run stands ------------------------------


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    from actiontk.datasets.toy import ToyConfig, generate_toy

    root = tmp_path_factory.mktemp("toy") / "toy"
    generate_toy(root, ToyConfig(classes=6, groups=3, clips=1, frames=8, size=32), workers=1)
    return root


@pytest.mark.parametrize("backend", ["bogus", "nosuchmod:X", "tests.helpers_readers:NoSuchReader"])
def test_unknown_extract_backend_is_refused_before_any_run(backend, toy_root: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    assert run(["extract", "toy", "--root", str(toy_root), "--backend", backend, "--cache", str(cache)]) == 2
    line = one_line_error(capsys)
    assert repr(backend) in line and "pyav" in line, line
    assert not (cache / "extract").exists()  # no partial run left behind


def test_run_all_splits_with_a_split_is_a_usage_error(tmp_path: Path, capsys):
    assert run(["run", "toy", "--all-splits", "--split", "2", "--cache", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "--all-splits" in line and "--split 2" in line, line


def fake_run(cache: Path, stage: str, dataset: str, **config):
    from actiontk.cache.runs import open_run

    return open_run(cache, stage, 1, config, inputs={"dataset": dataset, "root": str(cache), "split": 1,
                                                      "kind": "video"})


def test_train_gap_on_a_video_extract_run_says_what_it_needs(tmp_path: Path, capsys):
    from actiontk.cache.runs import release

    video = fake_run(tmp_path, "extract", "toy", backbone="vgg16")
    release(video.path)
    assert run(["train-gap", "--features", str(video.path), "--cache", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert f"{video.short} is a video extract run (toy)" in line and "needs an image extract run" in line, line
    assert "actiontk extract mpii --root DIR --backbone resnet101" in line, line


def test_an_interrupt_says_what_is_saved_where_and_how_to_resume(tmp_path: Path, capsys, monkeypatch):
    from actiontk.cache import runs

    monkeypatch.setattr(runs, "_held", {})  # only the runs this "command" opens
    opened = []

    def train_until_interrupted(*args, **kwargs):
        r = fake_run(tmp_path, "train-3d", "toy", model={"channels": 8}, train={"epochs": 5})
        (r.path / "checkpoint.pt").write_bytes(b"")
        (r.path / "metrics.jsonl").write_text("".join(f'{{"split": "train", "epoch": {e}}}\n' for e in (1, 2)))
        opened.append(r)
        raise KeyboardInterrupt

    monkeypatch.setattr("actiontk.commands.train.run_train_3d", train_until_interrupted)
    assert run(["train-3d", "--cache", str(tmp_path)]) == 130
    line = one_line_error(capsys)
    r = opened[0]
    assert line.startswith("actiontk: error: interrupted; ") and "run the same command again to resume" in line
    assert f"{r.short} (toy split 1) stopped at epoch 2/5, kept in {r.path}" in line, line


def test_ctrl_c_during_extract(toy_root: Path, tmp_path: Path):
    """A real SIGINT to the whole process group (what Ctrl-C sends) while extract waits for a stalled decoder,
    after two videos are saved: exit 130, one line naming the run, its progress and folder."""
    import os
    import signal
    import time

    cache = tmp_path / "cache"
    env = {**os.environ, "ACTIONTK_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "actiontk", "extract", "toy", "--root", str(toy_root),
                             "--backend", "tests.helpers_readers:StallAfterTwoReader", "--workers", "1",
                             "--videos-per-shard", "1", "--size", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(list(cache.glob("extract/*/shards/*.h5"))) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    run_dir = next(cache.glob("extract/*"))
    lines = [x for x in err.splitlines() if x.startswith("actiontk:")]
    assert lines == [f"actiontk: error: interrupted; extract/{run_dir.name} (toy split 1) stopped at 2/18 videos, "
                     f"kept in {run_dir} -- finished work is kept, run the same command again to resume"], err
    assert "Traceback" not in err
