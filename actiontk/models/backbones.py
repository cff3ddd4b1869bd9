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

Every other torchvision classification or video model is accepted too, by its registered name, with graph node
names as layers (:mod:`actiontk.models.zoo`: shapes from a cached meta-device dry run, token outputs as maps,
clips for the video models). A request made only of a curated spec's layer names goes the curated way, and
keeps the cache key it always had.

Weights are ``"imagenet"`` (torchvision's enum, downloaded into / loaded from torch's hub cache), a member
name of the model's weights enum (``"IMAGENET1K_V2"``), ``"none"`` (random, deterministic per seed) or a path
to a local state dict. Every problem the user can fix
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
from actiontk.errors import UserError, one_line

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
        _check_name(name)
        raise UserError(f"{name} is not one of the curated backbones", hint=f"curated: {', '.join(BACKBONES)}")
    return spec


def _check_name(name: str) -> None:
    """A name that is no curated spec must be a torchvision model (this imports torchvision)."""
    from actiontk.models import zoo

    if isinstance(name, str) and zoo.is_model(name):
        return
    close = zoo.close_matches(str(name), list(dict.fromkeys([*BACKBONES, *zoo.image_models(), *zoo.video_models()])))
    raise UserError(f"unknown backbone {name!r}" + (f"; close: {', '.join(close)}" if close else ""),
                    hint=f"known backbones: {', '.join(BACKBONES)} (the papers'), or any torchvision classification "
                    "or video model by its registered name (`actiontk backbones` lists them)")


def _split(layers: Sequence[str] | str) -> list[str]:
    if isinstance(layers, str):
        # A bare string would otherwise be iterated character by character.
        return [part.strip() for part in layers.split(",")]
    return list(layers)


def _curated(name: str, layers: Sequence[str] | str) -> bool:
    """Whether the request goes through a curated spec: a curated backbone with its own layer names only (the
    cache keys of these requests are the ones actiontk always computed)."""
    spec = BACKBONES.get(name)
    if spec is None:
        return False
    requested = _split(layers)
    if all(layer in spec.layers for layer in requested) or not requested or not all(requested):
        return True
    # graph node names of a curated model go the general way; anything else is the curated error below
    from actiontk.models import zoo

    nodes = zoo.layer_names(name)
    return not all(layer in spec.layers or layer.removesuffix(zoo.CLS) in nodes for layer in requested)


def _levels(name: str, layers: Sequence[str] | str) -> list:
    """The general path's levels (zoo.Level), duplicates refused, in graph order."""
    from actiontk.models import zoo

    _check_name(name)
    requested = _split(layers)
    if not requested or any(not layer for layer in requested):
        raise UserError(f"no layer given for {name} (or an empty layer name)",
                        hint=f"e.g. --layers {','.join(zoo.suggested_layers(name))}")
    duplicates = sorted({layer for layer in requested if requested.count(layer) > 1}, key=requested.index)
    if duplicates:
        raise UserError(f"layer {', '.join(map(repr, duplicates))} given more than once", hint="list each layer once")
    spec = BACKBONES.get(name)
    aliases = {alias: ls.node for alias, ls in spec.layers.items()} if spec else {}
    try:
        return zoo.resolve(name, requested, aliases)
    except UserError as exc:  # the papers' layer names on another model: say whose they are
        owners = {layer: [b for b, sp in BACKBONES.items() if layer in sp.layers] for layer in requested}
        theirs = sorted({b for layer, bs in owners.items() if bs and layer not in aliases for b in bs},
                        key=list(BACKBONES).index)
        if theirs:
            exc.message += f" ({', '.join(layer for layer, bs in owners.items() if bs)} are layers of " \
                           f"{' / '.join(theirs)}, not graph nodes of {name})"
        raise


def known_layers(backbone: str) -> list[str]:
    """The layer names of ``backbone`` in network order: a curated spec's aliases, else the graph's node names."""
    if backbone in BACKBONES:
        return list(BACKBONES[backbone].layers)
    _check_name(backbone)
    from actiontk.models import zoo

    return list(zoo.layer_names(backbone))


def _check_layers(spec: BackboneSpec, layers: Sequence[str] | str) -> list[str]:
    """The requested layers in network order; a string is read as a comma-separated list (CLI style)."""
    layers = _split(layers)
    choices = f"{spec.name} has layers: {', '.join(spec.layers)}"
    requested = list(layers)
    if not requested or any(not layer for layer in requested):
        raise UserError(f"no layer given for {spec.name} (or an empty layer name)", hint=f"choose from {choices}")
    unknown = [layer for layer in requested if layer not in spec.layers]
    if unknown:
        from actiontk.models import zoo

        close = zoo.close_matches(unknown[0], list(zoo.layer_names(spec.name)))
        raise UserError(f"unknown layer{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} for {spec.name}"
                        + (f" (nor a graph node; close nodes: {', '.join(close)})" if close else " (nor a graph node)"),
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
    _check_size(size)
    if _curated(backbone, [layer]):
        spec = _spec(backbone)
        _check_layers(spec, [layer])
        side = _side(spec.layers[layer].ops, size)
        return side, side
    shape = level_shape(backbone, layer, size)
    return (0, 0) if shape is None else (int(shape[-2]), int(shape[-1]))


def level_shape(backbone: str, layer: str, size: int, frames: int | None = None) -> tuple[int, ...] | None:
    """The stored shape of one level without the batch axis — (C, h, w), or (C, t, h, w) for a video model's clip
    of ``frames`` — from the curated arithmetic or a (cached) dry run; None where the model cannot run at
    ``size``."""
    _check_size(size)
    if _curated(backbone, [layer]):
        h, w = layer_map_size(backbone, layer, size)
        return (channels(backbone, layer), h, w) if h > 0 else None
    from actiontk.models import zoo

    (level,) = _levels(backbone, [layer])
    return zoo.level_shape(backbone, level, size, frames)


def min_size(backbone: str, layer: str, grid: int = 1) -> int:
    """Smallest input size giving ``layer`` a map of at least ``grid`` x ``grid``."""
    if _curated(backbone, [layer]):
        spec = _spec(backbone)
        _check_layers(spec, [layer])
        return _min_side(spec.layers[layer].ops, grid)
    from actiontk.models import zoo

    found = zoo.smallest_size(backbone, _levels(backbone, [layer]), 1, grid)
    if found is None:
        raise UserError(f"no size up to 2048 px gives {layer} of {backbone} a {grid}x{grid} map",
                        hint="choose another layer or a smaller --grid")
    return found


def _check_grid(grid: int | None) -> None:
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise UserError(f"--grid must be a positive integer, got {grid!r}", hint="use --grid 1 or more")


def _validate_general(name: str, layers: Sequence[str], size: int, grid: int | None, frames: int | None) -> None:
    """validate() for any torchvision model: the requested sizes checked by a (cached) dry run."""
    from actiontk.models import zoo

    levels = _levels(name, layers)
    need = grid or 1
    if zoo.fits(name, levels, size, need, frames):  # also refuses nodes without a spatial output
        return
    error = zoo.run_error(name, size, frames)
    smallest = zoo.smallest_size(name, levels, size, need, frames)
    hint = f"use --size {smallest}" + (" or more" if error is None else "") if smallest else "choose other layers"
    if error is not None:
        raise UserError(f"{name} cannot run at --size {size}: {error}", hint=hint)
    small = [lv for lv in levels if lv.part == "map" and min(zoo.level_shape(name, lv, size, frames)[-2:]) < need]
    got = zoo.level_shape(name, small[0], size, frames)
    why = f"its feature map would be {got[-2]}x{got[-1]}" + (f", smaller than --grid {grid}" if grid else "")
    raise UserError(f"--size {size} is too small for {small[0].name} of {name}: {why}",
                    hint=hint + (", or a smaller --grid" if need > 1 else ""))


def validate(name: str, layers: Sequence[str], size: int, grid: int | None, frames: int | None = None) -> None:
    """Reject an impossible extraction request before any model is built or video decoded.

    ``grid`` is the side of the pooling grid the caller will apply to every map (None: no grid, a map only
    has to be non-empty). ``frames``: the clip length of a video model.
    """
    if not _curated(name, layers):
        _check_size(size)
        _check_grid(grid)
        return _validate_general(name, layers, size, grid, frames)
    spec = _spec(name)
    chosen = _check_layers(spec, layers)
    _check_size(size)
    _check_grid(grid)
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


def _imagenet_state_dict(name: str, weights: Any, progress: bool) -> dict[str, Tensor]:
    """The state dict of a weights enum member through torchvision's hub cache; no network problem escapes as a
    traceback."""
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
                f"the cached ImageNet weights {cached} for {name} could not be loaded: {one_line(exc)}",
                hint=f"delete that file to download it again, or use {alternatives}",
            ) from exc
        raise UserError(
            f"the ImageNet weights for {name} ({_enum_id(weights)}) could not be downloaded from "
            f"{weights.url}: {one_line(exc)}",
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
        raise UserError(f"weights file {path} is not a readable PyTorch checkpoint: {one_line(exc)}",
                        hint=_PATH_HINT) from exc
    except Exception as exc:  # OSError, EOFError, RuntimeError (bad zip), ...
        raise UserError(f"weights file {path} is not a readable PyTorch checkpoint: "
                        f"{type(exc).__name__}: {one_line(exc)}", hint=_PATH_HINT) from exc
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
               builder_name: str) -> dict[str, Tensor]:
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
            f"{source} does not fit torchvision's {builder_name}: {'; '.join(problems)}",
            hint=f"pass a state dict of torchvision.models.{builder_name}(), or --weights imagenet / none",
        )
    # Cast to the model's dtypes: assign=True below would otherwise adopt e.g. a half-precision file's dtype.
    return {k: state[k].to(dtype=ref.dtype) for k, ref in needed.items()}


# -- the backbone ----------------------------------------------------------------------------------------


class FeatureBackbone(torch.nn.Module):
    """A frozen torchvision network returning ``{layer: (B, C, h, w)}`` for the requested layers (a video model:
    ``(B, C, t, h, w)`` for a ``(B, 3, T, H, W)`` clip batch)."""

    def __init__(self, name: str, layers: Sequence[str], body: torch.nn.Module, weights_id: str, *,
                 channels: dict[str, int], strides: dict[str, int], imagenet: bool, member: Any = None,
                 video: bool = False):
        super().__init__()
        self.name: str = name
        self.layers: list[str] = list(layers)
        self.channels: dict[str, int] = dict(channels)
        self.strides: dict[str, int] = dict(strides)
        self.weights_id: str = weights_id
        self.video = video
        self._imagenet, self._member = imagenet, member
        self.body = body
        # The layout the input is given to the network in (None: as it comes). The extract stage sets it with
        # use_memory_format(), from memory_format() below; the features stay equal within fp tolerance.
        self.input_format: torch.memory_format | None = None
        self.eval()
        self.requires_grad_(False)

    def use_memory_format(self, fmt: torch.memory_format) -> FeatureBackbone:
        """Convert the weights to ``fmt`` and give every input in it from now on."""
        self.input_format = fmt
        return self.to(memory_format=fmt)

    def train(self, mode: bool = True) -> FeatureBackbone:
        # Frozen means frozen: a caller switching its whole pipeline to training must not make BatchNorm
        # use batch statistics (or update its running ones) and thereby change the features.
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        # x: (B, 3, H, W) (video: (B, 3, T, H, W)), already normalized (see preprocess)
        dims = 5 if self.video else 4
        if x.dim() != dims or x.shape[1] != 3:
            want = "(B, 3, T, H, W)" if self.video else "(B, 3, H, W)"
            raise ValueError(f"{self.name} expects a {want} batch, got shape {tuple(x.shape)}")
        if self.input_format is not None and not self.video:
            x = x.contiguous(memory_format=self.input_format)
        out = self.body(x)
        return {layer: out[layer] for layer in self.layers}  # each (B, C, h, w)

    def preprocess(self, size: int, *, square: bool = False) -> torch.nn.Module:
        """The weights' eval transform at ``size`` (see :func:`make_preprocess`)."""
        return make_preprocess(self.name, size, imagenet=self._imagenet, square=square, member=self._member)


# channels_last on the CPU, per family, measured with bench/memory_format.py (see docs/performance.md,
# "Backbones"): True where it was faster than the contiguous layout on the machine of that table.
CPU_CHANNELS_LAST: dict[str, bool] = {
    # channels_last / contiguous frames/s, 224 px, batch 8, fp32, 2-core Xeon shared with other jobs
    "vgg": True,  # 1.46 (vgg16 conv5_3)
    "resnet": True,  # 1.32 (resnet50 layer4)
    "convnext": True,  # 1.26 (features.7)
    "efficientnet": True,  # 1.26 (efficientnet_b0 features.8)
    "mobilenet_v3": True,  # 1.30 (mobilenet_v3_small features.12)
    "regnet": False,  # 1.02 (regnet_y_400mf block4): within the noise
    "vit": False,  # 0.89 (vit_b_16 encoder_layer_11): a single patch conv, then matmuls on tokens
    "swin": False,  # 0.90 (swin_t features.7): channels-last already, by design
}


def memory_format(name: str, device: torch.device | str) -> torch.memory_format:
    """The memory format the extract stage runs ``name`` in on ``device``: channels_last on CUDA (tensor cores
    want NHWC), and on the CPU where bench/memory_format.py measured it faster for the model's family."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.channels_last
    from actiontk.models import zoo

    fam = "vgg" if name == "vgg16" else zoo.family(name)
    return torch.channels_last if CPU_CHANNELS_LAST.get(fam, False) else torch.contiguous_format


def _is_video(name: str) -> bool:
    if name in BACKBONES:
        return False
    from actiontk.models import zoo

    return zoo.is_video(name)


def is_video(name: str) -> bool:
    """Whether ``name`` is a video model (clips in, (C, t, h, w) maps out); no torchvision import for the curated
    backbones."""
    return _is_video(name)


def _enum_id(member: Any) -> str:
    return f"{type(member).__name__}.{member.name}"


def _member(name: str, weights: str | os.PathLike[str]) -> Any:
    """The weights enum member that ``weights`` names, or None (``none`` or a file). ``imagenet`` is a curated
    spec's pinned checkpoint (the papers' era) and every other model's DEFAULT; an enum member name (such as
    ``IMAGENET1K_V2``) is that member."""
    if not isinstance(weights, str) or weights == "none":
        return None
    if weights == "imagenet" and name in BACKBONES:
        return BACKBONES[name].weights
    from actiontk.models import zoo

    return zoo.weights_member(name, weights)


def make_preprocess(name: str, size: int, *, imagenet: bool, square: bool = False, member: Any = None
                    ) -> torch.nn.Module:
    """The weights' eval transform at ``size``: resize the shorter side, center-crop, ImageNet-normalize.

    Takes uint8 (or float in [0, 1]) ``(..., 3, H, W)`` tensors or PIL images, returns float
    ``(..., 3, size, size)``. ``resize_size == crop_size`` on purpose: the whole short side is kept.
    ``square=True`` resizes the whole frame to ``size`` x ``size`` instead (the aspect ratio is not kept and
    nothing is cropped), as the joint-attention paper's Sec. 4.2 resizes frames to 384 x 384. ``member``: the
    weights enum member whose transform is used (default: the curated spec's, else the model's DEFAULT).
    """
    _check_size(size)
    if member is None:
        if name in BACKBONES:
            member = BACKBONES[name].weights
        else:
            _check_name(name)
            from actiontk.models import zoo

            member = zoo.weights_enum(name).DEFAULT
    make = member.transforms  # functools.partial(ImageClassification, crop_size=...)
    # VideoClassification (the video models' transform) takes sizes as sequences, maps (N, T, 3, H, W) clips
    # to (N, 3, T, size, size); ImageClassification takes one int
    sizes = {"resize_size": [size], "crop_size": [size, size]} if _is_video(name) else \
        {"resize_size": size, "crop_size": size}
    # Random or local weights: the same transform, with the ImageNet statistics spelled out so that an eventual
    # change of the enum's defaults cannot change them silently.
    t = make(**sizes) if imagenet else make(**sizes, mean=IMAGENET_MEAN, std=IMAGENET_STD)
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


def _identity(name: str, layers: Sequence[str], weights_id: str, size: int, imagenet: bool,
              square: bool = False, member: Any = None, nodes: dict[str, str] | None = None) -> dict[str, Any]:
    import torchvision

    t = make_preprocess(name, size, imagenet=imagenet, square=square, member=member)
    interpolation = getattr(t, "interpolation", None)
    version = re.match(r"(\d+)\.(\d+)", torchvision.__version__)
    ident = {
        "backbone": name,
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
    if nodes is not None:  # the general path: which graph node each stored level reads
        ident["nodes"] = dict(nodes)
    return ident


def weights_identity(name: str, weights: str | os.PathLike[str], *, seed: int = 0) -> str:
    """The ``weights_id`` that :func:`build_backbone` would give, without building or downloading anything."""
    if name not in BACKBONES:
        _check_name(name)
    member = _member(name, weights)
    if member is not None:
        return _enum_id(member)
    if isinstance(weights, str) and weights == "none":
        return _random_id(seed, _has_batchnorm(name))
    path = Path(os.fspath(weights)).expanduser()
    _check_weights_path(path)
    return "file:" + file_sha256(path)


def _has_batchnorm(name: str) -> bool:
    if name in BACKBONES:
        return BACKBONES[name].batchnorm
    from actiontk.models import zoo

    model = zoo.build_model(name, None, meta=True)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _random_id(seed: int, calibrated: bool) -> str:
    return f"random(seed={seed},bn=calibrated)" if calibrated else f"random(seed={seed})"


# Random weights of a network with BatchNorm: a freshly built BatchNorm has running statistics 0 / 1, so in eval
# mode it normalizes nothing, and ResNet-101's 33 residual additions then grow activations by orders of magnitude
# (layer4 overflows float16 at any input size). The statistics are instead measured once, in training mode, on a
# fixed batch of seeded Gaussian images, which makes every BatchNorm a true normalization (unit-scale features):
# deterministic per seed, data-independent, and irrelevant to loaded weights.
_CALIBRATION_BATCH, _CALIBRATION_SIZE = 8, 64


def _calibrate_batchnorm(model: torch.nn.Module, shape: tuple[int, ...] | None = None) -> bool:
    """Set the running statistics of every BatchNorm of a randomly initialized ``model``; False if it has none.
    ``shape``: the calibration batch's shape (default 8 x 3 x 64 x 64)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration pass: exactly the batch's statistics
    shape = shape or (_CALIBRATION_BATCH, 3, _CALIBRATION_SIZE, _CALIBRATION_SIZE)
    x = torch.randn(*shape)  # the caller seeded the RNG
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
    weights_id = weights_identity(name, weights, seed=seed)
    member = _member(name, weights)
    imagenet = member is not None
    if _curated(name, layers):
        chosen = _check_layers(_spec(name), layers)
        return _identity(name, chosen, weights_id, size, imagenet, square, member)
    levels = _levels(name, layers)
    return _identity(name, [lv.name for lv in levels], weights_id, size, imagenet, square, member,
                     nodes={lv.name: lv.node for lv in levels})


def channels(name: str, layer: str) -> int:
    """Channel count of ``layer`` of backbone ``name``."""
    if _curated(name, [layer]):
        spec = _spec(name)
        _check_layers(spec, [layer])
        return spec.layers[layer].channels
    from actiontk.models import zoo

    (level,) = _levels(name, [layer])
    size = zoo.default_size(name)
    shape = zoo.level_shape(name, level, size, zoo.default_frames(name))
    if shape is None:
        raise UserError(f"{name} does not run at its own default size {size}: {zoo.run_error(name, size)}")
    return int(shape[0])


def _load_state(name: str, weights: str | os.PathLike[str], member: Any, progress: bool
                ) -> tuple[Mapping[str, Any], str, str]:
    """(state dict, weights_id, how to name the source in errors) of loaded weights."""
    if member is not None:
        return _imagenet_state_dict(name, member, progress), _enum_id(member), f"the weights {_enum_id(member)}"
    path = Path(os.fspath(weights)).expanduser()
    state, weights_id = _read_checkpoint(path)
    return state, weights_id, f"weights file {path}"


def build_backbone(name: str, layers: Sequence[str], weights: str | os.PathLike[str] = "imagenet", *,
                   seed: int = 0, progress: bool = True, size: int | None = None,
                   frames: int | None = None) -> FeatureBackbone:
    """Build ``name`` truncated after the last of ``layers``, with ``weights`` = imagenet | none | an enum member
    name such as IMAGENET1K_V2 | PATH.

    ``seed`` only matters for ``weights="none"``; ``progress`` shows torchvision's download progress bar;
    ``size``: the input size, which ViT and MaxViT are built for (default: their weights' crop size) and which
    sets the strides reported for other general models; ``frames``: a video model's clip length (default 16).
    The caller's RNG state is left untouched in every case.
    """
    if not _curated(name, layers):
        return _build_general(name, layers, weights, seed=seed, progress=progress, size=size, frames=frames)
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = _spec(name)
    chosen = _check_layers(spec, layers)
    return_nodes = {spec.layers[layer].node: layer for layer in chosen}
    shape = {"channels": {layer: spec.layers[layer].channels for layer in chosen},
             "strides": {layer: spec.layers[layer].stride for layer in chosen}}

    if isinstance(weights, str) and weights == "none":
        # fork_rng: two processes building with the same seed get the same weights, and the caller's
        # random stream (data shuffling, sampling) is not advanced. devices=[]: init runs on the CPU, and
        # forking CUDA generators would initialize CUDA for nothing.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.builder(weights=None)
            calibrated = _calibrate_batchnorm(model)
        body = create_feature_extractor(model.eval(), return_nodes=return_nodes)
        return FeatureBackbone(name, chosen, body, _random_id(seed, calibrated), imagenet=False, **shape)

    member = _member(name, weights)
    # Loaded weights: build on the meta device (no random init: VGG16's classifier alone takes seconds
    # and 500 MB), cut, then assign real tensors to what the cut network kept.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = spec.builder(weights=None)
    full_keys = set(model.state_dict())
    body = create_feature_extractor(model.eval(), return_nodes=return_nodes)
    del model
    state, weights_id, source = _load_state(name, weights, member, progress)
    if member is not None and member == spec.weights:
        source = f"the ImageNet weights {spec.weights_name}"
    body.load_state_dict(_fit_state(body, full_keys, state, source, spec.builder_name), strict=True, assign=True)
    _check_loaded(name, body)
    return FeatureBackbone(name, chosen, body, weights_id, imagenet=member is not None, member=member, **shape)


def _check_loaded(name: str, body: torch.nn.Module) -> None:
    leftover = [n for n, t in [*body.named_parameters(), *body.named_buffers()] if t.is_meta]
    if leftover:  # every tensor of the cut network has a key, so this is a bug, not a user error
        raise RuntimeError(f"{name}: tensors left uninitialized after loading weights: {leftover[:3]}")


def _build_general(name: str, layers: Sequence[str], weights: str | os.PathLike[str], *, seed: int,
                   progress: bool, size: int | None, frames: int | None = None) -> FeatureBackbone:
    """build_backbone() for any torchvision model: graph nodes, maps from the dry run, token outputs as maps."""
    from actiontk.models import zoo

    levels = _levels(name, layers)
    size = size or zoo.default_size(name)
    _check_size(size)
    video = zoo.is_video(name)
    frames = (frames or zoo.default_frames(name)) if video else None
    shapes = {lv.name: zoo.level_shape(name, lv, size, frames) for lv in levels}
    if any(shape is None for shape in shapes.values()):
        raise UserError(f"{name} cannot run at --size {size}: {zoo.run_error(name, size, frames)}",
                        hint=f"use --size {zoo.default_size(name)}")
    layouts = {lv.node: zoo.dry_run(name, [lv.node], size, frames)[lv.node]["layout"] for lv in levels}
    maps = [lv.name for lv in levels]
    dims = {"channels": {k: int(v[0]) for k, v in shapes.items()},
            "strides": {k: max(1, round(size / v[-1])) if v[-1] > 1 else size for k, v in shapes.items()}}
    member = _member(name, weights)
    if isinstance(weights, str) and weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = zoo.build_model(name, size, meta=False, frames=frames)
            body = zoo.cut(model.eval(), levels, layouts)
            # calibrated through the cut network only: the pruned head may not run at this size (S3D's 2x7x7 pool)
            batch = (2, 3, frames, size, size) if video else (2, 3, size, size)
            calibrated = _calibrate_batchnorm(body, batch)
        return FeatureBackbone(name, maps, body, _random_id(seed, calibrated), imagenet=False, video=video, **dims)
    model = zoo.build_model(name, size, meta=True, frames=frames)
    full_keys = set(model.state_dict())
    body = zoo.cut(model, levels, layouts)
    del model
    state, weights_id, source = _load_state(name, weights, member, progress)
    state = zoo.fit_position(name, dict(state), size)
    body.load_state_dict(_fit_state(body, full_keys, state, source, name), strict=True, assign=True)
    _check_loaded(name, body)
    return FeatureBackbone(name, maps, body, weights_id, imagenet=member is not None, member=member, video=video,
                           **dims)
