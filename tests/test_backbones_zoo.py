"""Any torchvision model as a backbone (actiontk.models.zoo through actiontk.models.backbones): one small model per
family against torchvision's own feature extractor, the extract stage on one of them, the one-line errors, and
``actiontk backbones``. Random weights and 64 px inputs throughout; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model
from torchvision.models.feature_extraction import create_feature_extractor

from actiontk.errors import UserError
from actiontk.models import zoo
from actiontk.models.backbones import (
    backbone_identity,
    build_backbone,
    channels,
    layer_map_size,
    min_size,
    validate,
)
from tests.conftest import train_tiny_video

SIZE = 64
# one small model per family: (name, layers, the reference's conversion of each raw node output to (B, C, h, w))
FAMILIES = [
    ("mobilenet_v3_small", ["features.3", "features.8"], "nchw"),
    ("efficientnet_b0", ["features.3", "features.5"], "nchw"),
    ("convnext_tiny", ["features.3", "features.5"], "nchw"),
    ("regnet_y_400mf", ["trunk_output.block2", "trunk_output.block3"], "nchw"),
    ("vit_b_16", ["encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_1.cls"], "tokens"),
    ("swin_t", ["features.3", "features.5"], "nhwc"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread", "own_shape_cache")


def reference_maps(name: str, body_state: dict, layers: list[str], kind: str, x: torch.Tensor) -> dict:
    """The maps computed with torchvision alone: its model carrying the same weights, cut by its own
    create_feature_extractor, raw outputs converted here (not by the code under test)."""
    kwargs = {"image_size": SIZE} if name.startswith("vit") else {}
    try:
        with torch.device("meta"):
            ref = get_model(name, weights=None, **kwargs).eval()
    except NotImplementedError:  # RegNet's builder computes its widths with tensors: build it on the CPU
        ref = get_model(name, weights=None, **kwargs).eval()
    nodes = sorted({layer.removesuffix(".cls") for layer in layers})
    cut = create_feature_extractor(ref, return_nodes={n: n for n in nodes})
    result = cut.load_state_dict(body_state, strict=True, assign=True)
    assert not result.unexpected_keys
    with torch.no_grad():
        raw = cut(x)
    out = {}
    for layer in layers:
        r = raw[layer.removesuffix(".cls")]
        if kind == "nhwc":
            out[layer] = r.permute(0, 3, 1, 2)
        elif kind == "tokens":
            b, n, c = r.shape
            side = int(round((n - 1) ** 0.5))
            out[layer] = r[:, 0, :, None, None] if layer.endswith(".cls") else \
                r[:, 1:].reshape(b, side, side, c).permute(0, 3, 1, 2)
        else:
            out[layer] = r
    return out


@pytest.mark.parametrize(("name", "layers", "kind"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_maps_equal_torchvisions_own_extractor(name, layers, kind):
    bb = build_backbone(name, layers, "none", seed=0, size=SIZE)
    assert bb.layers == layers and bb.weights_id.startswith("random(seed=0")
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = bb(x)
    want = reference_maps(name, bb.body.state_dict(), layers, kind, x)
    for layer in layers:
        assert got[layer].shape == want[layer].shape, layer
        scale = float(want[layer].abs().max())
        assert float((got[layer] - want[layer]).abs().max()) <= 1e-5 * scale, layer
        assert torch.isfinite(got[layer].half()).all(), f"{layer} overflows float16 with random weights"
        # the shapes the stage plans with (validate, disk estimate, writer) are the ones the network gives
        c, h, w = got[layer].shape[1:]
        assert channels(name, layer) == c and layer_map_size(name, layer, SIZE) == (h, w), layer
    validate(name, layers, SIZE, None)


def test_random_weights_are_seeded():
    a = build_backbone("mobilenet_v3_small", ["features.3"], "none", seed=0, size=SIZE)
    b = build_backbone("mobilenet_v3_small", ["features.3"], "none", seed=0, size=SIZE)
    c = build_backbone("mobilenet_v3_small", ["features.3"], "none", seed=1, size=SIZE)
    key = "features.0.0.weight"
    assert torch.equal(a.body.state_dict()[key], b.body.state_dict()[key])
    assert not torch.equal(a.body.state_dict()[key], c.body.state_dict()[key])
    assert a.weights_id == "random(seed=0,bn=calibrated)"


def test_identity_names_nodes_weights_and_transform():
    ident = backbone_identity("convnext_tiny", ["features.5", "features.3"], "imagenet", SIZE)
    assert ident["layers"] == ["features.3", "features.5"]  # graph order
    assert ident["nodes"] == {"features.3": "features.3", "features.5": "features.5"}
    assert ident["weights_id"] == "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"
    assert ident["preprocess"]["crop_size"] == [SIZE] and ident["preprocess"]["interpolation"] == "bilinear"
    assert backbone_identity("convnext_tiny", ["features.3"], "none", SIZE)["weights_id"] == "random(seed=0)"
    # an alias of a curated backbone mixed with a graph node: the general path, the alias read as its node
    mixed = backbone_identity("vgg16", ["pool4", "features.10"], "none", SIZE)
    assert mixed["nodes"] == {"features.10": "features.10", "pool4": "features.23"}


def test_weights_enum_member_and_offline_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(UserError, match="has no weights 'IMAGENET1K_V9'") as err:
        backbone_identity("resnet50", ["layer4"], "IMAGENET1K_V9", SIZE)
    assert "IMAGENET1K_V1, IMAGENET1K_V2" in err.value.hint
    assert backbone_identity("resnet50", ["layer4"], "IMAGENET1K_V2", SIZE)["weights_id"] == \
        "ResNet50_Weights.IMAGENET1K_V2"
    # an enum member loads from torch's hub cache like imagenet does: a file written here stands for it
    random = build_backbone("mobilenet_v3_small", ["features.3"], "none", seed=3, size=SIZE)
    member = zoo.weights_enum("mobilenet_v3_small").IMAGENET1K_V1
    path = zoo.hub_file(member)
    path.parent.mkdir(parents=True)
    torch.save(random.body.state_dict(), path)
    loaded = build_backbone("mobilenet_v3_small", ["features.3"], "IMAGENET1K_V1", size=SIZE)
    assert loaded.weights_id == "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x)["features.3"], random(x)["features.3"])


def test_bad_names_are_one_line_errors_with_choices():
    with pytest.raises(UserError, match="unknown backbone 'convnext_tiniest'; close: convnext_tiny") as err:
        validate("convnext_tiniest", ["features.3"], SIZE, None)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown layer 'features.33' for convnext_tiny; close graph nodes: ") as err:
        validate("convnext_tiny", ["features.33"], SIZE, None)
    assert "features.3" in err.value.message and "features.3, features.5, features.7" in err.value.hint
    with pytest.raises(UserError, match="node 'classifier.2' of convnext_tiny has no spatial output"):
        validate("convnext_tiny", ["classifier.2"], SIZE, None)
    with pytest.raises(UserError, match="has no class token"):
        validate("convnext_tiny", ["features.3.cls"], SIZE, None)
    with pytest.raises(UserError, match="given more than once"):
        validate("convnext_tiny", ["features.3", "features.3"], SIZE, None)


def test_size_too_small_and_grid():
    # features.7 is at stride 32: a 16 px input leaves no map; the suggested size is the exact minimum
    with pytest.raises(UserError) as err:
        validate("convnext_tiny", ["features.3", "features.7"], 16, None)
    assert "\n" not in str(err.value)
    smallest = min_size("convnext_tiny", "features.7", 1)
    assert f"use --size {smallest}" in err.value.hint
    validate("convnext_tiny", ["features.7"], smallest, None)
    with pytest.raises(UserError):
        validate("convnext_tiny", ["features.7"], smallest - 1, None)
    with pytest.raises(UserError, match="its feature map would be 4x4, smaller than --grid 5") as err:
        validate("convnext_tiny", ["features.5"], SIZE, 5)  # stride 16: 4x4 at 64 px
    assert err.value.hint.startswith(f"use --size {min_size('convnext_tiny', 'features.5', 5)}")
    assert layer_map_size("convnext_tiny", "features.5", min_size("convnext_tiny", "features.5", 5))[0] >= 5
    # a ViT accepts multiples of its patch size only: the model's own reason, on one line
    with pytest.raises(UserError, match="vit_b_16 cannot") as err:
        validate("vit_b_16", ["encoder.layers.encoder_layer_1"], 70, None)
    assert "\n" not in str(err.value)


def test_shapes_are_cached_on_disk(monkeypatch):
    layer_map_size("regnet_y_400mf", "trunk_output.block2", 96)
    cached = zoo.cached_probe("regnet_y_400mf")
    assert cached["sizes"]["96"]["trunk_output.block2"]["shape"] == [104, 12, 12]

    def no_model(*args, **kwargs):
        raise AssertionError("a cached shape built the model again")

    monkeypatch.setattr(zoo, "build_model", no_model)
    assert layer_map_size("regnet_y_400mf", "trunk_output.block2", 96) == (12, 12)
    validate("regnet_y_400mf", ["trunk_output.block2"], 96, 6)


def test_backbones_command(capsys):
    from actiontk.cli import run as cli

    assert cli(["backbones", "--size", "64", "--only", "convnext_tiny", "--only", "vgg16", "--probe"]) == 0
    out = capsys.readouterr().out
    assert "conv5_3 512x4x4" in out and "features.3 192x8x8" in out and "features.7 768x2x2" in out
    assert cli(["backbones", "--size", "64", "--only", "convnxt_tiny"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'convnxt_tiny'; close: convnext_tiny" in err and len(err.strip().splitlines()) == 1


# -- the extract stage on a general model --------------------------------------------------------------------


def test_extract_stores_the_models_maps(tmp_path: Path):
    """Images of a tiny toy MPII set through `extract` with convnext_tiny: the cached maps equal the model applied
    to the decoded, transformed images (float16 storage)."""
    from actiontk.cache.features import FeatureReader
    from actiontk.data.images import load_rgb
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii
    from actiontk.stages.extract import ExtractConfig, extract

    root = tmp_path / "toy"
    generate_toy_mpii(root, ToyMPIIConfig(classes=2, per_class=3, size=SIZE))
    layers = ["features.3", "features.5"]
    cfg = ExtractConfig(backbone="convnext_tiny", layers=layers, size=SIZE, weights="none", batch_size=4, workers=1)
    result = extract(cfg, tmp_path / "cache", dataset="toy-mpii", root=root, split=1, log=lambda m: None)
    assert result.extracted > 0 and not result.failed
    reader = FeatureReader(result.run.path)
    assert reader.layers() == {"features.3": (192, 8, 8), "features.5": (384, 4, 4)}
    assert result.run.info["config"]["backbone"]["nodes"] == {"features.3": "features.3", "features.5": "features.5"}
    model = build_backbone("convnext_tiny", layers, "none", size=SIZE)
    from actiontk.datasets import get_dataset

    samples = {s.rel: s for s in get_dataset("toy-mpii", root).load(1).videos()}
    for rel in reader.videos()[:3]:
        image = torch.from_numpy(np.array(load_rgb(samples[rel].path))).permute(2, 0, 1)[None]
        with torch.no_grad():
            want = model(model.preprocess(SIZE)(image))
        for layer in layers:
            got = reader.read(rel, layer).astype(np.float32)
            w = want[layer].numpy()
            assert np.allclose(got, w, rtol=2e-3, atol=2e-3 * float(np.abs(w).max())), (rel, layer)

    # a tiny train-gap run reads the ConvNeXt maps: channels and map sizes from the run's metadata
    from actiontk.stages.train_gap import TrainGAPConfig, train_gap
    from actiontk.train.engine import TrainConfig

    gap = TrainGAPConfig(layer="features.5", head="gap", depth=1, width=16, pose_width=8, attention_samples=2)
    run = train_gap(gap, TrainConfig(epochs=1, batch_size=4, lr=1e-3, device="cpu"), tmp_path / "cache",
                    features=result.run, log=lambda m: None).run
    scores = np.load(run.path / "predictions.npz")["image_scores"]
    assert scores.shape[1] == 2 and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert np.load(run.path / "attention_samples.npz")["topdown"].shape[1:] == (4, 4)  # features.5's map
    # and --finetune accepts the same names (checked when the config is made)
    TrainGAPConfig(finetune=True, backbone="convnext_tiny", layer="features.5", crop=SIZE, resize=SIZE)
    with pytest.raises(UserError, match="--backbone must be one of .* a torchvision model with a features.55 node"):
        TrainGAPConfig(finetune=True, backbone="convnext_tiny", layer="features.55", crop=SIZE, resize=SIZE)


def test_joint_lstm_on_two_convnext_stages(tmp_path: Path):
    """A toy video set through `extract` with two ConvNeXt stages, then train-3d (one deeply supervised 3D convnet per
    level) and the joint LSTM: channels and map sizes come from the extract run, no code knows ConvNeXt."""
    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.stages.extract import ExtractConfig, extract

    quiet = lambda m: None  # noqa: E731
    generate_toy(tmp_path / "toy", ToyConfig(seed=0, classes=6, groups=3, clips=1, frames=10, size=32), workers=1)
    cache = tmp_path / "cache"
    layers = ["features.1", "features.3"]
    # --grid 4: the joint LSTM attends over one grid shared by the levels (stride 4 and 8 here)
    ex = extract(ExtractConfig(backbone="convnext_tiny", layers=layers, grid=4, size=32, weights="none", workers=1),
                 cache, dataset="toy", root=tmp_path / "toy", split=1, log=quiet)
    from actiontk.cache.features import FeatureReader

    assert FeatureReader(ex.run.path).layers() == {"features.1": (96, 4, 4), "features.3": (192, 4, 4)}
    _, lstm = train_tiny_video(cache, {"clip_len": 6, "clip_stride": 4}, quiet)
    scores = np.load(lstm.path / "predictions.npz")
    assert any(k.endswith("scores") for k in scores.files)
