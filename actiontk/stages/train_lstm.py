"""``actiontk train-lstm``: the joint attention LSTM over the cubes, then test-split predictions.

Reads the cubes of a ``train-3d`` run (one input per feature level) — or, for the paper's "no temporal convnet"
ablation, the feature maps of an ``extract`` run (``--features``) — and trains the joint attention LSTM of
:mod:`actiontk.models.joint_lstm` with early or late fusion on clips of ``clip_len`` steps, with the loss of
"Action Recognition with Joint Attention on Multi-Level Deep Features", Sec. 3.3: ``- Σ_t y log ŷ_t`` (+ ζΣθ² as
weight decay). ``att_lambda > 0`` adds λ Σ_t Σ_i (E_{t,i} − att_{t,i})² toward the inputs' channel energy: our
addition, off in the presets. Both terms are reduced over time the same way (``over_time``). It writes for the
test split:

- ``predictions.npz``: per clip its video, start, its label by the paper's rule (``clip_pred``: the hard vote of
  the last L2 steps, Sec. 3.5) and its mean softmax over those steps (``clip_scores``, ours); per video its
  label, the majority over its clips' labels (``video_vote``, ours: the paper is silent) and the argmax of the
  mean clip score (``video_mean``, ours); the class names;
- ``attention_samples.npz``: attention maps of a sample of test clips (for the report's figures);
- ``attention/``: a feature run holding every video's per-frame attention (clips averaged where they
  overlap), which ``train-3d --attention-from`` reads for the next round of the alternation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache import lifecycle
from actiontk.cache import features as store
from actiontk.cache.runs import Run, atomic_write_json, open_run
from actiontk.errors import UserError
from actiontk.metrics import vote  # clips -> video majority (ours), shared with evaluate
from actiontk.models.configs import JointLSTMConfig, from_mapping
from actiontk.stages import registry, upstream
from actiontk.stages.common import not_per_frame, per_frame_extract, split_videos, train_key
from actiontk.stages.train_3d import check_common, pick_levels

STAGE = registry.TRAIN_LSTM
SCHEMA = 2  # 2: the paper's hard clip vote (clip_pred) and the printed loss normalization


@dataclass
class TrainLSTMConfig(JointLSTMConfig):
    """The options of ``train-lstm``: the LSTM's architecture (:class:`JointLSTMConfig`: fusion, hidden, layers,
    dropout, pyramid) and the stage's own clip, vote and loss options below (training options are in
    :class:`TrainConfig`)."""

    levels: list[str] | None = None
    """Levels to read, comma-separated or repeated (default: every level of the upstream run); one level is the
    single-level ablation."""
    clip_len: int = 30
    """L1: steps per clip (paper: 30)."""
    clip_stride: int = 15
    """A clip starts every S frames."""
    last: int = 16
    """L2: a clip's label is the hard vote of its last L2 steps (paper: 16)."""
    att_lambda: float = 0.0
    """λ of an attention regularization toward the inputs' channel energy (our addition; the paper's LSTM loss
    has none, so 0 = off is the paper)."""
    over_time: str = "sum"
    """How the per-step cross-entropy (and attention term) are combined over a clip's steps: sum (as printed)
    or mean (both divided by the clip length)."""
    attention_samples: int = 24
    """Test clips whose attention maps are kept for the report."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the architecture's checks
        for name in ("clip_len", "clip_stride", "last"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.last > self.clip_len:
            raise UserError(f"--last ({self.last}) cannot exceed --clip-len ({self.clip_len})")
        if self.att_lambda < 0:
            raise UserError(f"--att-lambda must be >= 0, got {self.att_lambda}")
        check_common(self)


def build_model(config: JointLSTMConfig | Mapping[str, Any], shapes: Mapping[str, Sequence[int]], num_classes: int):
    """The train-lstm network over the levels of ``shapes`` (level -> its maps' (C, H, W), in the run's level
    order; one grid for all), with ``num_classes`` classes. ``config`` is a :class:`TrainLSTMConfig` (any
    :class:`JointLSTMConfig`) or a run's saved ``config["model"]`` dict; the weights are a fresh initialization
    (load a run's ``checkpoint.pt`` ``"model"`` state over them)."""
    from actiontk.models.joint_lstm import JointAttentionLSTM

    if isinstance(config, Mapping):
        config = from_mapping(JointLSTMConfig, config)
    grids = {tuple(int(n) for n in shape[1:]) for shape in shapes.values()}
    if len(grids) != 1:
        raise UserError(f"the cube levels have different map sizes {sorted(grids)}", "extract with --grid G")
    return JointAttentionLSTM(config, [int(shape[0]) for shape in shapes.values()], grids.pop(), num_classes)


def train_lstm(cfg: TrainLSTMConfig, tcfg, cache_root: Path, *, dataset: str | None = None, split: int | None = None,
               cubes: str | Run | None = None, features: str | Run | None = None, resume: bool = True,
               log: Callable[[str], None] = print, console=None) -> registry.StageOutput:
    """Train (or resume) and write the predictions. ``features`` (an extract run) instead of ``cubes`` feeds the
    per-frame maps straight to the LSTM (the paper's "no temporal convnet" ablation)."""
    from actiontk.data.clips import ClipDataset, collate_clips
    from actiontk.train.engine import Trainer, seed_everything

    if cubes is not None and features is not None:
        raise UserError("--cubes and --features both given", "the LSTM reads either cubes (train-3d) or feature "
                        "maps straight from an extract run (the no-temporal-convnet ablation), not both")
    if features is not None:
        up, split = upstream.pick_run(cache_root, registry.EXTRACT, dataset=dataset, split=split, run=features,
                                      complete=per_frame_extract(registry.STAGES[registry.EXTRACT].is_complete),
                                      unsuitable=not_per_frame(STAGE), next_step="actiontk extract", log=log)
    else:
        up, split = upstream.pick_run(cache_root, registry.CUBES, dataset=dataset, split=split, run=cubes,
                                      next_step="actiontk train-3d", log=log)
    reader = store.FeatureReader(up.path)
    shapes = reader.layers()
    levels = pick_levels(cfg.levels, list(shapes), up.short)
    name, root = up.info["inputs"]["dataset"], up.info["inputs"]["root"]
    classes, train_videos, test_videos = split_videos(name, root, split, reader, log)
    source = registry.EXTRACT if features is not None else registry.CUBES
    run = open_run(cache_root, STAGE, SCHEMA, {"model": dataclasses.asdict(cfg), "train": train_key(tcfg)},
                   upstream={source: up.key}, inputs={"dataset": name, "root": root, "split": split})
    if lifecycle.is_complete(run):
        log(f"{run.short} is already complete (same config and inputs): nothing to do")
        return registry.StageOutput(run)
    seed_everything(tcfg.seed)  # same config, same initial weights
    model = build_model(cfg, {lv: shapes[lv] for lv in levels}, len(classes))
    train_set = ClipDataset(reader, train_videos, levels, clip_len=cfg.clip_len, clip_stride=cfg.clip_stride)
    test_set = ClipDataset(reader, test_videos, levels, clip_len=cfg.clip_len, clip_stride=cfg.clip_stride)
    for ds_, what in ((train_set, "train"), (test_set, "test")):
        if ds_.padded:
            log(f"{len(ds_.padded)} {what} video(s) shorter than {cfg.clip_len} frames were padded by repeating "
                "their last frame")
    log(f"train-lstm ({cfg.fusion} fusion, {cfg.layers}x{cfg.hidden}) on {len(train_set)} train / {len(test_set)} "
        f"test clips of {name} split {split} into {run.path}")
    trainer = Trainer(model, train_set=train_set, val_set=test_set, collate=collate_clips, cfg=tcfg,
                      run_dir=run.path, step=_step(cfg, levels), console=console)
    history = trainer.fit(resume=resume)
    if trainer.is_main:
        summary = write_predictions(model, cfg, levels, classes, train_set, test_set, run, device=trainer.device,
                                    batch_size=tcfg.batch_size, log=log)
        lifecycle.mark_complete(run, {"epochs": tcfg.epochs, "last": history[-1] if history else {}, **summary})
    return registry.StageOutput(run)


def _inputs(batch: dict[str, Any], levels: list[str]):
    return [batch["x"][lv] for lv in levels]  # K tensors (B, L, C, H, W)


def _step(cfg: TrainLSTMConfig, levels: list[str]):
    from actiontk.models.conv3d import attention_regularization, channel_energy, sequence_cross_entropy
    from actiontk.models.joint_lstm import clip_vote

    def step(model, batch: dict[str, Any]):
        xs = _inputs(batch, levels)
        logits, att = model(xs)  # (B, L, K), (B, L, H*W)
        y = batch["label"]
        ce = sequence_cross_entropy(logits, y, cfg.over_time)  # - Σ_t y log ŷ_t, as printed (Sec. 3.3)
        loss = ce
        metrics: dict[str, float] = {"ce": float(ce.detach())}
        if cfg.att_lambda > 0:  # our addition, reduced over time like the cross-entropy
            energy = sum(channel_energy(x) for x in xs) / len(xs)  # (B, L, H*W), a constant target
            reg = attention_regularization(energy.detach(), att, cfg.att_lambda, cfg.over_time)
            loss = loss + reg
            metrics["att_reg"] = float(reg.detach())
        metrics["acc"] = float((clip_vote(logits.detach(), last=cfg.last)[0] == y).float().mean())
        return loss, metrics

    return step


def write_predictions(model, cfg: TrainLSTMConfig, levels: list[str], classes: list[str], train_set, test_set,
                      run: Run, *, device, batch_size: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from actiontk.data.clips import collate_clips
    from actiontk.models.joint_lstm import clip_scores, clip_vote

    model.eval()
    per_set = {}
    with torch.inference_mode():
        for what, ds in (("test", test_set), ("train", train_set)):
            rows = {"video": [], "start": [], "scores": [], "pred": [], "att": []}
            for batch in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_clips):
                xs = [x.to(device).float() for x in _inputs(batch, levels)]
                logits, att = model(xs)
                rows["video"].append(batch["video"].numpy())
                rows["start"].append(batch["start"].numpy())
                rows["scores"].append(clip_scores(logits, last=cfg.last).float().cpu().numpy())
                rows["pred"].append(clip_vote(logits, last=cfg.last)[0].cpu().numpy())  # the paper's clip label
                rows["att"].append(att.float().cpu().numpy())  # (B, L, H*W)
            per_set[what] = {k: np.concatenate(v) for k, v in rows.items()}

    test = per_set["test"]
    videos = test_set.videos  # [(rel, label)]
    K = len(classes)
    video_vote, video_mean = np.zeros(len(videos), np.int64), np.zeros(len(videos), np.int64)
    video_scores = np.zeros((len(videos), K), np.float32)
    for v in range(len(videos)):
        mine = test["video"] == v
        scores = test["scores"][mine]
        video_scores[v] = scores.mean(0)
        video_vote[v] = vote(test["pred"][mine], scores, K)
        video_mean[v] = int(video_scores[v].argmax())
    labels = np.array([lab for _, lab in videos], np.int64)
    np.savez_compressed(
        run.path / "predictions.npz", classes=np.array(classes), clip_video=test["video"], clip_start=test["start"],
        clip_pred=test["pred"], clip_scores=test["scores"], video_rel=np.array([r for r, _ in videos]),
        video_label=labels,
        video_vote=video_vote, video_mean=video_mean, video_scores=video_scores, last=cfg.last,
        clip_len=cfg.clip_len,
    )
    _write_attention_samples(run, cfg, test, test_set, labels, video_vote)
    _write_attention_run(run, per_set, train_set, test_set)
    summary = {
        "clip_accuracy": float((test["pred"] == labels[test["video"]]).mean()),
        "clip_accuracy_mean": float((test["scores"].argmax(1) == labels[test["video"]]).mean()),
        "video_accuracy_vote": float((video_vote == labels).mean()),
        "video_accuracy_mean": float((video_mean == labels).mean()),
        "test_videos": len(videos), "test_clips": len(test["video"]),
    }
    atomic_write_json(run.path / "summary.json", summary)
    log(f"test accuracy: clip {summary['clip_accuracy']:.3f}, video (vote) {summary['video_accuracy_vote']:.3f}, "
        f"video (mean score) {summary['video_accuracy_mean']:.3f} over {len(videos)} videos")
    return summary


def _grid(test_set) -> tuple[int, int]:
    shape = test_set.reader.layers()[test_set.layers[0]]
    return int(shape[1]), int(shape[2])


def _write_attention_samples(run: Run, cfg: TrainLSTMConfig, test: dict, test_set, labels, video_vote) -> None:
    n = len(test["video"])
    pick = np.unique(np.linspace(0, n - 1, num=min(cfg.attention_samples, n)).round().astype(int))
    H, W = _grid(test_set)
    videos = test_set.videos
    np.savez_compressed(
        run.path / "attention_samples.npz",
        rel=np.array([videos[test["video"][i]][0] for i in pick]), start=test["start"][pick],
        label=labels[test["video"][pick]], pred=test["pred"][pick],
        video_pred=video_vote[test["video"][pick]],
        attention=test["att"][pick].reshape(len(pick), -1, H, W),  # (N, L, H, W)
        clip_len=cfg.clip_len,
    )


def _write_attention_run(run: Run, per_set: dict, train_set, test_set) -> None:
    """Every video's per-frame attention (overlapping clips averaged) as a feature store under run/attention."""
    H, W = _grid(test_set)
    target = run.path / "attention"
    writer = store.ShardWriter(target, {"attention": (1, H, W)}, videos_per_shard=256, attrs={"run_key": run.key})
    try:
        for what, ds in (("train", train_set), ("test", test_set)):
            rows = per_set[what]
            for v, (rel, label) in enumerate(ds.videos):
                T = ds.reader.num_frames(rel)
                acc = np.zeros((max(T, 1), H * W), np.float64)
                hits = np.zeros(max(T, 1))
                for i in np.flatnonzero(rows["video"] == v):
                    s = int(rows["start"][i])
                    att = rows["att"][i][: max(0, T - s)]  # padded steps of short videos fall off the end
                    acc[s:s + len(att)] += att
                    hits[s:s + len(att)] += 1
                acc[hits == 0] = 1.0 / (H * W)  # frames no clip covers: uniform
                acc[hits > 0] /= hits[hits > 0, None]
                slot = writer.start(rel, label=label)
                slot.append({"attention": acc.reshape(-1, 1, H, W).astype(np.float16)})
                slot.finish()
        writer.close()
    except BaseException:
        writer.abort()
        raise
    store.write_manifest(target)
