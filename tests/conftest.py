"""Shared fixtures: small datasets in the official layouts, written on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Names with the characters real datasets contain: HMDB51 has (, ), &, !, ' and the like in file names.
ODD_NAMES = ["v_Jump (1)_g01_c01.avi", "v_Jump&Run!_g02_c01.avi", "v_it's here_g03_c01.avi"]


def write_lines(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("".join(line + newline for line in lines)).encode())
    return path


def torchrun(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGS`` (gloo on CPU), one torch thread per rank; skips the test
    where torchrun is not installed beside this interpreter."""
    exe = Path(sys.executable).with_name("torchrun")
    if not exe.exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), "--standalone", "--nproc_per_node=2", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def touch(path: Path, data: bytes = b"not decoded by the parser tests") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def ucf_root(tmp_path: Path) -> Path:
    """A UCF101 layout with 3 classes, 3 splits, odd file names and CRLF lists (like the official ones)."""
    root = tmp_path / "ucf"
    classes = ["ApplyEyeMakeup", "Jump", "Run"]
    write_lines(root / "ucfTrainTestlist" / "classInd.txt", [f"{i} {c}" for i, c in enumerate(classes, 1)], "\r\n")
    videos = {c: [f"v_{c}_g{g:02d}_c01.avi" for g in range(1, 4)] for c in classes}
    videos["Jump"] = ODD_NAMES
    for c, names in videos.items():
        for n in names:
            touch(root / "UCF-101" / c / n)
    for split in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(classes, 1):
            for g, n in enumerate(videos[c], 1):
                if g == split:
                    test.append(f"{c}/{n}")
                else:
                    train.append(f"{c}/{n} {i}")
        write_lines(root / "ucfTrainTestlist" / f"trainlist0{split}.txt", train, "\r\n")
        write_lines(root / "ucfTrainTestlist" / f"testlist0{split}.txt", test, "\r\n")
    return root


@pytest.fixture
def hmdb_root(tmp_path: Path) -> Path:
    """An HMDB51 layout with 3 classes; codes 1/2/0 and trailing spaces like the official files."""
    root = tmp_path / "hmdb"
    classes = ["brush_hair", "cartwheel", "pour"]
    for c in classes:
        names = [f"{c}_{k}.avi" for k in range(4)]
        if c == "cartwheel":
            names[:3] = ["Bodenturnen_2004_(Frauen)_cartwheel_f_cm_np1_le_med_0.avi", "Rock & Roll!_0.avi",
                         "Tom's cartwheel_0.avi"]
        for n in names:
            touch(root / c / n)
        for split in (1, 2, 3):
            codes = ["1", "1", "2", "0"]
            codes = codes[split - 1:] + codes[:split - 1]
            write_lines(root / "testTrainMulti_7030_splits" / f"{c}_test_split{split}.txt",
                        [f"{n} {code} " for n, code in zip(names, codes, strict=True)])
    return root


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at the terminal width; a wide one keeps paths on one line for the assertions."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine every parallel region can wait for a
    time slice (the model tests ran 10x slower with 2 threads beside another job). Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def own_shape_cache(tmp_path_factory):
    """A backbone shape cache (ACTIONTK_SHAPES_DIR) of the module's own, so no dry run is read from, or left in,
    the user's cache folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ACTIONTK_SHAPES_DIR", str(tmp_path_factory.mktemp("shapes")))
    yield
    mp.undo()


def train_tiny_video(cache: Path, clip: dict, log):
    """A one-epoch train-3d and joint LSTM (widths of 8) on the newest toy extract run in ``cache``: the smallest
    video model that goes through the real stages. Returns (cubes run, train-lstm run)."""
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.train_3d import Train3DConfig, train_3d
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm

    cfg3, t3 = resolve_stage_configs("toy", "train-3d", Train3DConfig, None,
                                     {"epochs": 1, "channels": 8, "hidden": 8, **clip})
    cubes = train_3d(cfg3, t3, cache, dataset="toy", split=1, log=log).products["cubes"]
    cfgl, tl = resolve_stage_configs("toy", "train-lstm", TrainLSTMConfig, None,
                                     {"epochs": 1, "hidden": 8, "layers": 2, "last": 3, **clip})
    return cubes, train_lstm(cfgl, tl, cache, dataset="toy", split=1, cubes=cubes, log=log).run


def max_diff(a, b) -> float:
    """Largest absolute difference of two tensors of the same shape (printed by failing comparisons)."""
    assert a.shape == b.shape, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a - b).abs().max().item()
