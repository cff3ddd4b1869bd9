"""Any torchvision classification model (and torchvision's video models) as a frozen feature backbone.

:mod:`actiontk.models.backbones` keeps the papers' curated specs (``vgg16``, ``resnet*``, with hand-checked
spatial arithmetic and the layer aliases ``pool4``, ``conv5_3``, ``layer4`` ...). Every other name that
``torchvision.models.list_models(module=torchvision.models)`` (or ``module=torchvision.models.video``) knows
comes through here:

* **layers** are the model's graph node names as :func:`torchvision.models.feature_extraction.
  get_graph_node_names` gives them for the eval graph (``features.3`` of ConvNeXt, ``trunk_output.block2``
  of RegNet, ``encoder.layers.encoder_layer_11`` of ViT); an unknown name is refused with the close ones.
* **shapes** come from a dry run: the model is built on the ``meta`` device (no weights, no memory), cut
  after the requested nodes and run on a meta batch at the requested size, which gives every output shape
  exactly (torch's own shape rules) in a fraction of a second. Results are kept on disk, per torchvision
  version, in ``$XDG_CACHE_HOME/actiontk/backbone-shapes/`` (``ACTIONTK_SHAPES_DIR`` overrides), so
  ``validate``, ``layer_map_size`` and ``actiontk backbones`` answer without building anything again.
* **token outputs** become spatial maps: a vision transformer's ``(B, 1 + h*w, C)`` tokens are stored as
  ``(B, C, h, w)`` with the class token dropped (``NODE.cls`` is the class token as a ``(B, C, 1, 1)``
  level, requested like a layer); Swin's ``(B, h, w, C)`` stages (and Swin3D's ``(B, t, h, w, C)``) are
  permuted to channels-first; MViT's ``(tokens, thw)`` pairs are reshaped to ``(B, C, t, h, w)``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from actiontk.cache.runs import atomic_write_text
from actiontk.errors import UserError, one_line

CLS = ".cls"  # suffix of the class-token level of a token node

# Families by name prefix (the first that matches), for the listing and the per-family choices below.
FAMILIES = (
    ("convnext", "convnext"), ("efficientnet_v2", "efficientnet_v2"), ("efficientnet", "efficientnet"),
    ("regnet", "regnet"), ("mobilenet_v3", "mobilenet_v3"), ("mobilenet_v2", "mobilenet_v2"),
    ("mnasnet", "mnasnet"), ("shufflenet", "shufflenet"), ("squeezenet", "squeezenet"), ("densenet", "densenet"),
    ("resnext", "resnet"), ("wide_resnet", "resnet"), ("resnet", "resnet"), ("vgg", "vgg"), ("alexnet", "alexnet"),
    ("googlenet", "googlenet"), ("inception", "inception"), ("vit", "vit"), ("swin3d", "swin3d"), ("swin", "swin"),
    ("maxvit", "maxvit"), ("r3d", "video_resnet"), ("mc3", "video_resnet"), ("r2plus1d", "video_resnet"),
    ("s3d", "s3d"), ("mvit", "mvit"),
)


def family(name: str) -> str:
    for prefix, fam in FAMILIES:
        if name.startswith(prefix):
            return fam
    return name


def image_models() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def video_models() -> list[str]:
    import torchvision.models.video

    return torchvision.models.list_models(module=torchvision.models.video)


def is_video(name: str) -> bool:
    return name in video_models()


def is_model(name: str) -> bool:
    return name in image_models() or name in video_models()


def tv_version() -> str:
    import torchvision

    found = re.match(r"(\d+)\.(\d+)", torchvision.__version__)
    return found.group(0) if found else torchvision.__version__


def close_matches(word: str, choices: Sequence[str], n: int = 5) -> list[str]:
    """Close spellings first, then names that contain ``word`` (``encoder_layer_3`` finds the full node)."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    contained = [c for c in choices if word and word in c and c not in close]
    return (close + contained)[:n]


# -- model construction ------------------------------------------------------------------------------------


def default_size(name: str) -> int:
    """The crop size of the model's default weights (224 for most, 112 for the video ResNets)."""
    enum = weights_enum(name)
    crop = getattr(enum.DEFAULT.transforms, "keywords", {}).get("crop_size")
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop) if crop else 224


def default_frames(name: str) -> int | None:
    """The clip length a video model is probed with when none is given (None for an image model)."""
    return 16 if is_video(name) else None


def size_kwargs(name: str, size: int | None, frames: int | None = None) -> dict[str, Any]:
    """Builder arguments that depend on the input size: ViT's position embedding and MaxViT's partitions are
    sized for one input (built for ``size``; loaded weights are interpolated, see :func:`fit_position`). MViT's
    builders fix theirs at 224 px x 16 frames: it runs at that clip size only."""
    if size is None:
        return {}
    fam = family(name)
    if fam == "vit":
        return {"image_size": size}
    if fam == "maxvit":
        return {"input_size": (size, size)}
    return {}


def build_model(name: str, size: int | None, *, meta: bool, frames: int | None = None) -> torch.nn.Module:
    """The torchvision model with random init (caller seeds), or on the meta device (no init, no memory)."""
    from torchvision.models import get_model

    kwargs = size_kwargs(name, size, frames)
    try:
        if meta:
            try:
                with torch.device("meta"):
                    return get_model(name, weights=None, **kwargs).eval()
            except (NotImplementedError, RuntimeError):  # a builder computing on tensors (RegNet's widths)
                with torch.random.fork_rng(devices=[]):
                    return get_model(name, weights=None, **kwargs).eval().to("meta")
        return get_model(name, weights=None, **kwargs)
    except (AssertionError, ValueError) as exc:  # e.g. ViT's image size not a multiple of its patch size
        raise UserError(f"{name} cannot be built for --size {size}: {one_line(exc)}",
                        hint=f"use a size it accepts, e.g. --size {default_size(name)}") from exc


# -- graph nodes and the on-disk cache of dry runs -----------------------------------------------------------


def shapes_dir() -> Path:
    env = os.environ.get("ACTIONTK_SHAPES_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "actiontk" / "backbone-shapes"


def _cache_file(name: str) -> Path:
    return shapes_dir() / f"{name}-tv{tv_version()}.json"


def _load_cache(name: str) -> dict[str, Any]:
    try:
        data = json.loads(_cache_file(name).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(name: str, update: dict[str, Any]) -> None:
    """Merge ``update`` into the model's cache file (atomic replace; a failure to write only costs speed)."""
    path = _cache_file(name)
    data = _load_cache(name)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, sort_keys=True))
    except OSError:
        pass


def cached_probe(name: str) -> dict[str, Any]:
    """What earlier dry runs of ``name`` left on disk (``{}`` if none): ``nodes`` and ``sizes``."""
    return _load_cache(name)


def graph_nodes(name: str) -> list[str]:
    """The eval-graph node names of ``name`` (from the disk cache after the first call)."""
    cached = _load_cache(name).get("nodes")
    if isinstance(cached, list) and cached:
        return cached
    from torchvision.models.feature_extraction import get_graph_node_names

    model = build_model(name, default_size(name), meta=True)
    _, nodes = get_graph_node_names(model)
    _save_cache(name, {"nodes": nodes})
    return nodes


@dataclass(frozen=True)
class Level:
    """One stored level: its name, the graph node it reads, and which part of the node's output it is."""

    name: str
    node: str
    part: str  # "map" (a spatial map) or "cls" (a transformer's class token)


def layer_names(name: str) -> dict[str, int]:
    """Every name ``--layers`` accepts for ``name``, in graph order, with the index of the node it reads: the eval
    graph's nodes and every module path above them (``features.3`` reads the last node inside ``features.3``,
    as ``create_feature_extractor`` does)."""
    last: dict[str, int] = {}
    for i, node in enumerate(graph_nodes(name)):
        parts = node.split(".")
        for k in range(1, len(parts) + 1):
            last[".".join(parts[:k])] = i
    return dict(sorted(last.items(), key=lambda item: (item[1], -item[0].count("."))))


def resolve(name: str, layers: Sequence[str], aliases: dict[str, str] | None = None) -> list[Level]:
    """The requested levels, checked against the graph's node names (and module paths), in graph order."""
    index = layer_names(name)
    nodes = list(index)
    aliases = aliases or {}
    levels, unknown = [], []
    for layer in layers:
        base, part = (layer[: -len(CLS)], "cls") if layer.endswith(CLS) else (layer, "map")
        node = aliases.get(base, base)
        if node not in index:
            unknown.append(layer)
            continue
        levels.append(Level(layer, node, part))
    if unknown:
        first = unknown[0].removesuffix(CLS)
        close = close_matches(first, [*aliases, *nodes])
        raise UserError(
            f"unknown layer{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} for {name}"
            + (f"; close graph nodes: {', '.join(close)}" if close else ""),
            hint=f"pass graph node names of {name}; `actiontk backbones --layers {name}` lists them all, "
            f"and suggests: {', '.join(suggested_layers(name))}",
        )
    return sorted(levels, key=lambda lv: (index[lv.node], lv.part != "map"))


def suggested_layers(name: str) -> list[str]:
    """A few nodes per model, stride 8 to 32 (or the last transformer blocks): what ``actiontk backbones`` shows."""
    fam = family(name)
    fixed = {
        "convnext": ["features.3", "features.5", "features.7"],
        "swin": ["features.3", "features.5", "features.7"],
        "regnet": ["trunk_output.block2", "trunk_output.block3", "trunk_output.block4"],
        "maxvit": ["blocks.1", "blocks.2", "blocks.3"],
        "video_resnet": ["layer2", "layer3", "layer4"],
        "resnet": ["layer2", "layer3", "layer4"],
        "swin3d": ["features.2", "features.4", "features.6"],
        "s3d": ["features.9", "features.13", "features.15"],
        "densenet": ["features.denseblock2", "features.denseblock3", "features.denseblock4"],
    }
    if fam in fixed:
        return fixed[fam]
    names = list(layer_names(name))
    if fam == "vit":
        blocks = [n for n in names if re.fullmatch(r"encoder\.layers\.encoder_layer_\d+", n)]
        last = blocks[-1] if blocks else "encoder.ln"
        return [*blocks[-4:-3], last, last + CLS]
    if fam == "mvit":
        blocks = [n for n in names if re.fullmatch(r"blocks\.\d+", n)]
        return [*blocks[-8:-7], blocks[-1], blocks[-1] + CLS] if blocks else []
    # features.N models (efficientnet, mobilenet, mnasnet, vgg, ...): the last three top-level stages
    tops = [n for n in names if re.fullmatch(r"features\.\d+|layers\.\d+|stage\d|conv5", n)]
    return tops[-3:] if tops else names[-4:-1]


# -- outputs as maps ------------------------------------------------------------------------------------------


def _layout(name: str, node: str, out: Any, frames: int | None = None) -> str:
    """How the raw output of ``node`` becomes a channels-first map (or why it cannot)."""
    fam = family(name)
    if not isinstance(out, Tensor):
        return "none"
    video = fam in ("video_resnet", "s3d", "swin3d", "mvit")
    if video:
        if out.dim() == 5:
            return "nthwc" if fam == "swin3d" and node.startswith(("features", "norm")) else "ncthw"
        if fam == "mvit" and out.dim() == 3 and frames:
            # 1 class token + t*h*w tokens; MViT's patch embedding (kernel 3, stride 2, pad 1 in time) sets t,
            # which no later block changes
            t = (frames - 1) // 2 + 1
            cells = (out.shape[1] - 1) // t
            if (out.shape[1] - 1) % t == 0 and math.isqrt(cells) ** 2 == cells:
                return f"mvit_t{t}"
        return "none"
    if out.dim() == 4:
        return "nhwc" if fam == "swin" and node.startswith(("features", "norm")) else "nchw"
    if out.dim() == 3:
        tokens = out.shape[1]
        if math.isqrt(tokens - 1) ** 2 == tokens - 1 and tokens > 1:
            return "tokens_cls"
        if math.isqrt(tokens) ** 2 == tokens:
            return "tokens"
    return "none"


def to_map(out: Any, layout: str, part: str) -> Tensor:
    """A raw node output as a channels-first map: (B, C, h, w) for images, (B, C, t, h, w) for video."""
    if layout == "nchw" or layout == "ncthw":
        return out
    if layout == "nhwc":
        return out.permute(0, 3, 1, 2)
    if layout == "nthwc":
        return out.permute(0, 4, 1, 2, 3)
    if layout in ("tokens", "tokens_cls"):
        b, n, c = out.shape
        if part == "cls":
            return out[:, 0].reshape(b, c, 1, 1)
        grid = out[:, 1:] if layout == "tokens_cls" else out
        side = math.isqrt(grid.shape[1])
        return grid.transpose(1, 2).reshape(b, c, side, side)
    if layout.startswith("mvit_t"):
        b, n, c = out.shape
        if part == "cls":
            return out[:, 0].reshape(b, c, 1, 1, 1)
        t = int(layout[len("mvit_t"):])
        side = math.isqrt((n - 1) // t)
        return out[:, 1:].transpose(1, 2).reshape(b, c, t, side, side)
    raise ValueError(f"no map layout {layout!r}")


def cut(model: torch.nn.Module, levels: Sequence[Level], layouts: dict[str, str]) -> torch.fx.GraphModule:
    """``model`` traced and cut after the last requested node, returning ``{level: map}``: the conversion to
    maps is appended to the traced graph, so the module's parameters keep torchvision's names."""
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = list(dict.fromkeys(lv.node for lv in levels))
    body = create_feature_extractor(model, return_nodes={node: node for node in nodes})
    graph = body.graph
    output = next(n for n in graph.nodes if n.op == "output")
    raw = output.args[0]
    with graph.inserting_before(output):
        new = {}
        for lv in levels:
            layout = layouts[lv.node]
            if layout in ("nchw", "ncthw") and lv.part == "map":
                new[lv.name] = raw[lv.node]
            else:
                new[lv.name] = graph.call_function(to_map, (raw[lv.node], layout, lv.part))
    output.args = (new,)
    graph.lint()
    body.recompile()
    return body


def input_shape(name: str, size: int, frames: int | None = None) -> tuple[int, ...]:
    return (1, 3, frames, size, size) if frames is not None else (1, 3, size, size)


_TRACED: dict[tuple, torch.nn.Module] = {}  # meta-device graphs of this process, reused across sizes


def dry_run(name: str, nodes: Sequence[str], size: int, frames: int | None = None) -> dict[str, Any]:
    """``{node: {"layout", "shape"} | {"error"}}`` at ``size`` (and clip length ``frames`` for video), from
    the disk cache or a meta-device run. ``shape`` is the map's shape without the batch: (C, h, w) or
    (C, t, h, w); a node whose output is not a map gets ``layout: "none"`` and its raw shape."""
    key = f"{size}" if frames is None else f"{size}x{frames}"
    cache = _load_cache(name).get("sizes", {}).get(key, {})
    if isinstance(cache, dict) and "error" in cache:
        return {node: {"error": cache["error"]} for node in nodes}
    missing = [n for n in nodes if n not in cache]
    if not missing:
        return {n: cache[n] for n in nodes}
    from torchvision.models.feature_extraction import create_feature_extractor

    try:
        traced_key = (name, tuple(missing), (size, frames) if size_kwargs(name, size, frames) else None)
        body = _TRACED.get(traced_key)
        if body is None:  # a model built for one size (ViT, MaxViT, MViT) is traced again per size
            model = build_model(name, size, meta=True, frames=frames)
            body = _TRACED[traced_key] = create_feature_extractor(model, return_nodes={n: n for n in missing})
        out = body(torch.empty(input_shape(name, size, frames), device="meta"))
    except UserError:
        raise
    except Exception as exc:  # the model cannot run at this size (a kernel larger than the map, a reshape...)
        result = {"error": one_line(exc)}
        _save_cache(name, {"sizes": {key: result}})
        return {node: result for node in nodes}
    found = {}
    for node in missing:
        value = out[node]
        layout = _layout(name, node, value, frames)
        if layout == "none":
            shape = list(value.shape[1:]) if isinstance(value, Tensor) else [type(value).__name__]
        else:
            shape = list(to_map(value, layout, "map").shape[1:])
        found[node] = {"layout": layout, "shape": shape}
    _save_cache(name, {"sizes": {key: found}})
    return {n: {**cache, **found}[n] for n in nodes}


def level_shape(name: str, level: Level, size: int, frames: int | None = None) -> tuple[int, ...] | None:
    """The stored shape of ``level`` (no batch axis), None when the model cannot run at ``size``.

    Raises UserError when the node has no spatial output."""
    info = dry_run(name, [level.node], size, frames)[level.node]
    if "error" in info:
        return None
    layout, shape = info["layout"], tuple(info["shape"])
    if layout == "none" or (level.part == "cls" and layout != "tokens_cls" and not layout.startswith("mvit")):
        what = "no class token" if level.part == "cls" and layout != "none" else \
            f"no spatial output (its output is {'x'.join(map(str, shape)) or shape})"
        raise UserError(f"node {level.node!r} of {name} has {what}: it cannot be stored as a feature map",
                        hint=f"choose a node with a feature map, e.g. {', '.join(suggested_layers(name))}")
    if level.part == "cls":
        return (shape[0],) + (1,) * (len(shape) - 1)
    return shape


def run_error(name: str, size: int, frames: int | None = None) -> str | None:
    key = f"{size}" if frames is None else f"{size}x{frames}"
    entry = _load_cache(name).get("sizes", {}).get(key, {})
    return entry.get("error") if isinstance(entry, dict) else None


def fits(name: str, levels: Sequence[Level], size: int, need: int, frames: int | None = None) -> bool:
    for lv in levels:
        shape = level_shape(name, lv, size, frames)
        if shape is None or (lv.part == "map" and min(shape[-2:]) < need):
            return False
    return True


def smallest_size(name: str, levels: Sequence[Level], start: int, need: int, frames: int | None = None,
                  limit: int = 2048) -> int | None:
    """The smallest size >= ``start`` at which every level's map is at least ``need`` on a side (None: none up to
    ``limit``): doubling, then bisection, then a walk up to the first size the model accepts (ViT and MaxViT
    accept only some sizes, so the predicate is not monotonic everywhere)."""
    lo, hi = start, max(start, 1)
    while not fits(name, levels, hi, need, frames):
        lo, hi = hi, hi * 2
        if hi > limit:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(name, levels, mid, need, frames):
            hi = mid
        else:
            lo = mid
    return hi


# -- weights ---------------------------------------------------------------------------------------------------


def weights_enum(name: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(name)


def weights_member(name: str, weights: str) -> Any | None:
    """The weights enum member ``weights`` names (``imagenet``: the model's DEFAULT, or an enum member name such
    as ``IMAGENET1K_V2``); None when ``weights`` is ``none`` or a path. An all-capitals word that is no member
    and no file is refused with the choices."""
    enum = weights_enum(name)
    if weights == "imagenet":
        return enum.DEFAULT
    if weights == "none":
        return None
    members = list(enum.__members__)
    if weights in members:
        return enum[weights]
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", weights) and not Path(weights).exists():
        raise UserError(f"{name} has no weights {weights!r}",
                        hint=f"choose from {', '.join(members)} (imagenet = {enum.DEFAULT.name}), none, or a path")
    return None


def enum_id(member: Any) -> str:
    return f"{type(member).__name__}.{member.name}"


def fit_position(name: str, state: dict[str, Tensor], size: int) -> dict[str, Tensor]:
    """A ViT state dict whose position embedding is for another size, interpolated (bicubic) to ``size``."""
    if family(name) != "vit" or "encoder.pos_embedding" not in state:
        return state
    from torchvision.models.vision_transformer import interpolate_embeddings

    patch = int(re.search(r"_(\d+)$", name).group(1))
    tokens = state["encoder.pos_embedding"].shape[1]
    if tokens == (size // patch) ** 2 + 1:
        return state
    return interpolate_embeddings(size, patch, dict(state), reset_heads=False)


def hub_file(member: Any) -> Path:
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)
