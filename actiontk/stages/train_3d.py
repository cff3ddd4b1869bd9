"""``actiontk train-3d``: the deeply supervised 3D convnet per feature level, then the cubes.

Trains one :class:`~actiontk.models.conv3d.LevelConv3D` per feature level (VGG16 ``pool4`` and ``conv5_3``;
``levels`` picks a subset) on clips of ``clip_len`` frames, each level with its own deep-supervision classifier
predicting at every time step, with the loss of "Action Recognition with Joint Attention on Multi-Level Deep
Features", Sec. 3.2: ``- Σ_t y log ŷ_t + λ Σ_t Σ_i (E_{t,i} − att_{t,i})²`` (+ ζΣθ² as weight decay), where att is
the joint LSTM's attention of a previous train-lstm run (``--attention-from``; the pipeline's alternation).
When training is done, the 3D-conv outputs
of every video of the split (the **cubes**, (T, 256, H, W) per level) are written into the cache as a
``cubes`` run that ``train-lstm`` reads. The cubes come from the final epoch's weights: the test split
is the only held-out data, so choosing the "best" epoch on it would leak the test set into the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actiontk.cache import lifecycle
from actiontk.cache import features as store
from actiontk.cache.runs import Run, find_run, open_run
from actiontk.errors import UserError
from actiontk.models.configs import Conv3DConfig, from_mapping
from actiontk.stages import registry, upstream
from actiontk.stages.common import not_per_frame, per_frame_extract, split_videos, train_key

STAGE = registry.TRAIN_3D
CUBES = registry.CUBES
SCHEMA = 2  # 2: per-step deep supervision and the printed loss normalization


@dataclass
class Train3DConfig(Conv3DConfig):
    """The options of ``train-3d``: the 3D convnet's architecture (:class:`Conv3DConfig`: channels, hidden,
    dropout, temporal_kernel) and the stage's own clip, loss and input options below (training options are in
    :class:`TrainConfig`)."""

    levels: list[str] | None = None
    """Feature levels to train on, comma-separated or repeated (default: every level of the extract run); one
    level, e.g. pool4, is the single-level ablation of the paper's Table 2."""
    clip_len: int = 30
    """L1: consecutive frames per clip (paper: 30)."""
    clip_stride: int = 15
    """A clip starts every S frames."""
    att_lambda: float = 1000.0
    """λ of the attention regularization (paper: 1000); used only with --attention-from."""
    over_time: str = "sum"
    """How the per-step cross-entropy and attention terms are combined over a clip's steps: sum (as printed)
    or mean (both divided by the clip length, so λ keeps its meaning)."""
    standardize: bool = True
    """Standardize every input channel with its mean and std over the training videos (our addition; the
    statistics are stored in the model and its checkpoint)."""
    temporal_center: bool = False
    """Subtract each video's temporal mean from its maps (per channel and location) before the 3D convnet, so
    it sees only what changes; off for the paper's recipe (see docs/models.md, "Temporal centering")."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the architecture's checks
        for name in ("clip_len", "clip_stride"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.att_lambda < 0:
            raise UserError(f"--att-lambda must be >= 0, got {self.att_lambda}")
        check_common(self)


def build_model(config: Conv3DConfig | Mapping[str, Any], shapes: Mapping[str, Sequence[int]], num_classes: int):
    """The train-3d network: one 3D convnet per level of ``shapes`` (level -> its maps' (C, H, W), in the
    run's level order), with ``num_classes`` classes. ``config`` is a :class:`Train3DConfig` (any
    :class:`Conv3DConfig`) or a run's saved ``config["model"]`` dict; the weights are then a fresh initialization
    (load a run's ``checkpoint.pt`` ``"model"`` state over them)."""
    from actiontk.models.conv3d import MultiLevel3D

    if isinstance(config, Mapping):
        config = from_mapping(Conv3DConfig, config)
    return MultiLevel3D(config, {level: int(shape[0]) for level, shape in shapes.items()}, num_classes)


def check_common(cfg) -> None:
    """Checks of the options train-3d and train-lstm share (``over_time``, ``levels``)."""
    if cfg.over_time not in ("sum", "mean"):
        raise UserError(f"`over_time` must be sum or mean, got {cfg.over_time!r}",
                        "it is a preset key: fix it in the stage's section of the --config file")
    if cfg.levels is not None:
        if isinstance(cfg.levels, str):
            cfg.levels = [v.strip() for v in cfg.levels.split(",") if v.strip()]
        if not cfg.levels or len(set(cfg.levels)) != len(cfg.levels):
            raise UserError(f"--levels must name distinct feature levels, got {cfg.levels!r}", "e.g. --levels pool4")


def pick_levels(wanted: list[str] | None, available: list[str], run_short: str) -> list[str]:
    """The levels to use, in the upstream run's order; an unknown one is an error naming the known ones."""
    if wanted is None:
        return list(available)
    unknown = [lv for lv in wanted if lv not in available]
    if unknown:
        raise UserError(f"--levels {unknown[0]!r} is not in {run_short} (it holds {', '.join(available)})",
                        "pick from those, or extract with --layers that include it")
    return [lv for lv in available if lv in wanted]


def extract_complete(run: Run) -> bool:
    """Whether an extract run is complete (the extract stage's rule, :mod:`actiontk.stages.registry`)."""
    return registry.STAGES[registry.EXTRACT].is_complete(run)


def train_3d(cfg: Train3DConfig, tcfg, cache_root: Path, *, dataset: str | None = None, split: int | None = None,
             features: str | Run | None = None, attention_from: str | Run | None = None,
             init_from: str | Run | None = None,
             resume: bool = True, log: Callable[[str], None] = print, console=None) -> registry.StageOutput:
    """Train (or resume) and write the cubes; returns the train-3d run, with its cubes run in
    ``products[CUBES]`` (:func:`cubes_run_of` finds it from the train-3d run alone).

    ``init_from`` (a complete train-3d run of the same levels and widths) starts from that run's final weights
    instead of a fresh initialization: the pipeline's regularized round continues the previous round's convnet.
    """

    from actiontk.data.clips import ClipDataset, collate_clips
    from actiontk.train.engine import Trainer, seed_everything

    up, split = upstream.pick_run(cache_root, registry.EXTRACT, dataset=dataset, split=split, run=features,
                                  next_step=f"actiontk extract {dataset or 'DATASET'} --root DIR --split {split or 1}",
                                  complete=per_frame_extract(extract_complete), unsuitable=not_per_frame(STAGE),
                                  log=log)
    reader = store.FeatureReader(up.path)
    layers = pick_levels(cfg.levels, list(reader.layers()), up.short)
    name, root = up.info["inputs"]["dataset"], up.info["inputs"]["root"]
    classes, train_videos, test_videos = split_videos(name, root, split, reader, log)

    att_reader, att_run = None, None
    if attention_from is not None:
        att_run, _ = upstream.pick_run(cache_root, registry.TRAIN_LSTM, dataset=name, split=split,
                                       run=attention_from, next_step="actiontk train-lstm", log=log)
        att_reader = store.FeatureReader(att_run.path / "attention")
    elif cfg.att_lambda > 0:
        log("attention regularization is off: no --attention-from train-lstm run given (first pass of the "
            "alternation; run train-lstm, then train-3d --attention-from that run)")

    init_run = None
    if init_from is not None:
        init_run, _ = upstream.pick_run(cache_root, STAGE, dataset=name, split=split, run=init_from,
                                        next_step="actiontk train-3d", log=log)
    key_cfg = {"model": dataclasses.asdict(cfg), "train": train_key(tcfg), "layers": layers}
    up_keys = {registry.EXTRACT: up.key, **({"attention": att_run.key} if att_run else {}),
               **({"init": init_run.key} if init_run else {})}
    run_args = dict(upstream=up_keys, inputs={"dataset": name, "root": root, "split": split})
    done = find_run(cache_root, STAGE, SCHEMA, key_cfg, **run_args)  # looked up without making a run
    if done is not None and lifecycle.is_complete(done) and not store.damaged_shards(cubes_run_of(cache_root,
                                                                                                  done).path):
        run = open_run(cache_root, STAGE, SCHEMA, key_cfg, **run_args)  # held, as every run a stage reads
        log(f"{run.short} is already complete (same config and inputs): nothing to do")
        return registry.StageOutput(run, {CUBES: cubes_run_of(cache_root, run)})
    seed_everything(tcfg.seed)  # same config, same initial weights
    shapes = reader.layers()
    model = build_model(cfg, {layer: shapes[layer] for layer in layers}, len(classes))
    if init_run is not None:  # before the run is made: weights that do not fit leave no empty run behind
        load_weights(model, init_run, log)  # (a resumed run then restores its own checkpoint over them)
    run = open_run(cache_root, STAGE, SCHEMA, key_cfg, **run_args)
    extra = {"attention": att_reader} if att_reader is not None else None
    train_set = ClipDataset(reader, train_videos, layers, clip_len=cfg.clip_len, clip_stride=cfg.clip_stride,
                            extra=extra, temporal_center=cfg.temporal_center)
    val_set = ClipDataset(reader, test_videos, layers, clip_len=cfg.clip_len, clip_stride=cfg.clip_stride,
                          temporal_center=cfg.temporal_center)
    if cfg.standardize:
        # from the training videos only; a resumed run gets the same values back from its checkpoint
        for layer, (mean, std) in input_stats(reader, train_videos, layers, cfg.temporal_center).items():
            model.levels[layer].set_input_stats(mean, std)
    for ds_, what in ((train_set, "train"), (val_set, "test")):
        if ds_.padded:
            log(f"{len(ds_.padded)} {what} video(s) shorter than {cfg.clip_len} frames were padded by repeating "
                "their last frame")
    log(f"train-3d on {len(train_set)} train / {len(val_set)} test clips of {name} split {split} "
        f"({len(classes)} classes) into {run.path}")

    trainer = Trainer(model, train_set=train_set, val_set=val_set, collate=collate_clips, cfg=tcfg,
                      run_dir=run.path, step=_step(cfg, att_reader is not None), console=console)
    history = trainer.fit(resume=resume)
    cubes = write_cubes(cache_root, train_run=run, model=model, reader=reader, videos=train_videos + test_videos,
                        device=trainer.device, is_main=trainer.is_main, temporal_center=cfg.temporal_center,
                        log=log, console=trainer.console).run
    if trainer.is_main:
        last = history[-1] if history else {}
        lifecycle.mark_complete(run, {"epochs": tcfg.epochs, "last": last, "cubes": str(cubes.path)})
    return registry.StageOutput(run, {CUBES: cubes})


def load_weights(model, init_run: Run, log: Callable[[str], None]) -> None:
    """Copy the final weights (and input statistics) of a train-3d run's checkpoint into ``model``."""
    import torch

    from actiontk.cache.runs import verify_checksum

    path = init_run.path / "checkpoint.pt"
    fix = f"run that train-3d again, or start from scratch without --init-from {init_run.short}"
    if not path.is_file():
        raise UserError(f"{init_run.short} has no checkpoint.pt to start from", fix)
    if (why := verify_checksum(path)) is not None:
        raise UserError(f"cannot start from {path}: it {why}", fix)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        model.load_state_dict(state)
    except Exception as e:  # a checkpoint of other widths or levels: one line, not torch's multi-line report
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"cannot start from {init_run.short}: its weights do not fit this model ({first})",
                        "--init-from needs a train-3d run with the same levels, channels and hidden width") from None
    log(f"starting from the weights of {init_run.short}")


def input_stats(reader: store.FeatureReader, videos: list[tuple[str, int]], layers: list[str],
                temporal_center: bool, max_videos: int = 256) -> dict[str, tuple[Any, Any]]:
    """Per layer, the (C,) mean and std of every channel over the frames and locations of ``videos``.

    At most ``max_videos`` of them (evenly spaced in sorted order) are read, which bounds the cost on large
    datasets; with ``temporal_center`` the statistics are those of the centered maps the model will see.
    """
    import numpy as np

    chosen = sorted(rel for rel, _ in videos)
    if len(chosen) > max_videos:
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, max_videos).round().astype(int)]
    stats = {}
    for layer in layers:
        total, total_sq, count = 0.0, 0.0, 0
        for rel in chosen:
            a = reader.read(rel, layer).astype(np.float64)  # (T, C, H, W)
            if temporal_center:
                a = a - a.mean(axis=0, keepdims=True)
            total = total + a.sum(axis=(0, 2, 3))
            total_sq = total_sq + (a * a).sum(axis=(0, 2, 3))
            count += a.shape[0] * a.shape[2] * a.shape[3]
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
        stats[layer] = (mean.astype(np.float32), std.astype(np.float32))
    return stats


def cubes_run_of(cache_root: Path, train_run: Run) -> Run:
    """The cubes run of a train-3d run (keyed by it: opening it again finds the same directory)."""
    return open_run(cache_root, CUBES, SCHEMA, {"from": STAGE}, upstream={STAGE: train_run.key},
                    inputs=train_run.info["inputs"])


def _step(cfg: Train3DConfig, with_attention: bool):
    from actiontk.models.conv3d import deep_supervision_loss

    def step(model, batch: dict[str, Any]):  # model may be wrapped in DistributedDataParallel
        cubes, logits = model(batch["x"])  # {level: (B, L, 256, H, W)}, {level: (B, L, K)}
        y = batch["label"]
        att = None
        if with_attention and "attention" in batch:  # validation clips carry none
            att = batch["attention"].flatten(2)  # (B, L, 1, H, W) -> (B, L, H*W)
        loss, parts = deep_supervision_loss(logits, y, cubes=cubes, att=att, lam=cfg.att_lambda,
                                            over_time=cfg.over_time)
        metrics = {k: float(v.detach()) for k, v in parts.items()}
        # training-time accuracy: every step's softmax, averaged over steps and levels
        probs = sum(lg.softmax(-1).mean(1) for lg in logits.values()) / len(logits)  # (B, K)
        metrics["acc"] = float((probs.argmax(-1) == y).float().mean())
        return loss, metrics

    return step


def write_cubes(cache_root: Path, *, train_run: Run, model, reader: store.FeatureReader,
                videos: list[tuple[str, int]], device, is_main: bool, temporal_center: bool = False,
                log: Callable[[str], None] = print, console=None) -> registry.StageOutput:
    """The 3D-conv outputs of ``videos`` (read from ``reader``) by ``model``, the convnet of ``train_run``, as a
    feature run keyed by that run (resumable); ``console`` shows a progress bar (None: none).

    With ``temporal_center`` each video's temporal mean is subtracted first, as :class:`ClipDataset` did in
    training."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from actiontk.runtime import dist_info

    cubes_run = cubes_run_of(cache_root, train_run)
    rank, world, _, _ = dist_info()

    def barrier() -> None:
        if world > 1:
            import torch.distributed as dist

            dist.barrier()

    store.remove_incomplete(cubes_run.path, rank)
    store.repair(cubes_run.path, log)  # damaged shards go: their cubes are written again below
    done = store.load_index(cubes_run.path)
    todo = [v for v in sorted(videos) if v[0] not in done.videos][rank::world]
    barrier()  # every rank has read the same index before any rank adds to it (else a partition would shift)

    def finish() -> registry.StageOutput:
        barrier()  # every rank's shards are closed
        if is_main:
            missing = [rel for rel, _ in videos if rel not in store.load_index(cubes_run.path).videos]
            if missing:
                raise RuntimeError(f"{len(missing)} videos have no cubes after writing (first: {missing[0]})")
            store.write_manifest(cubes_run.path)
            lifecycle.mark_complete(cubes_run, {"videos": len(videos)})
        return registry.StageOutput(cubes_run)

    if not todo:
        return finish()
    shapes = {layer: (m.config.channels, *reader.layers()[layer][1:]) for layer, m in model.levels.items()}
    writer = store.ShardWriter(cubes_run.path, shapes, rank=rank, videos_per_shard=64,
                               attrs={"run_key": cubes_run.key})
    net = model.module if hasattr(model, "module") else model
    net.eval()
    log(f"writing cubes of {len(todo)} videos into {cubes_run.path}")
    progress = Progress(TextColumn(CUBES), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True, disable=console is None or not is_main)
    try:
        with torch.inference_mode(), progress:
            task = progress.add_task(CUBES, total=len(todo))
            for rel, label in todo:
                slot = writer.start(rel, label=label, fingerprint=reader.index.videos[rel].get("fingerprint"))
                maps = {}
                for layer, level in net.levels.items():
                    x = torch.from_numpy(reader.read(rel, layer)).to(device).float()[None]  # (1, T, C, H, W)
                    if temporal_center:
                        x = x - x.mean(dim=1, keepdim=True)
                    maps[layer] = level.cubes_chunked(x)[0].to(torch.float16).cpu().numpy()  # (T, 256, H, W)
                slot.append(maps)
                slot.finish()
                progress.advance(task)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return finish()
