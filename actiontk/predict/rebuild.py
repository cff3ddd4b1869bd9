"""Rebuilding what a trained run computes, from the runs themselves: the backbone and preprocessing of its
``extract`` run, the 3D convnet of its ``train-3d`` run, the joint LSTM or the GAP head from their own saved
configs and final checkpoints.

Nothing here re-implements a stage: the backbone comes from :func:`actiontk.models.backbones.build_backbone` with
the weights, layers and size its extract run recorded, its transform from the backbone's own
:meth:`~actiontk.models.backbones.FeatureBackbone.preprocess`, and the frames go through extract's own batcher
(grid pooling, precision, float16 storage type), so new inputs get the features training read, by construction.
The models are the stage's classes built from the run's recorded model options and loaded with the weights of
``checkpoint.pt`` (the final epoch's: the weights the run's ``predictions.npz`` was written with).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache.runs import Run, list_runs, verify_checksum
from actiontk.errors import UserError
from actiontk.stages import registry

CHECKPOINT = "checkpoint.pt"  # actiontk.train.engine.CHECKPOINT (the engine module imports the whole trainer)
PREDICTIONS = "predictions.npz"
VIDEO_STAGE, IMAGE_STAGE = registry.TRAIN_LSTM, registry.TRAIN_GAP
PREDICTOR_STAGES = (VIDEO_STAGE, IMAGE_STAGE)


def run_by_key(cache_root: Path, stage: str, key: str, *, needed_by: Run) -> Run:
    """The run of ``stage`` with the full ``key`` (an upstream of ``needed_by``); an error naming the fix if gone."""
    for run in list_runs(cache_root, stage):
        if run.info.get("key") == key:
            return run
    raise UserError(f"{needed_by.short} was trained from {stage} run {key[:16]}, which is no longer in {cache_root}",
                    "predict needs the runs a model was trained from; train it again (`actiontk status` lists the "
                    "runs)")


def classes_of(run: Run) -> list[str]:
    """The class names of a training run, from the ``predictions.npz`` it wrote beside its checkpoint."""
    path = run.path / PREDICTIONS
    try:
        with np.load(path, allow_pickle=False) as f:
            return [str(c) for c in f["classes"]]
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"cannot read the class names of {run.short} from {path}: {e}",
                        f"run its {run.stage} stage again to rewrite it") from None


def load_state(run: Run, device) -> dict[str, Any]:
    """The model state dict of ``run``'s final checkpoint, checked against its checksum."""
    import pickle

    import torch

    path = run.path / CHECKPOINT
    fix = f"train {run.short} again (its {CHECKPOINT} holds the weights predict uses)"
    if not path.is_file():
        raise UserError(f"{run.short} has no {CHECKPOINT}", fix)
    if (why := verify_checksum(path)) is not None:
        raise UserError(f"cannot load {path}: it {why}", fix)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        return ckpt["model"]
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise UserError(f"cannot load {path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}", fix) from None


def fit_weights(model, state: dict[str, Any], run: Run) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"the weights of {run.short} do not fit the model its config describes "
                        f"({str(e).strip().splitlines()[0][:160]})",
                        "the run was written by another version of actiontk; train it again") from None


# -- the extract run: backbone, preprocessing, decoder ---------------------------------------------------------


@dataclass
class FeatureSpec:
    """How an extract run computed its features, as recorded in the run."""

    run: Run
    backbone: str
    layers: list[str]
    size: int
    square: bool
    weights: str  # imagenet | none | a file path
    seed: int
    frame_stride: int
    grid: int | None
    precision: str
    backend: str | None  # the primary video decoder (None: an image run)
    timeout: float
    image: bool

    def map_shape(self, layer: str) -> tuple[int, int, int]:
        from actiontk.models import backbones

        h, w = (self.grid, self.grid) if self.grid is not None else backbones.layer_map_size(self.backbone, layer,
                                                                                               self.size)
        return backbones.channels(self.backbone, layer), h, w


_RANDOM_ID = re.compile(r"random\(seed=(-?\d+)")


def feature_spec(run: Run) -> FeatureSpec:
    """The recorded preprocessing and backbone of an extract run (its key config and its ``config.json``)."""
    cfg = run.config
    bb = cfg["backbone"]
    try:
        resolved = json.loads((run.path / "config.json").read_text())["resolved"]
    except (OSError, ValueError, KeyError):
        resolved = {}
    weights_id = str(bb["weights_id"])
    seed = int(resolved.get("seed", 0))
    if weights_id.startswith("file:"):
        weights = str(resolved.get("weights", ""))
        if not weights or not Path(weights).is_file():
            raise UserError(f"the backbone weights of {run.short} were the local file {weights or '(unrecorded)'}, "
                            "which is not there any more",
                            "put that state dict back where it was, then run predict again")
    elif (m := _RANDOM_ID.match(weights_id)) is not None:
        weights, seed = "none", int(m.group(1))
    else:
        weights = "imagenet"
    decoder = cfg.get("decoder")
    image = decoder == "pil"
    square = bb.get("preprocess", {}).get("transform") == "SquareResize" or resolved.get("resize") == "square"
    return FeatureSpec(run=run, backbone=str(bb["backbone"]), layers=list(bb["layers"]), size=int(bb["size"]),
                       square=bool(square), weights=weights, seed=seed, frame_stride=int(cfg.get("frame_stride", 1)),
                       grid=cfg.get("grid"), precision=str(cfg.get("precision", "fp32")),
                       backend=None if image else str(decoder["backend"]),
                       timeout=float(resolved.get("timeout", 300.0)), image=image)


class FeatureExtractor:
    """Frames → the extract run's maps ``{layer: (n, C, h, w) float16}``, through extract's own batcher."""

    def __init__(self, spec: FeatureSpec, device, batch_size: int | None = None):
        from actiontk.models import backbones
        from actiontk.stages.extract_batch import Batcher

        self.spec = spec
        identity = backbones.backbone_identity(spec.backbone, spec.layers, spec.weights, spec.size, seed=spec.seed,
                                               square=spec.square)
        recorded = spec.run.config["backbone"]
        self.identity_note = None
        if identity != recorded:
            changed = sorted(k for k in set(identity) | set(recorded) if identity.get(k) != recorded.get(k))
            if "weights_id" in changed:
                raise UserError(f"the backbone weights of {spec.run.short} have changed since it was extracted "
                                f"({recorded.get('weights_id')} then, {identity.get('weights_id')} now)",
                                "restore the weights file the run was extracted with")
            self.identity_note = (f"the backbone's {', '.join(changed)} differ from when {spec.run.short} was "
                                  "extracted (another torchvision?): features may differ slightly from training's")
        precision = spec.precision
        if precision == "fp16" and device.type != "cuda":
            raise UserError(f"{spec.run.short} computed its features in fp16 on a GPU; fp16 needs CUDA here too",
                            "run predict with --device cuda")
        try:
            model = backbones.build_backbone(spec.backbone, spec.layers, spec.weights, seed=spec.seed,
                                             progress=False, size=spec.size)
        except UserError as e:
            if spec.weights != "imagenet":
                raise
            hint = (e.hint or "").split(", or pass --weights")[0].split(", or use --weights")[0]
            raise UserError(f"{spec.run.short} used the ImageNet weights of {spec.backbone}, which are not available "
                            f"here: {e.message}",
                            (hint + ", then run predict again") if hint else "make the ImageNet weights available in "
                            "torch's hub cache (~/.cache/torch/hub/checkpoints/), then run predict again") from None
        # as extract runs it: channels_last on CUDA and on the CPU for the families measured faster with it
        model = model.to(device).use_memory_format(backbones.memory_format(spec.backbone, device))
        self.device = device
        self.transform = model.preprocess(spec.size, square=spec.square)
        self.batch_size = int(batch_size or 32)
        self._batcher = Batcher(model, self.transform, device, precision, spec.grid, self.batch_size)
        self.frames_done = 0

    def maps(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """The maps of uint8 frames ``(n, H, W, 3)`` (any n: split into forward passes of ``batch_size``)."""
        out: dict[str, list[np.ndarray]] = {}
        for a in range(0, len(frames), self.batch_size):
            part = self._batcher.compute([(0, frames[a:a + self.batch_size])])
            for layer, m in part.items():
                out.setdefault(layer, []).append(m)
        self.frames_done += len(frames)
        return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in out.items()}


# -- the models -------------------------------------------------------------------------------------------------


@dataclass
class VideoModels:
    """The video pipeline of a train-lstm run."""

    features: FeatureSpec
    levels: list[str]  # the extract layers the 3D convnet (or the LSTM directly) reads, in the LSTM's order
    conv3d: Any  # MultiLevel3D, or None for the no-temporal-convnet ablation
    temporal_center: bool
    lstm: Any  # JointAttentionLSTM
    clip_len: int
    clip_stride: int
    last: int
    grid: tuple[int, int]
    upstream: list[Run]


def _model_config(run: Run) -> dict[str, Any]:
    model = run.config.get("model")
    if not isinstance(model, dict):
        raise UserError(f"{run.short} has no model config in its run.json", "train it again with this actiontk")
    return model


def video_models(cache_root: Path, run: Run, device, num_classes: int) -> VideoModels:
    """The 3D convnet (or none, for a train-lstm run on an extract run's maps) and the joint LSTM of ``run``,
    built by their stages' ``build_model`` from the runs' saved model configs, with their final weights."""
    from actiontk.stages import train_3d, train_lstm

    model = _model_config(run)
    up = run.info.get("upstream", {})
    chain = [run]
    if registry.CUBES in up:
        cubes = run_by_key(cache_root, registry.CUBES, up[registry.CUBES], needed_by=run)
        three = run_by_key(cache_root, registry.TRAIN_3D, cubes.info["upstream"][registry.TRAIN_3D], needed_by=cubes)
        extract = run_by_key(cache_root, registry.EXTRACT, three.info["upstream"][registry.EXTRACT], needed_by=three)
        chain += [cubes, three, extract]
        spec = feature_spec(extract)
        model3 = _model_config(three)
        layers3 = list(three.config.get("layers") or spec.layers)
        conv = train_3d.build_model(model3, {lv: spec.map_shape(lv) for lv in layers3}, num_classes)
        fit_weights(conv, load_state(three, "cpu"), three)
        conv = conv.to(device).eval()
        width = int(model3.get("channels", 256))
        # the cubes run's levels, in the order write_cubes wrote them, and their (C, h, w)
        available = {lv: (width, *spec.map_shape(lv)[1:]) for lv in layers3}
        temporal_center = bool(model3.get("temporal_center", False))
    elif registry.EXTRACT in up:
        extract = run_by_key(cache_root, registry.EXTRACT, up[registry.EXTRACT], needed_by=run)
        chain.append(extract)
        spec = feature_spec(extract)
        conv, temporal_center = None, False
        available = {lv: spec.map_shape(lv) for lv in spec.layers}
    else:
        raise UserError(f"{run.short} records no upstream cubes or extract run", "train it again with this actiontk")
    wanted = model.get("levels")
    levels = [lv for lv in available if wanted is None or lv in wanted]
    lstm = train_lstm.build_model(model, {lv: available[lv] for lv in levels}, num_classes)
    fit_weights(lstm, load_state(run, "cpu"), run)
    lstm = lstm.to(device).eval()
    grid = tuple(int(n) for n in available[levels[0]][1:])
    return VideoModels(spec, levels, conv, temporal_center, lstm, int(model.get("clip_len", 30)),
                       int(model.get("clip_stride", 15)), int(model.get("last", 16)), grid, chain)


@dataclass
class ImageModels:
    """The still-image pipeline of a train-gap run: cached mode (the extract run's frozen backbone, then the
    head) or fine-tuned (the network end to end, with the run's centre crop)."""

    features: FeatureSpec | None  # cached mode
    net: Any  # GAPNet
    layer: str
    finetune: bool
    resize: int
    crop: int
    upstream: list[Run]


def image_models(cache_root: Path, run: Run, device, num_classes: int) -> ImageModels:
    """The GAP network of ``run`` (train-gap's ``build_model`` from its saved model config, final weights), and
    in cached mode the spec of the extract run whose backbone feeds it."""
    from actiontk.stages import train_gap

    model = _model_config(run)
    chain = [run]
    spec = None
    layer = str(model.get("layer", "layer4"))
    finetune = bool(model.get("finetune", False))
    shapes = None
    if not finetune:
        key = run.info.get("upstream", {}).get(registry.EXTRACT)
        if key is None:
            raise UserError(f"{run.short} records no upstream extract run", "train it again with this actiontk")
        extract = run_by_key(cache_root, registry.EXTRACT, key, needed_by=run)
        chain.append(extract)
        spec = feature_spec(extract)
        if layer not in spec.layers:
            raise UserError(f"{extract.short} holds {', '.join(spec.layers)}, not {layer}",
                            "the run does not match its extract run; train it again")
        shapes = {lv: spec.map_shape(lv) for lv in spec.layers}
    # fine-tuned: random backbone weights first (nothing downloaded), the checkpoint holds the trained ones
    net = train_gap.build_model(model, shapes, num_classes, weights="none")
    fit_weights(net, load_state(run, "cpu"), run)
    return ImageModels(spec, net.to(device).eval(), layer, finetune, int(model.get("resize", 480)),
                       int(model.get("crop", 450)), chain)
