"""The shared training engine: learning, bit-identical determinism and resumes, checkpoints, config, DDP."""

from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset

from actiontk.errors import UserError
from actiontk.train.engine import (
    BEST,
    CHECKPOINT,
    METRICS_LOG as METRICS,
    TrainConfig,
    Trainer,
    read_jsonl,
    rng_state,
    seed_everything,
    set_rng_state,
)
from tests.conftest import torchrun

REPO = Path(__file__).resolve().parents[1]
N_TRAIN, N_VAL, BATCH = 60, 24, 8
STEPS_PER_EPOCH = math.ceil(N_TRAIN / BATCH)


class ToySet(Dataset):
    """A learnable 3-class problem: labels from a random linear teacher on Gaussian inputs."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        teacher = torch.randn(8, 3, generator=torch.Generator().manual_seed(7))
        self.y = (self.x @ teacher).argmax(1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "label": int(self.y[i])}


def make_model(seed: int = 0) -> nn.Module:
    seed_everything(seed)
    # Dropout makes the result depend on the torch RNG, which the checkpoint must carry.
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))


def toy_step(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch["x"])
    loss = F.cross_entropy(logits, batch["label"])
    return loss, {"acc": (logits.argmax(1) == batch["label"]).float().mean().item()}


def make_cfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "batch_size": BATCH, "lr": 1e-2, "seed": 0, "warmup_epochs": 1}
    return TrainConfig(**{**base, **kw})


def make_trainer(run_dir: Path, cfg: TrainConfig, model: nn.Module | None = None, step=toy_step,
                 console: Console | None = None) -> Trainer:
    model = model if model is not None else make_model(cfg.seed)
    return Trainer(model, train_set=ToySet(N_TRAIN, 1), val_set=ToySet(N_VAL, 2), collate=None, cfg=cfg,
                   run_dir=run_dir, step=step, console=console or Console(file=io.StringIO()))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max difference {(a[k] - b[k]).abs().max().item()}"


def metric_lines(run_dir: Path) -> list[tuple[int, str]]:
    return [(r["epoch"], r["split"]) for r in read_jsonl(run_dir / METRICS)]


def one_line_per_epoch(epochs: int) -> list[tuple[int, str]]:
    return [(e, s) for e in range(1, epochs + 1) for s in ("train", "val")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a loaded 2-core machine: intra-op threads only wait for each other. Subprocesses get
    OMP_NUM_THREADS=1 too, so their results are comparable bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Weights after an uninterrupted 4-epoch run of the default toy config."""
    trainer = make_trainer(tmp_path_factory.mktemp("reference"), make_cfg())
    trainer.fit()
    return weights(trainer.model)


# -- learning and determinism -------------------------------------------------------------------------------


def test_loss_goes_down_and_files_are_written(tmp_path: Path):
    cfg = make_cfg(epochs=8)
    trainer = make_trainer(tmp_path, cfg)
    history = trainer.fit()
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.7
    assert trainer.steps == history[-1]["steps"] == 8 * STEPS_PER_EPOCH
    assert history[-1]["train_samples"] == N_TRAIN and history[-1]["val_samples"] == N_VAL
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # no temp files
        [CHECKPOINT, BEST, METRICS, CHECKPOINT + ".sha256", BEST + ".sha256", "lock.r000"])
    lines = read_jsonl(tmp_path / METRICS)
    assert [(r["epoch"], r["split"]) for r in lines] == one_line_per_epoch(8)
    for r in lines:
        assert {"loss", "acc", "lr", "seconds", "clips_per_s"} <= r.keys()
    # learning rate: linear warmup, then cosine over the remaining epochs
    lrs = [r["lr"] for r in lines if r["split"] == "train"]
    assert lrs[0] == pytest.approx(0.005) and lrs[1] == pytest.approx(0.01)
    assert lrs[2:] == sorted(lrs[2:], reverse=True)
    best = torch.load(tmp_path / BEST, weights_only=True)
    val_accs = [h["val_acc"] for h in history]
    assert best["metric"] == "val_acc" and best["value"] == max(val_accs)
    assert best["epoch"] == val_accs.index(max(val_accs)) + 1


def test_same_seed_is_bit_identical_and_another_seed_differs(tmp_path: Path, reference):
    again = make_trainer(tmp_path / "again", make_cfg())
    again.fit()
    assert_identical(weights(again.model), reference)
    other = make_trainer(tmp_path / "other", make_cfg(seed=1))
    other.fit()
    assert any(not torch.equal(v, reference[k]) for k, v in weights(other.model).items())


def test_order_does_not_depend_on_the_model_seed(tmp_path: Path):
    """Data order comes from (seed, epoch): a model built with another seed sees the same batches."""
    seen: list[list[float]] = [[], []]

    def recorder(i):
        def step(model, batch):
            if torch.is_grad_enabled():
                seen[i].append(batch["x"][:, 0].tolist())
            return toy_step(model, batch)
        return step

    make_trainer(tmp_path / "a", make_cfg(epochs=2), make_model(0), recorder(0)).fit()
    make_trainer(tmp_path / "b", make_cfg(epochs=2), make_model(5), recorder(1)).fit()
    assert seen[0] == seen[1] and len(seen[0]) == 2 * STEPS_PER_EPOCH
    assert seen[0][:STEPS_PER_EPOCH] != seen[0][STEPS_PER_EPOCH:]  # reshuffled per epoch


# -- resume --------------------------------------------------------------------------------------------------


def test_stop_and_resume_is_bit_identical(tmp_path: Path, reference):
    cfg = make_cfg()
    make_trainer(tmp_path, cfg).fit(stop_after=2)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 2
    # another initialization and RNG state in the new process: everything must come from the checkpoint
    torch.manual_seed(1234)
    resumed = make_trainer(tmp_path, cfg, model=make_model(99))
    history = resumed.fit(resume=True)
    assert_identical(weights(resumed.model), reference)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert resumed.steps == 4 * STEPS_PER_EPOCH
    assert metric_lines(tmp_path) == one_line_per_epoch(4)


def test_killed_after_metrics_before_checkpoint(tmp_path: Path, reference):
    """Epoch 3 wrote its metrics (and a torn line) but died before its checkpoint: resume redoes it once."""
    cfg = make_cfg()
    make_trainer(tmp_path, cfg).fit(stop_after=2)
    saved = tmp_path / "epoch2.pt.bak"
    shutil.copy(tmp_path / CHECKPOINT, saved)
    shutil.copy(tmp_path / (CHECKPOINT + ".sha256"), tmp_path / "epoch2.sha256.bak")
    make_trainer(tmp_path, cfg).fit(resume=True, stop_after=3)
    os.replace(saved, tmp_path / CHECKPOINT)  # as if the epoch-3 checkpoint had never been written
    os.replace(tmp_path / "epoch2.sha256.bak", tmp_path / (CHECKPOINT + ".sha256"))
    with open(tmp_path / METRICS, "a") as f:
        f.write('{"epoch": 3, "split": "tr')  # a line torn by the kill
    resumed = make_trainer(tmp_path, cfg)
    resumed.fit(resume=True)
    assert_identical(weights(resumed.model), reference)
    assert metric_lines(tmp_path) == one_line_per_epoch(4)
    assert len((tmp_path / METRICS).read_text().splitlines()) == 8


KILL_SCRIPT = """
import sys, time
from pathlib import Path
import torch
sys.path.insert(0, {repo!r})
from tests.test_train_engine import make_cfg, make_trainer, toy_step

run_dir, block_at = Path(sys.argv[1]), int(sys.argv[2])
calls = 0

def step(model, batch):
    global calls
    if torch.is_grad_enabled():
        calls += 1
        if calls == block_at:  # first training step of epoch 3: the epoch-2 checkpoint is on disk
            (run_dir / "blocked").write_text("")
            time.sleep(600)
    return toy_step(model, batch)

make_trainer(run_dir, make_cfg(), step=step).fit()
"""


def test_sigkill_and_resume_is_bit_identical(tmp_path: Path, reference):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(2 * STEPS_PER_EPOCH + 1)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (run_dir / "blocked").exists():
            if proc.poll() is not None:
                pytest.fail(f"the training process ended early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training process did not reach epoch 3 in 60 s")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    (run_dir / "blocked").unlink()
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["epoch"] == 2

    console = Console(file=io.StringIO(), width=200)
    resumed = make_trainer(run_dir, make_cfg(), model=make_model(42), console=console)
    resumed.fit(resume=True)
    assert "resuming" in console.file.getvalue() and "after epoch 2" in console.file.getvalue()
    assert_identical(weights(resumed.model), reference)
    assert metric_lines(run_dir) == one_line_per_epoch(4)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [CHECKPOINT, BEST, METRICS, CHECKPOINT + ".sha256", BEST + ".sha256", "lock.r000"])


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path, reference):
    console = Console(file=io.StringIO(), width=200)
    trainer = make_trainer(tmp_path, make_cfg(), console=console)
    trainer.fit(resume=True)
    assert "no checkpoint" in console.file.getvalue() and "starting from scratch" in console.file.getvalue()
    assert_identical(weights(trainer.model), reference)


def test_resume_of_a_finished_run_is_a_noop(tmp_path: Path):
    make_trainer(tmp_path, make_cfg(epochs=2)).fit()
    stamp = (tmp_path / CHECKPOINT).stat().st_mtime_ns
    lines = (tmp_path / METRICS).read_text()
    console = Console(file=io.StringIO(), width=200)
    trainer = make_trainer(tmp_path, make_cfg(epochs=2), console=console)
    history = trainer.fit(resume=True)
    assert "already finished" in console.file.getvalue()
    assert len(history) == 2 and trainer.steps == 2 * STEPS_PER_EPOCH
    assert (tmp_path / CHECKPOINT).stat().st_mtime_ns == stamp and (tmp_path / METRICS).read_text() == lines


def test_resume_with_other_settings_is_a_user_error(tmp_path: Path):
    make_trainer(tmp_path, make_cfg(epochs=2)).fit(stop_after=1)
    with pytest.raises(UserError, match=r"--batch-size 8 → 4; --lr 0.01 → 0.02") as e:
        make_trainer(tmp_path, make_cfg(epochs=2, lr=0.02, batch_size=4)).fit(resume=True)
    assert "without --resume" in str(e.value)
    # speed-only settings may change
    make_trainer(tmp_path, make_cfg(epochs=2, log_every=1)).fit(resume=True)


def test_fresh_fit_replaces_an_earlier_run(tmp_path: Path):
    make_trainer(tmp_path, make_cfg(epochs=2)).fit()
    make_trainer(tmp_path, make_cfg(epochs=2)).fit(stop_after=1)
    assert metric_lines(tmp_path) == one_line_per_epoch(1)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 1


# -- checkpoints ---------------------------------------------------------------------------------------------


def test_checkpoint_loads_with_weights_only(tmp_path: Path):
    trainer = make_trainer(tmp_path, make_cfg(epochs=2, optimizer="sgd"))
    trainer.fit()
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "history"} <= ckpt.keys()
    assert ckpt["epoch"] == 2 and ckpt["config"]["optimizer"] == "sgd" and len(ckpt["history"]) == 2
    assert {"torch", "numpy", "python"} <= ckpt["rng"].keys()
    assert_identical(ckpt["model"], weights(trainer.model))
    assert ckpt["optimizer"]["state"]  # momentum buffers are kept
    best = torch.load(tmp_path / BEST, weights_only=True)
    assert {"model", "epoch", "metric", "value"} == best.keys()


def test_rng_state_roundtrip():
    seed_everything(3)
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


# -- optimizer, schedule, config ---------------------------------------------------------------------------


class ZeroGrad(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"x": torch.ones(8)}


def test_weight_decay_is_the_printed_zeta_term(tmp_path: Path):
    # weight_decay is zeta of the loss term zeta * sum(theta^2) (joint-attention paper, Sec. 3.2): one SGD step with
    # a zero data gradient must equal a step on the gradient of that term, computed here from the equation.
    zeta, lr = 0.5, 0.1
    cfg = TrainConfig(epochs=1, batch_size=4, lr=lr, optimizer="sgd", momentum=0.0, weight_decay=zeta,
                      schedule="constant", grad_clip=None)
    model = nn.Linear(8, 2)
    before = weights(model)

    def step(model, batch):  # a loss with zero gradient: only the decay moves the weights
        return 0.0 * model(batch["x"]).sum(), {}

    trainer = Trainer(model, train_set=ZeroGrad(), val_set=None, collate=None, cfg=cfg, run_dir=tmp_path,
                      step=step, console=Console(file=io.StringIO()))
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == 2
    trainer.fit()
    assert trainer.steps == 1
    for k, v in weights(model).items():
        theta = before[k].clone().requires_grad_(True)
        (zeta * theta.pow(2).sum()).backward()
        torch.testing.assert_close(v, before[k] - lr * theta.grad)


def test_schedules():
    cos = TrainConfig(epochs=5, warmup_epochs=1)
    assert [round(cos.lr_factor(e), 6) for e in range(5)] == [0.5, 1.0, round(0.5 * (1 + math.cos(math.pi / 4)), 6),
                                                              0.5, round(0.5 * (1 + math.cos(3 * math.pi / 4)), 6)]
    step = TrainConfig(epochs=6, schedule="step", step_size=2, gamma=0.5)
    assert [step.lr_factor(e) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert TrainConfig(epochs=3, schedule="constant").lr_factor(2) == 1.0


@pytest.mark.parametrize(("kw", "flag"), [
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"batch_size": 0}, "--batch-size"),
    ({"lr": 0.0}, "--lr"),
    ({"optimizer": "rmsprop"}, "`optimizer` must be adam, sgd or adamw"),
    ({"momentum": 1.0}, "`momentum`"),
    ({"weight_decay": -1.0}, "`weight_decay`"),
    ({"schedule": "poly"}, "`schedule`"),
    ({"step_size": 0}, "`step_size`"),
    ({"gamma": 0.0}, "`gamma`"),
    ({"epochs": 3, "warmup_epochs": 3}, "`warmup_epochs`"),
    ({"grad_clip": 0.0}, "`grad_clip`"),
    ({"seed": -1}, "--seed"),
    ({"num_workers": -1}, "--num-workers"),
    ({"precision": "fp8"}, "`precision`"),
    ({"log_every": 0}, "`log_every`"),
])
def test_bad_config_values_are_user_errors(kw, flag):
    with pytest.raises(UserError, match=flag) as info:
        TrainConfig(**kw)
    # a setting with a command-line option names the option; a preset-only key says where to fix it
    assert ("--config file" in str(info.value)) == flag.startswith("`"), str(info.value)


def test_bf16_autocast_on_cpu(tmp_path: Path):
    """The AMP code path (autocast without a scaler) runs wherever bf16 does; CUDA adds channels_last/pinning."""
    trainer = make_trainer(tmp_path, make_cfg(epochs=2, device="cpu", precision="bf16"))
    assert trainer.amp_dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    history = trainer.fit()
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in history)
    assert next(trainer.model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_bad_device_and_precision_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="--device"):
        make_trainer(tmp_path, make_cfg(device="tpu"))
    with pytest.raises(UserError, match="precision fp16 needs a CUDA device"):
        make_trainer(tmp_path, make_cfg(device="cpu", precision="fp16"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            make_trainer(tmp_path, make_cfg(device="cuda"))


# -- clips with DataLoader workers -------------------------------------------------------------------------------


class ClipNet(nn.Module):
    """Per-frame 1x1 conv on one feature level, averaged over time and space, then a linear classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C, H, W = x.shape
        h = F.relu(self.conv(x.reshape(B * L, C, H, W)))  # (B*L, 8, H, W)
        h = h.reshape(B, L, 8, H * W).mean(dim=(1, 3))  # (B, 8)
        return self.fc(self.drop(h))


def clip_step(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch["x"]["pool4"])
    loss = F.cross_entropy(logits, batch["label"])
    return loss, {"acc": (logits.argmax(1) == batch["label"]).float().mean().item()}


def test_clip_training_with_workers_matches_serial(tmp_path: Path):
    from actiontk.cache.features import FeatureReader, ShardWriter
    from actiontk.data.clips import ClipDataset, collate_clips

    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp_path / "feat", {"pool4": (3, 2, 2)}, videos_per_shard=3)
    vids = []
    for v in range(6):
        rel = f"c{v % 2}/v{v}.avi"
        w = writer.start(rel)
        w.append({"pool4": (rng.standard_normal((9, 3, 2, 2)) + v % 2).astype(np.float16)})
        w.finish()
        vids.append((rel, v % 2))
    writer.close()
    reader = FeatureReader(tmp_path / "feat")
    train = ClipDataset(reader, vids[:4], ["pool4"], clip_len=4, clip_stride=2)
    val = ClipDataset(reader, vids[4:], ["pool4"], clip_len=4, clip_stride=4)

    def run(workers: int) -> dict[str, torch.Tensor]:
        seed_everything(0)
        cfg = TrainConfig(epochs=2, batch_size=4, seed=0, num_workers=workers)
        trainer = Trainer(ClipNet(), train_set=train, val_set=val, collate=collate_clips, cfg=cfg,
                          run_dir=tmp_path / f"w{workers}", step=clip_step, console=Console(file=io.StringIO()))
        trainer.fit()
        return weights(trainer.model)

    assert_identical(run(2), run(0))


# -- DDP under torchrun ---------------------------------------------------------------------------------------

DDP_SCRIPT = """
import os, sys
from pathlib import Path
import torch
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from tests.test_train_engine import make_cfg, make_model, make_trainer

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
torch.set_num_threads(1)
cfg = make_cfg(epochs=2, device="cpu")
trainer = make_trainer(out / "run", cfg)
assert trainer.world == 2 and trainer.rank == rank and trainer.is_main == (rank == 0)
trainer.fit(stop_after=1)
trainer = make_trainer(out / "run", cfg, model=make_model(rank + 10))  # the process group is reused
trainer.fit(resume=True)
torch.save({{k: v.clone() for k, v in trainer.model.state_dict().items()}}, out / f"rank{{rank}}.pt")
reference = make_trainer(out / "reference", cfg)
reference.fit()
torch.save(reference.model.state_dict(), out / f"reference{{rank}}.pt")
(out / f"steps{{rank}}").write_text(str(trainer.steps))
dist.barrier()
dist.destroy_process_group()
"""


def test_ddp_under_torchrun(tmp_path: Path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(repo=str(REPO)))
    result = torchrun(str(script), str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert_identical(r0, r1)
    # stopped after epoch 1 and resumed from the checkpoint (other initial weights on each rank): the same
    # weights as the uninterrupted DDP run
    assert_identical(r0, torch.load(tmp_path / "reference0.pt", weights_only=True))
    assert_identical(r1, torch.load(tmp_path / "reference1.pt", weights_only=True))
    ckpt = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    assert_identical(ckpt["model"], r0)
    assert ckpt["world"] == 2 and len(ckpt["rng_per_rank"]) == 2
    # each rank takes half of the (padded) training set: 30 samples, ceil(30 / 8) = 4 steps per epoch
    steps = 2 * math.ceil(N_TRAIN / 2 / BATCH)
    assert (tmp_path / "steps0").read_text() == (tmp_path / "steps1").read_text() == str(steps)
    lines = read_jsonl(tmp_path / "run" / METRICS)
    assert [(r["epoch"], r["split"]) for r in lines] == one_line_per_epoch(2)
    # metrics are over both ranks; validation sees every sample exactly once
    assert [r["samples"] for r in lines] == [N_TRAIN, N_VAL] * 2
    assert json.loads((tmp_path / "run" / METRICS).read_text().splitlines()[1])["split"] == "val"
