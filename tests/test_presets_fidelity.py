"""The dataset presets hold the papers' printed settings (joint-attention paper Secs. 3.2-3.5 and 4.2; the GAP
paper Sec. III), and the switches that depart from them refuse what they cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest

from actiontk.cli import run as cli_run
from actiontk.config import load_preset, resolve
from actiontk.stages.common import resolve_stage_configs
from actiontk.stages.extract import ExtractConfig
from actiontk.stages.pipeline import RunConfig
from actiontk.stages.train_3d import Train3DConfig
from actiontk.stages.train_gap import TrainGAPConfig
from actiontk.stages.train_lstm import TrainLSTMConfig


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_video_presets_follow_the_paper(dataset: str):
    preset, source = load_preset(dataset)
    ex = resolve(ExtractConfig, preset["extract"], {}, source=str(source))
    assert (ex.backbone, ex.layers, ex.size, ex.resize, ex.grid) == ("vgg16", ["pool4", "conv5_3"], 384, "square", 11)
    m3, t3 = resolve_stage_configs(dataset, "train-3d", Train3DConfig, None, {})
    ml, tl = resolve_stage_configs(dataset, "train-lstm", TrainLSTMConfig, None, {})
    assert (m3.clip_len, m3.channels, m3.temporal_kernel, m3.att_lambda, m3.over_time) == (30, 256, 3, 1000.0, "sum")
    assert (ml.clip_len, ml.last, ml.hidden, ml.layers, ml.att_lambda, ml.over_time) == (30, 16, 1024, 3, 0.0, "sum")
    assert t3.batch_size == tl.batch_size == 64
    assert t3.weight_decay == tl.weight_decay == 1e-5  # zeta
    assert resolve(RunConfig, preset["run"], {}).attention_rounds == 1  # the regularized 3D convnet by default
    text = (Path(source)).read_text()
    assert "Sports-1M" in text and "--weights PATH" in text  # the weights are said to differ from the paper's


def test_mpii_preset_has_pose_as_a_loss_term_only():
    cfg, _ = resolve_stage_configs("mpii", "train-gap", TrainGAPConfig, None, {})
    assert (cfg.head, cfg.pose, cfg.pose_attention, cfg.form, cfg.pose_weight) == ("gap", True, False, "activations",
                                                                                    1e-6)


def test_square_resize_is_refused_for_images(tmp_path: Path, capsys):
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii

    root = tmp_path / "mpii"
    generate_toy_mpii(root, ToyMPIIConfig(classes=2, per_class=3, size=64))
    assert cli_run(["extract", "toy-mpii", "--root", str(root), "--resize", "square", "--cache",
                    str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "--resize square is for videos" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "extract").exists() or not any((tmp_path / "cache" / "extract").iterdir())
