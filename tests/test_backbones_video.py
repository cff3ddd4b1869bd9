"""torchvision's video models as backbones: clip maps against torchvision's own feature extractor, and the
extract stage's clips (--clip-len / --clip-stride) in the cache, equal to the model on the decoded clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model
from torchvision.models.feature_extraction import create_feature_extractor

from actiontk.errors import UserError
from actiontk.models.backbones import build_backbone, is_video, level_shape, validate

# (name, layers, size, clip length, how torchvision's raw output becomes (B, C, t, h, w))
MODELS = [
    ("r3d_18", ["layer2", "layer3"], 32, 4, "ncthw"),
    ("s3d", ["features.9", "features.13"], 64, 8, "ncthw"),
    ("swin3d_t", ["features.2"], 64, 8, "nthwc"),
    # its builder fixes 224 px x 16 frames: ~10 s of CPU for the forward alone
    pytest.param("mvit_v2_s", ["blocks.15", "blocks.15.cls"], 224, 16, "mvit", marks=pytest.mark.slow),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_shape_cache")


def reference(name: str, state: dict, layers: list[str], kind: str, x: torch.Tensor, frames: int) -> dict:
    with torch.device("meta"):
        ref = get_model(name, weights=None).eval()
    nodes = sorted({layer.removesuffix(".cls") for layer in layers})
    cut = create_feature_extractor(ref, return_nodes={n: n for n in nodes})
    assert not cut.load_state_dict(state, strict=True, assign=True).unexpected_keys
    with torch.no_grad():
        raw = cut(x)
    out = {}
    for layer in layers:
        r = raw[layer.removesuffix(".cls")]
        if kind == "nthwc":
            out[layer] = r.permute(0, 4, 1, 2, 3)
        elif kind == "mvit":  # 1 class token + t*h*w tokens, t = frames / 2 (the patch embedding's stride)
            b, n, c = r.shape
            t = frames // 2
            side = int(round(((n - 1) / t) ** 0.5))
            out[layer] = r[:, 0].reshape(b, c, 1, 1, 1) if layer.endswith(".cls") else \
                r[:, 1:].reshape(b, t, side, side, c).permute(0, 4, 1, 2, 3)
        else:
            out[layer] = r
    return out


@pytest.mark.parametrize(("name", "layers", "size", "frames", "kind"), MODELS,
                         ids=["r3d_18", "s3d", "swin3d_t", "mvit_v2_s"])
def test_clip_maps_equal_torchvisions_own_extractor(name, layers, size, frames, kind):
    assert is_video(name) and not is_video("resnet18")
    bb = build_backbone(name, layers, "none", seed=0, size=size, frames=frames)
    x = torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = bb(x)
    want = reference(name, bb.body.state_dict(), layers, kind, x, frames)
    for layer in layers:
        assert got[layer].shape == want[layer].shape, layer
        assert got[layer].shape[1:] == level_shape(name, layer, size, frames), layer
        assert float((got[layer] - want[layer]).abs().max()) <= 1e-5 * float(want[layer].abs().max()), layer
        assert torch.isfinite(got[layer].half()).all(), layer
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        bb(x[:, :, 0])


def test_video_errors_are_one_line():
    with pytest.raises(UserError, match="unknown layer 'layer5' for r3d_18") as err:
        validate("r3d_18", ["layer5"], 112, None, frames=16)
    assert "layer4" in err.value.message and "\n" not in str(err.value)
    with pytest.raises(UserError, match="node 'fc' of r3d_18 has no spatial output"):
        validate("r3d_18", ["fc"], 112, None, frames=16)
    with pytest.raises(UserError, match="mvit_v2_s cannot run at --size 112") as err:
        validate("mvit_v2_s", ["blocks.15"], 112, None, frames=16)
    suggested = int(err.value.hint.removeprefix("use --size "))  # the smallest size its dry run accepts
    assert 112 < suggested <= 224
    validate("mvit_v2_s", ["blocks.15"], suggested, None, frames=16)


def test_extract_stores_one_map_per_clip(tmp_path: Path):
    """A toy video set through `extract` with r3d_18: 10 frames, clips of 4 every 3 frames -> clips at 0, 3, 6;
    each stored clip map equals the model applied to the decoded, transformed clip."""
    from actiontk.cache.features import FeatureReader
    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.stages.extract import ExtractConfig, extract
    from actiontk.video import PyAVReader

    root = tmp_path / "toy"
    generate_toy(root, ToyConfig(classes=6, groups=3, clips=1, frames=10, size=32), workers=1)
    layers = ["layer2", "layer3"]
    cfg = ExtractConfig(backbone="r3d_18", layers=layers, size=32, weights="none", batch_size=8, workers=1,
                        clip_len=4, clip_stride=3)
    result = extract(cfg, tmp_path / "cache", dataset="toy", root=root, split=1, log=lambda m: None)
    assert result.extracted == 18 and not result.failed
    assert result.run.info["config"]["clip"] == {"len": 4, "stride": 3}
    reader = FeatureReader(result.run.path)
    assert reader.layers() == {"layer2": (128, 2, 8, 8), "layer3": (256, 1, 4, 4)}
    model = build_backbone("r3d_18", layers, "none", size=32, frames=4)
    transform = model.preprocess(32)
    for rel in reader.videos()[:2]:
        frames = PyAVReader().read(root / rel)  # (T, H, W, 3)
        assert reader.num_frames(rel) == 3
        clips = np.stack([frames[s:s + 4] for s in (0, 3, 6)])  # (3, 4, H, W, 3)
        x = transform(torch.from_numpy(clips).permute(0, 1, 4, 2, 3))  # (3, 3, 4, 32, 32)
        with torch.no_grad():
            want = model(x)
        for layer in layers:
            got = reader.read(rel, layer).astype(np.float32)
            w = want[layer].numpy()
            assert np.allclose(got, w, rtol=2e-3, atol=2e-3 * float(np.abs(w).max())), (rel, layer)
    # a clip longer than the videos: one clip each, the last frame repeated
    cfg = ExtractConfig(backbone="r3d_18", layers=["layer2"], size=32, weights="none", batch_size=16, workers=1,
                        clip_len=16)
    short = extract(cfg, tmp_path / "cache", dataset="toy", root=root, split=1, log=lambda m: None)
    assert short.run.key != result.run.key
    rd = FeatureReader(short.run.path)
    assert all(rd.num_frames(rel) == 1 for rel in rd.videos()) and len(rd.videos()) == 18
    assert rd.layers() == {"layer2": (128, 8, 8, 8)}
    # the training stages read per-frame maps: a clip run named is a one-line error, and none is picked on its own
    from actiontk.stages.train_3d import Train3DConfig, train_3d
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm
    from actiontk.train.engine import TrainConfig

    with pytest.raises(UserError, match="holds clip-level maps of a video backbone .* train-3d reads one map per"):
        train_3d(Train3DConfig(), TrainConfig(), tmp_path / "cache", features=result.run, log=lambda m: None)
    with pytest.raises(UserError, match="train-lstm reads one map per frame"):
        train_lstm(TrainLSTMConfig(), TrainConfig(), tmp_path / "cache", features=str(short.run.path),
                   log=lambda m: None)
    with pytest.raises(UserError, match="no complete extract run for toy"):
        train_3d(Train3DConfig(), TrainConfig(), tmp_path / "cache", dataset="toy", split=1, log=lambda m: None)


def test_video_backbone_on_images_is_refused(tmp_path: Path):
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii
    from actiontk.stages.extract import ExtractConfig, extract

    root = tmp_path / "toy"
    generate_toy_mpii(root, ToyMPIIConfig(classes=2, per_class=3, size=48))
    cfg = ExtractConfig(backbone="r3d_18", layers=["layer2"], size=32, weights="none")
    with pytest.raises(UserError, match="r3d_18 is a video model"):
        extract(cfg, tmp_path / "cache", dataset="toy-mpii", root=root, split=1, log=lambda m: None)
    assert not (tmp_path / "cache").exists()
