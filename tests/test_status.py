"""``actiontk status`` and ``status --gc``: every stage's row, the states and why a run is stale, a killed
extraction seen as running then partial, and what ``--gc`` removes, keeps and asks."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from actiontk.cache import features as store
from actiontk.cache.runs import atomic_write_json, open_run, release
from actiontk.cli import run as cli_run
from actiontk.cache.lifecycle import mark_complete

REPO = Path(__file__).parents[1]
VIDEOS = ["A/v1.avi", "A/v2.avi", "B/v3.avi", "B/v4.avi"]


# -- runs written the way each stage writes them ----------------------------------------------------------
# Each helper ends by releasing the run, as the process of a stage does when it exits.


def make_extract(cache: Path, root: Path, *, stride: int = 1, stored: int = 4, failed: int = 0,
                 unfinished: bool = False):
    """An extract run of ``VIDEOS`` (split 1) with ``stored`` videos in finished shards and ``failed`` failures."""
    config = {"backbone": {"backbone": "vgg16", "layers": ["pool4", "conv5_3"], "size": 32,
                           "weights_id": "random(seed=0)"}, "frame_stride": stride, "grid": None,
              "precision": "fp32", "dtype": "float16"}
    from actiontk.stages.extract import SCHEMA

    run = open_run(cache, "extract", SCHEMA, config, inputs={"dataset": "toy", "root": str(root), "kind": "video"})
    atomic_write_json(run.path / "targets.json", {"1": VIDEOS})
    writer = store.ShardWriter(run.path, {"pool4": (2, 1, 1)}, videos_per_shard=2)
    for rel in VIDEOS[:stored]:
        slot = writer.start(rel, label=0, fingerprint=[1, 1])
        slot.append({"pool4": np.zeros((3, 2, 1, 1), np.float16)})
        slot.finish()
    for rel in VIDEOS[stored:stored + failed]:
        writer.start(rel, label=0).fail("cannot decode", fingerprint=[1, 1])
    writer.close()
    store.write_manifest(run.path)
    if unfinished:  # the shard a killed writer had open
        (store.shard_dir(run.path) / f"s{time.time_ns():020d}-r000-0009.h5{store.INCOMPLETE}").write_bytes(b"torn")
    release(run.path)
    return run


def make_training(cache: Path, stage: str, upstream: dict[str, str], root: Path, *, epochs: int = 3,
                  done: int | None = None, model: dict | None = None, schema: int | None = None, summary=None):
    """A training run that finished ``done`` of ``epochs`` epochs (all of them and complete.json by default)."""
    from actiontk.stages import train_3d, train_gap, train_lstm

    schemas = {"train-3d": train_3d.SCHEMA, "train-lstm": train_lstm.SCHEMA, "train-gap": train_gap.SCHEMA}
    run = open_run(cache, stage, schema or schemas[stage], {"model": model or {}, "train": {"epochs": epochs}},
                   upstream=upstream, inputs={"dataset": "toy", "root": str(root), "split": 1})
    done = epochs if done is None else done
    (run.path / "checkpoint.pt").write_bytes(b"weights")
    with open(run.path / "metrics.jsonl", "w") as f:
        for e in range(1, done + 1):
            f.write(json.dumps({"epoch": e, "split": "train", "loss": 1.0}) + "\n")
            f.write(json.dumps({"epoch": e, "split": "val", "loss": 1.0}) + "\n")
    if done == epochs and summary is not False:
        np.savez_compressed(run.path / "predictions.npz", classes=np.array(["A", "B"]))
        mark_complete(run, {"epochs": epochs, **(summary or {})})
    release(run.path)
    return run


def make_cubes(cache: Path, train3d, *, complete: bool = True):
    from actiontk.stages.train_3d import SCHEMA

    run = open_run(cache, "cubes", SCHEMA, {"from": "train-3d"}, upstream={"train-3d": train3d.key},
                   inputs=train3d.info["inputs"])
    if complete:
        mark_complete(run, {"videos": 4})
    release(run.path)
    return run


def set_created(run, when: str) -> None:
    info = json.loads((run.path / "run.json").read_text())
    info["created"] = when
    atomic_write_json(run.path / "run.json", info)


def pipeline(cache: Path, root: Path) -> dict:
    """One complete run of every stage, in the order the stages make them."""
    ex = make_extract(cache, root, stored=3, failed=1)
    t3 = make_training(cache, "train-3d", {"extract": ex.key}, root, model={"channels": 64, "clip_len": 16})
    cu = make_cubes(cache, t3)
    lstm = make_training(cache, "train-lstm", {"cubes": cu.key}, root, model={"fusion": "late", "hidden": 16,
                                                                              "layers": 2},
                         summary={"video_accuracy_vote": 0.5})
    gap = make_training(cache, "train-gap", {"extract": ex.key}, root, model={"head": "gap", "depth": None,
                                                                             "pose": True, "finetune": False},
                        summary={"accuracy": 0.25, "mAP": 0.5})
    return {"extract": ex, "train-3d": t3, "cubes": cu, "train-lstm": lstm, "train-gap": gap}


def status_json(cache: Path, capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert cli_run(["status", "--json", "--cache", str(cache)]) == 0
    return {r["run"]: r for r in json.loads(capsys.readouterr().out)["runs"]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "toy"
    d.mkdir()
    return d


# -- status -----------------------------------------------------------------------------------------------


def test_every_stage_has_a_row(tmp_path: Path, root: Path, capsys):
    cache = tmp_path / "cache"
    runs = pipeline(cache, root)
    partial = make_training(cache, "train-lstm", {}, root, epochs=10, done=3,
                            model={"fusion": "early", "hidden": 32, "layers": 3})
    set_created(partial, time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - 300)))
    got = status_json(cache, capsys)
    assert {r["stage"] for r in got.values()} == {"extract", "train-3d", "cubes", "train-lstm", "train-gap"}
    ex = got[runs["extract"].short]
    assert (ex["state"], ex["failed"], ex["progress"], ex["split"]) == ("complete", 1, "3/4 videos, 1 failed", "1")
    assert ex["what"] == "vgg16 pool4+conv5_3 @32px random(seed=0) stride 1"
    assert got[runs["train-3d"].short]["what"] == "ch 64 clip 16 3 ep"
    assert got[runs["cubes"].short]["what"] == f"from {runs['train-3d'].short}"
    lstm = got[runs["train-lstm"].short]
    assert (lstm["state"], lstm["what"], lstm["split"]) == ("complete", "late 16x2 3 ep", "1")
    assert lstm["progress"] == "3/3 epochs, video acc 0.500"
    assert got[runs["train-gap"].short]["what"] == "gap depth 3 pose cached 3 ep"
    p = got[partial.short]
    assert (p["state"], p["progress"], p["why"]) == ("partial", "epoch 3/10", ["training not finished"])
    assert 290 <= p["age_s"] < 400
    assert all(r["size_bytes"] > 0 for r in got.values())

    assert cli_run(["status", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    for run in [*runs.values(), partial]:
        assert run.short in out
    assert "complete, 1 failed" in out and "epoch 3/10" in out and "5 min ago" in out
    assert "1 partial or stale run(s)" in out and "status --gc" in out


def test_partial_runs_of_each_kind(tmp_path: Path, root: Path, capsys):
    cache = tmp_path / "cache"
    ex = make_extract(cache, root, stored=2, unfinished=True)
    t3 = make_training(cache, "train-3d", {"extract": ex.key}, root, epochs=2, summary=False)  # trained, no cubes
    cu = make_cubes(cache, t3, complete=False)
    got = status_json(cache, capsys)
    assert got[ex.short]["state"] == "partial"
    assert got[ex.short]["why"] == ["2 video(s) to go", "1 unfinished shard(s)"]
    assert (got[t3.short]["state"], got[t3.short]["why"]) == ("partial", ["cubes not written"])
    assert (got[cu.short]["state"], got[cu.short]["progress"]) == ("partial", "0 videos written")


@pytest.mark.parametrize("reason", ["upstream gone", "upstream re-made", "old schema", "root gone", "transitive"])
def test_stale_and_why(tmp_path: Path, root: Path, capsys, reason: str):
    cache = tmp_path / "cache"
    runs = pipeline(cache, root)
    if reason == "upstream gone":
        shutil.rmtree(runs["cubes"].path)
        stale, why = runs["train-lstm"], f"upstream cubes run {runs['cubes'].key[:16]} is gone from the cache"
    elif reason == "upstream re-made":  # train-3d removed and made again (same key) after the cubes read it
        set_created(runs["cubes"], "2020-01-01T00:00:00+0000")
        stale, why = runs["cubes"], f"upstream {runs['train-3d'].short} was re-made after it"
    elif reason == "old schema":
        stale = make_training(cache, "train-gap", {"extract": runs["extract"].key}, root, schema=1)
        from actiontk.stages.train_gap import SCHEMA as gap_schema

        why = f"schema 1 is older than this actiontk's {gap_schema}"
    elif reason == "root gone":
        other = root.parent / "moved"
        shutil.move(root, other)
        stale, why = runs["extract"], f"dataset root {root} is gone"
    else:
        set_created(runs["cubes"], "2020-01-01T00:00:00+0000")
        stale, why = runs["train-lstm"], f"upstream {runs['cubes'].short} is stale"
    got = status_json(cache, capsys)
    assert got[stale.short]["state"] == "stale"
    assert why in got[stale.short]["why"], got[stale.short]["why"]
    fresh = {"upstream gone": ["extract", "train-3d", "train-gap"], "upstream re-made": ["train-3d", "extract"],
             "old schema": list(runs), "root gone": [], "transitive": ["extract", "train-3d", "train-gap"]}[reason]
    assert all(got[runs[s].short]["state"] == "complete" for s in fresh), {s: got[runs[s].short] for s in fresh}
    if reason == "root gone":  # every run read that dataset
        assert {r["state"] for r in got.values()} == {"stale"}
        # ... but a folder that is gone may just be unmounted: --gc deletes nothing for that reason alone
        assert cli_run(["status", "--gc", "--yes", "--cache", str(cache)]) == 0
        assert all(r.path.is_dir() for r in runs.values())


# -- a real stage, killed -----------------------------------------------------------------------------------


def test_killed_extraction_is_running_then_partial(tmp_path: Path, capsys):
    from actiontk.datasets.toy import ToyConfig, generate_toy

    toy = tmp_path / "toy"
    generate_toy(toy, ToyConfig(classes=6, groups=3, clips=1, frames=8, size=32), workers=1)
    cache = tmp_path / "cache"
    env = {**os.environ, "ACTIONTK_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "actiontk", "extract", "toy", "--root", str(toy), "--split", "1", "--size", "32",
           "--weights", "none", "--batch-size", "8", "--videos-per-shard", "2", "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not list(cache.glob("extract/*/shards/*.h5")):
            time.sleep(0.02)
        assert proc.poll() is None, "the extraction finished before it could be stopped"
        proc.send_signal(signal.SIGSTOP)  # frozen mid-run, its locks held
        (row,) = status_json(cache, capsys).values()
        assert (row["state"], row["in_use"]) == ("running", True)
        capsys.readouterr()
        assert cli_run(["status", "--gc", "--yes", "--cache", str(cache)]) == 0
        assert "nothing to remove" in capsys.readouterr().out and Path(row["path"]).is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (row,) = status_json(cache, capsys).values()
    assert (row["state"], row["in_use"], row["stage"]) == ("partial", False, "extract")
    done, total = map(int, row["progress"].split()[0].split("/"))
    assert total == 18 and 0 < done < 18, row["progress"]
    assert f"{18 - done} video(s) to go" in row["why"]
    assert cli_run(["status", "--cache", str(cache)]) == 0
    assert "partial" in capsys.readouterr().out


# -- status --gc ----------------------------------------------------------------------------------------------


def hold(lock_file: Path):
    """A lock held the way a running extraction holds its rank lock."""
    fh = open(lock_file, "a+")  # noqa: SIM115
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_gc_yes_removes_partial_and_stale_only(tmp_path: Path, root: Path, capsys):
    cache = tmp_path / "cache"
    runs = pipeline(cache, root)
    partial = make_training(cache, "train-lstm", {"cubes": runs["cubes"].key}, root, epochs=5, done=1)
    stale = make_training(cache, "train-gap", {"extract": "0" * 64}, root)
    locked = make_extract(cache, root, stride=2, stored=1)  # partial, but an extraction holds its lock
    lock = hold(locked.path / "lock.r000")
    # a partial extract run that a complete train-3d run reads: removing it makes that run stale
    feeder = make_extract(cache, root, stride=3, stored=2)
    reader = make_training(cache, "train-3d", {"extract": feeder.key}, root, model={"channels": 8, "clip_len": 4})
    sizes = status_json(cache, capsys)
    try:
        assert sizes[locked.short]["state"] == "running"
        assert cli_run(["status", "--gc", "--yes", "--cache", str(cache)]) == 0
    finally:
        lock.close()
    out = capsys.readouterr().out
    gone = [partial, stale, feeder]
    assert all(not r.path.exists() for r in gone)
    assert all(r.path.is_dir() for r in [*runs.values(), locked, reader])
    freed = sum(sizes[r.short]["size_bytes"] for r in gone)
    from actiontk.cache.runs import human_bytes

    assert f"removed 3 run(s), freed {human_bytes(freed)}" in out
    assert f"kept {locked.short} (running)" in out
    assert f"now stale: {reader.short} (it reads {feeder.short})" in out
    after = status_json(cache, capsys)
    assert after[reader.short]["state"] == "stale"  # kept: --gc never removes a run that was complete
    assert after[locked.short]["state"] == "partial"  # the lock is released: the next --gc may take it


def test_gc_keeps_a_run_another_process_has_open(tmp_path: Path, root: Path, capsys):
    cache = tmp_path / "cache"
    stale = make_training(cache, "train-gap", {"extract": "0" * 64}, root)
    from actiontk.stages.train_gap import SCHEMA

    code = ("import sys, time; from pathlib import Path; from actiontk.cache.runs import open_run; "
            f"open_run(Path(sys.argv[1]), 'train-gap', {SCHEMA}, {{'model': {{}}, 'train': {{'epochs': 3}}}}, "
            "upstream={'extract': '0' * 64}, inputs={'dataset': 'toy', 'root': sys.argv[2], 'split': 1}); "
            "print('open', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache), str(root)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "open"
        assert status_json(cache, capsys)[stale.short]["in_use"] is True
        # this process opening it too (as a notebook that ran a stage would) does not hide the other one
        assert open_run(cache, "train-gap", SCHEMA, stale.config, upstream=stale.info["upstream"],
                        inputs=stale.info["inputs"]).path == stale.path
        assert status_json(cache, capsys)[stale.short]["in_use"] is True
        assert cli_run(["status", "--gc", "--yes", "--cache", str(cache)]) == 0
        assert stale.path.is_dir()
        assert "a process is using it" in capsys.readouterr().out
    finally:
        proc.kill()
        proc.wait()
    assert status_json(cache, capsys)[stale.short]["in_use"] is False  # our own open lock does not count
    assert cli_run(["status", "--gc", "--yes", "--cache", str(cache)]) == 0
    assert not stale.path.exists()


def test_gc_without_yes_and_no_terminal_is_an_error(tmp_path: Path, root: Path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    partial = make_training(cache, "train-lstm", {}, root, epochs=5, done=1)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    capsys.readouterr()
    assert cli_run(["status", "--gc", "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--yes" in err and "not a terminal" in err
    assert partial.path.is_dir()


def test_gc_answered_no_removes_nothing(tmp_path: Path, root: Path):
    cache = tmp_path / "cache"
    partial = make_training(cache, "train-lstm", {}, root, epochs=5, done=1)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "actiontk", "status", "--gc", "--cache", str(cache)], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(slave)
    try:
        os.write(master, b"n\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "remove these 1 run(s)" in out and "nothing removed" in out
    assert partial.path.is_dir()


def test_gc_nothing_to_do_and_option_errors(tmp_path: Path, root: Path, capsys):
    cache = tmp_path / "cache"
    runs = pipeline(cache, root)
    assert cli_run(["status", "--gc", "--cache", str(cache)]) == 0  # nothing to ask about: no prompt, no error
    assert "nothing to remove" in capsys.readouterr().out
    assert all(r.path.is_dir() for r in runs.values())
    assert cli_run(["status", "--yes", "--cache", str(cache)]) == 2
    assert "--yes only applies with --gc" in capsys.readouterr().err
    assert cli_run(["status", "--gc", "--json", "--cache", str(cache)]) == 2
    assert "--json" in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 60])
def test_status_is_readable_at_80_columns_and_piped(tmp_path: Path, root: Path, width: int):
    """No line wider than the terminal, and no value broken inside a word (each token appears whole)."""
    import io

    from rich.console import Console

    from actiontk.commands.status import inspect_runs, print_runs

    cache = tmp_path / "cache"
    pipeline(cache, root)
    stale = make_training(cache, "train-gap", {"extract": "0" * 64}, root)  # a stale run with a long reason
    statuses = inspect_runs(cache)
    out = io.StringIO()
    print_runs(Console(file=out, width=width, color_system=None), statuses, title=f"runs in {cache}")
    text = out.getvalue()
    lines = text.splitlines()
    for line in lines[1:]:  # the title is the cache's path, which may be longer than any terminal
        assert len(line) <= width or len(line.split()) == 1, line  # only a single unbreakable token may overflow
    assert all(line == line.rstrip() for line in lines)  # nothing padded for a pipe
    for line in lines[1:]:  # an age or a size is never split from its unit ("1" / "min ago" on the next line)
        assert not re.match(r"\s*(s|min|h|days?)? ?ago\b|\s*(B|KiB|MiB|GiB|TiB)\b", line), (line, text)
        assert "\u00a0" not in line
    words = set(text.split())
    for st in statuses:
        assert st.run.short in words
        for token in (st.what + " " + st.progress).split():
            assert token in words, (token, text)
    assert stale.short in text and "why: upstream extract run 0000000000000000 is gone from the cache" in " ".join(
        text.split())
