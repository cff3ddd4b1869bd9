"""The training engine every training stage shares: one loop, seeded, resumable, AMP, DDP.

A stage gives the :class:`Trainer` a model, its datasets and collate function, a :class:`TrainConfig`, a run
directory and a ``step`` function ``(model, batch) -> (loss, {"acc": ...})``; the trainer does the rest::

    run_dir/checkpoint.pt   after every epoch: model, optimizer, scheduler, scaler, epoch, RNG states,
                            config, history (loads with torch.load(..., weights_only=True))
    run_dir/best.pt         model weights of the best epoch by ``select`` (+ epoch, metric, value)
    run_dir/*.pt.sha256     the sha256 of each .pt file, checked before it is loaded (see atomic_torch_save)
    run_dir/metrics.jsonl   one JSON object per epoch and split ("train", "val")

Determinism (CPU; on CUDA only up to cuDNN/atomics nondeterminism):
- the order of epoch e is a permutation drawn from (seed, e) only (:class:`~actiontk.data.clips.ClipSampler`),
  each rank taking its slice, so it does not depend on what ran before;
- DataLoader workers are seeded from (seed, epoch, rank, worker id), and each DataLoader gets its own
  generator, so creating one does not consume the global torch RNG;
- the global RNGs (torch, CUDA, numpy, python: dropout and the like) are seeded once at the start of a fresh
  run and saved in every checkpoint, per rank.
Together with the model, optimizer, scheduler and scaler states this makes ``fit(resume=True)`` end with
the same weights, bit for bit, as a run that was never interrupted.

Under ``torchrun`` (WORLD_SIZE/RANK/LOCAL_RANK in the environment) the model is wrapped in
DistributedDataParallel (gloo on CPU, nccl on CUDA); ``batch_size`` is per process; only rank 0 writes
files, metrics are averaged over all ranks, and everyone waits at a barrier after each save.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from actiontk.cache.runs import (  # noqa: F401 (read_jsonl, verify_checksum: part of this API)
    accepted_digests,
    atomic_write_bytes,
    atomic_write_text,
    checksum_path,
    fsync_dir,
    lock_writer,
    read_jsonl,
    verify_checksum,
)
from actiontk.data.clips import ClipSampler, derive_seed
from actiontk.errors import UserError
from actiontk.runtime import dist_info, resolve_device, resolve_precision

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS_LOG = "metrics.jsonl"  # one JSON line per epoch and split (evaluate's metrics.json is another file)
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "steps", "rng", "config", "history")

# TrainConfig fields that change only speed and output (workers, device, logging): left out of run keys, so that
# resuming on another device or with more loader workers continues the same run. Every other field is a training
# field: resuming with another value would silently mix two trainings (TRAINING_FIELDS, after TrainConfig).
NON_KEY_TRAIN_FIELDS = ("num_workers", "device", "log_every")

# Distinct streams derived from the one seed.
_RUN_STREAM, _WORKER_STREAM, _LOADER_STREAM = 1, 2, 3

StepFn = Callable[[nn.Module, dict], tuple[Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module, DataLoader, torch.device], dict[str, float]]


def _key(option: str) -> str:
    """How an error names a training setting that only a preset sets (it has no command-line option); the
    backquote also marks the message for the preset-file hint."""
    return f"`{option}`"


@dataclass
class TrainConfig:
    """Options shared by every training stage; stage presets in ``stages/*.toml`` set them, flags override."""

    epochs: int = 10
    """Number of passes over the training set."""
    batch_size: int = 16
    """Samples (clips; images for train-gap) per optimizer step on each process (under torchrun the global batch
    is this times the number of processes)."""
    lr: float = 1e-3
    """Peak learning rate (reached after the warmup)."""
    optimizer: str = "adam"
    """adam, sgd (with --momentum) or adamw (decoupled weight decay)."""
    momentum: float = 0.9
    """SGD momentum (ignored by adam/adamw)."""
    weight_decay: float = 1e-5
    """zeta of the loss term zeta * sum(theta^2) on every parameter (the joint-attention paper's zeta = 1e-5). For
    sgd and adam it is exact: the optimizer's L2 coefficient is 2*zeta, the gradient of that term. adamw applies
    a decoupled decay of 2*zeta per unit learning rate instead, which is no loss term."""
    schedule: str = "cosine"
    """Learning-rate schedule, stepped per epoch: cosine (over the epochs after the warmup), step or constant."""
    step_size: int = 10
    """step schedule: multiply the learning rate by --gamma every this many epochs."""
    gamma: float = 0.1
    """step schedule: the factor applied every --step-size epochs."""
    warmup_epochs: int = 0
    """Epochs of linear warmup to --lr before the schedule starts."""
    grad_clip: float | None = 5.0
    """Clip the global gradient norm to this value (None: no clipping)."""
    seed: int = 0
    """Seed of everything random in training: initialization (when the stage seeds with it), order, dropout."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the main process)."""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N; under torchrun each rank uses cuda:LOCAL_RANK."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp16 where bf16 is unsupported; fp32 on CPU), fp32, bf16 or fp16."""
    log_every: int = 10
    """Refresh the running loss on the progress bar every this many steps (reading it syncs the GPU)."""

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be positive, got {self.lr}"),
            (self.optimizer in ("adam", "sgd", "adamw"), f"{_key('optimizer')} must be adam, sgd or adamw, "
                                                         f"got {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"{_key('momentum')} must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"{_key('weight_decay')} must be non-negative, got {self.weight_decay}"),
            (self.schedule in ("cosine", "step", "constant"), f"{_key('schedule')} must be cosine, step or constant, "
                                                              f"got {self.schedule!r}"),
            (self.step_size >= 1, f"{_key('step_size')} must be at least 1, got {self.step_size}"),
            (0 < self.gamma <= 1, f"{_key('gamma')} must be in (0, 1], got {self.gamma}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"{_key('warmup_epochs')} must be at least 0 and less than --epochs ({self.epochs}), "
             f"got {self.warmup_epochs}"),
            (self.grad_clip is None or self.grad_clip > 0, f"{_key('grad_clip')} must be positive (or none), "
                                                           f"got {self.grad_clip}"),
            (self.seed >= 0, f"--seed must be non-negative, got {self.seed}"),
            (self.num_workers >= 0, f"--num-workers must be non-negative, got {self.num_workers}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"),
             f"{_key('precision')} must be auto, fp32, bf16 or fp16, got {self.precision!r}"),
            (self.log_every >= 1, f"{_key('log_every')} must be at least 1, got {self.log_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message, "it is a preset key: fix it in the stage's section of the --config file"
                                if message.startswith("`") else None)

    def lr_factor(self, epoch: int) -> float:
        """Multiplier of --lr during epoch ``epoch`` (0-based)."""
        w = self.warmup_epochs
        if epoch < w:
            return (epoch + 1) / (w + 1)  # linear ramp that reaches the full rate at epoch w
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * (epoch - w) / (self.epochs - w)))
        if self.schedule == "step":
            return self.gamma ** ((epoch - w) // self.step_size)
        return 1.0


TRAINING_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in NON_KEY_TRAIN_FIELDS)


# -- helpers ----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) RNGs; stages call it before building their model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def move_to_device(batch: Any, device: torch.device, *, non_blocking: bool = False,
                   channels_last: bool = False) -> Any:
    """``batch`` (nested dicts, lists, tuples of tensors and plain values) with every tensor on ``device``.

    With ``channels_last``, 4-D floating tensors (image batches) are also put in channels-last layout.
    """
    if isinstance(batch, Tensor):
        t = batch.to(device, non_blocking=non_blocking)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, dict):
        return {k: move_to_device(v, device, non_blocking=non_blocking, channels_last=channels_last)
                for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device, non_blocking=non_blocking, channels_last=channels_last) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


def batch_size_of(batch: Any) -> int:
    """Number of samples in a collated batch: the length of its first tensor."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in items:
        n = batch_size_of(v)
        if n:
            return n
    return 0


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`actiontk.cache.runs.atomic_write` (a temporary file in the same folder,
    fsync, ``os.replace``): a reader (or a resume after a kill) sees the old file or the new one, never a torn one.

    The file's sha256 goes to ``PATH.sha256``, itself replaced atomically, in three steps so that a kill at
    any instant leaves a pair that verifies: the sidecar first lists the old digest and the new one, then
    the file is replaced, then the sidecar lists the new digest alone."""
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)  # to memory: torch's own file writer turns a full disk into an unclear RuntimeError
    data = buffer.getbuffer()
    digest = hashlib.sha256(data).hexdigest()

    def list_both() -> None:
        before = (accepted_digests(path) or [])[-1:] if path.is_file() else []
        atomic_write_text(checksum_path(path), "\n".join([*before, digest]) + "\n")

    try:
        atomic_write_bytes(path, data, before_replace=list_both)
        atomic_write_text(checksum_path(path), digest + "\n")
    except OSError as e:
        if e.filename is None:  # say which file could not be written (a full disk names none)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an O_APPEND descriptor, then fsync. A kill can at
    worst leave a torn last line, which the resume cleanup drops."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)




def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors, ints, floats and lists, so that they load with weights_only=True."""
    np_key, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": str(np_key), "state": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["key"], n["state"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _seed_worker(seed: int, epoch: int, rank: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: every RNG of the worker from (seed, epoch, rank, worker id)."""
    seed_everything(derive_seed(seed, _WORKER_STREAM, epoch, rank, worker_id))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# -- the trainer ------------------------------------------------------------------------------------------


class Trainer:
    """Trains ``model`` on ``train_set`` for ``cfg.epochs`` epochs, validating on ``val_set`` after each.

    ``step(model, batch)`` gets a batch already on the device (inside autocast when AMP is on) and returns
    the loss to minimize and per-batch metrics (means over the batch, e.g. ``{"acc": 0.75}``).
    ``evaluate(model, loader, device)`` computes validation metrics (it must move batches itself, e.g.
    with :func:`move_to_device`); by default they are the sample-weighted means of ``step``'s loss and metrics
    without gradients. It is called inside ``torch.no_grad()`` and autocast, with the unwrapped model in
    eval mode, on this rank's share of the validation set; the trainer averages its results over ranks,
    weighted by their number of samples (a rank whose share is empty may return ``{}``).
    ``select`` names the metric of ``best.pt``: ``<split>_<metric>`` such as ``val_acc`` (higher is better)
    or ``val_loss`` (a metric whose name ends in "loss" is lower-is-better).
    """

    def __init__(self, model: nn.Module, *, train_set: Dataset, val_set: Dataset | None, collate: Callable | None,
                 cfg: TrainConfig, run_dir: Path, step: StepFn, evaluate: EvalFn | None = None, console=None,
                 select: str = "val_acc"):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.train_set, self.val_set, self.collate = train_set, val_set, collate
        self.step_fn, self.evaluate_fn = step, evaluate
        self.select = select
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        if len(train_set) == 0:  # type: ignore[arg-type]
            raise UserError("the training set is empty", "check the split and that its videos were extracted")

        self.rank, self.world, self.local_rank, _ = dist_info()
        self.is_main = self.rank == 0
        # One training process per (run, rank), as extract has one writer: held until the stage marks the run
        # complete (actiontk.cache.lifecycle.mark_complete) or the process exits.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock_writer(self.run_dir, self.rank, what="training")
        self.device = resolve_device(cfg.device, self.local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.dist = self._init_distributed()

        on_cuda = self.device.type == "cuda"
        self.channels_last = on_cuda
        self.pin_memory = on_cuda
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if on_cuda:
            torch.cuda.set_device(self.device)
        self.model = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = self._make_optimizer()
        # A plain function (not a bound method) so that the scheduler's state_dict stores nothing for it.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: cfg.lr_factor(e))
        # A scaler only for fp16: bf16 has fp32's exponent range, so its gradients do not underflow.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.ddp: nn.Module = self.model
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if on_cuda else None)

        self.epoch = 0  # completed epochs
        self.steps = 0  # optimizer steps taken (fp16 steps skipped for inf/nan gradients are not counted)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"epoch", "metric", "value"}

    # -- setup ---------------------------------------------------------------------------------------------

    def _init_distributed(self):
        if self.world <= 1:
            return None
        import torch.distributed as dist

        if not dist.is_initialized():  # init once: a stage may have done it already (e.g. to share a run key)
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        return dist

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        # One group with weight decay on every parameter, as in the paper's Caffe setup; a stage that wants
        # to exempt biases and norms can pass its own groups by subclassing.
        # weight_decay is zeta of zeta * sum(theta^2): torch's coupled L2 adds wd * theta to the gradient, the
        # gradient of (wd / 2) * sum(theta^2), so wd = 2 * zeta makes the optimizer minimize the printed loss.
        params = [{"params": [p for p in self.model.parameters() if p.requires_grad],
                   "weight_decay": 2.0 * cfg.weight_decay}]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=cfg.lr)
        return torch.optim.Adam(params, lr=cfg.lr)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loader(self, dataset: Dataset, epoch: int, train: bool) -> DataLoader:
        """A DataLoader for one epoch: its order, worker seeds and generator depend on (seed, epoch) only."""
        cfg = self.cfg
        sampler = ClipSampler(len(dataset), shuffle=train, seed=cfg.seed, rank=self.rank,  # type: ignore[arg-type]
                              world=self.world, pad=train)
        sampler.set_epoch(epoch)
        # Its own generator: without one, creating the iterator draws a base seed from the global torch RNG,
        # which would couple the data pipeline to dropout and break resumes.
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, _LOADER_STREAM, epoch, self.rank, train))
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          collate_fn=self.collate, pin_memory=self.pin_memory, drop_last=False,
                          worker_init_fn=functools.partial(_seed_worker, cfg.seed, epoch, self.rank),
                          generator=generator)

    def _print(self, text: str) -> None:
        if self.is_main:
            self.console.print(text, markup=False, highlight=False)

    def _barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    # -- checkpoints ---------------------------------------------------------------------------------------

    def _paths(self) -> tuple[Path, Path, Path]:
        return self.run_dir / CHECKPOINT, self.run_dir / BEST, self.run_dir / METRICS_LOG

    def _remove_stale_temps(self) -> None:
        for name in (CHECKPOINT, BEST, METRICS_LOG):
            for tmp in self.run_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = rng_state()
        if self.dist is None:
            return [mine]
        states: list[Any] = [None] * self.world
        self.dist.all_gather_object(states, mine)
        return states

    def _save_checkpoint(self) -> None:
        rngs = self._gather_rng()  # a collective: every rank takes part, rank 0 writes
        if self.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": self.epoch,
                "steps": self.steps,
                "world": self.world,
                "rng": rngs[0],
                "rng_per_rank": rngs,
                "config": asdict(self.cfg),
                "history": self.history,
                "best": self.best,
            }
            atomic_torch_save(state, self.run_dir / CHECKPOINT)

    def _check_config(self, ckpt: dict[str, Any], path: Path) -> None:
        saved = ckpt.get("config", {})
        current = asdict(self.cfg)
        diffs = [f"{_flag(k)} {saved.get(k)!r} → {current[k]!r}" for k in TRAINING_FIELDS if saved.get(k) != current[k]]
        if ckpt.get("world", 1) != self.world:
            diffs.append(f"processes {ckpt.get('world', 1)} → {self.world}")
        if diffs:
            raise UserError(f"cannot resume from {path}: it was trained with other settings ({'; '.join(diffs)})",
                            "resume with the original settings, or train again without --resume")

    def _load_checkpoint(self, path: Path) -> dict[str, Any]:
        """The checkpoint at ``path``, checked: its checksum, that it loads with the safe loader, and that it
        holds what this trainer saves; every failure is one line that says how to start the run over."""
        restart = "start the run over with the same command and --no-resume (or delete the file)"

        def bad(what: str) -> UserError:
            return UserError(f"cannot resume from the checkpoint {path}: it {what}", restart)

        try:
            if path.stat().st_size == 0:
                raise bad("is empty")
            if (why := verify_checksum(path)) is not None:
                raise bad(why)
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except UserError:
            raise
        except OSError as e:
            raise bad(f"cannot be read ({e.strerror or e})") from None
        except Exception as e:  # torch's messages run over several lines: keep the gist
            text = str(e)
            if "Unsupported global" in text or ("weights_only" in text and "Unsupported operand" not in text):
                raise bad("holds objects other than tensors and plain values, which the safe loader refuses "
                          "(not a checkpoint this trainer wrote; loading it could run code)") from None
            detail = "not a file torch.save wrote" if "weights_only" in text or not text.strip() \
                else text.strip().splitlines()[0][:120]
            raise bad(f"is not a readable PyTorch checkpoint ({detail})") from None
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        if missing:
            raise bad(f"is not a training checkpoint (it has no {', '.join(missing[:4])})")
        return ckpt

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.epoch = int(ckpt["epoch"])
            self.steps = int(ckpt["steps"])
            self.history = list(ckpt["history"])
            self.best = ckpt.get("best")
            per_rank = ckpt.get("rng_per_rank") or [ckpt["rng"]]
            set_rng_state(per_rank[self.rank] if len(per_rank) == self.world else ckpt["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise UserError(f"cannot resume from the checkpoint {path}: it does not fit this model ({first})",
                            "start the run over with the same command and --no-resume") from None

    def _truncate_metrics(self, path: Path, epochs: int) -> None:
        """Drop metrics lines of epochs after the checkpoint (written by a run killed before its checkpoint)."""
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        keep = [json.dumps(r, sort_keys=True) for r in read_jsonl(path) if int(r.get("epoch", 0)) <= epochs]
        if keep != lines:
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def _start(self, resume: bool) -> bool:
        """Set up a fresh run or restore the checkpoint; False when there is nothing left to train."""
        ckpt_path, best_path, metrics_path = self._paths()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
        self._barrier()
        if resume and ckpt_path.is_file():
            ckpt = self._load_checkpoint(ckpt_path)
            self._check_config(ckpt, ckpt_path)
            self._restore(ckpt, ckpt_path)
            if self.epoch >= self.cfg.epochs:
                self._print(f"{self.run_dir} already finished its {self.cfg.epochs} epochs: nothing to resume")
                return False
            if self.is_main:
                self._truncate_metrics(metrics_path, self.epoch)
            self._print(f"resuming {self.run_dir} after epoch {self.epoch} of {self.cfg.epochs}")
            self._barrier()
            return True
        if resume:
            self._print(f"no checkpoint in {self.run_dir}: starting from scratch")
        if self.is_main:
            # Starting over: results of an earlier run here would mix with this one's.
            for p in (ckpt_path, best_path, metrics_path, checksum_path(ckpt_path), checksum_path(best_path)):
                p.unlink(missing_ok=True)
        self._barrier()
        # Distinct dropout streams per rank; rank 0 of a single process uses the seed itself.
        seed_everything(self.cfg.seed if self.rank == 0 else derive_seed(self.cfg.seed, _RUN_STREAM, self.rank))
        self.epoch, self.steps, self.history, self.best = 0, 0, [], None
        return True

    # -- the loop ------------------------------------------------------------------------------------------

    def fit(self, resume: bool = False, *, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train to ``cfg.epochs`` (continuing from ``checkpoint.pt`` with ``resume``); returns the history.

        ``stop_after`` ends this call once that many epochs are complete and checkpointed, exactly as if the
        process had been killed then (a later ``fit(resume=True)`` continues); for time-boxed jobs and tests.
        """
        if not self._start(resume):
            return self.history
        last = self.cfg.epochs if stop_after is None else min(self.cfg.epochs, stop_after)
        while self.epoch < last:
            self._run_epoch(self.epoch)
        if self.epoch >= self.cfg.epochs:
            self._print(f"done: {self.epoch} epochs, {self.steps} optimizer steps")
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        train = self._train_epoch(epoch)
        val = self._validate(epoch) if self.val_set is not None else None
        self.scheduler.step()
        self.epoch = epoch + 1

        record: dict[str, Any] = {"epoch": self.epoch, "lr": lr, "steps": self.steps}
        record.update({f"train_{k}": v for k, v in train.items()})
        if val is not None:
            record.update({f"val_{k}": v for k, v in val.items()})
        bad = sorted(k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:  # nothing of this epoch is saved: the checkpoint stays at the last sound epoch
            raise UserError(f"training produced non-finite values at epoch {self.epoch}: {', '.join(bad)} "
                            f"= {', '.join(str(record[k]) for k in bad)}",
                            "the inputs or the weights hold NaN or inf: `actiontk status --verify` checks the "
                            "cache; otherwise lower --lr")
        self.history.append(record)
        if self.is_main:
            metrics = self.run_dir / METRICS_LOG
            append_jsonl(metrics, {"epoch": self.epoch, "split": "train", "lr": lr, "steps": self.steps, **train})
            if val is not None:
                append_jsonl(metrics, {"epoch": self.epoch, "split": "val", "lr": lr, **val})
            self._update_best(record)
        self._save_checkpoint()
        self._barrier()  # nobody starts the next epoch (or exits) before the checkpoint is on disk
        self._print(self._summary(record, train, val))

    def _summary(self, record: dict[str, Any], train: dict[str, float], val: dict[str, float] | None) -> str:
        def fmt(d: dict[str, float]) -> str:
            keys = sorted((k for k in d if k not in ("seconds", "clips_per_s", "samples")), key=lambda k: k != "loss")
            return " ".join(f"{k} {d[k]:.4g}" for k in keys)

        text = f"epoch {record['epoch']}/{self.cfg.epochs}  train {fmt(train)}"
        if val is not None:
            text += f"  | val {fmt(val)}"
        return text + f"  | lr {record['lr']:.3g} | {train['clips_per_s']:.0f} clips/s {train['seconds']:.1f} s"

    def _update_best(self, record: dict[str, Any]) -> None:
        metric = self.select
        if metric not in record:
            fallback = "val_loss" if "val_loss" in record else "train_loss"
            if self.best is None or self.best.get("metric") != fallback:
                self._print(f"the metric {metric!r} is not reported: best.pt follows {fallback}")
            metric = fallback
        value = float(record[metric])
        lower = metric.endswith("loss")
        better = (self.best is None or self.best.get("metric") != metric
                  or (value < self.best["value"] if lower else value > self.best["value"]))
        if better and math.isfinite(value):
            self.best = {"epoch": self.epoch, "metric": metric, "value": value}
            atomic_torch_save({"model": self.model.state_dict(), **self.best}, self.run_dir / BEST)

    def _reduce(self, sums: dict[str, float], count: float) -> tuple[dict[str, float], float]:
        """Sum per-rank sums and counts over ranks; the weighted means and the total count."""
        keys = sorted(sums)
        if self.dist is not None:
            # The union of the ranks' keys: a rank whose share of the validation set is empty reports none.
            gathered: list[Any] = [None] * self.world
            self.dist.all_gather_object(gathered, keys)
            keys = sorted(set().union(*gathered))
            sums = {k: sums.get(k, 0.0) for k in keys}
            t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=self.device)
            self.dist.all_reduce(t)
            values = t.tolist()
            sums, count = dict(zip(keys, values[:-1], strict=True)), values[-1]
        return {k: sums[k] / count if count else float("nan") for k in keys}, count

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        cfg = self.cfg
        loader = self._loader(self.train_set, epoch, train=True)
        self.ddp.train()
        sums: dict[str, Any] = {}
        count = 0
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # on device: no sync per step
        start = time.perf_counter()
        progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} clips/s  loss {task.fields[loss]}"),
                            TimeRemainingColumn(), console=self.console, transient=True, disable=not self.is_main)
        with progress:
            task = progress.add_task("train", total=len(loader), epoch=f"{epoch + 1}/{cfg.epochs}", rate="-",
                                     loss="-")
            for i, batch in enumerate(loader, 1):
                batch = move_to_device(batch, self.device, non_blocking=self.pin_memory,
                                       channels_last=self.channels_last)
                n = batch_size_of(batch)
                with self._autocast():
                    loss, metrics = self.step_fn(self.ddp, batch)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip is not None:
                    self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
                self.scaler.step(self.optimizer)
                self.scaler.update()
                # With fp16 the scaler skips steps whose gradients overflowed and lowers its scale.
                if scale is None or self.scaler.get_scale() >= scale:
                    self.steps += 1
                loss_sum += loss.detach().double() * n
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + (v.detach().double() if isinstance(v, Tensor) else float(v)) * n
                count += n
                if i % cfg.log_every == 0 or i == len(loader):
                    running = loss_sum.item() / count
                    if not math.isfinite(running):
                        raise UserError(f"training diverged: the loss is {running} at epoch {epoch + 1}, step {i}",
                                        "lower --lr, or set grad_clip in the stage's section of a --config file")
                    progress.update(task, loss=f"{running:.4f}",
                                    rate=f"{count * self.world / (time.perf_counter() - start):.1f}")
                progress.advance(task)
        seconds = time.perf_counter() - start
        sums = {"loss": loss_sum.item(), **{k: float(v) for k, v in sums.items()}}
        means, total = self._reduce(sums, count)
        return {**means, "samples": int(total), "seconds": seconds, "clips_per_s": total / seconds}

    def _validate(self, epoch: int) -> dict[str, float]:
        assert self.val_set is not None
        loader = self._loader(self.val_set, epoch, train=False)
        count = len(loader.sampler)  # type: ignore[arg-type]
        start = time.perf_counter()
        self.model.eval()  # the unwrapped model: DDP's forward would sync buffers, and ranks' shares differ
        with torch.no_grad(), self._autocast():
            if self.evaluate_fn is not None:
                metrics = {k: float(v) for k, v in self.evaluate_fn(self.model, loader, self.device).items()}
            else:
                metrics = self._default_evaluate(loader)
        seconds = time.perf_counter() - start
        sums = {k: (v * count if count else 0.0) for k, v in metrics.items()}  # a rank with no samples adds 0
        means, total = self._reduce(sums, count)
        return {**means, "samples": int(total), "seconds": seconds, "clips_per_s": total / seconds}

    def _default_evaluate(self, loader: DataLoader) -> dict[str, float]:
        sums: dict[str, float] = {}
        count = 0
        for batch in loader:
            batch = move_to_device(batch, self.device, non_blocking=self.pin_memory,
                                   channels_last=self.channels_last)
            n = batch_size_of(batch)
            loss, metrics = self.step_fn(self.model, batch)
            for k, v in {"loss": loss, **metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
        return {k: v / count for k, v in sums.items()} if count else {}
