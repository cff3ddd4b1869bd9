"""Frozen CNN backbones that return intermediate feature maps by layer name, for the ``extract`` stage.

What this module holds:

* :data:`BACKBONES` — one :class:`BackboneSpec` per supported network (``vgg16``, ``resnet101`` and the
  smaller ``resnet50`` and ``resnet18``): the torchvision builder, the ImageNet weights enum member, and for
  every tappable layer its graph node, channel count, stride and the exact spatial arithmetic from the input
  to the tap.
* :func:`validate` — cheap checks of a backbone/layers/size/grid request, no model built, so the CLI can
  reject impossible requests before any video is decoded.
* :func:`build_backbone` — a :class:`FeatureBackbone`: the torchvision model cut with
  ``create_feature_extractor`` after the last requested tap (later nodes, the classifier included, are
  pruned from the traced graph and never computed), in eval mode with gradients off.

Weights are ``"imagenet"`` (torchvision's enum, downloaded into / loaded from torch's hub cache),
``"none"`` (random, deterministic per seed) or a path to a local state dict. Every problem the user can fix
(unknown names, too small a size, a missing or mismatching weights file, no network) is a
:class:`~actiontk.errors.UserError` that says what to do.

torchvision is imported lazily (it costs over a second), so :func:`validate` and :func:`known_layers`
stay cheap.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

from actiontk.cache.runs import file_sha256
from actiontk.errors import UserError

# The statistics every ImageNet-trained torchvision classifier was trained with; used as well for random
# and local weights, so that switching weights never silently changes the input distribution.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

WEIGHT_KEYWORDS = ("imagenet", "none")

# (kernel, stride, padding) of one spatial op; floor rounding, as in torch's conv and max-pool defaults.
Op = tuple[int, int, int]


@dataclass(frozen=True)
class LayerSpec:
    """One tappable layer: its node in the traced graph, its output channels and total stride."""

    node: str
    channels: int
    stride: int
    # Every op from the input to this tap that changes the spatial size, in order. Size-preserving ops
    # (3x3 convs with padding 1, 1x1 convs with stride 1) are left out since they don't change the arithmetic.
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class BackboneSpec:
    """A supported network: the torchvision builder and weights, by name, and its layers in network order."""

    name: str
    builder_name: str  # attribute of torchvision.models
    weights_name: str  # "<EnumClass>.<MEMBER>" in torchvision.models
    layers: dict[str, LayerSpec]

    @property
    def batchnorm(self) -> bool:
        """Whether the network has BatchNorm layers (random weights then get calibrated statistics)."""
        return self.builder_name.startswith("resnet") or self.builder_name.endswith("_bn")

    @property
    def builder(self) -> Callable[..., torch.nn.Module]:
        import torchvision.models

        return getattr(torchvision.models, self.builder_name)

    @property
    def weights(self) -> Any:
        """The torchvision weights enum member (a ``WeightsEnum``)."""
        import torchvision.models

        enum_name, member = self.weights_name.split(".")
        return getattr(getattr(torchvision.models, enum_name), member)


_POOL2: Op = (2, 2, 0)  # VGG's max-pool
_RES_STEM: tuple[Op, ...] = ((7, 2, 3), (3, 2, 1))  # conv1 7x7/2 pad 3, then max-pool 3x3/2 pad 1
# A downsampling bottleneck: torchvision puts the stride on the 3x3 conv (pad 1, "ResNet v1.5"); its 1x1/2
# shortcut gives the same size, floor((h - 1) / 2) + 1, so one op describes the block.
_RES_DOWN: Op = (3, 2, 1)



def _resnet(name: str, weights_enum: str, widths: tuple[int, int, int, int]) -> BackboneSpec:
    """A torchvision ResNet tapped after each of its four stages (``layer1`` .. ``layer4``, strides 4 .. 32).

    The spatial ops are the same for every depth: the stem, then one downsampling block (the stride on the
    first block's 3x3 conv, or on a basic block's first 3x3 conv, both pad 1) at the start of layer2..4.
    IMAGENET1K_V1, not torchvision's DEFAULT where a V2 exists (trained with a 2021 recipe): the papers' era
    weights.
    """
    return BackboneSpec(
        name=name,
        builder_name=name,
        weights_name=f"{weights_enum}.IMAGENET1K_V1",
        layers={f"layer{i + 1}": LayerSpec(f"layer{i + 1}", widths[i], 4 * 2**i, _RES_STEM + (_RES_DOWN,) * i)
                for i in range(4)},
    )


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(
        name="vgg16",
        builder_name="vgg16",
        # V1 is the only VGG16 ImageNet checkpoint with these features: the original Caffe-era weights
        # (vgg16-397923af.pth) that the papers' features came from.
        weights_name="VGG16_Weights.IMAGENET1K_V1",
        layers={
            # features: 0 conv1_1, 1 relu, 2 conv1_2, 3 relu, 4 pool1, 5-8 block 2, 9 pool2, 10-15 block 3,
            # 16 pool3, 17 conv4_1 ... 21 conv4_3, 22 its ReLU, 23 pool4, 24-29 block 5 (29 = conv5_3's ReLU),
            # 30 pool5. The ReLUs are in-place, so a conv node's output would be overwritten: tap the ReLU.
            "conv4_3": LayerSpec("features.22", 512, 8, (_POOL2,) * 3),
            "pool4": LayerSpec("features.23", 512, 16, (_POOL2,) * 4),
            "conv5_3": LayerSpec("features.29", 512, 16, (_POOL2,) * 4),
            "pool5": LayerSpec("features.30", 512, 32, (_POOL2,) * 5),
        },
    ),
    "resnet101": _resnet("resnet101", "ResNet101_Weights", (256, 512, 1024, 2048)),
    # Smaller ResNets with the same taps and strides (layer4 at stride 32): resnet50 (bottleneck blocks, the same
    # channels as resnet101) and resnet18 (basic blocks, 64..512 channels), e.g. for fine-tuning on a CPU.
    "resnet50": _resnet("resnet50", "ResNet50_Weights", (256, 512, 1024, 2048)),
    "resnet18": _resnet("resnet18", "ResNet18_Weights", (64, 128, 256, 512)),
}


# -- cheap checks (no torchvision, no model) ----------------------------------------------------------------


def _spec(name: str) -> BackboneSpec:
    spec = BACKBONES.get(name)
    if spec is None:
        raise UserError(f"unknown backbone {name!r}", hint=f"known backbones: {', '.join(BACKBONES)}")
    return spec


def known_layers(backbone: str) -> list[str]:
    """The layer names of ``backbone`` in network order."""
    return list(_spec(backbone).layers)


def _check_layers(spec: BackboneSpec, layers: Sequence[str] | str) -> list[str]:
    """The requested layers in network order; a string is read as a comma-separated list (CLI style)."""
    if isinstance(layers, str):
        # A bare string would otherwise be iterated character by character.
        layers = [part.strip() for part in layers.split(",")]
    choices = f"{spec.name} has layers: {', '.join(spec.layers)}"
    requested = list(layers)
    if not requested or any(not layer for layer in requested):
        raise UserError(f"no layer given for {spec.name} (or an empty layer name)", hint=f"choose from {choices}")
    unknown = [layer for layer in requested if layer not in spec.layers]
    if unknown:
        raise UserError(f"unknown layer{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} for {spec.name}",
                        hint=choices)
    duplicates = sorted({layer for layer in requested if requested.count(layer) > 1}, key=requested.index)
    if duplicates:
        raise UserError(f"layer {', '.join(map(repr, duplicates))} given more than once", hint="list each layer once")
    return [layer for layer in spec.layers if layer in requested]


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"--size must be a positive number of pixels, got {size!r}", hint="e.g. --size 224")


def _side(ops: Sequence[Op], side: int) -> int:
    """Output side of ``ops`` for an input side, exactly as torch computes it (0 = the map is empty)."""
    for kernel, stride, pad in ops:
        if side < 1:
            return 0
        side = max(0, (side + 2 * pad - kernel) // stride + 1)
    return side


def _min_side(ops: Sequence[Op], need: int) -> int:
    """Smallest input side whose output is at least ``need``: invert each op, last to first.

    floor((h + 2p - k) / s) + 1 >= n  <=>  h >= (n - 1) s + k - 2p, exactly, for integers. Every
    intermediate map must also be non-empty, hence the max with 1.
    """
    for kernel, stride, pad in reversed(ops):
        need = max(1, (need - 1) * stride + kernel - 2 * pad)
    return max(1, need)


def layer_map_size(backbone: str, layer: str, size: int) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of ``layer`` for a ``size`` x ``size`` input (``(0, 0)``: too small)."""
    spec = _spec(backbone)
    _check_layers(spec, [layer])
    _check_size(size)
    side = _side(spec.layers[layer].ops, size)
    return side, side


def min_size(backbone: str, layer: str, grid: int = 1) -> int:
    """Smallest input size giving ``layer`` a map of at least ``grid`` x ``grid``."""
    spec = _spec(backbone)
    _check_layers(spec, [layer])
    return _min_side(spec.layers[layer].ops, grid)


def validate(name: str, layers: Sequence[str], size: int, grid: int | None) -> None:
    """Reject an impossible extraction request before any model is built or video decoded.

    ``grid`` is the side of the pooling grid the caller will apply to every map (None: no grid, a map only
    has to be non-empty).
    """
    spec = _spec(name)
    chosen = _check_layers(spec, layers)
    _check_size(size)
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise UserError(f"--grid must be a positive integer, got {grid!r}", hint="use --grid 1 or more")
    need = grid or 1
    too_small = [layer for layer in chosen if _side(spec.layers[layer].ops, size) < need]
    if not too_small:
        return
    # Report the layer that needs the most, so the suggested size fixes every requested layer at once.
    worst = max(too_small, key=lambda layer: _min_side(spec.layers[layer].ops, need))
    layer_spec = spec.layers[worst]
    got = _side(layer_spec.ops, size)
    why = f"its feature map would be {got}x{got}" + (f", smaller than --grid {grid}" if grid is not None else "")
    raise UserError(
        f"--size {size} is too small for {worst} of {name} (stride {layer_spec.stride}): {why}",
        hint=f"use --size {_min_side(layer_spec.ops, need)} or more" + (", or a smaller --grid" if need > 1 else ""),
    )


# -- weights ---------------------------------------------------------------------------------------------


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line: UserError messages are printed on a single line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _imagenet_state_dict(spec: BackboneSpec, progress: bool) -> dict[str, Tensor]:
    """The ImageNet state dict through torchvision's hub cache; no network problem escapes as a traceback."""
    weights = spec.weights
    file_name = os.path.basename(urlparse(weights.url).path)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / file_name
    was_cached = cached.is_file()
    try:
        # Same call torchvision's builders make, plus CPU mapping and weights_only: a cache file is still a
        # file on disk and must not be able to run code.
        return weights.get_state_dict(progress=progress, check_hash=True, map_location="cpu", weights_only=True)
    except Exception as exc:  # URLError, HTTPError, OSError, hash mismatch, a truncated cache file...
        alternatives = f"--weights PATH (a local copy of {file_name}) or --weights none (random weights)"
        if was_cached:
            raise UserError(
                f"the cached ImageNet weights {cached} for {spec.name} could not be loaded: {_one_line(exc)}",
                hint=f"delete that file to download it again, or use {alternatives}",
            ) from exc
        raise UserError(
            f"the ImageNet weights for {spec.name} ({spec.weights_name}) could not be downloaded from "
            f"{weights.url}: {_one_line(exc)}",
            hint=f"offline? copy {file_name} from an online machine's ~/.cache/torch/hub/checkpoints/ into "
            f"{cache_dir}, or pass {alternatives}",
        ) from exc


_PATH_HINT = "pass a state dict saved with torch.save(model.state_dict(), PATH), or --weights imagenet / --weights none"


def _check_weights_path(path: Path) -> None:
    if not path.exists():
        raise UserError(f"weights file {path} does not exist", hint=_PATH_HINT)
    if not path.is_file():
        raise UserError(f"--weights {path} is not a file", hint=_PATH_HINT)


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], str]:
    """Load a local checkpoint as a state dict, and its ``file:<sha256>`` id."""
    _check_weights_path(path)
    try:
        digest = file_sha256(path)
        # weights_only: a checkpoint from the internet must not be able to execute code when unpickled.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise UserError(
                f"weights file {path} holds Python objects other than tensors and was not loaded "
                "(only plain state dicts are, with torch.load(weights_only=True))",
                hint="re-save it from a trusted environment with torch.save(model.state_dict(), PATH)",
            ) from exc
        raise UserError(f"weights file {path} is not a readable PyTorch checkpoint: {_one_line(exc)}",
                        hint=_PATH_HINT) from exc
    except Exception as exc:  # OSError, EOFError, RuntimeError (bad zip), ...
        raise UserError(f"weights file {path} is not a readable PyTorch checkpoint: "
                        f"{type(exc).__name__}: {_one_line(exc)}", hint=_PATH_HINT) from exc
    # Training scripts often wrap the state dict: {"state_dict": ...} (Lightning and co.), {"model": ...}.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        raise UserError(f"weights file {path} does not hold a state dict (got {type(obj).__name__})", hint=_PATH_HINT)
    state = dict(obj)
    # DistributedDataParallel saves every key as "module.<key>".
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, f"file:{digest}"


def _fit_state(body: torch.nn.Module, full_keys: set[str], state: Mapping[str, Any], source: str,
               spec: BackboneSpec) -> dict[str, Tensor]:
    """The part of ``state`` the truncated network needs, checked key by key and shape by shape.

    Keys of the full model that the truncation pruned (the classifier, later blocks) are ignored, whatever
    their shape: a checkpoint fine-tuned with another number of classes still gives the same features.
    Keys the full model doesn't have mean the file is for another architecture, and are refused.
    """
    needed = body.state_dict()
    unknown = [k for k in state if k not in full_keys]
    missing = [k for k in needed if k not in state]
    mismatched = [
        f"{k} {tuple(getattr(state[k], 'shape', ()))} vs {tuple(ref.shape)}"
        for k, ref in needed.items()
        if k in state and (not isinstance(state[k], Tensor) or state[k].shape != ref.shape)
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unknown),
                         ("shape mismatch (file vs model)", mismatched)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(
            f"{source} does not fit torchvision's {spec.builder_name}: {'; '.join(problems)}",
            hint=f"pass a state dict of torchvision.models.{spec.builder_name}(), or --weights imagenet / none",
        )
    # Cast to the model's dtypes: assign=True below would otherwise adopt e.g. a half-precision file's dtype.
    return {k: state[k].to(dtype=ref.dtype) for k, ref in needed.items()}


# -- the backbone ----------------------------------------------------------------------------------------


class FeatureBackbone(torch.nn.Module):
    """A frozen torchvision network returning ``{layer: (B, C, h, w)}`` for the requested layers."""

    def __init__(self, spec: BackboneSpec, layers: Sequence[str], body: torch.nn.Module, weights_id: str,
                 imagenet: bool):
        super().__init__()
        self.spec = spec
        self.name: str = spec.name
        self.layers: list[str] = list(layers)
        self.channels: dict[str, int] = {layer: spec.layers[layer].channels for layer in self.layers}
        self.strides: dict[str, int] = {layer: spec.layers[layer].stride for layer in self.layers}
        self.weights_id: str = weights_id
        self._imagenet = imagenet
        self.body = body
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureBackbone:
        # Frozen means frozen: a caller switching its whole pipeline to training must not make BatchNorm
        # use batch statistics (or update its running ones) and thereby change the features.
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        # x: (B, 3, H, W), already normalized (see preprocess)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name} expects a (B, 3, H, W) batch, got shape {tuple(x.shape)}")
        out = self.body(x)
        return {layer: out[layer] for layer in self.layers}  # each (B, C, h, w)

    def preprocess(self, size: int, *, square: bool = False) -> torch.nn.Module:
        """The weights' eval transform at ``size`` (see :func:`make_preprocess`)."""
        return make_preprocess(self.name, size, imagenet=self._imagenet, square=square)


def make_preprocess(name: str, size: int, *, imagenet: bool, square: bool = False) -> torch.nn.Module:
    """The weights' eval transform at ``size``: resize the shorter side, center-crop, ImageNet-normalize.

    Takes uint8 (or float in [0, 1]) ``(..., 3, H, W)`` tensors or PIL images, returns float
    ``(..., 3, size, size)``. ``resize_size == crop_size`` on purpose: the whole short side is kept.
    ``square=True`` resizes the whole frame to ``size`` x ``size`` instead (the aspect ratio is not kept and
    nothing is cropped), as the joint-attention paper's Sec. 4.2 resizes frames to 384 x 384.
    """
    _check_size(size)
    make = _spec(name).weights.transforms  # functools.partial(ImageClassification, crop_size=...)
    if imagenet:
        t = make(resize_size=size, crop_size=size)
    else:
        # Random or local weights: the same transform, with the ImageNet statistics spelled out so that
        # an eventual change of the enum's defaults cannot change them silently.
        t = make(resize_size=size, crop_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return SquareResize(t, size) if square else t


class SquareResize(torch.nn.Module):
    """Resize the whole frame to ``size`` x ``size`` (aspect ratio not kept), then the weights' transform (whose
    shorter-side resize and centre crop are then no-ops). torchvision's ImageClassification takes one size
    only, so the square resize comes first, with the same interpolation and antialiasing."""

    def __init__(self, inner: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.inner, self.size = inner, size
        self.resize_size, self.crop_size = [size, size], list(getattr(inner, "crop_size", [size]))
        self.mean, self.std = getattr(inner, "mean", []), getattr(inner, "std", [])
        self.interpolation, self.antialias = getattr(inner, "interpolation", None), getattr(inner, "antialias", None)

    def forward(self, x):
        from torchvision.transforms import functional as TF

        kwargs = {} if self.interpolation is None else {"interpolation": self.interpolation}
        return self.inner(TF.resize(x, [self.size, self.size], antialias=self.antialias, **kwargs))

    def __repr__(self) -> str:
        return f"SquareResize(size={self.size}, then {self.inner!r})"


def _identity(spec: BackboneSpec, layers: Sequence[str], weights_id: str, size: int, imagenet: bool,
              square: bool = False) -> dict[str, Any]:
    import torchvision

    t = make_preprocess(spec.name, size, imagenet=imagenet, square=square)
    interpolation = getattr(t, "interpolation", None)
    version = re.match(r"(\d+)\.(\d+)", torchvision.__version__)
    return {
        "backbone": spec.name,
        "layers": list(layers),
        "weights_id": weights_id,
        "size": size,
        "preprocess": {
            "transform": type(t).__name__,
            "resize_size": list(getattr(t, "resize_size", [])),
            "crop_size": list(getattr(t, "crop_size", [])),
            "mean": [float(v) for v in getattr(t, "mean", [])],
            "std": [float(v) for v in getattr(t, "std", [])],
            "interpolation": getattr(interpolation, "value", str(interpolation)),
            "antialias": getattr(t, "antialias", None),
            # The repr catches fields not listed above should the transform grow some.
            "repr": " ".join(repr(t).split()),
        },
        "torchvision": version.group(0) if version else torchvision.__version__,
    }


def weights_identity(name: str, weights: str | os.PathLike[str], *, seed: int = 0) -> str:
    """The ``weights_id`` that :func:`build_backbone` would give, without building or downloading anything."""
    spec = _spec(name)
    if isinstance(weights, str) and weights == "imagenet":
        return spec.weights_name
    if isinstance(weights, str) and weights == "none":
        return _random_id(seed, spec.batchnorm)
    path = Path(os.fspath(weights)).expanduser()
    _check_weights_path(path)
    return "file:" + file_sha256(path)


def _random_id(seed: int, calibrated: bool) -> str:
    return f"random(seed={seed},bn=calibrated)" if calibrated else f"random(seed={seed})"


# Random weights of a network with BatchNorm: a freshly built BatchNorm has running statistics 0 / 1, so in eval
# mode it normalizes nothing, and ResNet-101's 33 residual additions then grow activations by orders of magnitude
# (layer4 overflows float16 at any input size). The statistics are instead measured once, in training mode, on a
# fixed batch of seeded Gaussian images, which makes every BatchNorm a true normalization (unit-scale features):
# deterministic per seed, data-independent, and irrelevant to loaded weights.
_CALIBRATION_BATCH, _CALIBRATION_SIZE = 8, 64


def _calibrate_batchnorm(model: torch.nn.Module) -> bool:
    """Set the running statistics of every BatchNorm of a randomly initialized ``model``; False if it has none."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration pass: exactly the batch's statistics
    x = torch.randn(_CALIBRATION_BATCH, 3, _CALIBRATION_SIZE, _CALIBRATION_SIZE)  # the caller seeded the RNG
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    return True


def backbone_identity(name: str, layers: Sequence[str], weights: str | os.PathLike[str], size: int, *,
                      seed: int = 0, square: bool = False) -> dict[str, Any]:
    """Everything that changes the stored features, as JSON-able data, computed without a model: what a cache key
    needs, so that a cache hit never needs the weights (which may not be downloadable here). ``square``: see
    :func:`make_preprocess`."""
    spec = _spec(name)
    chosen = _check_layers(spec, layers)
    imagenet = isinstance(weights, str) and weights == "imagenet"
    return _identity(spec, chosen, weights_identity(name, weights, seed=seed), size, imagenet, square)


def channels(name: str, layer: str) -> int:
    """Channel count of ``layer`` of backbone ``name``."""
    spec = _spec(name)
    _check_layers(spec, [layer])
    return spec.layers[layer].channels


def build_backbone(name: str, layers: Sequence[str], weights: str | os.PathLike[str] = "imagenet", *,
                   seed: int = 0, progress: bool = True) -> FeatureBackbone:
    """Build ``name`` truncated after the last of ``layers``, with ``weights`` = imagenet | none | PATH.

    ``seed`` only matters for ``weights="none"``; ``progress`` shows torchvision's download progress bar.
    The caller's RNG state is left untouched in every case.
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = _spec(name)
    chosen = _check_layers(spec, layers)
    return_nodes = {spec.layers[layer].node: layer for layer in chosen}
    keyword = weights if isinstance(weights, str) and weights in WEIGHT_KEYWORDS else None

    if keyword == "none":
        # fork_rng: two processes building with the same seed get the same weights, and the caller's
        # random stream (data shuffling, sampling) is not advanced. devices=[]: init runs on the CPU, and
        # forking CUDA generators would initialize CUDA for nothing.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.builder(weights=None)
            calibrated = _calibrate_batchnorm(model)
        body = create_feature_extractor(model.eval(), return_nodes=return_nodes)
        return FeatureBackbone(spec, chosen, body, _random_id(seed, calibrated), imagenet=False)

    # Loaded weights: build on the meta device (no random init: VGG16's classifier alone takes seconds
    # and 500 MB), cut, then assign real tensors to what the cut network kept.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = spec.builder(weights=None)
    full_keys = set(model.state_dict())
    body = create_feature_extractor(model.eval(), return_nodes=return_nodes)
    del model
    if keyword == "imagenet":
        state: Mapping[str, Any] = _imagenet_state_dict(spec, progress)
        weights_id, source = spec.weights_name, f"the ImageNet weights {spec.weights_name}"
    else:
        path = Path(os.fspath(weights)).expanduser()
        state, weights_id = _read_checkpoint(path)
        source = f"weights file {path}"
    body.load_state_dict(_fit_state(body, full_keys, state, source, spec), strict=True, assign=True)
    leftover = [n for n, t in [*body.named_parameters(), *body.named_buffers()] if t.is_meta]
    if leftover:  # every tensor of the cut network has a key, so this is a bug, not a user error
        raise RuntimeError(f"{name}: tensors left uninitialized after loading weights: {leftover[:3]}")
    return FeatureBackbone(spec, chosen, body, weights_id, imagenet=keyword == "imagenet")
