"""``actiontk train-3d``: the deeply supervised 3D convnet per feature level, then the cubes.

Trains one :class:`~actiontk.models.conv3d.LevelConv3D` per stored feature level (VGG16 ``pool4`` and
``conv5_3``) on clips of ``clip_len`` frames, each level with its own deep-supervision classifier and
cross-entropy; optionally pulls each level's channel energy toward the joint LSTM's attention
(``--attention-from`` a train-lstm run, λ = ``att_lambda``). When training is done, the 3D-conv outputs
of every video of the split (the **cubes**, (T, 256, H, W) per level) are written into the cache as a
``cubes`` run that ``train-lstm`` reads. The cubes come from the final epoch's weights: the test split
is the only held-out data, so choosing the "best" epoch on it would leak the test set into the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actiontk.cache import features as store
from actiontk.cache.runs import Run, open_run
from actiontk.errors import UserError
from actiontk.stages import upstream
from actiontk.stages.common import split_videos, train_key

STAGE = "train-3d"
CUBES = "cubes"
SCHEMA = 1


@dataclass
class Train3DConfig:
    """Model and clip options of ``train-3d`` (training options are in :class:`TrainConfig`)."""

    clip_len: int = 30
    """L1: consecutive frames per clip (paper: 30)."""
    clip_stride: int = 15
    """A clip starts every S frames."""
    channels: int = 256
    """Channels of both Conv3d layers (paper: 256)."""
    hidden: int = 512
    """Width of the deep-supervision head's hidden FC layer."""
    dropout: float = 0.5
    """Dropout in the deep-supervision head."""
    att_lambda: float = 1000.0
    """λ of the attention regularization (paper: 1000); used only with --attention-from."""
    standardize: bool = True
    """Standardize every input channel with its mean and std over the training videos (our addition; the
    statistics are stored in the model and its checkpoint)."""
    temporal_center: bool = False
    """Subtract each video's temporal mean from its maps (per channel and location) before the 3D convnet, so
    it sees only what changes; off for the paper's recipe (see docs/models.md, "Temporal centering")."""

    def __post_init__(self) -> None:
        for name in ("clip_len", "clip_stride", "channels", "hidden"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.att_lambda < 0:
            raise UserError(f"--att-lambda must be >= 0, got {self.att_lambda}")


def extract_complete(run: Run) -> bool:
    from actiontk.stages.extract import extract_state

    return extract_state(run)["state"] == "complete"


def train_3d(cfg: Train3DConfig, tcfg, cache_root: Path, *, dataset: str | None = None, split: int | None = None,
             features: str | None = None, attention_from: str | None = None, resume: bool = True,
             log: Callable[[str], None] = print, console=None) -> tuple[Run, Run]:
    """Train (or resume) and write the cubes; returns (train-3d run, cubes run)."""

    from actiontk.data.clips import ClipDataset, collate_clips
    from actiontk.models.conv3d import Conv3DConfig, MultiLevel3D
    from actiontk.train.engine import Trainer, seed_everything

    up, split = upstream.pick_run(cache_root, "extract", dataset=dataset, split=split, run=features,
                                  complete=extract_complete,
                                  next_step=f"actiontk extract {dataset or 'DATASET'} --root DIR --split {split or 1}",
                                  log=log)
    reader = store.FeatureReader(up.path)
    layers = list(reader.layers())
    name, root = up.info["inputs"]["dataset"], up.info["inputs"]["root"]
    classes, train_videos, test_videos = split_videos(name, root, split, reader, log)

    att_reader, att_run = None, None
    if attention_from is not None:
        att_run, _ = upstream.pick_run(cache_root, "train-lstm", dataset=name, split=split, run=attention_from,
                                       complete=upstream.is_complete, next_step="actiontk train-lstm", log=log)
        att_reader = store.FeatureReader(att_run.path / "attention")
    elif cfg.att_lambda > 0:
        log("attention regularization is off: no --attention-from train-lstm run given (first pass of the "
            "alternation; run train-lstm, then train-3d --attention-from that run)")

    key_cfg = {"model": dataclasses.asdict(cfg), "train": train_key(tcfg), "layers": layers}
    up_keys = {"extract": up.key, **({"attention": att_run.key} if att_run else {})}
    run = open_run(cache_root, STAGE, SCHEMA, key_cfg, upstream=up_keys,
                   inputs={"dataset": name, "root": root, "split": split})
    if upstream.is_complete(run):
        log(f"{run.short} is already complete (same config and inputs): nothing to do")
        return run, cubes_run_of(cache_root, run)
    seed_everything(tcfg.seed)  # same config, same initial weights
    shapes = reader.layers()
    model = MultiLevel3D({layer: Conv3DConfig(in_channels=shapes[layer][0], channels=cfg.channels, hidden=cfg.hidden,
                                              num_classes=len(classes), dropout=cfg.dropout) for layer in layers})
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
    cubes = write_cubes(model, reader, train_videos + test_videos, run, cache_root, device=trainer.device,
                        log=log, is_main=trainer.is_main, temporal_center=cfg.temporal_center)
    if trainer.is_main:
        last = history[-1] if history else {}
        upstream.mark_complete(run, {"epochs": tcfg.epochs, "last": last, "cubes": str(cubes.path)})
    return run, cubes


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
    import torch
    import torch.nn.functional as F

    from actiontk.models.conv3d import attention_regularization, channel_energy

    def step(model, batch: dict[str, Any]):
        cubes, logits = model(batch["x"])  # {level: (B, L, 256, H, W)}, {level: (B, K)}
        y = batch["label"]
        loss = sum(F.cross_entropy(lg, y) for lg in logits.values())
        metrics: dict[str, float] = {}
        if with_attention and cfg.att_lambda > 0 and "attention" in batch:  # validation clips carry none
            att = batch["attention"].flatten(2)  # (B, L, 1, H, W) -> (B, L, H*W)
            reg = sum(attention_regularization(channel_energy(c), att, cfg.att_lambda) for c in cubes.values())
            reg = reg / len(cubes)
            loss = loss + reg
            metrics["att_reg"] = float(reg.detach())
        probs = torch.stack([lg.softmax(-1) for lg in logits.values()]).mean(0)  # (B, K): levels averaged
        metrics["acc"] = float((probs.argmax(-1) == y).float().mean())
        return loss, metrics

    return step


def write_cubes(model, reader: store.FeatureReader, videos: list[tuple[str, int]], train_run: Run, cache_root: Path,
                *, device, log: Callable[[str], None], is_main: bool, temporal_center: bool = False) -> Run:
    """The 3D-conv outputs of every video, as a feature run keyed by the train-3d run (resumable).

    With ``temporal_center`` each video's temporal mean is subtracted first, as :class:`ClipDataset` did in
    training."""
    import torch

    from actiontk.runtime import dist_info

    cubes_run = cubes_run_of(cache_root, train_run)
    rank, world, _, _ = dist_info()

    def barrier() -> None:
        if world > 1:
            import torch.distributed as dist

            dist.barrier()

    store.remove_incomplete(cubes_run.path, rank)
    done = store.load_index(cubes_run.path)
    todo = [v for v in sorted(videos) if v[0] not in done.videos][rank::world]
    barrier()  # every rank has read the same index before any rank adds to it (else a partition would shift)

    def finish() -> Run:
        barrier()  # every rank's shards are closed
        if is_main:
            missing = [rel for rel, _ in videos if rel not in store.load_index(cubes_run.path).videos]
            if missing:
                raise RuntimeError(f"{len(missing)} videos have no cubes after writing (first: {missing[0]})")
            store.write_manifest(cubes_run.path)
            upstream.mark_complete(cubes_run, {"videos": len(videos)})
        return cubes_run

    if not todo:
        return finish()
    shapes = {layer: (m.config.channels, *reader.layers()[layer][1:]) for layer, m in model.levels.items()}
    writer = store.ShardWriter(cubes_run.path, shapes, rank=rank, videos_per_shard=64,
                               attrs={"run_key": cubes_run.key})
    net = model.module if hasattr(model, "module") else model
    net.eval()
    log(f"writing cubes of {len(todo)} videos into {cubes_run.path}")
    try:
        with torch.inference_mode():
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
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return finish()
