"""Training fails cleanly: checksummed checkpoints, damaged / empty / foreign / refused checkpoints, non-finite
losses, a full disk while saving, and one training process per run (the writer lock extract also takes)."""

from __future__ import annotations

import errno
import io
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from actiontk.cache import runs
from actiontk.cache.runs import Run, lock_writer, release_writer, verify_checksum
from actiontk.cli import _out_of_resources
from actiontk.errors import UserError
from actiontk.cache.lifecycle import mark_complete
from actiontk.train.engine import BEST, CHECKPOINT, read_jsonl
from actiontk.train.engine import METRICS_LOG as METRICS
from tests.test_train_engine import REPO, make_cfg, make_trainer, toy_step

SUM = CHECKPOINT + ".sha256"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def two_epochs(tmp_path: Path) -> Path:
    """A run stopped after epoch 2 of 4 (checkpoint and its checksum on disk), its lock released."""
    make_trainer(tmp_path, make_cfg()).fit(stop_after=2)
    release_writer(tmp_path)
    return tmp_path


def resume_error(run_dir: Path) -> str:
    with pytest.raises(UserError) as info:
        make_trainer(run_dir, make_cfg()).fit(resume=True)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- checkpoints ----------------------------------------------------------------------------------------------


def test_checkpoints_carry_a_checksum(two_epochs: Path):
    for name in (CHECKPOINT, BEST):
        digest = (two_epochs / (name + ".sha256")).read_text().split()
        assert len(digest) == 1 and len(digest[0]) == 64
        assert verify_checksum(two_epochs / name) is None


def test_a_damaged_checkpoint_is_not_resumed(two_epochs: Path):
    ckpt = two_epochs / CHECKPOINT
    data = bytearray(ckpt.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x55 for b in data[middle:middle + 64])
    ckpt.write_bytes(bytes(data))
    message = resume_error(two_epochs)
    assert "does not match its checksum" in message and "--no-resume" in message
    # and --no-resume starts the run over
    history = make_trainer(two_epochs, make_cfg()).fit(resume=False)
    assert len(history) == 4 and verify_checksum(ckpt) is None


def test_a_kill_between_the_checksum_and_the_checkpoint_still_resumes(two_epochs: Path):
    """The sidecar lists the old and new digests while the file is replaced: either file verifies."""
    old = (two_epochs / SUM).read_text().split()[0]
    (two_epochs / SUM).write_text(f"{old}\n{'0' * 64}\n")  # step 1 written, the replace never happened
    trainer = make_trainer(two_epochs, make_cfg())
    trainer.fit(resume=True)
    assert trainer.epoch == 4 and (two_epochs / SUM).read_text().split() != [old]


@pytest.mark.parametrize("kind, expected", [
    ("empty", "is empty"),
    ("foreign", "is not a training checkpoint (it has no model"),
    ("garbage", "is not a readable PyTorch checkpoint"),
    ("refused", "which the safe loader refuses"),
    ("other model", "does not fit this model"),
])
def test_unusable_checkpoints_are_one_line_errors(two_epochs: Path, tmp_path: Path, kind: str, expected: str):
    ckpt = two_epochs / CHECKPOINT
    marker = tmp_path / "code-ran"
    (two_epochs / SUM).unlink()  # a file put there by hand (or by an older actiontk) has no checksum
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif kind == "garbage":
        ckpt.write_bytes(b"not a zip archive at all" * 10)
    elif kind == "refused":
        torch.save({"model": _Payload(str(marker))}, ckpt)
    else:
        state = torch.load(ckpt, weights_only=True)
        state["model"] = {"0.weight": torch.zeros(5, 5)}
        torch.save(state, ckpt)
    message = resume_error(two_epochs)
    assert expected in message and "--no-resume" in message, message
    assert len(message) < 400 and "weights_only" not in message  # not torch's seven lines of advice
    assert not marker.exists()


class _Payload:
    """Unpickling this would run code; the safe loader must refuse it."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_payload_really_would_run(tmp_path: Path):
    """The refused checkpoint above is dangerous for real: an unsafe load runs it."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(str(marker))))
    assert marker.exists()


# -- non-finite values ----------------------------------------------------------------------------------------


def test_a_nan_loss_stops_training_without_saving_the_epoch(tmp_path: Path):
    make_trainer(tmp_path, make_cfg()).fit(stop_after=1)
    before = (tmp_path / CHECKPOINT).read_bytes()

    def nan_step(model, batch):
        loss, metrics = toy_step(model, batch)
        return loss * float("nan"), metrics

    with pytest.raises(UserError, match="diverged|non-finite"):
        make_trainer(tmp_path, make_cfg(), step=nan_step).fit(resume=True)
    assert (tmp_path / CHECKPOINT).read_bytes() == before  # still the sound epoch 1
    assert max(int(r["epoch"]) for r in read_jsonl(tmp_path / METRICS)) == 1


def test_a_nan_validation_stops_training(tmp_path: Path):
    def step(model, batch):
        loss, metrics = toy_step(model, batch)
        return (loss if torch.is_grad_enabled() else loss * float("nan")), metrics

    with pytest.raises(UserError, match="non-finite values at epoch 1: val_loss"):
        make_trainer(tmp_path, make_cfg(), step=step).fit()
    assert not (tmp_path / CHECKPOINT).exists() and not (tmp_path / METRICS).exists()


# -- a full disk while saving ------------------------------------------------------------------------------


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_one(two_epochs: Path, monkeypatch):
    real_open = open

    class Full(io.RawIOBase):
        def __init__(self, path, mode):
            self.f = real_open(path, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self):
            return self.f.fileno()

        def close(self):
            self.f.close()
            super().close()

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".tmp") and CHECKPOINT in str(path):
            return Full(path, mode)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runs, "open", full_open, raising=False)  # the module that writes every file atomically
    with pytest.raises(OSError) as info:
        make_trainer(two_epochs, make_cfg()).fit(resume=True)
    message = _out_of_resources(info.value)
    assert message is not None and message.startswith("out of disk space writing ")
    assert str(two_epochs / CHECKPOINT) in message and "run the same command again to resume" in message
    assert not list(two_epochs.glob(".*.tmp"))
    monkeypatch.undo()
    assert verify_checksum(two_epochs / CHECKPOINT) is None
    assert torch.load(two_epochs / CHECKPOINT, weights_only=True)["epoch"] == 2


# -- one training process per run --------------------------------------------------------------------------

HOLD = """
import sys, time
from actiontk.cache.runs import lock_writer
lock_writer(sys.argv[1], 0, what="training")
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_trainer_on_the_same_run_is_refused(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as info:
            make_trainer(tmp_path, make_cfg())
        assert f"is in use by PID {holder.pid}" in str(info.value) and "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    make_trainer(tmp_path, make_cfg())  # the holder is gone: the lock is free


def test_the_lock_is_held_until_the_run_is_marked_complete(tmp_path: Path):
    trainer = make_trainer(tmp_path, make_cfg(epochs=1, warmup_epochs=0))
    trainer.fit()
    make_trainer(tmp_path, make_cfg(epochs=1, warmup_epochs=0))  # the same process may go on with its run
    probe = [sys.executable, "-c", "import sys; from actiontk.cache.runs import lock_writer; "
             "lock_writer(sys.argv[1], 0); print('free')", str(tmp_path)]
    busy = subprocess.run(probe, capture_output=True, text=True, cwd=REPO)
    assert busy.returncode != 0 and f"in use by PID {os.getpid()}" in busy.stderr
    mark_complete(Run(tmp_path, {}), {"epochs": 1})
    free = subprocess.run(probe, capture_output=True, text=True, cwd=REPO)
    assert free.stdout.strip() == "free", free.stderr


def test_writer_lock_is_reentrant_in_one_process(tmp_path: Path):
    a = lock_writer(tmp_path, 0)
    assert lock_writer(tmp_path, 0) is a
    a.release()
    t0 = time.monotonic()
    lock_writer(tmp_path, 0).release()
    assert time.monotonic() - t0 < 5
