"""``actiontk demo`` at a reduced size end to end, its reuse of every cached stage, and ``actiontk run``."""

from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.cli import run as cli
from actiontk.commands.pipeline import DemoProfile, run_demo
from actiontk.errors import UserError
from actiontk.stages.pipeline import VIDEO_STAGES, parse_stages

TINY = DemoProfile(
    toy=dict(classes=6, groups=3, clips=1, frames=10, size=32),
    toy_mpii=dict(classes=2, per_class=3, size=64),
    overrides={"extract": {"size": 32, "workers": 1},
               "train-3d": {"epochs": 1, "clip_len": 6, "clip_stride": 4, "channels": 8, "hidden": 8},
               "train-lstm": {"epochs": 1, "clip_len": 6, "clip_stride": 4, "last": 3, "hidden": 8, "layers": 2}},
    image_overrides={"extract": {"size": 64, "workers": 1},
                     "train-gap": {"epochs": 1, "width": 16, "pose_width": 8}},
)


FIT_THREADS: list[int] = []  # torch's thread count each time a training stage fitted, in the first demo run


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> tuple[Path, list]:
    import torch

    from actiontk.train.engine import Trainer

    work = tmp_path_factory.mktemp("demo")
    fit = Trainer.fit

    def spy(self, *a, **k):
        FIT_THREADS.append(torch.get_num_threads())
        return fit(self, *a, **k)

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("OMP_NUM_THREADS", raising=False)
        mp.setattr(Trainer, "fit", spy)
        results = run_demo(work, profile=TINY)
    assert torch.get_num_threads() == before  # the demo gives the caller its setting back
    return work, results


def test_demo_trains_on_one_thread(demo_dir):
    # train-3d, train-lstm (its attention), train-3d regularized, train-lstm, train-gap
    assert FIT_THREADS == [1, 1, 1, 1, 1], FIT_THREADS


def test_demo_runs_every_stage_and_writes_its_files(demo_dir):
    work, results = demo_dir
    video, image = results
    assert [s.stage for s in video.stages] == ["generate", "extract", "train-3d", "train-lstm (attention for round 1)",
                                               "train-3d (round 1, attention-regularized)", "train-lstm", "evaluate"]
    assert [s.stage for s in image.stages] == ["generate", "extract (images)", "train-gap", "evaluate"]
    cache = work / "cache"
    for stage in ("extract", "train-3d", "cubes", "train-lstm", "train-gap"):
        runs = [p for p in (cache / stage).iterdir() if p.is_dir()]
        assert runs, stage
    lstm = video.stages[5].run
    gap = image.stages[2].run
    for run in (lstm, gap):
        for name in ("predictions.npz", "attention_samples.npz", "metrics.jsonl", "checkpoint.pt", "complete.json"):
            assert (run / name).is_file(), (run, name)
    evaluated = [p for p in (cache / "evaluate").iterdir() if (p / "metrics.json").is_file()]
    assert len(evaluated) == 2 and all((p / "complete.json").is_file() for p in evaluated)  # runs of their own
    assert video.report.parent.parent in evaluated and image.report.parent.parent in evaluated
    assert video.report is not None and video.report.is_file() and video.report.suffix == ".html"
    assert image.report is not None and image.report.is_file()
    assert "top1_vote" in video.summary and "mAP" in image.summary
    assert (work / "toy" / "ucfTrainTestlist").is_dir() and (work / "toy-mpii" / "images").is_dir()


def test_second_demo_recomputes_nothing(demo_dir, monkeypatch):
    work, first = demo_dir

    def boom(*a, **k):
        raise AssertionError("a cached stage was computed again")

    # extraction would build a backbone, training would fit, cube writing would run the 3D convnet
    monkeypatch.setattr("actiontk.models.backbones.build_backbone", boom)
    monkeypatch.setattr("actiontk.train.engine.Trainer.fit", boom)
    monkeypatch.setattr("actiontk.stages.train_3d.write_cubes", boom)
    monkeypatch.setattr("actiontk.report.build", boom)  # unchanged metrics: the reports are not rendered again
    again = run_demo(work, profile=TINY)
    assert [s.run for s in again[0].stages] == [s.run for s in first[0].stages]
    assert [s.run for s in again[1].stages] == [s.run for s in first[1].stages]
    assert again[0].summary == first[0].summary and again[1].summary == first[1].summary
    assert again[0].report == first[0].report and "report unchanged" in again[0].stages[-1].note
    # a report whose inputs changed (here: its signature) is rendered again
    stamp = first[0].report.parent / ".signature"
    stamp.write_text("something else\n")
    monkeypatch.undo()
    before = first[0].report.stat().st_mtime_ns
    third = run_demo(work, profile=TINY)
    assert third[0].report.stat().st_mtime_ns != before and stamp.read_text() != "something else\n"


def test_run_command_reuses_the_cache_and_stops_early(demo_dir, capsys, monkeypatch):
    work, _ = demo_dir
    monkeypatch.setattr("actiontk.train.engine.Trainer.fit",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    cfg = work / "tiny.toml"
    cfg.write_text('[extract]\nsize = 32\nworkers = 1\nbackbone = "vgg16"\nlayers = ["pool4", "conv5_3"]\n'
                   'weights = "none"\n')
    code = cli(["run", "toy", "--root", str(work / "toy"), "--stages", "extract", "--cache", str(work / "cache"),
                "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "0 extracted, 18 cached" in out.out.replace("\n", " ") or "18 cached" in out.out


def test_run_all_splits_reports_mean_and_std(demo_dir, capsys):
    work, _ = demo_dir
    cfg = work / "tiny-all.toml"
    cfg.write_text('[extract]\nsize = 32\nworkers = 1\nbackbone = "vgg16"\nlayers = ["pool4", "conv5_3"]\n'
                   'weights = "none"\n'
                   '[train-3d]\nepochs = 1\nclip_len = 6\nclip_stride = 4\nchannels = 8\nhidden = 8\n'
                   '[train-lstm]\nepochs = 1\nclip_len = 6\nclip_stride = 4\nlast = 3\nhidden = 8\nlayers = 2\n')
    code = cli(["run", "toy", "--root", str(work / "toy"), "--all-splits", "--fusion", "early",
                "--cache", str(work / "cache"), "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out.replace("\n", " ")
    for split in (1, 2, 3):
        assert f"split {split}: " in out.out, out.out
    assert "over splits 1-3:" in out.out and "±" in out.out, out.out
    # splits 2 and 3 test other groups of the same videos: nothing new to extract
    assert text.count("0 extracted, 18 cached") >= 2 or text.count("18 cached") >= 2, out.out


def test_parse_stages():
    assert parse_stages(None, VIDEO_STAGES) == list(VIDEO_STAGES)
    assert parse_stages("train-lstm,extract", VIDEO_STAGES) == ["extract", "train-lstm"]
    with pytest.raises(UserError, match="unknown stage 'train'"):
        parse_stages("extract,train", VIDEO_STAGES)


def test_run_refuses_an_image_dataset(capsys, tmp_path: Path):
    code = cli(["run", "mpii", "--root", str(tmp_path), "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "video pipeline" in err and len(err.strip().splitlines()) == 1
