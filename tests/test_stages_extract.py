"""The extract stage end to end on a tiny toy dataset: cache content, reuse, resume, failures, ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from actiontk.cache import features as store
from actiontk.cache.features import FeatureReader
from actiontk.cli import run as cli_run
from actiontk.datasets.toy import ToyConfig, generate_toy
from actiontk.errors import UserError
from actiontk.models import backbones
from actiontk.stages.extract import ExtractConfig, extract
from tests.conftest import torchrun

TINY = ToyConfig(classes=6, groups=3, clips=1, frames=8, size=32)
CFG = dict(size=32, weights="none", batch_size=8, workers=2, videos_per_shard=3)
FAST_ARGS = ["--size", "32", "--weights", "none", "--batch-size", "8", "--videos-per-shard", "2"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "toy"
    generate_toy(out, TINY, workers=1)
    return out


@pytest.fixture(scope="module")
def reference(toy: Path, tmp_path_factory):
    """One uninterrupted extraction of split 1 that other tests compare with."""
    cache = tmp_path_factory.mktemp("refcache")
    result = extract(ExtractConfig(**CFG), cache, dataset="toy", root=toy, split=1, log=lambda m: None)
    return result


def read_all(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    reader = FeatureReader(run_dir)
    out = {rel: {layer: reader.read(rel, layer) for layer in ("pool4", "conv5_3")} for rel in reader.videos()}
    reader.close()
    return out


def assert_same_cache(a: Path, b: Path) -> None:
    fa, fb = read_all(a), read_all(b)
    assert sorted(fa) == sorted(fb)
    for rel in fa:
        for layer in fa[rel]:
            x, y = fa[rel][layer].astype(np.float32), fb[rel][layer].astype(np.float32)
            assert x.shape == y.shape, (rel, layer)
            diff = float(np.abs(x - y).max())
            # float16 storage: the same computation in a different batch composition may round one ulp apart
            assert np.allclose(x, y, rtol=2e-3, atol=1e-3), f"{rel} {layer}: max diff {diff}"


def test_reference_run_layout(reference, toy: Path):
    run = reference.run
    assert reference.extracted == 18 and reference.failed == {} and reference.cached == 0
    assert (run.path / "run.json").is_file() and (run.path / "config.json").is_file()
    assert (run.path / "manifest.json").is_file()
    shards = sorted(p.name for p in store.shard_dir(run.path).iterdir())
    assert len(shards) == 6 and all(n.endswith(".h5") for n in shards)  # 18 videos, 3 per shard
    reader = FeatureReader(run.path)
    assert reader.layers() == {"pool4": (512, 2, 2), "conv5_3": (512, 2, 2)}
    assert all(reader.num_frames(rel) == 8 for rel in reader.videos())
    entry = reader.index.videos[reader.videos()[0]]
    assert entry["backend"] == "pyav" and entry["frame_stride"] == 1


def test_features_equal_backbone_on_decoded_frames(reference, toy: Path):
    from actiontk.video import PyAVReader

    model = backbones.build_backbone("vgg16", ["pool4", "conv5_3"], "none")
    reader = FeatureReader(reference.run.path)
    for rel in reader.videos()[:3]:
        frames = PyAVReader().read(toy / rel)  # (T, H, W, 3) uint8
        x = model.preprocess(32)(torch.from_numpy(frames).permute(0, 3, 1, 2))
        with torch.inference_mode():
            expected = model(x)
        for layer in ("pool4", "conv5_3"):
            got = reader.read(rel, layer).astype(np.float32)
            want = expected[layer].numpy()
            diff = float(np.abs(got - want).max())
            assert np.allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max())), f"max diff {diff}"
        np.testing.assert_array_equal(reader.read(rel, "pool4", 2, 5), reader.read(rel, "pool4")[2:5])


def test_cache_hit_and_other_split_compute_nothing(reference, toy: Path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the backbone must not be built on a cache hit")

    monkeypatch.setattr(backbones, "build_backbone", boom)
    cache = reference.run.path.parents[1]
    messages = []
    for split in (1, 2, 3):
        again = extract(ExtractConfig(**CFG), cache, dataset="toy", root=toy, split=split, log=messages.append)
        assert again.run.path == reference.run.path
        assert (again.extracted, again.cached) == (0, 18)
    assert all(m.startswith("nothing to do") for m in messages)


def test_changed_config_or_video_invalidates(reference, toy: Path, tmp_path: Path):
    cache = tmp_path / "c"
    other = extract(ExtractConfig(**{**CFG, "frame_stride": 2}), cache, dataset="toy", root=toy, split=1,
                    log=lambda m: None)
    assert other.run.key != reference.run.key
    assert all(FeatureReader(other.run.path).num_frames(r) == 4 for r in FeatureReader(other.run.path).videos())
    # touching a video changes its fingerprint: only that one is extracted again
    victim = toy / sorted(FeatureReader(other.run.path).videos())[0]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        again = extract(ExtractConfig(**{**CFG, "frame_stride": 2}), cache, dataset="toy", root=toy, split=1,
                        log=lambda m: None)
        assert (again.extracted, again.cached) == (1, 17)
    finally:
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ACTIONTK_CACHE"] = str(cache)
    env.setdefault("PYTHONPATH", str(Path(__file__).parents[1]))
    return env


def test_sigkill_then_resume_equals_uninterrupted(reference, toy: Path, tmp_path: Path):
    cache = tmp_path / "killed"
    cmd = [sys.executable, "-m", "actiontk", "extract", "toy", "--root", str(toy), "--split", "1", *FAST_ARGS,
           "--workers", "2"]
    proc = subprocess.Popen(cmd, env=cli_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if list(cache.glob("extract/*/shards/*.h5")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the extraction finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = next(cache.glob("extract/*"))
    finished = store.scan(run_dir)
    assert 0 < len(finished.videos) < 18, "kill should land mid-run"
    for rel in finished.videos:  # every finished shard is readable
        assert FeatureReader(run_dir, finished).num_frames(rel) == 8
    # the stage keys runs by config, so the resumed run is the same directory and finishes the rest
    resumed = extract(ExtractConfig(**{**CFG, "videos_per_shard": 2}), cache, dataset="toy", root=toy, split=1,
                      log=lambda m: None)
    assert resumed.run.path == run_dir
    assert resumed.cached == len(finished.videos) and resumed.extracted == 18 - len(finished.videos)
    assert not list(store.shard_dir(run_dir).glob("*.incomplete"))
    assert_same_cache(run_dir, reference.run.path)


@pytest.fixture
def toy_with_corrupt(toy: Path, tmp_path: Path) -> tuple[Path, str]:
    copy = tmp_path / "toy"
    shutil.copytree(toy, copy)
    rel = "MoveUp/v_MoveUp_g02_c01.avi"
    (copy / rel).write_bytes(b"\x00garbage, not a video" * 20)
    return copy, rel


def test_corrupt_video_is_recorded_and_skipped(toy_with_corrupt, tmp_path: Path):
    root, rel = toy_with_corrupt
    cache = tmp_path / "c"
    result = extract(ExtractConfig(**CFG), cache, dataset="toy", root=root, split=1, log=lambda m: None)
    assert list(result.failed) == [rel] and result.extracted == 17
    assert "decord" in result.failed[rel] and "pyav" in result.failed[rel]  # both backends were tried
    idx = store.load_index(result.run.path)
    assert rel in idx.failed and rel not in idx.videos
    again = extract(ExtractConfig(**CFG), cache, dataset="toy", root=root, split=1, log=lambda m: None)
    assert (again.extracted, again.failed_before) == (0, 1)  # not retried unless asked
    retried = extract(ExtractConfig(**CFG), cache, dataset="toy", root=root, split=1, retry_failed=True,
                      log=lambda m: None)
    assert list(retried.failed) == [rel]


def test_strict_stops_and_keeps_finished_shards(toy_with_corrupt, tmp_path: Path, capsys):
    root, rel = toy_with_corrupt
    cache = tmp_path / "c"
    code = cli_run(["extract", "toy", "--root", str(root), *FAST_ARGS, "--cache", str(cache), "--strict",
                    "--workers", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and rel.split("/")[1] in err and "--strict" in err
    run_dir = next(cache.glob("extract/*"))
    assert not list(store.shard_dir(run_dir).glob("*.incomplete"))
    finished = store.scan(run_dir)
    assert rel not in finished.videos and rel not in finished.failed  # the failing shard was not finalized
    assert all(FeatureReader(run_dir, finished).num_frames(r) == 8 for r in finished.videos)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--layers", "fc7"], ["fc7", "pool4"]),
        (["--size", "8"], ["--size 8", "too small"]),
        (["--backbone", "alexnet"], ["alexnet", "vgg16"]),
        (["--frame-stride", "0"], ["--frame-stride"]),
        (["--precision", "fp8"], ["--precision"]),
        (["--weights", "/nonexistent/w.pth"], ["/nonexistent/w.pth"]),
    ],
)
def test_bad_options_are_one_line_errors(toy: Path, tmp_path: Path, capsys, args, words):
    argv = ["extract", "toy", "--root", str(toy), *FAST_ARGS, "--cache", str(tmp_path), *args]
    assert cli_run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("actiontk: error:"), err
    for w in words:
        assert w in err


def test_unknown_dataset_and_missing_root(tmp_path: Path, capsys):
    assert cli_run(["extract", "kinetics", "--root", str(tmp_path), "--cache", str(tmp_path)]) == 2
    assert "ucf101" in capsys.readouterr().err
    assert cli_run(["extract", "toy", "--root", str(tmp_path / "nope"), "--cache", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_refuses_when_the_disk_is_too_small(toy: Path, tmp_path: Path, monkeypatch):
    import actiontk.cache.space as space

    monkeypatch.setattr(space.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError) as err:
        extract(ExtractConfig(**CFG), tmp_path, dataset="toy", root=toy, split=1, log=lambda m: None)
    assert "--frame-stride" in str(err.value) and "--grid" in str(err.value)
    assert not list(tmp_path.glob("extract/*/shards/*.h5"))


def test_disk_full_midway_is_a_clear_error_and_keeps_finished_shards(toy: Path, tmp_path: Path, monkeypatch):
    import errno

    calls = {"n": 0}
    real_append = store.VideoWriter.append

    def append(self, maps):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, maps)

    monkeypatch.setattr(store.VideoWriter, "append", append)
    cfg = ExtractConfig(**{**CFG, "videos_per_shard": 1, "batch_size": 8, "workers": 1})
    with pytest.raises(UserError, match="out of disk space.*finished shards are intact"):
        extract(cfg, tmp_path, dataset="toy", root=toy, split=1, log=lambda m: None)
    run_dir = next(tmp_path.glob("extract/*"))
    assert not list(store.shard_dir(run_dir).glob("*.incomplete"))
    finished = store.scan(run_dir)
    assert 1 <= len(finished.videos) <= 4
    monkeypatch.setattr(store.VideoWriter, "append", real_append)
    resumed = extract(cfg, tmp_path, dataset="toy", root=toy, split=1, log=lambda m: None)
    assert resumed.cached == len(finished.videos) and resumed.cached + resumed.extracted == 18


def test_still_images(tmp_path: Path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40 + k * 8, 48, 3), dtype=np.uint8)).save(root / c / f"{k}.jpg")
    cfg = ExtractConfig(backbone="vgg16", layers=["conv5_3"], size=32, weights="none", batch_size=4, workers=1)
    result = extract(cfg, tmp_path / "c", dataset="images", root=root, split=1, log=lambda m: None)
    assert result.extracted == 6
    reader = FeatureReader(result.run.path)
    model = backbones.build_backbone("vgg16", ["conv5_3"], "none")
    for rel in reader.videos():
        assert reader.num_frames(rel) == 1
        img = np.array(Image.open(root / rel).convert("RGB"))
        x = model.preprocess(32)(torch.from_numpy(img).permute(2, 0, 1)[None])
        with torch.inference_mode():
            want = model(x)["conv5_3"].numpy()
        got = reader.read(rel, "conv5_3").astype(np.float32)
        assert np.allclose(got, want, rtol=2e-3, atol=2e-3 * float(np.abs(want).max()))


def test_two_ranks_under_torchrun_equal_one_process(reference, toy: Path, tmp_path: Path):
    cache = tmp_path / "ddp"
    done = torchrun("-m", "actiontk", "extract", "toy", "--root", str(toy), *FAST_ARGS, "--workers", "1",
                    env=cli_env(cache), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(cache.glob("extract/*"))
    ranks = {name.split("-")[1] for name in store.finished_shards(run_dir)}
    assert ranks == {"r000", "r001"}  # each rank wrote its own shards
    assert_same_cache(run_dir, reference.run.path)
    # rank 0 marks the run after the last barrier, counting every rank's videos
    assert json.loads((run_dir / "complete.json").read_text())["stored"] == 18


def test_status_lists_runs(reference, capsys):
    cache = reference.run.path.parents[1]
    assert cli_run(["status", "--cache", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "18/18 videos" in out and "vgg16" in out


def test_threads_are_restored_and_omp_num_threads_is_respected(toy: Path, tmp_path: Path, monkeypatch):
    """extract may raise torch's intra-op threads for itself, but a caller that trains next (the demo, a script)
    gets its own setting back; with OMP_NUM_THREADS set, extract leaves the count alone."""
    seen: list[int] = []
    build = backbones.build_backbone

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return build(*a, **k)

    monkeypatch.setattr(backbones, "build_backbone", spy)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        extract(ExtractConfig(**{**CFG, "workers": 1}), tmp_path / "a", dataset="toy", root=toy, split=1,
                log=lambda m: None)
        assert seen[-1] == max(1, os.cpu_count() or 1)  # extract's own choice while it runs
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        extract(ExtractConfig(**{**CFG, "workers": 1, "size": 64}), tmp_path / "b", dataset="toy", root=toy, split=1,
                log=lambda m: None)
        assert seen[-1] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_extract_marks_its_run_like_every_stage_and_an_extension_unmarks_it(reference, toy: Path, tmp_path: Path):
    from actiontk.cache.features import record_damage
    from actiontk.cache.lifecycle import COMPLETE, completion, is_marked
    from actiontk.cache.runs import list_runs
    from actiontk.cache.targets import TARGETS, record_targets
    from actiontk.stages import registry

    summary = completion(reference.run)
    assert (summary["stored"], summary["failed"], summary["videos"]) == (18, 0, 18) and "1" in summary["splits"]
    cache = tmp_path / "c"
    shutil.copytree(reference.run.path.parents[1], cache)
    run = list_runs(cache, registry.EXTRACT)[0]
    assert registry.is_complete(run)
    targets = json.loads((run.path / TARGETS).read_text())

    # asked for a split whose video is not stored (an invocation killed early): marked, yet not complete
    record_targets(run.path, 3, ["never/stored.avi"])
    assert is_marked(run) and not registry.is_complete(run)
    # the next invocation takes the mark off first and leaves it off while a target is missing
    again = extract(ExtractConfig(**CFG), cache, dataset="toy", root=toy, split=2, log=lambda m: None)
    assert again.run.path == run.path and again.extracted == 0
    assert not is_marked(run) and not registry.is_complete(run)

    # all targets stored but no complete.json (a run made before extract marked its runs): complete, and the
    # next invocation writes the mark with every split the run serves
    (run.path / TARGETS).write_text(json.dumps({"1": targets["1"], "2": targets["1"]}))
    assert not is_marked(run) and registry.is_complete(run)
    extract(ExtractConfig(**CFG), cache, dataset="toy", root=toy, split=1, log=lambda m: None)
    assert completion(run)["splits"] == ["1", "2"] and registry.is_complete(run)

    # a shard found damaged after the mark (a reader, `status --verify`): not complete until extract repairs it
    record_damage(run.path, store.finished_shards(run.path)[0], "is truncated")
    assert (run.path / COMPLETE).is_file() and not registry.is_complete(run)
