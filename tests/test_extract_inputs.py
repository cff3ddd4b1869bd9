"""What extract takes in: the decoder in the cache key, implausible container frame counts, symlinks that
leave the dataset root, non-regular files, and the EXIF orientation of photos."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from actiontk.cache.features import FeatureReader
from actiontk.cli import run as cli_run
from actiontk.datasets import get_dataset
from actiontk.errors import UserError
from actiontk.models import backbones
from actiontk.cache.space import estimate_bytes
from actiontk.stages.extract import ExtractConfig, extract, key_config
from actiontk.stages.extract_feed import load_image
from actiontk.video import DecodeError, PyAVReader, SafeDecoder, write_video
from actiontk.video.matrix import make_frame
from actiontk.video.readers import announced_frames, estimated_frames

CFG = dict(backbone="vgg16", layers=["conv5_3"], size=32, weights="none", batch_size=8, workers=1)
FRAMES = 12


def frames(seed: int, n: int = FRAMES) -> np.ndarray:
    return np.stack([make_frame(i + seed, 48, 64) for i in range(n)])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder dataset: two classes, one short MPEG-4 video each."""
    root = tmp_path / "videos"
    for k, cls in enumerate(("jump", "run")):
        (root / cls).mkdir(parents=True)
        write_video(root / cls / "a.avi", frames(k * 7))
    return root


# -- item: the decoder is part of the cache key -------------------------------------------------------------


def test_decoder_is_in_the_cache_key(folder: Path, tmp_path: Path):
    a = key_config(ExtractConfig(**CFG, backend="decord"), "fp32")
    b = key_config(ExtractConfig(**CFG, backend="pyav"), "fp32")
    assert a != b and a["decoder"] == {"backend": "decord", "fallback": "pyav"}
    cache = tmp_path / "cache"
    first = extract(ExtractConfig(**CFG, backend="decord"), cache, dataset="folder", root=folder, split=1,
                    log=lambda m: None)
    second = extract(ExtractConfig(**CFG, backend="pyav"), cache, dataset="folder", root=folder, split=1,
                     log=lambda m: None)
    assert first.run.path != second.run.path
    assert second.extracted == 2 and second.cached == 0  # not "nothing to do" with decord's frames
    for result, backend in ((first, "decord"), (second, "pyav")):
        index = FeatureReader(result.run.path).index
        assert {e["backend"] for e in index.videos.values()} == {backend}
    again = extract(ExtractConfig(**CFG, backend="pyav"), cache, dataset="folder", root=folder, split=1,
                    log=lambda m: None)
    assert again.extracted == 0 and again.cached == 2


# -- item: an implausible container frame count -------------------------------------------------------------


def claim_frames(path: Path, count: int) -> None:
    """Edit an MP4's first 'stts' entry so the header claims ``count`` frames (the samples are unchanged)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"stts") + 12  # box type, version/flags, entry count -> first (count, delta) entry
    data[at:at + 4] = struct.pack(">I", count)
    path.write_bytes(bytes(data))


def test_implausible_frame_count_is_ignored_by_the_disk_estimate(folder: Path, tmp_path: Path, monkeypatch):
    import shutil

    import actiontk.cache.space as space

    liar = folder / "run" / "liar.mp4"
    write_video(liar, frames(3), codec="libx264")
    claim_frames(liar, 2_000_000_000)
    assert announced_frames(liar) == 2_000_000_000  # what the header says ...
    assert estimated_frames(liar) == FRAMES  # ... and what the estimate uses: duration x rate, fits the file
    assert estimated_frames(folder / "jump" / "a.avi") == FRAMES

    ds = get_dataset("folder", folder)
    samples = ds.load(1).videos()
    shapes = {"conv5_3": (512, 2, 2)}
    assert estimate_bytes(samples, shapes, 1, False) < 10 * len(samples) * FRAMES * 512 * 4 * 2

    # 100 MB free: plenty for 36 frames of features, nowhere near 2e9 frames' worth.
    monkeypatch.setattr(space.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 9 * 10**8, 10**8))
    result = extract(ExtractConfig(**CFG), tmp_path / "cache", dataset="folder", root=folder, split=1,
                     log=lambda m: None)
    assert result.extracted == 3 and result.failed == {}
    assert FeatureReader(result.run.path).num_frames("run/liar.mp4") == FRAMES  # decoded and judged on its own


# -- item: symlinks out of the dataset root, non-regular files ---------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "secret.avi"
    path.parent.mkdir()
    write_video(path, frames(50))
    return path


def test_symlink_leaving_the_root_is_rejected(folder: Path, outside: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("ACTIONTK_FOLLOW_SYMLINKS", raising=False)
    (folder / "run" / "b.avi").symlink_to(outside)
    (folder / "run" / "c.avi").symlink_to(folder / "jump" / "a.avi")  # a link inside the root is fine
    index = get_dataset("folder", folder).index(1)
    rels = {s.rel for s in index.videos()}
    assert "run/b.avi" not in rels and "run/c.avi" in rels
    (problem,) = [p for p in index.problems if p.kind == "outside-root"]
    assert "run/b.avi" in problem.message and str(outside) in problem.message
    assert "ACTIONTK_FOLLOW_SYMLINKS=1" in problem.message

    # Listed in a split file: the stage stops with one line naming the entry and the way to allow it.
    (folder / "train.txt").write_text("jump/a.avi\nrun/b.avi\n")
    (folder / "test.txt").write_text("run/c.avi\n")
    with pytest.raises(UserError) as info:
        extract(ExtractConfig(**CFG), tmp_path / "cache", dataset="folder", root=folder, split=1, log=lambda m: None)
    assert "train.txt:2" in str(info.value) and "outside the dataset root" in str(info.value)
    assert cli_run(["datasets", "check", "folder", "--root", str(folder)]) == 1
    assert "outside the dataset root" in capsys.readouterr().out

    monkeypatch.setenv("ACTIONTK_FOLLOW_SYMLINKS", "1")  # the explicit opt-in
    index = get_dataset("folder", folder).index(1)
    assert index.problems == [] and "run/b.avi" in {s.rel for s in index.videos()}


def test_symlink_escape_in_ucf101_layout(tmp_path: Path, outside: Path, monkeypatch):
    from actiontk.datasets.toy import ToyConfig, generate_toy

    monkeypatch.delenv("ACTIONTK_FOLLOW_SYMLINKS", raising=False)
    root = tmp_path / "toy"
    generate_toy(root, ToyConfig(classes=6, groups=3, clips=1, frames=8, size=32), workers=1)
    victim = sorted(root.glob("*/*.avi"))[0]
    victim.unlink()
    victim.symlink_to(outside)
    problems = [p for p in get_dataset("toy", root).index(1).problems if p.kind == "outside-root"]
    assert len(problems) == 1 and victim.name in problems[0].message
    # A dataset root that is itself a symlink keeps working.
    link = tmp_path / "toy-link"
    link.symlink_to(root)
    victim.unlink()
    victim.symlink_to(root / sorted(root.glob("*/*.avi"))[-1].relative_to(root))
    assert get_dataset("toy", link).index(1).problems == []


def test_symlink_escape_in_mpii_images(tmp_path: Path, monkeypatch):
    from PIL import Image

    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii

    monkeypatch.delenv("ACTIONTK_FOLLOW_SYMLINKS", raising=False)
    root = tmp_path / "mpii"
    generate_toy_mpii(root, ToyMPIIConfig(seed=0, classes=3, per_class=6, size=64))
    ds = get_dataset("mpii", root)
    victim = ds.load(1).videos()[0].path
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (64, 64)).save(secret)
    victim.unlink()
    victim.symlink_to(secret)
    problems = [p for p in get_dataset("mpii", root).index(1).problems if p.kind == "outside-root"]
    assert len(problems) == 1 and victim.name in problems[0].message and str(secret) in problems[0].message


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_decoders_open_regular_files_only(tmp_path: Path, kind: str):
    path = tmp_path / f"{kind}.avi"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    for backend in ("pyav", "decord"):
        with pytest.raises(DecodeError, match="not a regular file"):
            from actiontk.video import get_reader

            get_reader(backend).read(path)
    with pytest.raises(DecodeError, match="not a regular file"):
        announced_frames(path)
    with SafeDecoder(timeout=20) as dec, pytest.raises(DecodeError) as info:
        dec.decode(path)
    assert info.value.reason.count("not a regular file") == 2


# -- item: EXIF orientation of photos -------------------------------------------------------------------------


def save_with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)


def stored_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # as stored: no orientation applied


# What a viewer shows for each EXIF orientation, from the stored pixels (EXIF 2.32, Orientation tag).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: np.rot90(a, 1)[::-1],  # transpose
    6: lambda a: np.rot90(a, -1),  # stored rotated 90 counter-clockwise: turn clockwise to view
    7: lambda a: np.rot90(a, -1)[::-1],  # transverse
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_applied_when_loading(tmp_path: Path, orientation: int):
    from actiontk.data.images import image_size, load_rgb

    pixels = np.zeros((40, 64, 3), np.uint8)
    pixels[:10, :16] = (250, 20, 20)  # a red corner: top left as stored
    path = tmp_path / f"o{orientation}.jpg"
    save_with_orientation(path, pixels, orientation)
    want = UPRIGHT[orientation](stored_pixels(path))
    assert np.array_equal(np.asarray(load_rgb(path)), want)
    assert image_size(path) == want.shape[:2]
    assert np.array_equal(load_image(path)[0], want)


def test_extract_sees_photos_upright(tmp_path: Path):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
    pixels = rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)
    save_with_orientation(root / "a" / "phone.jpg", pixels, 6)
    upright = UPRIGHT[6](stored_pixels(root / "a" / "phone.jpg"))
    Image.fromarray(np.ascontiguousarray(upright)).save(root / "b" / "upright.png")  # lossless copy, no EXIF
    result = extract(ExtractConfig(**{**CFG, "workers": 1}), tmp_path / "c", dataset="images", root=root, split=1,
                     log=lambda m: None)
    reader = FeatureReader(result.run.path)
    got, want = reader.read("a/phone.jpg", "conv5_3"), reader.read("b/upright.png", "conv5_3")
    assert np.array_equal(got, want)
    model = backbones.build_backbone("vgg16", ["conv5_3"], "none")
    x = model.preprocess(32)(torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None])
    with torch.inference_mode():
        sideways = model(x)["conv5_3"].numpy()
    assert not np.allclose(got.astype(np.float32), sideways, rtol=1e-2, atol=1e-2)


def test_train_gap_items_use_the_upright_size(tmp_path: Path):
    from actiontk.data.gap_items import _image_size

    path = tmp_path / "p.jpg"
    save_with_orientation(path, np.zeros((40, 64, 3), np.uint8), 8)
    assert _image_size(path) == (64, 40)


def test_pyav_reader_survives_rotation_metadata_roundtrip(tmp_path: Path):
    # write_video has no rotation option; the matrix writer sets the display matrix (see test_video_matrix).
    path = tmp_path / "plain.mp4"
    write_video(path, frames(0), codec="libx264")
    assert PyAVReader().read(path).shape == (FRAMES, 48, 64, 3)
