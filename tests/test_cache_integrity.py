"""The feature cache detects damage and fails cleanly: checksummed shards, a manifest cross-checked against the
shards, cheap checks in `status` and full ones in `status --verify`, extract redoing damaged shards, and a full
disk / file-size limit / read-only folder as one line (exit 2) with the finished shards intact."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from actiontk.cache import features as store
from actiontk.cache.features import MANIFEST, FeatureReader, ShardDamaged, ShardWriter, load_index
from actiontk.cache.runs import atomic_write_json, open_run, release
from actiontk.cli import run as cli_run
from actiontk.datasets import get_dataset
from actiontk.errors import UserError, storage_problem

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"pool4": (8, 2, 2), "conv5_3": (4, 2, 2)}
VIDEOS = [f"C{i % 2}/v{i}.avi" for i in range(6)]


def maps(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n, *s)).astype(np.float16) for k, s in SHAPES.items()}


def make_run(cache: Path, root: Path, per_shard: int = 2, frames: int = 6) -> Path:
    """An extract run of VIDEOS (split 1) written as extract writes it: 3 shards of 2 videos, a manifest."""
    run = open_run(cache, "extract", 2, {"backbone": {"backbone": "vgg16", "layers": list(SHAPES)}},
                   inputs={"dataset": "toy", "root": str(root), "kind": "video"})
    atomic_write_json(run.path / "targets.json", {"1": VIDEOS})
    w = ShardWriter(run.path, SHAPES, videos_per_shard=per_shard)
    for i, rel in enumerate(VIDEOS):
        v = w.start(rel, fingerprint=[i, i], label=i % 2)
        v.append(maps(i, frames))
        v.finish()
    w.close()
    store.write_manifest(run.path)
    release(run.path)
    return run.path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "toy").mkdir()
    return make_run(tmp_path / "cache", tmp_path / "toy")


def shard(run_dir: Path, k: int) -> Path:
    return store.shard_dir(run_dir) / store.finished_shards(run_dir)[k]


def flip_chunk(path: Path, group: str = "v00000", layer: str = "pool4", n: int = 24) -> None:
    """Flip ``n`` bytes inside the first chunk of one feature dataset, bypassing HDF5 (a bad disk would)."""
    with h5py.File(path, "r") as f:
        info = f[group][layer].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 4)
        data = fh.read(n)
        fh.seek(info.byte_offset + 4)
        fh.write(bytes(b ^ 0xFF for b in data))


def status_runs(cache: Path, capsys, *extra: str) -> tuple[int, dict[str, dict]]:
    capsys.readouterr()
    code = cli_run(["status", "--json", "--cache", str(cache), *extra])
    out = capsys.readouterr().out
    return code, {r["stage"]: r for r in json.loads(out)["runs"]}


# -- checksums --------------------------------------------------------------------------------------------------


def test_feature_datasets_carry_checksums(run_dir: Path):
    with h5py.File(shard(run_dir, 0), "r") as f:
        assert f.attrs["format_version"] == 2 and len(f.attrs["index_sha256"]) == 64
        for layer in SHAPES:
            assert f["v00000"][layer].fletcher32


def test_flipped_bytes_are_a_one_line_error_naming_the_shard_and_the_repair(run_dir: Path):
    flip_chunk(shard(run_dir, 0))
    name = shard(run_dir, 0).name
    reader = FeatureReader(run_dir)
    np.testing.assert_array_equal(reader.read(VIDEOS[2], "pool4"), maps(2, 6)["pool4"])  # other shards read fine
    with pytest.raises(ShardDamaged) as info:
        reader.read(VIDEOS[0], "pool4")
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert name in message and "fails its checksum" in message and "actiontk extract toy --root" in message
    # recorded: the run is no longer complete, and the shard's videos are left out until extract redoes them
    assert name in store.recorded_damage(run_dir)
    index = load_index(run_dir)
    assert name in index.damaged and VIDEOS[0] not in index.videos and VIDEOS[1] not in index.videos


def test_non_finite_values_are_refused_on_read_and_on_write(run_dir: Path):
    with h5py.File(shard(run_dir, 1), "r+") as f:  # written through HDF5: the checksum matches, the value is NaN
        f["v00000"]["conv5_3"][2, 0, 0, 0] = np.nan
    with pytest.raises(ShardDamaged, match="not finite"):
        FeatureReader(run_dir).read(VIDEOS[2], "conv5_3")
    w = ShardWriter(run_dir, SHAPES)
    bad = maps(0, 2)
    bad["pool4"][1] = np.inf
    with pytest.raises(UserError, match="not finite"):
        w.start("C0/x.avi").append(bad)
    w.abort()


def test_verify_shard_finds_every_kind_of_damage(run_dir: Path):
    assert all(store.verify_shard(p) is None for p in store.shard_dir(run_dir).glob("*.h5"))
    flip_chunk(shard(run_dir, 0), group="v00001", layer="conv5_3")
    assert store.verify_shard(shard(run_dir, 0)) == "fails its checksum"


# -- cheap checks: truncated shards and zeroed headers ---------------------------------------------------------


@pytest.mark.parametrize("damage, reason", [("truncate", "is truncated"), ("zero header", "no HDF5 header"),
                                            ("empty", "is empty")])
def test_cheap_checks_and_status(run_dir: Path, tmp_path: Path, capsys, damage: str, reason: str):
    path = shard(run_dir, 1)
    if damage == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    elif damage == "zero header":
        with open(path, "r+b") as fh:
            fh.write(b"\0" * 512)
    else:
        path.write_bytes(b"")
    assert reason in store.check_shard_file(path)
    for manifest in (True, False):  # with or without the manifest, status works and says why
        if not manifest:
            (run_dir / MANIFEST).unlink()
        code, runs = status_runs(tmp_path / "cache", capsys)
        ex = runs["extract"]
        assert code == 0 and ex["state"] == "partial" and ex["progress"].startswith("4/6")
        assert any(f"1 damaged shard(s) ({path.name} " in w and reason in w for w in ex["why"]), ex["why"]
    assert set(FeatureReader(run_dir).videos()) == set(VIDEOS) - {VIDEOS[2], VIDEOS[3]}


def test_status_verify_reads_every_checksum(run_dir: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache"
    code, runs = status_runs(cache, capsys, "--verify")
    assert code == 0 and runs["extract"]["state"] == "complete"
    flip_chunk(shard(run_dir, 2), group="v00001")
    code, runs = status_runs(cache, capsys)
    assert code == 0 and runs["extract"]["state"] == "complete"  # the cheap checks cannot see inside a chunk
    capsys.readouterr()
    assert cli_run(["status", "--verify", "--cache", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "verified 3 shard(s) and 0 checkpoint(s)" in err and "1 damaged" in err
    code, runs = status_runs(cache, capsys)
    assert runs["extract"]["state"] == "partial" and "fails its checksum" in runs["extract"]["why"][0]


# -- the manifest is cross-checked -------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["frames", "other video's data", "empty list", "not json", "shard list"])
def test_an_edited_manifest_is_rebuilt(run_dir: Path, edit: str):
    truth = store.scan(run_dir)
    path = run_dir / MANIFEST
    data = json.loads(path.read_text())
    if edit == "frames":
        data["videos"][VIDEOS[0]]["frames"] = 10**9
    elif edit == "other video's data":
        data["videos"][VIDEOS[0]] = dict(data["videos"][VIDEOS[3]])
    elif edit == "shard list":
        data["signatures"][data["shards"][0]] = [1, 1]
    if edit == "empty list":
        path.write_text("[]")
    elif edit == "not json":
        path.write_text("{\"videos\": ")
    else:
        path.write_text(json.dumps(data))
    index = load_index(run_dir)
    assert index.videos == truth.videos and index.shards == truth.shards
    rebuilt = json.loads(path.read_text())
    assert rebuilt["videos"] == truth.videos and rebuilt["digest"] == store._digest(rebuilt)
    reader = FeatureReader(run_dir)
    assert reader.num_frames(VIDEOS[0]) == 6
    np.testing.assert_array_equal(reader.read(VIDEOS[0], "pool4"), maps(0, 6)["pool4"])


def test_the_reader_checks_its_index_against_the_shard(run_dir: Path):
    """An index that passed every cheap check but disagrees with a shard's own index (a manifest made before
    the shard was replaced) is refused on first use of that shard, and the manifest is rebuilt."""
    index = load_index(run_dir)
    index.videos[VIDEOS[1]] = {**index.videos[VIDEOS[1]], "group": "v00000"}  # points at VIDEOS[0]'s frames
    with pytest.raises(UserError, match="disagreed with the shard"):
        FeatureReader(run_dir, index).read(VIDEOS[1], "pool4")
    np.testing.assert_array_equal(FeatureReader(run_dir).read(VIDEOS[1], "pool4"), maps(1, 6)["pool4"])


# -- extract re-computes damaged shards, fails cleanly on a full disk ---------------------------------------

TOY = dict(classes=6, groups=3, clips=1, frames=8, size=32)
EXTRACT = ["--size", "32", "--weights", "none", "--workers", "1", "--batch-size", "16"]


@pytest.fixture(scope="module")
def toy_extracted(tmp_path_factory) -> tuple[Path, Path]:
    """A toy dataset (18 videos of 8 frames) and a cache extracted with one video per shard."""
    from actiontk.datasets.toy import ToyConfig, generate_toy

    base = Path(tempfile.mkdtemp(prefix="integrity-"))  # not under pytest's 0700 folder: `nobody` reads it
    os.chmod(base, 0o755)
    root = base / "toy"
    generate_toy(root, ToyConfig(**TOY), workers=1)
    cache = base / "cache"
    assert cli_run(["extract", "toy", "--root", str(root), "--cache", str(cache), *EXTRACT,
                    "--videos-per-shard", "1"]) == 0
    yield root, cache
    shutil.rmtree(base, ignore_errors=True)


def copy_cache(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("lock.*"):
        p.unlink()
    return next((dst / "extract").iterdir())


def test_extract_recomputes_damaged_shards(toy_extracted, tmp_path: Path, capsys):
    root, cache0 = toy_extracted
    cache = tmp_path / "cache"
    run_dir = copy_cache(cache0, cache)
    before = FeatureReader(run_dir)
    rel_a, rel_b = before.videos()[0], before.videos()[5]
    expected = before.read(rel_a, "pool4")
    flip_chunk(store.shard_dir(run_dir) / before.index.videos[rel_a]["shard"])
    with open(store.shard_dir(run_dir) / before.index.videos[rel_b]["shard"], "r+b") as fh:
        fh.write(b"\0" * 64)  # a zeroed header: found by the cheap checks alone
    with pytest.raises(ShardDamaged):
        FeatureReader(run_dir).read(rel_a, "pool4")  # what a training stage meets; it records the shard
    capsys.readouterr()
    assert cli_run(["extract", "toy", "--root", str(root), "--cache", str(cache), *EXTRACT]) == 0
    out = capsys.readouterr()
    assert (out.out + out.err).count("removed the damaged shard") == 2
    assert "2 extracted, 16 cached" in out.out
    after = FeatureReader(run_dir)
    np.testing.assert_array_equal(after.read(rel_a, "pool4"), expected)
    assert after.read(rel_b, "conv5_3").shape[0] == 8
    assert not store.recorded_damage(run_dir) and all(
        store.verify_shard(p) is None for p in store.shard_dir(run_dir).glob("*.h5"))


def run_limited(args: list[str], fsize: int | None = None, as_nobody: bool = False) -> subprocess.CompletedProcess:
    """``actiontk ARGS`` in a subprocess, optionally under a file-size limit (SIGXFSZ ignored, so a write past it
    fails with EFBIG as under `ulimit -f`) or as the user nobody (through setpriv)."""
    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": tempfile.gettempdir()}
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    return subprocess.run([*prefix, sys.executable, "-m", "actiontk", *args], capture_output=True, text=True,
                          timeout=240, preexec_fn=limit, env=env, cwd=REPO)


def assert_one_line_error(result: subprocess.CompletedProcess, start: str) -> None:
    lines = [x for x in result.stderr.splitlines() if x.startswith("actiontk: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(start), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]


def test_file_size_limit_during_extract_is_one_line_and_keeps_finished_shards(toy_extracted, tmp_path: Path):
    """A real EFBIG: shards of one video fit under the limit, the new two-video shard does not."""
    root, cache0 = toy_extracted
    cache = tmp_path / "cache"
    run_dir = copy_cache(cache0, cache)
    shards = sorted(store.shard_dir(run_dir).glob("*.h5"))
    one = max(p.stat().st_size for p in shards)
    for p in shards[:4]:  # four videos to do again
        p.unlink()
    kept = {p.name: p.read_bytes() for p in shards[4:]}
    args = ["extract", "toy", "--root", str(root), "--cache", str(cache), *EXTRACT, "--videos-per-shard", "2"]
    result = run_limited(args, fsize=int(one * 1.5))
    assert_one_line_error(result, "actiontk: error: the file-size limit was reached writing ")
    assert "finished shards are intact" in result.stderr and "run the same command again" in result.stderr
    assert not list(store.shard_dir(run_dir).glob("*.incomplete"))
    assert {p.name: p.read_bytes() for p in store.shard_dir(run_dir).glob("*.h5")} == kept
    resumed = run_limited(args)
    assert resumed.returncode == 0 and "4 extracted, 14 cached" in resumed.stdout, resumed.stderr[-2000:]


def test_full_disk_message_names_the_file(tmp_path: Path):
    """h5py puts the errno of a failed write inside its message; the one-line message still says what and where."""
    h5 = OSError(5, "Driver write request failed (file write failed: time = x, filename = '/c/s.h5.incomplete', "
                    "file descriptor = 6, errno = 28, error message = 'No space left on device')")
    assert storage_problem(h5).startswith("out of disk space writing /c/s.h5.incomplete; finished work is kept")
    assert storage_problem(OSError(27, "File too large")).startswith("the file-size limit was reached (`ulimit -f`)")
    assert "read-only" in storage_problem(OSError(30, "Read-only file system", "/c/x"))
    assert storage_problem(OSError(2, "No such file")) is None
    flush = RuntimeError("Unable to synchronously flush file (file write failed: time = x, filename = '/c/s.h5', "
                         "file descriptor = 11, errno = 27, error message = 'File too large')")
    assert storage_problem(flush).startswith("the file-size limit was reached writing /c/s.h5")
    assert storage_problem(RuntimeError("something else, errno = 28")) is None


def test_read_only_cache_folder_is_one_line(toy_extracted, tmp_path: Path):
    root, cache0 = toy_extracted
    base = Path(tempfile.mkdtemp(prefix="readonly-"))
    try:
        cache = base / "cache"
        (cache / "extract").mkdir(parents=True)
        as_nobody = os.geteuid() == 0  # root writes anywhere: ask as an ordinary user
        if as_nobody and shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: no ordinary user to be refused the write")
        os.chmod(base, 0o777)
        os.chmod(cache, 0o777)
        os.chmod(cache / "extract", stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH
                 | stat.S_IXOTH)
        result = run_limited(["extract", "toy", "--root", str(root), "--cache", str(cache), *EXTRACT],
                             as_nobody=as_nobody)
        assert_one_line_error(result, "actiontk: error: permission denied for ")
        assert str(cache / "extract") in result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_full_disk_while_writing_cubes_is_one_line_and_resumes(toy_extracted, tmp_path: Path, monkeypatch, capsys):
    """train-3d's cube writing meets ENOSPC (as h5py reports it) after training: exit 2 with one line, no
    partial shard left, and the same command then writes the cubes from the checkpoint without training again."""
    _, cache0 = toy_extracted
    cache = tmp_path / "cache"
    copy_cache(cache0, cache)
    fast = ["train-3d", "--cache", str(cache), "--epochs", "1", "--batch-size", "8", "--clip-len", "4",
            "--clip-stride", "4"]
    real_append = store.VideoWriter.append
    calls = {"n": 0}

    def append(self, maps):
        if "cubes" in str(self._shard.tmp):
            calls["n"] += 1
            if calls["n"] > 3:
                raise RuntimeError("Can't write data (file write failed: time = x, filename = "
                                   f"'{self._shard.tmp}', file descriptor = 9, errno = 28, error message = "
                                   "'No space left on device')")
        return real_append(self, maps)

    monkeypatch.setattr(store.VideoWriter, "append", append)
    capsys.readouterr()
    assert cli_run(fast) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("actiontk: error:")]
    assert len(err) == 1 and err[0].startswith("actiontk: error: out of disk space writing "), err
    cubes = next((cache / "cubes").iterdir())
    assert not list(store.shard_dir(cubes).glob("*.incomplete"))
    assert not (cubes / "complete.json").exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert cli_run(fast) == 0
    out = capsys.readouterr()
    assert "already finished its 1 epochs" in out.out + out.err
    assert (cubes / "complete.json").is_file() and len(FeatureReader(cubes).videos()) == 18


def test_damage_met_in_a_dataloader_worker_is_one_line(toy_extracted, tmp_path: Path, capsys):
    """Training with --num-workers 1 reads in a worker process; torch re-raises its error in the main process
    wrapped in the worker's traceback. The command still ends with the one line naming the shard."""
    root, cache0 = toy_extracted
    cache = tmp_path / "cache"
    run_dir = copy_cache(cache0, cache)
    index = FeatureReader(run_dir).index
    for sample in get_dataset("toy", root).load(1).test:  # the main process reads the train videos' statistics
        flip_chunk(store.shard_dir(run_dir) / index.videos[sample.rel]["shard"])
    capsys.readouterr()
    code = cli_run(["train-3d", "--cache", str(cache), "--epochs", "1", "--batch-size", "8", "--clip-len", "4",
                    "--clip-stride", "4", "--num-workers", "1"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("actiontk: error:")]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith("actiontk: error: the shard s") and "is damaged: it fails its checksum" in lines[0]
    assert "Traceback" not in err
