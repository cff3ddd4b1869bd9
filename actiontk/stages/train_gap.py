"""``actiontk train-gap``: generalized attentional pooling (with pose regularization) on still images.

Two modes, one network (:class:`actiontk.models.gap.GAPNet` around the head), one training engine, and the
training items of :mod:`actiontk.data.gap_items`:

- **cached** (default): the head is trained on the ResNet-101 ``layer4`` maps of an ``extract`` run of an
  image dataset (``mpii``, ``toy-mpii``, ``images``); the backbone is frozen and never built. Pose targets
  are drawn at the cached map size through the exact geometry of extract's preprocessing (shorter side
  resized to S, centre S x S crop).
- **--finetune**: end to end from the images, the backbone trainable (BatchNorm statistics frozen: the
  batches are small), random ``crop`` x ``crop`` windows of the image resized to ``resize`` on its shorter
  side, mirrored half the time (left/right joints swapped); the centre crop at test time. The reference's
  sizes are 480 / 450 (15 x 15 ``layer4`` maps).

The stage writes, for the test (MPII: val) split:

- ``predictions.npz``: ``classes`` (K,), ``image_rel`` (N,), ``image_label`` (N,), ``image_scores`` (N, K)
  softmax scores;
- ``attention_samples.npz``: for a sample of test images ``rel``, ``label``, ``pred``, ``topdown`` (M, H, W)
  (the predicted class's top-down map), ``bottomup`` (M, H, W) (all ones for the mean-pool head: mean
  pooling is attention with a uniform map);
- ``summary.json`` (accuracy, mAP) and, as every training stage, ``checkpoint.pt``, ``best.pt``,
  ``metrics.jsonl`` and ``complete.json``.
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
from actiontk.data.gap_items import IMAGE_DATASETS, CachedMaps, ImageCrops, load_items
from actiontk.errors import UserError
from actiontk.models.configs import PAPER_POSE_WEIGHT, GAPConfig, from_mapping
from actiontk.stages import registry, upstream
from actiontk.stages.common import train_key

STAGE = registry.TRAIN_GAP
SCHEMA = 3  # 2: inputs standardized per channel; 3: pose as a loss term only by default, weight decay = 2 zeta


@dataclass
class TrainGAPConfig(GAPConfig):
    """The options of ``train-gap``: the head's architecture (:class:`GAPConfig`: head, depth, width, dropout,
    form, pose, pose_attention, pose_width) and the stage's own loss, input and mode options below (training
    options are in :class:`TrainConfig`)."""

    pose_weight: float = PAPER_POSE_WEIGHT
    """Weight of the pose loss relative to the cross-entropy (paper: 1e-6)."""
    standardize: bool = True
    """Standardize every input channel with training-set statistics before the head (our addition; off: the
    maps as the backbone gives them)."""
    sigma: float = 1.0
    """Standard deviation of a joint's Gaussian heatmap, in map cells."""
    finetune: bool = False
    """Train end to end from the images (backbone trainable) instead of on cached maps."""
    backbone: str = "resnet101"
    """--finetune: resnet101 (the paper's), resnet50 or resnet18 (the extract run's in cached mode)."""
    layer: str = "layer4"
    """The feature layer the head reads (cached mode: must be in the extract run)."""
    weights: str = "imagenet"
    """--finetune: initial backbone weights: imagenet, none (random, seeded) or a local state-dict path."""
    resize: int = 480
    """--finetune: the shorter image side before cropping (reference: 480)."""
    crop: int = 450
    """--finetune: the square crop fed to the network (reference: 450 -> 15x15 layer4 maps)."""
    attention_samples: int = 24
    """Test images whose attention maps are kept for the report."""

    def __post_init__(self) -> None:
        super().__post_init__()  # the head's checks
        for name in ("resize", "crop"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.pose_weight < 0:
            raise UserError(f"--pose-weight must be >= 0, got {self.pose_weight}")
        if self.sigma <= 0:
            raise UserError(f"--sigma must be positive, got {self.sigma}")
        if self.crop > self.resize:
            raise UserError(f"--crop ({self.crop}) cannot exceed --resize ({self.resize})")
        if self.finetune:  # on cached maps the backbone is the extract run's, whatever this field says
            self._check_finetune_backbone()

    def _check_finetune_backbone(self) -> None:
        from actiontk.models import backbones

        usable = [name for name, spec in backbones.BACKBONES.items() if self.layer in spec.layers]  # ResNets: layer4
        if self.backbone in usable:
            return
        if self.backbone not in backbones.BACKBONES:  # any torchvision model with that graph node
            try:
                backbones.validate(self.backbone, [self.layer], self.crop, None)
                return
            except UserError:
                pass
        raise UserError(f"--backbone must be one of {', '.join(usable) or '(no curated one)'}, or a torchvision "
                        f"model with a {self.layer} node, got {self.backbone!r}",
                        "resnet101 is the paper's; the smaller ones fine-tune faster; `actiontk backbones --layers "
                        "NAME` lists a model's nodes")

    def key(self) -> dict[str, Any]:
        """What changes the trained model: finetune-only options do not key a cached-mode run."""
        out = dataclasses.asdict(self)
        if not self.finetune:
            for name in ("backbone", "weights", "resize", "crop"):
                out.pop(name)
        return out


def build_model(config: TrainGAPConfig | Mapping[str, Any], shapes: Mapping[str, Sequence[int]] | None,
                num_classes: int, *, weights: str | None = None, seed: int = 0):
    """The train-gap network (:class:`~actiontk.models.gap.GAPNet`), with ``num_classes`` classes. ``config`` is a
    :class:`TrainGAPConfig` or a run's saved ``config["model"]`` dict. On cached maps the head reads
    ``config.layer``, whose maps' (C, H, W) ``shapes`` gives (an extract run's ``FeatureReader.layers()``); with
    ``finetune`` it sits on the backbone (``shapes`` unused), built with ``weights`` (default ``config.weights``;
    pass ``"none"`` to load a run's checkpoint over it) and ``seed``. The head's weights are a fresh
    initialization from the current RNG; load a run's ``checkpoint.pt`` ``"model"`` state over them."""
    from actiontk.models.backbones import build_backbone, channels
    from actiontk.models.gap import GAPHead, GAPNet

    if isinstance(config, Mapping):
        config = from_mapping(TrainGAPConfig, config)
    if config.finetune:
        head = GAPHead(config, channels(config.backbone, config.layer), num_classes)
        fb = build_backbone(config.backbone, [config.layer], config.weights if weights is None else weights, seed=seed,
                            size=config.crop)
        fb.body.requires_grad_(True)
        return GAPNet(head, fb.body, config.layer)
    if shapes is None or config.layer not in shapes:
        raise UserError(f"no {config.layer} maps to build the train-gap head on (the features hold "
                        f"{', '.join(shapes or {}) or 'none'})", f"extract with --layers {config.layer}")
    return GAPNet(GAPHead(config, int(shapes[config.layer][0]), num_classes))


# -- the stage ------------------------------------------------------------------------------------------------


def _is_image_extract(run: Run) -> bool:
    from actiontk.stages.train_3d import extract_complete

    return upstream.run_dataset(run) in IMAGE_DATASETS and extract_complete(run)


def _not_images(run: Run) -> UserError | None:
    """The error for a --features run that holds video features (train-gap reads still images' maps)."""
    dataset = upstream.run_dataset(run)
    if dataset in IMAGE_DATASETS:
        return None
    return UserError(f"{run.short} is a video extract run ({dataset}); train-gap needs an image extract run",
                     "make one with `actiontk extract mpii --root DIR --backbone resnet101` (or toy-mpii, images) "
                     "and pass it to --features, or leave --features out to use the newest")


def train_gap(cfg: TrainGAPConfig, tcfg, cache_root: Path, *, dataset: str | None = None, root: Path | None = None,
              features: str | Run | None = None, resume: bool = True, log: Callable[[str], None] = print,
              console=None) -> registry.StageOutput:
    from actiontk.models.backbones import BACKBONES, layer_map_size
    from actiontk.models.gap import fit_standardization
    from actiontk.train.engine import Trainer, seed_everything

    if dataset is not None and dataset.lower() not in IMAGE_DATASETS:
        raise UserError(f"train-gap works on still-image datasets, not {dataset!r}",
                        f"use one of: {', '.join(IMAGE_DATASETS)}")
    up = None
    if cfg.finetune:
        if root is None or dataset is None:
            raise UserError("--finetune reads the images: it needs --dataset and --root",
                            "e.g. actiontk train-gap --finetune --dataset mpii --root DIR")
        name, data_root = dataset.lower(), str(Path(root).expanduser().resolve())
        upstream_keys: dict[str, str] = {}
    else:
        if root is not None:
            log("--root is only read with --finetune; cached mode uses the extract run's dataset root")
        up, _ = upstream.pick_run(cache_root, registry.EXTRACT, dataset=dataset, split=None, run=features,
                                  complete=_is_image_extract, unsuitable=_not_images,
                                  next_step=f"actiontk extract {dataset or 'mpii'} --root DIR --backbone resnet101",
                                  log=log)
        name, data_root = up.info["inputs"]["dataset"], up.info["inputs"]["root"]
        upstream_keys = {registry.EXTRACT: up.key}

    run = open_run(cache_root, STAGE, SCHEMA, {"model": cfg.key(), "train": train_key(tcfg)}, upstream=upstream_keys,
                   inputs={"dataset": name, "root": data_root, "split": 1})
    if lifecycle.is_complete(run):
        log(f"{run.short} is already complete (same config and inputs): nothing to do")
        return registry.StageOutput(run)

    if cfg.finetune:
        classes, train_items, test_items = load_items(name, data_root, need_pose=cfg.pose, log=log)
        map_size = layer_map_size(cfg.backbone, cfg.layer, cfg.crop)
        if min(map_size) < 1:
            raise UserError(f"--crop {cfg.crop} is too small for {cfg.backbone} {cfg.layer}", "use a larger --crop")
    else:
        reader = store.FeatureReader(up.path)
        shapes = reader.layers()
        if cfg.layer not in shapes:
            raise UserError(f"{up.short} holds {', '.join(shapes)}, not {cfg.layer}",
                            f"extract with --layers {cfg.layer}, or set layer = \"{next(iter(shapes))}\" in the "
                            "[train-gap] section of a --config file")
        classes, train_items, test_items = load_items(name, data_root, keep=lambda rel: rel in reader,
                                                      need_pose=cfg.pose, log=log)
        bb = up.info["config"]["backbone"]
        input_size = int(bb["size"])
        stride = 32 if cfg.layer == "layer4" else max(1, input_size // int(shapes[cfg.layer][2]))

    seed_everything(tcfg.seed)  # same config, same initial weights
    model = build_model(cfg, None if cfg.finetune else shapes, len(classes), seed=tcfg.seed)
    if cfg.finetune:
        spec = BACKBONES.get(cfg.backbone)
        stride = spec.layers[cfg.layer].stride if spec and cfg.layer in spec.layers else \
            max(1, round(cfg.crop / map_size[1]))
        train_set = ImageCrops(train_items, resize=cfg.resize, crop=cfg.crop, map_size=map_size, sigma=cfg.sigma,
                               stride=stride, train=True, seed=tcfg.seed)
        test_set = ImageCrops(test_items, resize=cfg.resize, crop=cfg.crop, map_size=map_size, sigma=cfg.sigma,
                              stride=stride, train=False, seed=tcfg.seed)
    else:
        train_set = CachedMaps(reader, train_items, cfg.layer, input_size, cfg.sigma, stride)
        test_set = CachedMaps(reader, test_items, cfg.layer, input_size, cfg.sigma, stride)
    mode = "fine-tuning " + cfg.backbone if cfg.finetune else f"cached {cfg.layer} maps of {up.short}"
    log(f"train-gap (head {cfg.head}{', pose' if cfg.pose else ''}; {mode}) on {len(train_set)} train / "
        f"{len(test_set)} test images of {name} ({len(classes)} classes) into {run.path}")
    trainer = Trainer(model, train_set=train_set, val_set=test_set, collate=None, cfg=tcfg, run_dir=run.path,
                      step=_step(cfg), console=console)
    if cfg.pose and not cfg.pose_attention and not cfg.finetune:
        log("note: pose is a loss term only (the paper); on cached maps the backbone is frozen, so the pose branch "
            "shares nothing with the action scores and cannot change them: use --finetune, or --pose-attention "
            "for the reference code's variant")
    if not cfg.standardize:
        log("input standardization is off: the head reads the maps as the backbone gives them")
    elif not (resume and (run.path / "checkpoint.pt").is_file()):  # a resumed run's statistics are in its checkpoint
        fit_standardization(trainer.model, train_set, device=trainer.device, batch_size=tcfg.batch_size)
    history = trainer.fit(resume=resume)
    if trainer.is_main:
        summary = write_predictions(model, cfg, classes, test_set, run, device=trainer.device,
                                    batch_size=tcfg.batch_size, log=log)
        lifecycle.mark_complete(run, {"epochs": tcfg.epochs, "last": history[-1] if history else {}, **summary})
    return registry.StageOutput(run)


def _step(cfg: TrainGAPConfig):
    import torch.nn.functional as F

    from actiontk.models.gap import pose_loss

    def step(model, batch: dict[str, Any]):
        out = model(batch["x"])
        y = batch["label"]
        loss = F.cross_entropy(out.logits, y)
        metrics: dict[str, float] = {"ce": float(loss.detach())}
        if cfg.pose and out.heatmaps is not None:
            pl = pose_loss(out.heatmaps.float(), batch["heatmap"], batch["mask"])
            loss = loss + cfg.pose_weight * pl
            metrics["pose_l2"] = float(pl.detach())
        metrics["acc"] = float((out.logits.argmax(-1) == y).float().mean())
        return loss, metrics

    return step




def write_predictions(model, cfg: TrainGAPConfig, classes: list[str], test_set, run: Run, *, device, batch_size: int,
                      log: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    scores, tops, bottoms = [], [], []
    with torch.inference_mode():
        for batch in DataLoader(test_set, batch_size=batch_size, shuffle=False):
            out = model(batch["x"].to(device).float())
            probs = out.logits.float().softmax(-1)
            pred = probs.argmax(-1)
            scores.append(probs.cpu().numpy())
            top = out.topdown.float()[torch.arange(len(pred)), pred]  # (B, H, W): the predicted class's map
            tops.append(top.cpu().numpy())
            bottoms.append((out.bottomup.float() if out.bottomup is not None else torch.ones_like(top)).cpu().numpy())
    s = np.concatenate(scores)
    items = test_set.items
    labels = np.array([it.label for it in items], np.int64)
    np.savez_compressed(run.path / "predictions.npz", classes=np.array(classes),
                        image_rel=np.array([it.rel for it in items]), image_label=labels, image_scores=s)
    n = len(items)
    pick = np.unique(np.linspace(0, n - 1, num=min(cfg.attention_samples, n)).round().astype(int))
    np.savez_compressed(run.path / "attention_samples.npz", rel=np.array([items[i].rel for i in pick]),
                        label=labels[pick], pred=s[pick].argmax(1), topdown=np.concatenate(tops)[pick],
                        bottomup=np.concatenate(bottoms)[pick], head=cfg.head)
    from actiontk import metrics

    mAP, skipped = metrics.mean_average_precision(metrics.average_precisions(labels, s))
    with_positives = len(classes) - len(skipped)  # >= 1: every test image has a label, so mAP is defined
    summary = {"accuracy": float((s.argmax(1) == labels).mean()), "mAP": mAP, "classes_with_positives": with_positives,
               "test_images": n}
    atomic_write_json(run.path / "summary.json", summary)
    log(f"test: accuracy {summary['accuracy']:.3f}, mAP {mAP:.3f} (over {with_positives} of {len(classes)} classes "
        f"with a test image) on {n} images")
    return summary
