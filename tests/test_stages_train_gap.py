"""``train-gap``: cached and fine-tuning modes on a tiny toy MPII set, predictions, reuse, bad options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from actiontk.cache.features import FeatureReader
from actiontk.cli import run as cli
from actiontk.data.gap_items import CachedMaps, load_items
from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii
from actiontk.errors import UserError
from actiontk.models.gap import fit_standardization
from actiontk.stages.extract import ExtractConfig, extract
from actiontk.stages.train_gap import TrainGAPConfig, train_gap
from actiontk.train.engine import TrainConfig

SMALL = dict(width=32, pose_width=16, dropout=0.2, attention_samples=5)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gap") / "toy"
    generate_toy_mpii(root, ToyMPIIConfig(classes=3, per_class=6, size=64))
    return root


@pytest.fixture(scope="module")
def cache(toy: Path, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("gap-cache")
    cfg = ExtractConfig(backbone="resnet101", layers=["layer4"], size=64, weights="none", batch_size=8, workers=1)
    extract(cfg, cache, dataset="toy-mpii", root=toy, split=1, log=lambda m: None)
    return cache


def _tcfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 1e-3, "device": "cpu", **kw})


def test_cached_mode_writes_predictions_and_is_reused(cache: Path, toy: Path, monkeypatch, one_torch_thread):
    messages: list[str] = []
    run = train_gap(TrainGAPConfig(head="gap", depth=2, pose=True, **SMALL), _tcfg(), cache, log=messages.append).run
    assert any("using extract run" in m for m in messages)
    p = np.load(run.path / "predictions.npz")
    classes = list(p["classes"])
    assert len(classes) == 3
    n = len(p["image_rel"])
    assert n > 0 and p["image_scores"].shape == (n, 3) and p["image_label"].shape == (n,)
    np.testing.assert_allclose(p["image_scores"].sum(1), 1.0, atol=1e-5)
    assert all(r.endswith(".jpg") for r in p["image_rel"])
    a = np.load(run.path / "attention_samples.npz")
    m = len(a["rel"])
    assert 0 < m <= 5 and a["topdown"].shape == (m, 2, 2) and a["bottomup"].shape == (m, 2, 2)
    assert set(a["rel"]) <= set(p["image_rel"])
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and '"pose_l2"' in lines[0]  # 2 epochs x (train, val), pose loss logged
    assert (run.path / "complete.json").is_file() and (run.path / "summary.json").is_file()

    # same config and inputs: nothing is trained again
    def boom(*a, **k):
        raise AssertionError("the completed run was trained again")

    monkeypatch.setattr("actiontk.train.engine.Trainer.fit", boom)
    again = train_gap(TrainGAPConfig(head="gap", depth=2, pose=True, **SMALL), _tcfg(), cache,
                      log=messages.append).run
    assert again.path == run.path and "nothing to do" in messages[-1]

    # the run's saved config and the extract run's shapes rebuild the network its checkpoint holds
    from actiontk.stages.train_gap import build_model

    extract_dir = next(p for p in (cache / "extract").iterdir() if p.is_dir())
    net = build_model(run.config["model"], FeatureReader(extract_dir).layers(), len(classes))
    net.load_state_dict(torch.load(run.path / "checkpoint.pt", weights_only=True)["model"])  # strict
    assert net.head.config.pose and net.head.config.bottomup_depth == 2 and net.head.pose_heatmaps.out_channels == 16


@pytest.mark.parametrize("head", ["mean", "attn"])
def test_other_heads(cache: Path, head: str, one_torch_thread):
    run = train_gap(TrainGAPConfig(head=head, pose=False, **SMALL), _tcfg(epochs=1), cache, log=lambda m: None).run
    a = np.load(run.path / "attention_samples.npz")
    if head == "mean":  # mean pooling is attention with a uniform map
        assert np.all(a["bottomup"] == 1.0)
    else:
        assert not np.all(a["bottomup"] == 1.0)
    assert str(a["head"]) == head


def test_standardization_uses_training_maps(cache: Path, toy: Path):
    from actiontk.models.gap import GAPConfig, GAPHead, GAPNet

    reader = FeatureReader(next((cache / "extract").iterdir()))
    _, train, _ = load_items("toy-mpii", toy, keep=lambda rel: rel in reader, need_pose=True, log=lambda m: None)
    ds = CachedMaps(reader, train, "layer4", 64, 1.0, 32)
    net = GAPNet(GAPHead(GAPConfig(head="mean"), 2048, 3))
    fit_standardization(net, ds, device="cpu", batch_size=5)
    maps = np.stack([reader.read(it.rel, "layer4")[0].astype(np.float64) for it in train])  # (N, C, h, w)
    np.testing.assert_allclose(net.mean.flatten().numpy(), maps.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    std = maps.std(axis=(0, 2, 3))
    live = std > 1e-3
    np.testing.assert_allclose(net.std.flatten().numpy()[live], std[live], rtol=1e-3)
    x = torch.from_numpy(maps).float()
    z = (x - net.mean) / net.std
    assert abs(float(z[:, live].mean())) < 1e-3 and abs(float(z[:, live].std()) - 1) < 1e-2


def test_pose_targets_at_the_cached_map_size(cache: Path, toy: Path):
    reader = FeatureReader(next((cache / "extract").iterdir()))
    _, train, _ = load_items("toy-mpii", toy, keep=lambda rel: rel in reader, need_pose=True, log=lambda m: None)
    ds = CachedMaps(reader, train, "layer4", 64, 1.0, 32)
    item = ds[0]
    assert item["x"].shape == (2048, 2, 2) and item["heatmap"].shape == (16, 2, 2)
    it = train[0]
    person = it.people[0]  # toy images are 64x64 = the extract size: the crop is the identity
    for j in np.flatnonzero(item["mask"].numpy()):
        if np.isnan(person[j, 0]):
            continue
        cell = (int(person[j, 1] // 32), int(person[j, 0] // 32))
        peak = np.unravel_index(int(item["heatmap"][j].argmax()), (2, 2))
        assert peak == cell, (j, person[j], peak)


def test_finetune_mode_trains_the_backbone(toy: Path, tmp_path: Path, one_torch_thread):
    cfg = TrainGAPConfig(head="gap", depth=1, pose=True, finetune=True, weights="none", resize=64, crop=48, **SMALL)
    run = train_gap(cfg, _tcfg(epochs=1, batch_size=6), tmp_path, dataset="toy-mpii", root=toy,
                    log=lambda m: None).run
    p = np.load(run.path / "predictions.npz")
    assert p["image_scores"].shape[1] == 3
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)["model"]
    assert any(k.startswith("body.") for k in state) and "mean" in state and "std" in state
    assert run.info["inputs"]["dataset"] == "toy-mpii"


def test_bad_options_are_user_errors(tmp_path: Path, toy: Path):
    for kw, words in [
        (dict(head="vgg"), "--head"),
        (dict(head="attn", depth=2), "--depth"),
        (dict(crop=500, resize=480), "--crop"),
        (dict(dropout=1.0), "--dropout"),
        (dict(pose_weight=-1.0), "--pose-weight"),
        (dict(depth=20, width=64), "--width"),
        (dict(backbone="vgg16", finetune=True), "--backbone must be one of resnet101, resnet50, resnet18"),
    ]:
        with pytest.raises(UserError, match=words):
            TrainGAPConfig(**kw)
    with pytest.raises(UserError, match="no complete extract run") as e:
        train_gap(TrainGAPConfig(**SMALL), _tcfg(), tmp_path / "empty", log=lambda m: None)
    assert "actiontk extract" in e.value.hint
    with pytest.raises(UserError, match="still-image"):
        train_gap(TrainGAPConfig(**SMALL), _tcfg(), tmp_path, dataset="ucf101", log=lambda m: None)
    with pytest.raises(UserError, match="--finetune reads the images"):
        train_gap(TrainGAPConfig(finetune=True, **SMALL), _tcfg(), tmp_path, log=lambda m: None)


def test_pose_needs_keypoints(tmp_path: Path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.jpg")
    with pytest.raises(UserError, match="--pose needs keypoint annotations"):
        load_items("images", tmp_path / "imgs", need_pose=True, log=lambda m: None)
    classes, train, test = load_items("images", tmp_path / "imgs", need_pose=False, log=lambda m: None)
    assert classes == ["a", "b"] and len(train) + len(test) == 6
    assert all(it.size == (30, 40) and it.people.shape == (0, 16, 3) for it in train + test)


@pytest.mark.parametrize(("args", "words"), [(["--head", "bogus"], "--head must be mean, attn or gap"),
                                             (["--finetune", "--backbone", "alexnet"], "--backbone must be one of")])
def test_cli_bad_option_is_one_line(capsys, tmp_path: Path, args: list[str], words: str):
    code = cli(["train-gap", *args, "--cache", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
