"""Tests of the embedded toy dataset: UCF101 layout, real MPEG-4 files, determinism, and learnability.

The learnability test is the one that matters most: the classes must be separable from motion alone and
not from any single (middle) frame, which is what makes the toy set a meaningful test of a temporal model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from actiontk.datasets.toy import MARKER, MOTIONS, ToyConfig, generate_toy, render_clip
from actiontk.errors import UserError

SMALL = ToyConfig(seed=0, classes=6, groups=3, clips=2, frames=16, size=64)
TINY = ToyConfig(seed=0, classes=6, groups=3, clips=1, frames=8, size=32)
LISTS = "ucfTrainTestlist"


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_list(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "small"
    calls: list[tuple[int, int]] = []
    info = generate_toy(root, SMALL, workers=2, progress=lambda done, total: calls.append((done, total)))
    return root, info, calls


def expected_videos(config: ToyConfig) -> list[str]:
    return [
        f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi"
        for name in MOTIONS[: config.classes]
        for g in range(1, config.groups + 1)
        for c in range(1, config.clips + 1)
    ]


# -- layout ---------------------------------------------------------------------------------------------


def test_layout_is_exactly_ucf101s(small):
    root, info, _ = small
    videos = expected_videos(SMALL)
    lists = [f"{LISTS}/classInd.txt"]
    lists += [f"{LISTS}/{kind}list0{n}.txt" for n in (1, 2, 3) for kind in ("train", "test")]
    # nothing else: no temporary files left behind
    assert sorted(digests(root)) == sorted(videos + lists + [MARKER])
    names = list(MOTIONS[:6])
    assert names == [
        "MoveLeft", "MoveRight", "MoveUp", "MoveDown", "RotateClockwise", "RotateCounterclockwise",
    ]
    class_ind = (root / LISTS / "classInd.txt").read_bytes().decode()
    assert class_ind == "".join(f"{i} {n}\n" for i, n in enumerate(names, 1))
    for n in (1, 2, 3):
        for kind in ("train", "test"):
            raw = (root / LISTS / f"{kind}list0{n}.txt").read_bytes()
            assert b"\r" not in raw and raw.endswith(b"\n")


@pytest.mark.parametrize("split", [1, 2, 3])
def test_splits_are_group_wise_disjoint_and_complete(small, split):
    root, _, _ = small
    names = list(MOTIONS[:6])
    train = [line.rsplit(" ", 1) for line in read_list(root / LISTS / f"trainlist0{split}.txt")]
    test = read_list(root / LISTS / f"testlist0{split}.txt")
    train_paths = [p for p, _ in train]
    assert all(" " not in p for p in test)  # test lists carry no label, like UCF101's
    assert not set(train_paths) & set(test)
    assert sorted(train_paths + test) == sorted(expected_videos(SMALL))
    for path, label in train:
        assert int(label) == names.index(path.split("/")[0]) + 1
    test_groups = {int(p.split("_g")[1][:2]) for p in test}
    train_groups = {int(p.split("_g")[1][:2]) for p in train_paths}
    assert test_groups == {g for g in range(1, SMALL.groups + 1) if (g - 1) % 3 == split - 1}
    assert train_groups == set(range(1, SMALL.groups + 1)) - test_groups
    for rel in train_paths + test:
        assert (root / rel).is_file()


def test_videos_are_real_mpeg4_avi(small):
    root, _, _ = small
    for rel in expected_videos(SMALL):
        with av.open(str(root / rel)) as container:
            assert "avi" in container.format.name
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mpeg4"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == SMALL.frames
        assert frames[0].shape == (SMALL.size, SMALL.size, 3)


def test_info_marker_and_progress(small):
    root, info, calls = small
    assert info["reused"] is False
    assert info["videos"] == 36 and info["classes"] == list(MOTIONS[:6])
    assert info["splits"]["1"] == {"train": 24, "test": 12}
    marker = json.loads((root / MARKER).read_text())
    assert marker["config"] == {
        "seed": 0, "classes": 6, "groups": 3, "clips": 2, "frames": 16, "size": 64, "fps": 25,
    }
    assert {k: v for k, v in info.items() if k not in ("root", "reused")} == marker
    assert calls[0] == (0, 36) and calls[-1] == (36, 36)
    assert [done for done, _ in calls] == list(range(37))


# -- determinism and re-runs ------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_serial_or_parallel(small, tmp_path):
    root, _, _ = small
    generate_toy(tmp_path / "again", SMALL, workers=1)
    assert digests(tmp_path / "again") == digests(root)


def test_different_seed_gives_different_videos(tmp_path):
    from dataclasses import replace

    generate_toy(tmp_path / "a", TINY, workers=1)
    generate_toy(tmp_path / "b", replace(TINY, seed=1), workers=1)
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    videos = expected_videos(TINY)
    assert all(a[v] != b[v] for v in videos)
    assert a[f"{LISTS}/trainlist01.txt"] == b[f"{LISTS}/trainlist01.txt"]


def test_a_video_does_not_depend_on_the_number_of_classes():
    from dataclasses import replace

    six = render_clip(TINY, "RotateClockwise", 2, 1)
    ten = render_clip(replace(TINY, classes=10), "RotateClockwise", 2, 1)
    assert np.array_equal(six, ten)
    assert not np.array_equal(six, render_clip(TINY, "RotateClockwise", 2, 2))


def test_rerun_with_same_config_reuses(small):
    root, info, _ = small
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    calls = []
    again = generate_toy(root, SMALL, progress=lambda d, t: calls.append(d))
    assert again["reused"] is True
    assert {**again, "reused": False} == info
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert calls == []


def test_non_empty_foreign_directory_is_refused(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError) as err:
        generate_toy(out, TINY, workers=1)
    assert str(out) in err.value.message
    assert err.value.hint == "choose an empty directory"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_toy_dataset_with_another_config_is_refused(small):
    from dataclasses import replace

    root, _, _ = small
    with pytest.raises(UserError) as err:
        generate_toy(root, replace(SMALL, seed=5))
    assert str(root) in err.value.message and "different config" in err.value.message
    assert err.value.hint == "choose an empty directory"


def test_incomplete_toy_dataset_is_reported(tmp_path):
    generate_toy(tmp_path / "toy", TINY, workers=1)
    (tmp_path / "toy" / "MoveUp" / "v_MoveUp_g02_c01.avi").unlink()
    with pytest.raises(UserError) as err:
        generate_toy(tmp_path / "toy", TINY, workers=1)
    assert "incomplete" in err.value.message and "v_MoveUp_g02_c01.avi" in err.value.message


def test_existing_empty_directory_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    info = generate_toy(tmp_path / "empty", TINY, workers=1)
    assert info["videos"] == 18 and (tmp_path / "empty" / MARKER).is_file()


@pytest.mark.parametrize(
    "change, option",
    [
        ({"classes": 5}, "--classes"),
        ({"classes": len(MOTIONS) + 1}, "--classes"),
        ({"groups": 4}, "--groups"),
        ({"groups": 0}, "--groups"),
        ({"clips": 0}, "--clips"),
        ({"frames": 7}, "--frames"),
        ({"size": 63}, "--size"),
        ({"size": 30}, "--size"),
        ({"seed": -1}, "--seed"),
        ({"fps": 0}, "--fps"),
    ],
)
def test_bad_config_names_the_option(tmp_path, change, option):
    from dataclasses import replace

    with pytest.raises(UserError) as err:
        generate_toy(tmp_path / "out", replace(TINY, **change))
    assert option in err.value.message
    assert not (tmp_path / "out").exists()


# -- learnability ---------------------------------------------------------------------------------------


def motion_features(video: np.ndarray) -> np.ndarray:
    """Global affine optical flow per frame pair (Lucas-Kanade on the moving pixels), summarized.

    For each pair, brightness constancy Ix*u + Iy*v + It = 0 is fitted by least squares with an affine
    flow u = a0 + a1 x + a2 y, v = b0 + b1 x + b2 y over the pixels that changed; translation (a0, b0),
    divergence a1 + b2 (zoom) and curl b1 - a2 (rotation) are then averaged over the clip, with their
    spread and the turning of the velocity for back-and-forth and circular motion.
    """
    # blur so 1-3 px/frame motions stay within the linearization's reach, and noise stays below threshold
    g = gaussian_filter(video.astype(np.float32).mean(-1) / 255, sigma=(0, 1.5, 1.5))
    _, h, w = g.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    per_pair = []
    for i0, i1 in zip(g[:-1], g[1:], strict=True):
        iy, ix = np.gradient((i0 + i1) / 2)
        it = i1 - i0
        m = np.abs(it) > 0.01
        if m.sum() < 12:
            per_pair.append(np.zeros(4))
            continue
        wt = np.abs(it[m])
        # coordinates relative to the moving region, so rotation and zoom do not leak into a0, b0
        x = (xx[m] - (xx[m] * wt).sum() / wt.sum()) / h
        y = (yy[m] - (yy[m] * wt).sum() / wt.sum()) / h
        a = np.stack([ix[m], ix[m] * x, ix[m] * y, iy[m], iy[m] * x, iy[m] * y], axis=1)
        p = np.linalg.lstsq(a, -it[m], rcond=None)[0]
        per_pair.append([p[0], p[3], p[1] + p[5], p[4] - p[2]])
    per = np.asarray(per_pair)
    vel = per[:, :2]
    turning = vel[:-1, 0] * vel[1:, 1] - vel[:-1, 1] * vel[1:, 0]
    return np.concatenate([per.mean(0), per.std(0), [turning.mean(), np.abs(vel).mean()]])


def frame_features(video: np.ndarray) -> np.ndarray:
    """The middle frame, block-averaged to 16x16x3: everything a single frame shows, at low resolution."""
    mid = video[len(video) // 2].astype(np.float32) / 255
    b = mid.shape[0] // 16
    return mid.reshape(16, b, 16, b, 3).mean(axis=(1, 3)).ravel()


def split1_accuracy(root: Path, features) -> float:
    lists = root / LISTS
    names = [line.split()[1] for line in read_list(lists / "classInd.txt")]
    train = [line.rsplit(" ", 1)[0] for line in read_list(lists / "trainlist01.txt")]
    test = read_list(lists / "testlist01.txt")

    def xy(rels):
        labels = [names.index(r.split("/")[0]) for r in rels]
        return np.stack([features(decode(root / r)) for r in rels]), labels

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    clf.fit(*xy(train))
    return float(clf.score(*xy(test)))


@pytest.mark.parametrize("seed", [0, 1])
def test_classes_are_learnable_from_motion_but_not_from_a_single_frame(tmp_path, seed):
    config = ToyConfig(seed=seed, classes=6, groups=6, clips=2, frames=16, size=64)
    root = tmp_path / "toy"
    generate_toy(root, config, workers=2)
    motion = split1_accuracy(root, motion_features)
    single = split1_accuracy(root, frame_features)
    print(f"seed {seed}: split-1 test accuracy from motion {motion:.3f}, from the middle frame {single:.3f}")
    assert motion >= 0.8
    # 24 test videos, 6 classes: chance is 1/6 with a binomial std of about 0.076, so 0.45 is chance plus
    # about 3.7 std -- a single frame that carried class information would clear it easily.
    assert single <= 0.45
