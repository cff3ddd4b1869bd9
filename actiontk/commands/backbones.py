"""Body of ``actiontk backbones``: the backbones ``--backbone`` accepts, their suggested layers, channels and
map sizes at ``--size``, and whether their weights are in torch's hub cache.

Nothing is built for the listing: the curated specs answer from their arithmetic, the other models from the
dry runs cached on disk (:mod:`actiontk.models.zoo`); ``--probe`` runs the missing dry runs (on the meta
device: no weights, no real compute, a fraction of a second to a few seconds per model) and caches them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from actiontk.errors import UserError

UNKNOWN = "?"


def _curated_rows(size: int) -> list[dict[str, Any]]:
    from actiontk.models import backbones, zoo

    rows = []
    for name, spec in backbones.BACKBONES.items():
        layers = []
        for layer, ls in spec.layers.items():
            h, w = backbones.layer_map_size(name, layer, size)
            layers.append({"layer": layer, "channels": ls.channels, "map": f"{h}x{w}" if h else "too small"})
        rows.append({"name": name, "family": "curated", "video": False, "layers": layers,
                     "weights": spec.weights_name, "local": zoo.hub_file(spec.weights).is_file()})
    return rows


def _general_row(name: str, size: int, probe: bool, frames: int | None) -> dict[str, Any]:
    from actiontk.models import zoo

    cache = zoo.cached_probe(name)
    video = zoo.is_video(name)
    enum = zoo.weights_enum(name)
    row: dict[str, Any] = {"name": name, "family": zoo.family(name), "video": video,
                           "weights": zoo.enum_id(enum.DEFAULT), "local": zoo.hub_file(enum.DEFAULT).is_file()}
    if not probe and not cache.get("nodes"):
        row["layers"] = None  # unknown until probed
        return row
    try:
        suggested = zoo.suggested_layers(name)
        index = zoo.layer_names(name)
    except UserError as exc:
        row["layers"], row["error"] = [], exc.message
        return row
    clip = (frames or zoo.default_frames(name)) if video else None
    layers = []
    for layer in suggested:
        base = layer.removesuffix(zoo.CLS)
        if base not in index:
            continue
        level = zoo.Level(layer, base, "cls" if layer.endswith(zoo.CLS) else "map")
        key = f"{size}" if clip is None else f"{size}x{clip}"
        known = zoo.cached_probe(name).get("sizes", {}).get(key, {})
        if not probe and base not in known and "error" not in known:
            layers.append({"layer": layer, "channels": UNKNOWN, "map": UNKNOWN})
            continue
        try:
            shape = zoo.level_shape(name, level, size, clip)
        except UserError:
            continue
        if shape is None:
            layers.append({"layer": layer, "channels": UNKNOWN, "map": f"does not run at {size}"})
        else:
            layers.append({"layer": layer, "channels": int(shape[0]), "map": "x".join(map(str, shape[1:]))})
    row["layers"] = layers
    return row


def list_backbones(size: int, *, probe: bool = False, only: list[str] | None = None, frames: int | None = None,
                   as_json: bool = False, console: Console | None = None) -> list[dict[str, Any]]:
    from actiontk.models import backbones, zoo

    if size < 1:
        raise UserError(f"--size must be a positive number of pixels, got {size}", hint="e.g. --size 224")
    names = [*zoo.image_models(), *zoo.video_models()]
    if only:
        for name in only:
            if name not in backbones.BACKBONES and name not in names:
                backbones._check_name(name)  # the one-line error with the close names
        names = [n for n in names if n in only and n not in backbones.BACKBONES]
    else:
        names = [n for n in names if n not in backbones.BACKBONES]
    rows = [r for r in _curated_rows(size) if not only or r["name"] in only]
    rows += [_general_row(name, size, probe, frames) for name in names]
    if as_json:
        import json

        print(json.dumps(rows, indent=1))
        return rows
    console = console or Console()
    console.print(f"backbones at --size {size} (suggested layers: channels x map; {UNKNOWN}: not probed yet, "
                  "`actiontk backbones --probe` computes it without weights). weights: * = in torch's hub cache")
    unprobed = 0
    for row in rows:
        mark = "*" if row["local"] else " "
        kind = "video" if row["video"] else row["family"]
        if row["layers"] is None:
            unprobed += 1
            text = f"{UNKNOWN} (run with --probe)"
        elif row.get("error"):
            text = row["error"]
        else:
            text = ", ".join(f"{lv['layer']} {lv['channels']}x{lv['map']}" for lv in row["layers"])
        console.print(f"{mark} {escape(row['name']):<20} {kind:<15} {escape(text)}", highlight=False, soft_wrap=True)
    if unprobed:
        console.print(f"{unprobed} models not probed yet: `actiontk backbones --size {size} --probe` fills in their "
                      "layers (cached on disk)")
    return rows


def list_layers(name: str, size: int, *, frames: int | None = None, console: Console | None = None) -> list[str]:
    """Every layer name ``--layers`` accepts for ``name``, with its map shape at ``size`` where it has one."""
    from actiontk.models import backbones, zoo

    console = console or Console()
    if name in backbones.BACKBONES:
        for layer in backbones.known_layers(name):
            h, w = backbones.layer_map_size(name, layer, size)
            console.print(f"{layer:<12} {backbones.channels(name, layer)}x{h}x{w}", highlight=False)
    else:
        backbones._check_name(name)
    names = list(zoo.layer_names(name))
    clip = (frames or zoo.default_frames(name)) if zoo.is_video(name) else None
    info = zoo.dry_run(name, names, size, clip)
    for layer in names:
        entry = info[layer]
        if "error" in entry:
            console.print(f"{name} does not run at --size {size}: {entry['error']}", highlight=False)
            break
        shape = "x".join(map(str, entry["shape"])) if entry["layout"] != "none" else "(no map)"
        console.print(f"{escape(layer):<60} {shape}", highlight=False, soft_wrap=True)
    return names
