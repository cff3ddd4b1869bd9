"""``actiontk predict`` and ``actiontk.load``: new inputs go through exactly what training computed.

One small cache is built once for the module with the real stage functions (toy videos -> extract -> train-3d ->
train-lstm; toy MPII -> extract -> train-gap, all tiny), then the toy test videos and images are predicted as
new files and compared with the runs' stored test predictions.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from actiontk.cache.runs import list_runs
from actiontk.cli import run as cli
from actiontk.errors import UserError
from tests.conftest import train_tiny_video

CLIP = {"clip_len": 6, "clip_stride": 4}
# one torch thread: the tiny models gain nothing from more, and a busy machine makes every parallel region wait
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> dict:
    import torch

    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.extract import ExtractConfig, extract
    from actiontk.stages.train_gap import TrainGAPConfig, train_gap

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("predict")
    quiet = lambda m: None  # noqa: E731
    toy = ToyConfig(seed=0, classes=6, groups=3, clips=1, frames=10, size=32)
    generate_toy(work / "toy", toy, workers=1)
    generate_toy_mpii(work / "toy-mpii", ToyMPIIConfig(classes=2, per_class=3, size=64))
    root = work / "cache"
    try:
        extract(ExtractConfig(backbone="vgg16", layers=["pool4", "conv5_3"], size=32, weights="none", workers=1),
                root, dataset="toy", root=work / "toy", split=1, log=quiet)
        _, lstm = train_tiny_video(root, CLIP, quiet)
        ex = extract(ExtractConfig(backbone="resnet18", layers=["layer4"], size=64, weights="none", workers=1),
                     root, dataset="toy-mpii", root=work / "toy-mpii", split=1, log=quiet)
        cfgg, tg = resolve_stage_configs("toy-mpii", "train-gap", TrainGAPConfig, None,
                                         {"epochs": 1, "width": 16, "pose_width": 8, "backbone": "resnet18"})
        gap = train_gap(cfgg, tg, root, dataset="toy-mpii", features=ex.run, log=quiet).run
    finally:
        torch.set_num_threads(threads)
    return {"work": work, "root": root, "lstm": lstm, "gap": gap, "toy": toy}


@pytest.fixture(scope="module")
def video_predictor(cache):
    """One predictor of the video run for the tests that need no CLI (building one costs seconds)."""
    import actiontk

    with actiontk.load(cache["lstm"].path, cache=cache["root"]) as predictor:
        yield predictor


def _paths(run) -> dict[str, Path]:
    """rel -> file of the dataset a run was trained on (through its extract run's recorded inputs)."""
    from actiontk.datasets import get_dataset
    from actiontk.predict.rebuild import feature_spec, run_by_key

    def extract_of(r):
        up = r.info["upstream"]
        if "extract" in up:
            return run_by_key(r.path.parent.parent, "extract", up["extract"], needed_by=r)
        key = up.get("cubes") or up.get("train-3d")
        stage = "cubes" if "cubes" in up else "train-3d"
        return extract_of(run_by_key(r.path.parent.parent, stage, key, needed_by=r))

    inputs = feature_spec(extract_of(run)).run.info["inputs"]
    return {s.rel: s.path for s in get_dataset(inputs["dataset"], inputs["root"]).load(1).videos()}


@pytest.fixture(scope="module")
def h264(cache) -> Path:
    """A real H.264 .mp4 made with PyAV from the toy generator's frames (an even size, 12 frames)."""
    import av

    from actiontk.datasets.toy import ToyConfig, render_clip
    from actiontk.video.writer import write_video

    if "libx264" not in av.codecs_available:
        pytest.skip("this FFmpeg has no H.264 encoder (libx264)")
    frames = render_clip(ToyConfig(seed=1, classes=6, groups=3, clips=1, frames=12, size=48), "MoveLeft", 1, 1)
    path = cache["work"] / "clip.mp4"
    write_video(path, list(frames), fps=12, codec="libx264")
    return path


@pytest.mark.slow
def test_predicting_the_test_videos_gives_the_stored_predictions(cache, video_predictor):
    """The pin of "identical to training by construction": same labels, same scores within float tolerance."""
    pred = np.load(cache["lstm"].path / "predictions.npz")
    paths = _paths(cache["lstm"])
    predictor = video_predictor
    if True:
        assert predictor.kind == "video" and predictor.classes == [str(c) for c in pred["classes"]]
        for v, rel in enumerate(pred["video_rel"]):
            r = predictor.predict(paths[str(rel)])
            mine = pred["clip_video"] == v
            assert r.label_vote == pred["video_vote"][v] and r.label_mean == pred["video_mean"][v], rel
            np.testing.assert_allclose(r.scores, pred["video_scores"][v], atol=1e-4)
            np.testing.assert_allclose(r.clip_scores, pred["clip_scores"][mine], atol=1e-4)
            assert (r.clip_labels == pred["clip_pred"][mine]).all()
            assert (r.clip_starts == pred["clip_start"][mine]).all()
            L = CLIP["clip_len"]
            assert r.step_scores.shape == (r.clips, L, len(r.classes)) and r.attention.shape[:2] == (r.clips, L)
            assert r.frame_attention.shape[0] == r.frames == 10
            np.testing.assert_allclose(r.frame_attention.reshape(r.frames, -1).sum(1), 1, atol=1e-4)
    # frames handed over as an array give the same as the file
    from actiontk.video.readers import get_reader

    rel = str(pred["video_rel"][0])
    r = predictor.predict(get_reader("pyav").read(paths[rel]))
    np.testing.assert_allclose(r.scores, pred["video_scores"][0], atol=1e-4)


@pytest.mark.slow
def test_a_long_video_streams_through_the_spill_buffer(cache, video_predictor, monkeypatch):
    """Maps beyond the in-memory budget go to a temporary file; the result does not change."""
    from actiontk.video.readers import get_reader

    paths = _paths(cache["lstm"])
    frames = get_reader("pyav").read(next(iter(paths.values())))
    long = np.concatenate([frames] * 8)  # 80 frames: more than one 64-frame chunk of the 3D convnet
    plain = video_predictor.predict(long)
    monkeypatch.setattr(video_predictor, "memory_bytes", 4096)
    tight = video_predictor.predict(long)
    np.testing.assert_allclose(plain.clip_scores, tight.clip_scores, atol=1e-6)
    assert plain.frames == 80 and plain.clips == len(range(0, 80 - 6 + 1, 4))


@pytest.mark.slow
def test_image_run_matches_its_stored_predictions_and_draws_a_png(cache, tmp_path, capsys):
    import actiontk

    pred = np.load(cache["gap"].path / "predictions.npz")
    paths = _paths(cache["gap"])
    with actiontk.load(cache=cache["root"], kind="image") as predictor:
        assert predictor.run.path == cache["gap"].path
        for i, rel in enumerate(pred["image_rel"]):
            r = predictor.predict(paths[str(rel)])
            np.testing.assert_allclose(r.scores, pred["image_scores"][i], atol=1e-4)
            assert r.label == int(pred["image_scores"][i].argmax()) and r.attention.shape == r.topdown.shape
    code = cli(["predict", str(paths[str(pred["image_rel"][0])]), "--cache", str(cache["root"]), "--overlay",
                "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    from PIL import Image

    (png,) = (tmp_path / "out").glob("*.overlay.png")
    with Image.open(png) as im:
        im.load()
        assert im.size == (64, 64)
    assert (tmp_path / "out" / "index.html").is_file()


def test_overlay_of_an_h264_mp4(cache, h264, tmp_path, capsys):
    import av

    out = tmp_path / "out"
    code = cli(["predict", str(cache["lstm"].path), str(h264), "--cache", str(cache["root"]), "--overlay",
                "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"using {cache['lstm'].short}" in captured.err
    (line,) = (out / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["frames"] == 12 and record["clips"] == 2 and len(record["top_k"]) == 5
    (mp4,) = out.glob("*.overlay.mp4")

    def frames(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]

    given, drawn = frames(h264), frames(mp4)
    assert len(drawn) == len(given) == 12
    assert drawn[0].shape == given[0].shape == (48, 48, 3)
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 5 for a, b in zip(given, drawn, strict=True))
    html = (out / "index.html").read_text()
    assert "data:video/mp4;base64," in html and "default-src 'none'" in html


def test_a_corrupt_file_among_good_ones(cache, tmp_path, capsys):
    paths = list(_paths(cache["lstm"]).values())
    folder = tmp_path / "in"
    folder.mkdir()
    for p in paths[:2]:
        shutil.copy(p, folder / p.name)
    evil = folder / "<img src=x onerror=alert(1)>.mp4"
    evil.write_bytes(paths[0].read_bytes()[:2000])  # a truncated file: no decoder can read it
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    code = cli(["predict", str(folder), "--cache", str(cache["root"]), "--json", "--overlay", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3
    failed = [r for r in records if "error" in r]
    assert len(failed) == 1 and failed[0]["input"] == str(evil) and "cannot decode" in failed[0]["error"]
    assert sum(1 for r in records if "top_k" in r) == 2
    assert "skipped" in captured.err and "notes.txt" in captured.err and "1 of 3 input(s) failed" in captured.err
    html = (out / "index.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.mp4" in html
    assert len(list(out.glob("*.overlay.mp4"))) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in out.iterdir())


def test_nothing_usable_and_bad_usage_are_one_line_errors(cache, tmp_path, capsys):
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    for args, what in (([str(empty)], "nothing to predict"), ([str(tmp_path / "missing.mp4")], "no such file"),
                       ([], "no input given"), (["train-lstm/ffff0000", str(empty)], "no train-lstm or train-gap run"),
                       ([str(cache["gap"].path), *map(str, list(_paths(cache["lstm"]).values())[:1])],
                        "nothing to predict"),
                       ([*map(str, list(_paths(cache["lstm"]).values())[:1]), "--out", str(empty / "a.txt")],
                        "is a file (give a folder for the predictions and overlays)")):
        code = cli(["predict", *args, "--cache", str(cache["root"])])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert what in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_cache_features_writes_into_the_extract_run_and_reuses_them(cache, video_predictor, tmp_path):
    from actiontk.cache import features as store
    from actiontk.stages import registry

    video = tmp_path / "mine.avi"
    shutil.copy(next(iter(_paths(cache["lstm"]).values())), video)
    predictor = video_predictor
    extract_run = predictor.spec.run
    before = set(store.load_index(extract_run.path).videos)
    plain = predictor.predict(video)
    assert set(store.load_index(extract_run.path).videos) == before  # nothing written unless asked
    first = predictor.predict(video, cache_features=True)
    after = store.load_index(extract_run.path).videos
    (rel,) = set(after) - before
    assert rel.startswith("predict/") and after[rel]["frames"] == 10
    second = predictor.predict(video, cache_features=True)
    assert not first.cached_features and second.cached_features
    np.testing.assert_allclose(second.scores, plain.scores, atol=1e-6)
    assert registry.is_complete(extract_run)  # the run's own videos are untouched


def test_imagenet_weights_unavailable_is_one_line_naming_the_fix(cache, tmp_path, capsys, monkeypatch):
    """A run whose backbone used ImageNet weights, on a machine that cannot download them."""
    import urllib.error

    from torchvision.models._api import WeightsEnum

    copy = tmp_path / "cache"
    shutil.copytree(cache["root"], copy, ignore=shutil.ignore_patterns("lock.*"))
    for run_json in (copy / "extract").glob("*/run.json"):
        info = json.loads(run_json.read_text())
        if info["inputs"]["dataset"] == "toy":
            info["config"]["backbone"]["weights_id"] = "VGG16_Weights.IMAGENET1K_V1"
            from actiontk.models.backbones import backbone_identity

            info["config"]["backbone"] = backbone_identity("vgg16", ["pool4", "conv5_3"], "imagenet", 32)
            run_json.write_text(json.dumps(info))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "hub"))
    video = next(iter(_paths(cache["lstm"]).values()))
    code = cli(["predict", "train-lstm/" + cache["lstm"].path.name, str(video), "--cache", str(copy)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "ImageNet weights of vgg16" in err and "hub" in err and "checkpoints" in err, err


def test_the_docs_api_example_runs(cache, h264, tmp_path, monkeypatch, capsys):
    doc = Path(__file__).resolve().parents[1] / "docs" / "predict.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, "docs/predict.md has no python example"
    shutil.copy(h264, tmp_path / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACTIONTK_CACHE", str(cache["root"]))
    exec(compile(blocks[0], str(doc), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert any(name in out for name in ("MoveLeft", "MoveRight", "MoveUp", "MoveDown")), out


def test_the_demo_step_predicts_held_out_videos(cache):
    from actiontk.commands.pipeline import predict_held_out

    command, results = predict_held_out(cache["work"] / "toy", cache["root"], cache["lstm"].path, count=2)
    assert command.startswith(f"actiontk predict train-lstm/{cache['lstm'].path.name} ")
    assert len(results) == 2 and all(r.clips >= 1 and r.source in command for r in results)


def test_a_run_is_named_by_folder_or_stage_and_key_prefix(cache):
    from actiontk.predict.api import find_run

    lstm = cache["lstm"]
    assert find_run(cache["root"], str(lstm.path)).path == lstm.path
    assert find_run(cache["root"], f"{lstm.stage}/{lstm.key[:8]}").path == lstm.path
    assert find_run(cache["root"], lstm.key[:8]).path == lstm.path
    extract_run = next(r for r in list_runs(cache["root"], "extract"))
    with pytest.raises(UserError, match="is a run of extract; predict applies"):
        find_run(cache["root"], str(extract_run.path))
