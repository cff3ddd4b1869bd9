"""train-3d and train-lstm end to end on a tiny toy cache: files, upstream selection, resume, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actiontk.cache.features import FeatureReader
from actiontk.cli import run as cli_run
from actiontk.config import load_preset
from actiontk.datasets.toy import ToyConfig, generate_toy
from actiontk.stages.extract import ExtractConfig, extract
from actiontk.stages.train_lstm import vote

TINY = ToyConfig(classes=6, groups=3, clips=1, frames=12, size=32)
FAST_3D = ["--epochs", "2", "--batch-size", "4", "--clip-len", "6", "--clip-stride", "3"]
FAST_LSTM = ["--epochs", "2", "--batch-size", "4", "--clip-len", "6", "--clip-stride", "3", "--last", "3",
             "--hidden", "16", "--layers", "2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A toy dataset extracted at 32 px (2x2 maps) into a fresh cache."""
    root = tmp_path_factory.mktemp("toy") / "toy"
    generate_toy(root, TINY, workers=1)
    cache = tmp_path_factory.mktemp("cache")
    extract(ExtractConfig(size=32, weights="none", batch_size=16, workers=1), cache, dataset="toy", root=root, split=1,
            log=lambda m: None)
    return cache


@pytest.fixture(scope="module")
def trained(cache: Path):
    """train-3d then train-lstm, each with no upstream named: they pick the newest complete runs."""
    assert cli_run(["train-3d", "--cache", str(cache), *FAST_3D]) == 0
    assert cli_run(["train-lstm", "--fusion", "late", "--cache", str(cache), *FAST_LSTM]) == 0
    return cache


def only_run(cache: Path, stage: str) -> Path:
    runs = [p for p in (cache / stage).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_3d_writes_checkpoint_metrics_and_cubes(trained: Path):
    run = only_run(trained, "train-3d")
    for name in ("run.json", "checkpoint.pt", "metrics.jsonl", "complete.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted((x["epoch"], x["split"]) for x in lines) == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    cubes = FeatureReader(only_run(trained, "cubes"))
    assert len(cubes.videos()) == 18  # every video of split 1, train and test
    channels = load_preset("toy")[0]["train-3d"]["channels"]  # the toy preset's width (paper: 256)
    assert cubes.layers() == {"pool4": (channels, 2, 2), "conv5_3": (channels, 2, 2)}
    rel = cubes.videos()[0]
    assert cubes.read(rel, "pool4").shape == (12, channels, 2, 2)
    assert np.isfinite(cubes.read(rel, "conv5_3").astype(np.float32)).all()


def test_train_lstm_writes_predictions(trained: Path):
    run = only_run(trained, "train-lstm")
    assert json.loads((run / "run.json").read_text())["config"]["model"]["fusion"] == "late"
    p = np.load(run / "predictions.npz")
    n_videos, k = len(p["video_rel"]), len(p["classes"])
    assert n_videos == 6 and k == 6  # split 1 tests one group of each class
    assert p["clip_scores"].shape == (len(p["clip_video"]), k)
    np.testing.assert_allclose(p["clip_scores"].sum(1), 1.0, rtol=1e-4)
    assert len(p["clip_video"]) == 6 * 3  # starts 0, 3, 6 in 12 frames with L = 6
    assert p["clip_pred"].shape == p["clip_video"].shape  # the paper's hard clip votes
    for v in range(n_videos):
        mine = p["clip_video"] == v
        assert p["video_vote"][v] == vote(p["clip_pred"][mine], p["clip_scores"][mine], k)
        assert p["video_mean"][v] == p["clip_scores"][mine].mean(0).argmax()
    a = np.load(run / "attention_samples.npz")
    assert a["attention"].shape[1:] == (6, 2, 2)
    np.testing.assert_allclose(a["attention"].reshape(len(a["rel"]), 6, -1).sum(-1), 1.0, rtol=1e-3)
    att = FeatureReader(run / "attention")
    assert len(att.videos()) == 18 and att.read(att.videos()[0], "attention").shape == (12, 1, 2, 2)
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["video_accuracy_vote"] <= 1.0


def test_a_trained_run_is_rebuilt_from_its_saved_config(trained: Path):
    """build_model(run's saved config["model"], the upstream's shapes, classes) takes the checkpoint as saved.
    (Before the tests that add runs: only_run finds the fixture's.)"""
    import torch

    from actiontk.stages import train_3d, train_lstm

    extract_shapes = FeatureReader(only_run(trained, "extract")).layers()
    cube_shapes = FeatureReader(only_run(trained, "cubes")).layers()
    for module, run_dir, shapes in ((train_3d, only_run(trained, "train-3d"), extract_shapes),
                                    (train_lstm, only_run(trained, "train-lstm"), cube_shapes)):
        saved = json.loads((run_dir / "run.json").read_text())["config"]
        levels = saved.get("layers") or saved["model"]["levels"] or list(shapes)
        model = module.build_model(saved["model"], {lv: shapes[lv] for lv in levels}, 6)
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
        model.load_state_dict(state)  # strict: same modules, same shapes
        assert sum(p.numel() for p in model.parameters()) == sum(
            v.numel() for k, v in state.items() if not k.endswith(("input_mean", "input_std")))


def test_rerun_is_a_noop_and_the_alternation_runs(trained: Path, capsys):
    before = (only_run(trained, "train-lstm") / "checkpoint.pt").stat().st_mtime_ns
    assert cli_run(["train-lstm", "--fusion", "late", "--cache", str(trained), *FAST_LSTM]) == 0
    assert (only_run(trained, "train-lstm") / "checkpoint.pt").stat().st_mtime_ns == before
    # second round of the paper's alternation: train-3d regularized by the LSTM's attention
    lstm = only_run(trained, "train-lstm")
    assert cli_run(["train-3d", "--cache", str(trained), *FAST_3D, "--attention-from", str(lstm)]) == 0
    runs = [p for p in (trained / "train-3d").iterdir() if p.is_dir()]
    assert len(runs) == 2  # a new run: its upstream includes the attention run
    lines = [json.loads(x) for p in runs for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert any("train_att_reg" in x or "att_reg" in x for x in lines)
    # the warm-started variant: starts from the first round's weights (its own run, keyed by that start)
    first = next(p for p in runs if "attention" not in json.loads((p / "run.json").read_text())["upstream"])
    capsys.readouterr()
    assert cli_run(["train-3d", "--cache", str(trained), *FAST_3D, "--attention-from", str(lstm),
                    "--init-from", str(first)]) == 0
    assert f"starting from the weights of train-3d/{first.name[:16]}" in " ".join(capsys.readouterr().err.split())
    warm = [json.loads((p / "run.json").read_text()) for p in (trained / "train-3d").iterdir() if p.is_dir()]
    first_key = json.loads((first / "run.json").read_text())["key"]
    assert sum(1 for w in warm if w["upstream"].get("init") == first_key) == 1
    # run again: found complete before any model is built or weights are read
    assert cli_run(["train-3d", "--cache", str(trained), *FAST_3D, "--attention-from", str(lstm),
                    "--init-from", str(first)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "already complete" in err and "starting from the weights" not in err
    # weights of another width do not fit: one line, exit 2
    assert cli_run(["train-3d", "--cache", str(trained), *FAST_3D, "--init-from", str(first), "--seed", "3",
                    "--temporal-kernel", "1"]) == 2
    assert "do not fit this model" in capsys.readouterr().err


def test_ablations_single_level_2d_convnet_and_maps_straight_to_the_lstm(cache: Path):
    # Table 2/3 rows: one level only, a 2D convnet (temporal kernel 1), and the LSTM on the maps themselves
    assert cli_run(["train-3d", "--cache", str(cache), *FAST_3D, "--levels", "pool4", "--temporal-kernel", "1"]) == 0
    runs = [p for p in (cache / "train-3d").iterdir() if p.is_dir()
            and json.loads((p / "run.json").read_text())["config"]["model"]["temporal_kernel"] == 1]
    assert len(runs) == 1
    cubes_dirs = [p for p in (cache / "cubes").iterdir() if p.is_dir()]
    assert any(list(FeatureReader(p).layers()) == ["pool4"] for p in cubes_dirs)
    extract_run = next(p for p in (cache / "extract").iterdir() if p.is_dir())
    assert cli_run(["train-lstm", "--cache", str(cache), *FAST_LSTM, "--features", str(extract_run),
                    "--levels", "conv5_3"]) == 0
    lstm = [json.loads((p / "run.json").read_text()) for p in (cache / "train-lstm").iterdir() if p.is_dir()]
    direct = [r for r in lstm if "extract" in r["upstream"]]
    assert len(direct) == 1 and direct[0]["config"]["model"]["levels"] == ["conv5_3"]
    assert cli_run(["train-3d", "--cache", str(cache), *FAST_3D, "--levels", "fc7"]) == 2
    assert cli_run(["train-3d", "--cache", str(cache), *FAST_3D, "--temporal-kernel", "2"]) == 2


def test_run_alternates_by_default(tmp_path: Path):
    """`run` trains the regularized 3D convnet: train-3d → train-lstm → train-3d with its attention → train-lstm."""
    from actiontk.stages.pipeline import run_video

    root = tmp_path / "toy"
    generate_toy(root, TINY, workers=1)
    small = {"extract": {"size": 32, "workers": 1},
             "train-3d": {"epochs": 1, "batch_size": 4, "clip_len": 6, "clip_stride": 3, "channels": 8, "hidden": 8},
             "train-lstm": {"epochs": 1, "batch_size": 4, "clip_len": 6, "clip_stride": 3, "last": 3, "hidden": 16,
                            "layers": 2}}
    out = run_video("toy", root, 1, tmp_path / "cache", overrides=small, formats=(), log=lambda m: None)
    assert [s.stage for s in out.stages] == ["extract", "train-3d", "train-lstm (attention for round 1)",
                                             "train-3d (round 1, attention-regularized)", "train-lstm", "evaluate"]
    infos = {p.name: json.loads((p / "run.json").read_text()) for p in (tmp_path / "cache" / "train-3d").iterdir()}
    regularized = [i for i in infos.values() if "attention" in i["upstream"]]
    assert len(infos) == 2 and len(regularized) == 1
    first = next(i for i in infos.values() if "attention" not in i["upstream"])
    assert regularized[0]["upstream"]["init"] == first["key"]  # warm start: continues round 0's convnet
    reg_dir = next(p for p in (tmp_path / "cache" / "train-3d").iterdir() if "attention" in infos[p.name]["upstream"])
    lines = [json.loads(x) for x in (reg_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(x.get("att_reg", 0) > 0 for x in lines if x["split"] == "train")
    # the final LSTM reads the regularized round's cubes; evaluate's provenance reaches both rounds
    final = out.stages[-2].run
    from actiontk.stages.evaluate import provenance, run_index
    from actiontk.cache.runs import Run

    chain = provenance(Run(final, json.loads((final / "run.json").read_text())), run_index(tmp_path / "cache"))
    assert sum(1 for c in chain if c.get("stage") == "train-3d") == 2
    # attention_rounds = 0: the unregularized 3D convnet only (cached: nothing new is trained)
    zero = run_video("toy", root, 1, tmp_path / "cache", overrides={**small, "run": {"attention_rounds": 0}},
                     formats=(), log=lambda m: None)
    assert [s.stage for s in zero.stages] == ["extract", "train-3d", "train-lstm", "evaluate"]
    assert len(list((tmp_path / "cache" / "train-3d").iterdir())) == 2


def test_vote_rule():
    scores = np.array([[0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.2, 0.3, 0.5]])
    assert vote(np.array([0, 1, 2]), scores, 3) == 1  # three-way tie: highest mean score among the tied
    assert vote(np.array([2, 2, 0]), scores, 3) == 2


def test_no_upstream_is_a_clear_error(tmp_path: Path, capsys):
    assert cli_run(["train-lstm", "--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no complete cubes run" in err and "actiontk train-3d" in err
    assert cli_run(["train-3d", "--cache", str(tmp_path)]) == 2
    assert "actiontk extract" in capsys.readouterr().err


def test_bad_fusion(cache: Path, capsys):
    assert cli_run(["train-lstm", "--fusion", "middle", "--cache", str(cache)]) == 2
    assert "--fusion must be early or late" in capsys.readouterr().err


def test_preset_follows_the_upstream_run_the_stage_reads(tmp_path: Path):
    """Without --dataset a training command takes its preset from the run it will read (the newest complete
    one, or the one named), not from a newer run that is still partial."""
    import json
    import time

    from actiontk.cache.runs import RUN_FILE, open_run, release
    from actiontk.commands.train import _dataset_for_preset
    from actiontk.cache.lifecycle import is_complete, mark_complete

    older = open_run(tmp_path, "cubes", 1, {"n": 1}, inputs={"dataset": "toy", "split": 1})
    mark_complete(older, {})
    newer = open_run(tmp_path, "cubes", 1, {"n": 2}, inputs={"dataset": "hmdb51", "split": 1})
    info = json.loads((newer.path / RUN_FILE).read_text())
    info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + 60))
    (newer.path / RUN_FILE).write_text(json.dumps(info))
    for run in (older, newer):
        release(run.path)

    pick = dict(split=None, complete=is_complete)
    assert _dataset_for_preset(tmp_path, None, "cubes", run=None, **pick) == "toy"  # hmdb51's run is partial
    mark_complete(newer, {})
    assert _dataset_for_preset(tmp_path, None, "cubes", run=None, **pick) == "hmdb51"
    assert _dataset_for_preset(tmp_path, None, "cubes", run=str(older.path), **pick) == "toy"
    assert _dataset_for_preset(tmp_path, "UCF101", "cubes", run=None, **pick) == "ucf101"
    assert _dataset_for_preset(tmp_path / "empty", None, "cubes", run=None, **pick) == "toy"


CUBES_SCRIPT = """
import os, sys, time
from pathlib import Path
import torch
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from actiontk.cache.features import FeatureReader
from actiontk.cache.runs import Run, RUN_FILE
from actiontk.models.conv3d import Conv3DConfig, MultiLevel3D
from actiontk.stages.train_3d import write_cubes
import json

out, cache, train_dir = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.set_num_threads(1)
torch.manual_seed(0)
model = MultiLevel3D(Conv3DConfig(channels=4, hidden=4), {{"pool4": 3}}, 2)
reader = FeatureReader(out / "features")
videos = [(f"v{{i}}.avi", i % 2) for i in range(5)]
train = Run(train_dir, json.loads((train_dir / RUN_FILE).read_text()))
if rank == 1:
    time.sleep(1.0)  # the slow rank reads the index after the fast one has written to it (without the barrier)
for _ in range(2):  # the second call finds every video done on both ranks and must not hang or re-mark
    cubes = write_cubes(cache, train_run=train, model=model, reader=reader, videos=videos,
                        device=torch.device("cpu"), is_main=rank == 0, log=lambda m: None).run
dist.barrier()
dist.destroy_process_group()
"""


def test_write_cubes_under_two_ranks_covers_every_video(tmp_path: Path):
    from actiontk.cache.runs import open_run, release
    from actiontk.stages.train_3d import cubes_run_of
    from actiontk.cache.lifecycle import is_complete
    from tests.conftest import torchrun
    from tests.test_toy_pipeline_accuracy import random_cache

    random_cache(tmp_path / "features", {f"v{i}.avi": 4 + i for i in range(5)})
    cache = tmp_path / "cache"
    train = open_run(tmp_path, "train", 1, {"x": 1}, inputs={"dataset": "toy", "split": 1})
    release(train.path)
    (tmp_path / "cubes.py").write_text(CUBES_SCRIPT.format(repo=str(Path(__file__).resolve().parents[1])))
    result = torchrun(str(tmp_path / "cubes.py"), str(tmp_path), str(cache), str(train.path))
    assert result.returncode == 0, result.stderr[-3000:]
    cubes = cubes_run_of(cache, train)
    assert is_complete(cubes)
    reader = FeatureReader(cubes.path)
    assert sorted(reader.index.videos) == [f"v{i}.avi" for i in range(5)]
    assert [reader.read(f"v{i}.avi", "pool4").shape for i in range(5)] == [(4 + i, 4, 2, 2) for i in range(5)]

