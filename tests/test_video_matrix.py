"""Every backend, through the reader API (with its verification), over the containers and codecs users have.

Each clip is written with PyAV by :mod:`actiontk.video.matrix`; its frames spell their own index, so a
decoded video can be checked for order, count and orientation. The rule under test: a reader returns every
frame once, in order and upright, or refuses the video with :class:`DecodeError` (so that the caller falls
back to the other backend) — never shifted, repeated or sideways frames. PyAV, the default backend, must
decode every clip. Codecs the local FFmpeg build cannot encode are skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actiontk.video import DecodeError, DecordReader, PyAVReader, SafeDecoder, get_reader
from actiontk.video.matrix import CASES, CASES_BY_NAME, Case, check_frames, encodable, expected_shape, write_case
from actiontk.video.readers import BACKENDS, DEFAULT_BACKEND, frames_mismatch, target_size, timestamp_problem

FRAMES = 48
IDS = [c.name for c in CASES]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    return {c.name: write_case(c, root, frames=FRAMES) for c in CASES if encodable(c) is None}


def clip(clips: dict[str, Path], case: Case) -> Path:
    reason = encodable(case)
    if reason is not None:
        pytest.skip(reason)
    return clips[case.name]


def test_default_backend_is_pyav():
    # PyAV decoded every clip below correctly and faster (bench/decoders.py, docs/performance.md).
    assert DEFAULT_BACKEND == BACKENDS[0] == "pyav"
    assert SafeDecoder().backend == "pyav" and SafeDecoder().fallback == "decord"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pyav_decodes_every_clip_exactly(case: Case, clips):
    path = clip(clips, case)
    frames = PyAVReader().read(path)
    assert check_frames(case, frames, FRAMES) is None, check_frames(case, frames, FRAMES)
    assert PyAVReader().count_frames(path) == FRAMES


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_decord_is_correct_or_refuses(case: Case, clips):
    path = clip(clips, case)
    try:
        raw = DecordReader(verify=False).read(path)
        raw_problem = check_frames(case, raw, FRAMES)
    except DecodeError as exc:
        raw_problem = f"error: {exc.reason}"
    try:
        frames = DecordReader().read(path)
    except DecodeError as exc:
        assert exc.backend == "decord"
        return  # refused: the caller falls back to PyAV
    assert raw_problem is None, f"verification let wrong frames through: {raw_problem}"
    assert check_frames(case, frames, FRAMES) is None


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("case", [CASES_BY_NAME[n] for n in (
    "mp4-h264", "avi-mpeg4", "ts-mpeg2", "mpg-mpeg2", "mp4-h264-odd", "mp4-h264-rot90", "mov-h264-rot270",
    "mkv-h264-rot90", "mkv-h264-vfr")], ids=lambda c: c.name)
def test_resized_and_strided(case: Case, backend: str, clips):
    path = clip(clips, case)
    shape = target_size(expected_shape(case), 48)  # shorter side 48, aspect kept, upright
    try:
        frames = get_reader(backend).read(path, size=48, stride=3)
    except DecodeError:
        assert backend != "pyav", "the default backend must decode every clip"
        return
    assert check_frames(case, frames, FRAMES, stride=3, shape=shape) is None, \
        check_frames(case, frames, FRAMES, stride=3, shape=shape)


def test_decord_known_shift_is_caught(clips):
    # decord starts this MPEG transport stream 12 frames (one GOP) late and repeats the last frame to keep
    # the count, with a plausible timestamp table: only the comparison with PyAV's frames catches it.
    case = CASES_BY_NAME["ts-mpeg2"]
    path = clip(clips, case)
    raw = DecordReader(verify=False).read(path)
    if check_frames(case, raw, FRAMES) is None:
        pytest.skip("this decord build decodes the transport stream correctly")
    with pytest.raises(DecodeError) as info:
        DecordReader().read(path)
    assert "verification" in info.value.reason and "shifted" in info.value.reason
    # Through the worker, the video falls back to PyAV and comes out right.
    with SafeDecoder("decord", fallback="pyav", timeout=60) as dec:
        result = dec.decode(path)
    assert result.backend == "pyav" and result.failures[0][0] == "decord"
    assert check_frames(case, result.frames, FRAMES) is None


def test_decord_refused_on_broken_timestamps(clips):
    # MPEG program streams with B-frames: decord's timestamp table holds unset (-2^63) entries, and its
    # random access returns the wrong frames; its frames are refused before any is delivered.
    case = CASES_BY_NAME["mpg-mpeg2"]
    path = clip(clips, case)
    with pytest.raises(DecodeError) as info:
        DecordReader().read(path)
    assert "timestamps are not increasing" in info.value.reason


def test_rotation_applied_in_both_backends(clips):
    for name in ("mp4-h264-rot90", "mov-h264-rot270"):
        case = CASES_BY_NAME[name]
        path = clip(clips, case)
        a, b = PyAVReader().read(path), DecordReader().read(path)
        assert a.shape == b.shape == (FRAMES, *expected_shape(case), 3)
        assert check_frames(case, a, FRAMES) is None
        assert np.array_equal(a, b), f"{name}: max difference {np.abs(a.astype(int) - b).max()}"


def test_timestamp_problem():
    assert timestamp_problem([0.0, 0.04, 0.08, 0.12], 25) is None
    assert timestamp_problem([0.0, 0.04, 0.16, 0.2, 0.24], 25) is None  # variable frame rate: a held frame
    assert timestamp_problem([0.5], 25) is None
    assert "repeats" in timestamp_problem([0.0, 0.04, 0.04, 0.08], 25)
    assert "goes backwards" in timestamp_problem([0.0, 0.08, 0.04, 0.12], 25)
    assert "no timestamp" in timestamp_problem([0.0, None, 0.08], 25)
    assert "frames/s" in timestamp_problem([0.0, 1.0, 2.0, 3.0], 25)  # seconds apart at 25 fps: wrong units
    assert "non-finite" in timestamp_problem([0.0, float("nan")], 25)


def test_frames_mismatch():
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    near = [np.clip(f.astype(int) + rng.integers(-3, 4, f.shape), 0, 255).astype(np.uint8) for f in a]
    assert frames_mismatch(near, a) is None  # colour-conversion noise is tolerated
    assert "shifted" in frames_mismatch(a[1:] + a[:1], a)
    assert "rotation" in frames_mismatch([np.ascontiguousarray(np.rot90(f)) for f in a], a)
    assert "2 frames where PyAV decodes 3" in frames_mismatch(a[:2], a)
