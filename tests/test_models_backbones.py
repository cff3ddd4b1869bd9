"""Tests for actiontk.models.backbones: taps, spatial arithmetic, weights (random, file, ImageNet cache), checks.

Nothing here touches the network: the ImageNet path is exercised through a fake offline loader and through
torch's hub cache pointed (TORCH_HOME) at files written by the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from actiontk.errors import UserError
from actiontk.models.backbones import (
    BACKBONES,
    backbone_identity,
    build_backbone,
    known_layers,
    layer_map_size,
    min_size,
    validate,
)

VGG_LAYERS = ["conv4_3", "pool4", "conv5_3", "pool5"]
RES_LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()


def assert_same(a: torch.Tensor, b: torch.Tensor, what: str, tol: float = 1e-5) -> None:
    diff = max_diff(a, b)
    assert diff <= tol, f"{what}: max abs diff {diff:g} > {tol:g}"


# -- fixtures: every heavy build happens once per module -----------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for this module: on a small shared machine, OpenMP's two threads wait on each other
    whenever another process holds a core, and ResNet-101 then runs ~50x slower (seconds per 64x64 batch)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vgg_ref() -> torchvision.models.VGG:
    """A random torchvision VGG16, the reference for the taps (built once: its classifier init is slow)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return torchvision.models.vgg16().eval()


@pytest.fixture(scope="module")
def vgg_file(vgg_ref, tmp_path_factory) -> Path:
    """vgg_ref's convolutional weights as a plain state dict (the 500 MB classifier is not needed by any tap)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16-features.pth"
    torch.save({k: v for k, v in vgg_ref.state_dict().items() if k.startswith("features.")}, path)
    return path


@pytest.fixture(scope="module")
def vgg(vgg_file):
    return build_backbone("vgg16", VGG_LAYERS, str(vgg_file))


@pytest.fixture(scope="module")
def resnet():
    return build_backbone("resnet101", RES_LAYERS, "none", seed=0)


@pytest.fixture(scope="module")
def resnet_ref(resnet) -> torchvision.models.ResNet:
    """A torchvision ResNet-101 carrying the fixture's weights (fc stays random: it is never used)."""
    with torch.random.fork_rng(devices=[]):
        model = torchvision.models.resnet101().eval()
    result = model.load_state_dict(resnet.body.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    return model


@pytest.fixture
def x64() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))  # (B, 3, H, W)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and no way to download: a download attempt fails the test loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


# -- the taps are the networks' own layers --------------------------------------------------------------


def test_vgg_indices_are_the_named_layers(vgg_ref):
    f = vgg_ref.features
    assert len(f) == 31
    convs = [i for i, m in enumerate(f) if isinstance(m, torch.nn.Conv2d)]
    pools = [i for i, m in enumerate(f) if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == [4, 9, 16, 23, 30]
    # conv4_3 is the 10th conv, conv5_3 the 13th (last); their ReLUs follow them directly.
    assert convs[9] == 21 and convs[12] == 28
    assert isinstance(f[22], torch.nn.ReLU) and isinstance(f[29], torch.nn.ReLU)
    nodes = {layer: spec.node for layer, spec in BACKBONES["vgg16"].layers.items()}
    assert nodes == {"conv4_3": "features.22", "pool4": "features.23", "conv5_3": "features.29",
                     "pool5": "features.30"}


def test_vgg_taps_equal_manual_forward(vgg, vgg_ref, x64):
    out = vgg(x64)
    assert list(out) == VGG_LAYERS
    with torch.no_grad():
        assert_same(out["conv4_3"], vgg_ref.features[:23](x64), "conv4_3 vs features[:23]", 0)
        assert_same(out["pool4"], vgg_ref.features[:24](x64), "pool4 vs features[:24]", 0)
        assert_same(out["conv5_3"], vgg_ref.features[:30](x64), "conv5_3 vs features[:30]", 0)
        assert_same(out["pool5"], vgg_ref.features(x64), "pool5 vs features", 0)


def test_resnet_taps_equal_manual_chain(resnet, resnet_ref, x64):
    out = resnet(x64)
    assert list(out) == RES_LAYERS
    r = resnet_ref
    with torch.no_grad():
        h = r.maxpool(r.relu(r.bn1(r.conv1(x64))))  # (B, 64, 16, 16)
        for name in RES_LAYERS:
            h = getattr(r, name)(h)
            assert_same(out[name], h, f"{name} vs manual stem->{name}", 0)


def test_graph_is_cut_after_the_last_tap(vgg_file, resnet):
    only = build_backbone("vgg16", ["conv4_3"], vgg_file)
    modules = dict(only.body.named_modules())
    assert "features.22" in modules
    assert not {"classifier", "avgpool", "features.23", "features.30"} & set(modules)
    targets = [str(n.target) for n in only.body.graph.nodes if n.op == "call_module"]
    assert targets[-1] == "features.22" and len(targets) == 23

    modules = dict(resnet.body.named_modules())
    assert "layer4" in modules and "fc" not in modules and "avgpool" not in modules
    ops = {str(n.target) for n in resnet.body.graph.nodes}
    assert not {"fc", "avgpool"} & ops and not any("flatten" in t for t in ops)


def test_layers_are_returned_in_network_order(vgg_file, x64):
    bb = build_backbone("vgg16", ["pool5", "conv4_3"], vgg_file)
    assert bb.layers == ["conv4_3", "pool5"]
    assert list(bb(x64)) == ["conv4_3", "pool5"]
    assert bb.channels == {"conv4_3": 512, "pool5": 512}
    assert bb.strides == {"conv4_3": 8, "pool5": 32}
    assert bb.name == "vgg16"


def test_channels_and_strides(resnet):
    assert resnet.channels == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    assert resnet.strides == {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    assert known_layers("vgg16") == VGG_LAYERS and known_layers("resnet101") == RES_LAYERS


def test_model_is_frozen_and_stays_in_eval(resnet):
    assert not any(p.requires_grad for p in resnet.parameters())
    resnet.train()  # a pipeline switching everything to training must not unfreeze BatchNorm
    assert not any(m.training for m in resnet.modules())
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        resnet(torch.zeros(3, 32, 32))


# -- spatial arithmetic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 33, 47, 64, 97])
def test_vgg_map_size_is_exact(vgg, size):
    out = vgg(torch.randn(1, 3, size, size))
    for layer in VGG_LAYERS:
        assert tuple(out[layer].shape[-2:]) == layer_map_size(vgg.name, layer, size), (layer, size)


@pytest.mark.parametrize("size", [1, 2, 7, 32, 47, 64, 97])
def test_resnet_map_size_is_exact(resnet, size):
    out = resnet(torch.randn(1, 3, size, size))
    for layer in RES_LAYERS:
        assert tuple(out[layer].shape[-2:]) == layer_map_size(resnet.name, layer, size), (layer, size)


# -- the smaller ResNets: same taps and arithmetic as resnet101, their own channels ------------------------

SMALL_RESNETS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}


@pytest.mark.parametrize("name", list(SMALL_RESNETS))
def test_small_resnets_taps_channels_and_map_sizes(name, x64):
    bb = build_backbone(name, RES_LAYERS, "none", seed=0)
    assert known_layers(name) == RES_LAYERS and BACKBONES[name].batchnorm
    assert BACKBONES[name].weights_name == f"ResNet{name[6:]}_Weights.IMAGENET1K_V1"
    assert bb.channels == dict(zip(RES_LAYERS, SMALL_RESNETS[name], strict=True))
    assert bb.strides == {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
    assert bb.weights_id == "random(seed=0,bn=calibrated)"
    # the random weights are torchvision's init under the seed, BatchNorm statistics calibrated
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = getattr(torchvision.models, name)().eval()
    for key, value in bb.body.named_parameters():
        assert torch.equal(value, ref.state_dict()[key]), key
    ref.load_state_dict(bb.body.state_dict(), strict=False)
    out = bb(x64)
    with torch.no_grad():
        h = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x64))))
        for layer in RES_LAYERS:
            h = getattr(ref, layer)(h)
            assert_same(out[layer], h, f"{name} {layer} vs manual chain", 0)
    assert torch.isfinite(out["layer4"].half()).all() and 0.1 < float(out["layer4"].std()) < 100
    # the spatial arithmetic against a real forward pass, odd sizes and the boundaries included
    for size in (1, 2, 7, 32, 33, 47, 97, 160, 192, 193):
        out = bb(torch.randn(1, 3, size, size))
        for layer in RES_LAYERS:
            assert tuple(out[layer].shape[-2:]) == layer_map_size(name, layer, size), (name, layer, size)
            assert out[layer].shape[1] == bb.channels[layer]
    assert min_size(name, "layer4", 7) == 193 and min_size(name, "layer3", 2) == 17


EXPECTED_MIN = {
    # (backbone, layer): {grid: minimum --size}
    ("vgg16", "conv4_3"): {1: 8, 2: 16, 7: 56},
    ("vgg16", "pool4"): {1: 16, 2: 32, 7: 112},
    ("vgg16", "conv5_3"): {1: 16, 2: 32, 7: 112},
    ("vgg16", "pool5"): {1: 32, 2: 64, 7: 224},
    ("resnet101", "layer1"): {1: 1, 2: 5, 7: 25},
    ("resnet101", "layer2"): {1: 1, 2: 9, 7: 49},
    ("resnet101", "layer3"): {1: 1, 2: 17, 7: 97},
    ("resnet101", "layer4"): {1: 1, 2: 33, 7: 193},
}


@pytest.mark.parametrize(("backbone", "layer"), list(EXPECTED_MIN))
def test_min_size_boundary(backbone, layer):
    for grid, expected in EXPECTED_MIN[(backbone, layer)].items():
        assert min_size(backbone, layer, grid) == expected
        validate(backbone, [layer], expected, grid)  # the minimum passes
        assert layer_map_size(backbone, layer, expected)[0] >= grid
        if expected > 1:
            assert layer_map_size(backbone, layer, expected - 1)[0] < grid
            with pytest.raises(UserError, match=f"too small for {layer} of {backbone}") as err:
                validate(backbone, [layer], expected - 1, grid)
            assert err.value.hint.startswith(f"use --size {expected} or more")


def test_min_size_against_real_forward(vgg, vgg_ref, resnet):
    # The boundaries checked by running the networks, not only by the arithmetic under test.
    assert tuple(vgg(torch.randn(1, 3, 32, 32))["pool4"].shape[-2:]) == (2, 2)
    with torch.no_grad():
        assert tuple(vgg_ref.features[:24](torch.randn(1, 3, 31, 31)).shape[-2:]) == (1, 1)
    assert tuple(resnet(torch.randn(1, 3, 193, 193))["layer4"].shape[-2:]) == (7, 7)
    assert tuple(resnet(torch.randn(1, 3, 192, 192))["layer4"].shape[-2:]) == (6, 6)
    with pytest.raises(RuntimeError):  # 31 px leaves nothing for pool5, which validate() forbids
        vgg(torch.randn(1, 3, 31, 31))


# -- validate() -----------------------------------------------------------------------------------------


def test_validate_example_message():
    with pytest.raises(UserError) as err:
        validate("vgg16", ["conv5_3", "pool4"], 20, 2)
    # pool4 and conv5_3 need the same size; the first in network order is named.
    assert err.value.message.startswith("--size 20 is too small for pool4 of vgg16 (stride 16)")
    assert "use --size 32 or more" in str(err.value)
    assert "\n" not in str(err.value)


def test_validate_reports_the_most_demanding_layer():
    with pytest.raises(UserError) as err:
        validate("vgg16", ["conv4_3", "pool5"], 20, None)
    assert "pool5" in err.value.message and err.value.hint == "use --size 32 or more"
    validate("vgg16", VGG_LAYERS, 224, 7)
    validate("resnet101", RES_LAYERS, 224, 7)


def test_validate_grid_too_large():
    with pytest.raises(UserError, match="smaller than --grid 8") as err:
        validate("vgg16", ["pool5"], 64, 8)
    assert err.value.hint == "use --size 256 or more, or a smaller --grid"


@pytest.mark.parametrize("grid", [0, -1])
def test_validate_bad_grid(grid):
    with pytest.raises(UserError, match="--grid must be a positive integer"):
        validate("vgg16", ["pool5"], 224, grid)


@pytest.mark.parametrize("size", [0, -3])
def test_validate_bad_size(size):
    with pytest.raises(UserError, match="--size must be a positive"):
        validate("resnet101", ["layer4"], size, None)


def test_validate_unknown_backbone_lists_known():
    # vgg19 is a torchvision model (so a valid backbone since every torchvision model is one): vgg17 is not
    with pytest.raises(UserError, match="unknown backbone 'vgg17'; close: vgg19, vgg16, vgg13") as err:
        validate("vgg17", ["pool5"], 224, None)
    assert "vgg16" in err.value.hint and "resnet101" in err.value.hint
    assert "resnet50" in err.value.hint and "resnet18" in err.value.hint


def test_validate_layer_errors_list_the_layers():
    with pytest.raises(UserError, match="unknown layer 'layer5' for resnet101") as err:
        validate("resnet101", ["layer4", "layer5"], 224, None)
    assert err.value.hint == "resnet101 has layers: layer1, layer2, layer3, layer4"
    with pytest.raises(UserError, match="unknown layer 'pool4' for resnet101"):
        validate("resnet101", ["pool4"], 224, None)
    with pytest.raises(UserError, match="no layer given") as err:
        validate("vgg16", [], 224, None)
    assert "conv4_3, pool4, conv5_3, pool5" in err.value.hint
    with pytest.raises(UserError, match="'pool5' given more than once"):
        validate("vgg16", ["pool5", "conv4_3", "pool5"], 224, None)
    validate("vgg16", "conv5_3,pool5", 224, 7)  # a CLI-style comma list is accepted


def test_build_checks_names_before_building():
    with pytest.raises(UserError, match="unknown backbone"):
        build_backbone("alexnett", ["pool5"], "none")  # alexnet itself is a torchvision model
    with pytest.raises(UserError, match="unknown layer 'fc7'"):
        build_backbone("vgg16", ["fc7"], "none")


def test_validate_does_not_import_torchvision():
    code = ("import sys; from actiontk.models.backbones import validate; "
            "validate('vgg16', ['pool5'], 224, 7); assert 'torchvision' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- weights="none" ---------------------------------------------------------------------------------------


def test_random_weights_are_deterministic_and_leave_rng_alone(resnet):
    before = torch.get_rng_state()
    again = build_backbone("resnet101", ["layer1"], "none", seed=0)
    other = build_backbone("resnet101", ["layer1"], "none", seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    w0, w_again, w1 = (bb.body.state_dict()["layer1.0.conv1.weight"] for bb in (resnet, again, other))
    assert torch.equal(w0, w_again)
    assert not torch.equal(w0, w1)
    assert again.weights_id == "random(seed=0,bn=calibrated)" and other.weights_id == "random(seed=1,bn=calibrated)"
    assert build_backbone("vgg16", ["pool4"], "none", seed=2).weights_id == "random(seed=2)"  # no BatchNorm


def test_random_weights_are_torchvisions_init_under_that_seed(resnet):
    # Defines "random(seed=S)" independently of this module: torchvision's builder after manual_seed(S).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet101()
    ref = model.state_dict()
    for key, value in resnet.body.named_parameters():
        assert torch.equal(value, ref[key]), key
    # ... with BatchNorm statistics measured on seeded noise instead of torchvision's 0 / 1 (see below)
    stats = [k for k, _ in resnet.body.named_buffers() if k.endswith("running_var")]
    assert stats and all(not torch.equal(resnet.body.state_dict()[k], ref[k]) for k in stats)


def test_random_resnet_features_fit_in_float16():
    # torchvision's fresh BatchNorm statistics (mean 0, var 1) normalize nothing in eval mode, and 33 residual
    # additions then overflow float16 at layer4, the cache's storage type. Calibrated statistics keep every
    # layer at unit scale.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        raw = torchvision.models.resnet101().eval()
    bb = build_backbone("resnet101", ["layer4"], "none", seed=0)
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        uncalibrated = raw.layer4(raw.layer3(raw.layer2(raw.layer1(raw.maxpool(raw.relu(raw.bn1(raw.conv1(x))))))))
        calibrated = bb(x)["layer4"]
    assert not torch.isfinite(uncalibrated.half()).all()  # the problem being solved
    assert torch.isfinite(calibrated.half()).all()
    assert 0.1 < float(calibrated.std()) < 100, float(calibrated.std())


# -- weights=PATH -----------------------------------------------------------------------------------------


def _features_state(vgg_ref) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vgg_ref.state_dict().items() if k.startswith("features.")}


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp", "ddp+state_dict"])
def test_weights_file_variants_load(wrap, vgg_ref, tmp_path, x64):
    state = _features_state(vgg_ref)
    if wrap.startswith("ddp"):
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap.endswith("state_dict"):
        state = {"state_dict": state, "epoch": 3}
    elif wrap == "model":
        state = {"model": state, "optimizer": {"lr": 0.1}}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    bb = build_backbone("vgg16", ["conv4_3"], path)
    with torch.no_grad():
        assert_same(bb(x64)["conv4_3"], vgg_ref.features[:23](x64), f"{wrap} checkpoint", 0)
    assert bb.weights_id.startswith("file:") and len(bb.weights_id) == len("file:") + 64


def test_full_checkpoint_with_another_head_loads(resnet, resnet_ref, tmp_path, x64):
    # A full torchvision state dict, fine-tuned head included (101 classes): fc is pruned, so it is ignored.
    state = resnet_ref.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(101, 2048), torch.zeros(101)
    path = tmp_path / "finetuned.pth"
    torch.save(state, path)
    bb = build_backbone("resnet101", ["layer4"], path)
    assert_same(bb(x64)["layer4"], resnet(x64)["layer4"], "file vs random(seed=0)", 0)
    assert next(bb.parameters()).dtype == torch.float32


def test_half_precision_file_is_cast_to_float(vgg_ref, tmp_path):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() for k, v in _features_state(vgg_ref).items()}, path)
    bb = build_backbone("vgg16", ["conv4_3"], path)
    assert all(p.dtype == torch.float32 for p in bb.parameters())


def test_weights_id_is_the_file_hash(vgg_ref, vgg_file, tmp_path):
    import hashlib

    state = _features_state(vgg_ref)
    state["features.0.bias"] = state["features.0.bias"] + 1
    other = tmp_path / "other.pth"
    torch.save(state, other)
    a = build_backbone("vgg16", ["conv4_3"], vgg_file)
    b = build_backbone("vgg16", ["conv4_3"], other)
    assert a.weights_id == "file:" + hashlib.sha256(vgg_file.read_bytes()).hexdigest()
    assert a.weights_id != b.weights_id
    assert backbone_identity("vgg16", ["conv4_3"], vgg_file, 64) != backbone_identity("vgg16", ["conv4_3"], other, 64)


def test_mismatching_file_names_the_problem(vgg_ref, vgg_file, tmp_path):
    with pytest.raises(UserError, match="missing keys: conv1.weight") as err:
        build_backbone("resnet101", ["layer1"], vgg_file)
    assert str(vgg_file) in err.value.message and "unexpected keys: features.0.weight" in err.value.message
    assert "(+" in err.value.message  # long lists are cut to the first few keys

    state = _features_state(vgg_ref)
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    bad = tmp_path / "bad-shape.pth"
    torch.save(state, bad)
    with pytest.raises(UserError, match=r"shape mismatch \(file vs model\): features.0.weight \(32, 3, 3, 3\) vs "
                                        r"\(64, 3, 3, 3\)"):
        build_backbone("vgg16", ["pool5"], bad)

    state = _features_state(vgg_ref)
    del state["features.21.bias"]
    torch.save(state, bad)
    with pytest.raises(UserError, match="missing keys: features.21.bias"):
        build_backbone("vgg16", ["conv4_3"], bad)
    build_backbone("vgg16", ["conv4_3"], vgg_file)  # the intact file still loads


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        build_backbone("vgg16", ["pool5"], tmp_path / "nope.pth")
    assert "nope.pth" in err.value.message and "--weights none" in err.value.hint
    with pytest.raises(UserError, match="is not a file"):
        build_backbone("vgg16", ["pool5"], tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        build_backbone("vgg16", ["pool5"], junk)
    torch.save([1, 2, 3], junk)
    with pytest.raises(UserError, match="does not hold a state dict"):
        build_backbone("vgg16", ["pool5"], junk)


class Payload:
    """An arbitrary object: unpickling it could run code, so weights_only loading must refuse it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(UserError, match="holds Python objects other than tensors") as err:
        build_backbone("vgg16", ["pool5"], path)
    assert str(path) in err.value.message and "\n" not in str(err.value)


# -- weights="imagenet" -----------------------------------------------------------------------------------


def test_imagenet_offline_is_a_user_error(offline, monkeypatch):
    enum = type(BACKBONES["vgg16"].weights)
    calls = []

    def unreachable(self, *args, **kwargs):
        calls.append(kwargs)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(enum, "get_state_dict", unreachable)
    with pytest.raises(UserError, match="could not be downloaded") as err:
        build_backbone("vgg16", ["pool5"], "imagenet")
    text = str(err.value)
    assert "--weights PATH" in text and "--weights none" in text and "vgg16-397923af.pth" in text
    assert "Temporary failure in name resolution" in text and "\n" not in text
    assert calls and calls[0]["check_hash"] and calls[0]["weights_only"]


def test_imagenet_offline_through_torch_hub(offline, monkeypatch):
    # One level lower: torch.hub's own download fails like a machine without network does.
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError, match="could not be downloaded from https://download.pytorch.org/models/resnet101"):
        build_backbone("resnet101", ["layer4"], "imagenet")


def test_imagenet_loads_from_the_hub_cache(offline, vgg_ref, x64):
    # torchvision's real loading path, offline: a file already in the cache is used, nothing downloaded.
    offline.mkdir(parents=True)
    torch.save(_features_state(vgg_ref), offline / "vgg16-397923af.pth")
    bb = build_backbone("vgg16", ["pool4"], "imagenet")
    assert bb.weights_id == "VGG16_Weights.IMAGENET1K_V1"
    with torch.no_grad():
        assert_same(bb(x64)["pool4"], vgg_ref.features[:24](x64), "cached imagenet file", 0)
    expected = torchvision.models.VGG16_Weights.IMAGENET1K_V1.transforms(resize_size=96, crop_size=96)
    assert repr(bb.preprocess(96)) == repr(expected)


def test_corrupt_cache_file_is_named(offline):
    offline.mkdir(parents=True)
    (offline / "resnet101-63fe2227.pth").write_bytes(b"truncated")
    with pytest.raises(UserError, match="cached ImageNet weights .*resnet101-63fe2227.pth") as err:
        build_backbone("resnet101", ["layer1"], "imagenet")
    assert "delete that file" in err.value.hint and "--weights PATH" in err.value.hint


# -- preprocess and identity ------------------------------------------------------------------------------


def test_preprocess_non_square_uint8(vgg):
    t = vgg.preprocess(64)
    frames = torch.full((2, 3, 50, 80), 255, dtype=torch.uint8)  # (B, 3, H, W), white
    out = t(frames)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    assert_same(out[0, :, 0, 0], (1 - mean) / std, "normalized white")
    # Shorter side resized to the size, then a centre crop: a left/right-asymmetric image stays so.
    ramp = torch.arange(80, dtype=torch.uint8).expand(1, 3, 50, 80) * 3
    r = t(ramp)
    assert r.shape == (1, 3, 64, 64) and r[0, 0, 0, 0] < r[0, 0, 0, -1]


def test_preprocess_fields_and_identity(vgg_file, resnet):
    t = resnet.preprocess(112)
    assert list(t.resize_size) == [112] and list(t.crop_size) == [112]
    assert list(t.mean) == [0.485, 0.456, 0.406] and list(t.std) == [0.229, 0.224, 0.225]
    ident = backbone_identity("resnet101", RES_LAYERS, "none", 112, seed=0)
    json.dumps(ident)  # JSON-able
    assert ident["backbone"] == "resnet101" and ident["layers"] == RES_LAYERS
    assert ident["weights_id"] == "random(seed=0,bn=calibrated)" == resnet.weights_id  # the built model's, unbuilt
    assert ident["preprocess"]["interpolation"] == "bilinear" and ident["preprocess"]["antialias"] is True
    assert ident["torchvision"] == ".".join(torchvision.__version__.split(".")[:2])
    assert backbone_identity("resnet101", RES_LAYERS, "none", 112, seed=0) == ident
    assert backbone_identity("resnet101", RES_LAYERS, "none", 113, seed=0) != ident
    assert backbone_identity("vgg16", VGG_LAYERS, vgg_file, 112) != ident
    with pytest.raises(UserError, match="--size must be a positive"):
        resnet.preprocess(0)


# -- memory format and autocast ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["vgg", "resnet"])
def test_channels_last_and_bf16_autocast(which, request, x64):
    bb = request.getfixturevalue(which)
    ref = bb(x64)
    cl = bb(x64.contiguous(memory_format=torch.channels_last))
    for layer in bb.layers:
        # Relative to the layer's largest value: another summation order through up to 100 layers, each
        # BatchNorm rescaling what it gets, leaves fp32 differences of ~1e-4 of the range at ResNet's layer4.
        assert_same(cl[layer], ref[layer], f"{layer} channels_last", 1e-3 * ref[layer].abs().max().item())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bb(x64.contiguous(memory_format=torch.channels_last))
    for layer in bb.layers:
        h, w = layer_map_size(bb.name, layer, 64)
        assert out[layer].shape == (2, bb.channels[layer], h, w)
        assert out[layer].dtype == torch.bfloat16
        assert torch.isfinite(out[layer]).all(), layer


def test_square_resize_keeps_the_whole_frame_and_changes_the_key():
    # the joint-attention paper's Sec. 4.2 resizes frames to 384x384: the whole frame, aspect ratio not kept
    from torchvision.transforms import functional as TF

    from actiontk.models.backbones import IMAGENET_MEAN, IMAGENET_STD, backbone_identity, make_preprocess

    frame = torch.randint(0, 256, (1, 3, 24, 40), dtype=torch.uint8)
    frame[..., :, :8] = 255  # a bright left edge that a centre crop would cut away
    square = make_preprocess("vgg16", 16, imagenet=False, square=True)(frame)
    expected = TF.normalize(TF.resize(frame, [16, 16], antialias=True).float() / 255, IMAGENET_MEAN, IMAGENET_STD)
    assert square.shape == (1, 3, 16, 16)
    torch.testing.assert_close(square, expected, atol=1e-5, rtol=0)
    cropped = make_preprocess("vgg16", 16, imagenet=False)(frame)
    assert (square - cropped).abs().max() > 0.1  # the default crops the sides
    a = backbone_identity("vgg16", ["pool4"], "none", 16)
    b = backbone_identity("vgg16", ["pool4"], "none", 16, square=True)
    assert a != b and a["preprocess"]["resize_size"] == [16] and b["preprocess"]["resize_size"] == [16, 16]
