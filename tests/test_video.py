"""Tests for actiontk.video: the decord/PyAV readers and the killable SafeDecoder worker.

Videos are written on the fly with ``write_video``; ffv1 in .mkv is exactly lossless in RGB, so decoded
frames can be compared with what was written bit for bit.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from actiontk.errors import UserError
from actiontk.video import (
    BACKENDS,
    DecodeError,
    DecodeResult,
    DecodeTimeout,
    DecordReader,
    PyAVReader,
    SafeDecoder,
    VideoReader,
    announced_frames,
    get_reader,
    write_video,
)

T, H, W = 12, 48, 64
READERS = [DecordReader, PyAVReader]


def _smooth_frames() -> np.ndarray:
    """Moving colour gradients: what lossy codecs handle well, so decoded values stay close."""
    t, y, x = np.meshgrid(np.arange(T), np.arange(H), np.arange(W), indexing="ij")
    frames = np.stack([40 + x * 2 + t * 4, 30 + y * 3 + t * 2, 60 + x + y], axis=-1).astype(np.uint8)
    frames[:, :16, :16] = (10 + np.arange(T) * 20).astype(np.uint8)[:, None, None, None]  # frame-index marker
    return frames


def _frames(seed: int = 0) -> np.ndarray:
    """Random noise plus a moving gradient: every frame distinct, every pixel value exercised."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    frames[:, :, :8, 0] = np.arange(T, dtype=np.uint8)[:, None, None] * 20
    return frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    frames = _frames()
    paths = {"frames": frames}
    paths["ffv1"] = root / "lossless.mkv"
    write_video(paths["ffv1"], frames, codec="ffv1")
    paths["mpeg4"] = root / "lossy.avi"
    paths["smooth"] = _smooth_frames()
    write_video(paths["mpeg4"], paths["smooth"], codec="mpeg4")
    paths["garbage"] = root / "garbage.avi"
    paths["garbage"].write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    paths["empty"] = root / "empty.avi"
    paths["empty"].write_bytes(b"")
    paths["text"] = root / "text.avi"
    paths["text"].write_text("this is not a video\n" * 20)
    paths["missing"] = root / "missing.avi"
    return paths


# ---------------------------------------------------------------------------------------------------------
# in-process readers


@pytest.mark.parametrize("cls", READERS)
def test_lossless_native_exact(cls, videos):
    reader = cls()
    out = reader.read(videos["ffv1"])
    assert out.dtype == np.uint8 and out.shape == (T, H, W, 3)
    assert np.array_equal(out, videos["frames"])
    assert reader.count_frames(videos["ffv1"]) == T


def test_backends_agree_on_lossless(videos):
    assert np.array_equal(DecordReader().read(videos["ffv1"]), PyAVReader().read(videos["ffv1"]))


@pytest.mark.parametrize("cls", READERS)
@pytest.mark.parametrize("stride", [2, 3, 5])
def test_stride_exact_subset(cls, stride, videos):
    out = cls().read(videos["ffv1"], stride=stride)
    assert np.array_equal(out, videos["frames"][::stride])


@pytest.mark.parametrize("cls", READERS)
def test_resize_exact_shape(cls, videos):
    out = cls().read(videos["ffv1"], size=(24, 32))
    assert out.shape == (T, 24, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("cls", READERS)
def test_resize_shorter_side_keeps_aspect(cls, videos):
    out = cls().read(videos["ffv1"], size=24)
    assert out.shape == (T, 24, 32, 3)
    out = cls().read(videos["ffv1"], size=25)  # 25 -> 26 short side, 26 * 4/3 = 34.67 -> 34
    assert out.shape[1:3] == (26, 34)
    assert out.shape[1] % 2 == 0 and out.shape[2] % 2 == 0


@pytest.mark.parametrize("cls", READERS)
def test_resize_smooth_content(cls, tmp_path):
    # On a smooth gradient, downscaling must preserve values closely: catches swapped axes or garbage.
    ramp = np.linspace(0, 255, W).astype(np.uint8)
    frames = np.broadcast_to(ramp[None, None, :, None], (4, H, W, 3)).copy()
    path = tmp_path / "ramp.mkv"
    write_video(path, frames, codec="ffv1")
    out = cls().read(path, size=(24, 32)).astype(float)
    expected = frames[:, ::2, ::2].astype(float)
    assert np.abs(out - expected).mean() < 6


@pytest.mark.parametrize("cls", READERS)
def test_mpeg4_lossy(cls, videos):
    reader = cls()
    out = reader.read(videos["mpeg4"])
    assert out.shape == (T, H, W, 3)
    assert reader.count_frames(videos["mpeg4"]) == T
    # P-frame drift grows to ~9/255 by frame 12 on this content; the mean stays well below 8.
    assert np.abs(out.astype(float) - videos["smooth"].astype(float)).mean() < 8
    # The flat marker patch survives compression: frames come in order, none dropped or duplicated.
    markers = out[:, 4:12, 4:12].astype(float).mean(axis=(1, 2, 3))
    assert np.abs(markers - (10 + np.arange(T) * 20)).max() < 6


@pytest.mark.parametrize("cls", READERS)
def test_iter_chunks_concatenate_to_read(cls, videos):
    reader = cls()
    chunks = list(reader.iter_chunks(videos["ffv1"], chunk=5, stride=1))
    assert [len(c) for c in chunks] == [5, 5, 2]
    assert all(c.dtype == np.uint8 and c.ndim == 4 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), reader.read(videos["ffv1"]))
    chunks = list(reader.iter_chunks(videos["ffv1"], chunk=5, stride=2, size=(24, 32)))
    assert [len(c) for c in chunks] == [5, 1]
    assert np.array_equal(np.concatenate(chunks), reader.read(videos["ffv1"], stride=2, size=(24, 32)))


@pytest.mark.parametrize("cls", READERS)
def test_iter_chunks_early_stop(cls, videos):
    gen = cls().iter_chunks(videos["ffv1"], chunk=4)
    first = next(gen)
    gen.close()  # must release the file without error
    assert np.array_equal(first, videos["frames"][:4])


@pytest.mark.parametrize("cls", READERS)
@pytest.mark.parametrize("kind", ["garbage", "empty", "text", "missing"])
def test_bad_files_raise_decode_error(cls, kind, videos):
    reader = cls()
    start = time.monotonic()
    for action in (reader.read, reader.count_frames):
        with pytest.raises(DecodeError) as info:
            action(videos[kind])
        err = info.value
        assert err.backend == reader.name and err.reason and err.path == str(videos[kind])
        assert "\n" not in str(err) and str(err).startswith(f"cannot decode {videos[kind]} with {reader.name}: ")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("cls", READERS)
def test_truncated_file_decodes_fewer_frames(cls, tmp_path, videos):
    data = videos["ffv1"].read_bytes()
    path = tmp_path / "truncated.mkv"
    path.write_bytes(data[: len(data) // 2])
    reader = cls()
    try:
        n = reader.count_frames(path)
    except DecodeError:
        return  # also acceptable: a typed error
    assert 0 < n < T


@pytest.mark.parametrize("cls", READERS)
def test_bad_arguments(cls, videos):
    reader = cls()
    for kwargs in ({"stride": 0}, {"stride": -1}, {"stride": 1.5}, {"size": 0}, {"size": (24,)},
                   {"size": (0, 32)}, {"size": "big"}, {"size": True}):
        with pytest.raises(ValueError):
            reader.read(videos["ffv1"], **kwargs)
    with pytest.raises(ValueError):
        list(reader.iter_chunks(videos["ffv1"], chunk=0))


def test_announced_frames(videos):
    assert announced_frames(videos["mpeg4"]) == T  # avi stores the count
    assert announced_frames(videos["ffv1"]) in (None, T)  # Matroska usually does not
    with pytest.raises(DecodeError):
        announced_frames(videos["text"])


def test_errors_pickle_round_trip():
    for err in (DecodeError("/a/b.avi", "decord", "boom"), DecodeTimeout("/a/b.avi", "pyav", "timed out")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert (back.path, back.backend, back.reason) == (err.path, err.backend, err.reason)
        assert str(back) == str(err)
    assert issubclass(DecodeTimeout, DecodeError)
    assert str(DecodeError("x.avi", "pyav", "line one\nline two")) == "cannot decode x.avi with pyav: line one"


def test_get_reader():
    assert BACKENDS == ("pyav", "decord")  # the default first (measured: docs/performance.md, decoders)
    assert isinstance(get_reader("decord"), DecordReader) and get_reader("decord").name == "decord"
    assert isinstance(get_reader("pyav"), PyAVReader)
    reader = get_reader("tests.helpers_readers:FailingReader")
    assert isinstance(reader, VideoReader) and reader.name == "failing"
    for bad in ("ffmpeg", "nosuchmodule_xyz:Reader", "tests.helpers_readers:Nope", "os:path", ":X"):
        with pytest.raises(UserError) as info:
            get_reader(bad)
        text = str(info.value)
        assert "decord" in text and "pyav" in text and "module:ClassName" in text


def test_plugin_failure_is_decode_error(videos):
    with pytest.raises(DecodeError) as info:
        get_reader("tests.helpers_readers:FailingReader").read(videos["ffv1"])
    assert info.value.backend == "failing" and "simulated backend failure" in info.value.reason


def test_import_is_light():
    code = "import sys, actiontk.video; print([m for m in ('decord', 'av', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------
# SafeDecoder (worker process)

FAILING = "tests.helpers_readers:FailingReader"
HANGING = "tests.helpers_readers:HangingReader"


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "stuck.avi"
    os.mkfifo(path)  # opening it for reading blocks forever: a real hang inside both backends
    return path


def test_safe_decoder_matches_in_process(videos):
    with SafeDecoder("decord", fallback="pyav", timeout=30) as dec:
        result = dec.decode(videos["ffv1"])
        assert isinstance(result, DecodeResult)
        assert result.backend == "decord" and result.failures == []
        assert np.array_equal(result.frames, DecordReader().read(videos["ffv1"]))
        assert result.frames.flags.writeable
        # Same worker, second video, other options.
        result = dec.decode(videos["mpeg4"], size=(24, 32), stride=2)
        assert result.frames.shape == (T // 2, 24, 32, 3)
        assert np.array_equal(result.frames, DecordReader().read(videos["mpeg4"], size=(24, 32), stride=2))
        assert result.announced_frames == T
        pid = dec._proc.pid
        chunks = list(dec.iter_chunks(videos["ffv1"], chunk=5))
        assert [len(c) for c in chunks] == [5, 5, 2]
        assert np.array_equal(np.concatenate(chunks), videos["frames"])
        assert dec.last_backend == "decord" and dec.last_failures == []
        assert dec._proc.pid == pid  # one persistent worker across videos


def test_safe_decoder_bad_file_falls_through_both(videos):
    with SafeDecoder("decord", fallback="pyav", timeout=30) as dec:
        with pytest.raises(DecodeError) as info:
            dec.decode(videos["text"])
        err = info.value
        assert not isinstance(err, DecodeTimeout)
        assert err.backend == "decord+pyav" and "decord:" in err.reason and "pyav:" in err.reason
        # A caught decode error leaves the worker usable.
        assert np.array_equal(dec.decode(videos["ffv1"]).frames, videos["frames"])


def test_safe_decoder_fifo_refused_without_blocking(videos, fifo):
    # Opening a FIFO blocks FFmpeg forever; readers only open regular files, so it is refused at once.
    with SafeDecoder("decord", fallback="pyav", timeout=30) as dec:
        start = time.monotonic()
        with pytest.raises(DecodeError) as info:
            dec.decode(fifo)
        assert time.monotonic() - start < 10
        assert not isinstance(info.value, DecodeTimeout)
        assert info.value.reason.count("not a regular file (a FIFO)") == 2  # both backends refused it
        assert np.array_equal(dec.decode(videos["ffv1"]).frames, videos["frames"])


def test_safe_decoder_times_out_then_recovers(videos, fifo):
    with SafeDecoder(HANGING, fallback="pyav", timeout=1.5) as dec:
        start = time.monotonic()
        with pytest.raises(DecodeError) as info:
            dec.decode(fifo)
        elapsed = time.monotonic() - start
        assert elapsed < 15
        err = info.value
        assert HANGING in err.reason and "timed out" in err.reason and "pyav" in err.reason
        assert isinstance(pickle.loads(pickle.dumps(err)), DecodeError)
        # The same decoder restarts its killed worker: the hang times out again, the fallback decodes.
        result = dec.decode(videos["ffv1"])
        assert result.backend == "pyav" and np.array_equal(result.frames, videos["frames"])
        assert result.failures[0][0] == HANGING


def test_safe_decoder_fallback_on_error(videos):
    with SafeDecoder(FAILING, fallback="pyav", timeout=30) as dec:
        result = dec.decode(videos["ffv1"])
        assert result.backend == "pyav"
        assert len(result.failures) == 1 and result.failures[0][0] == FAILING
        assert "simulated backend failure" in result.failures[0][1]
        assert np.array_equal(result.frames, videos["frames"])
        # iter_chunks falls back too when nothing was delivered yet.
        chunks = list(dec.iter_chunks(videos["ffv1"], chunk=5))
        assert np.array_equal(np.concatenate(chunks), videos["frames"])
        assert dec.last_backend == "pyav" and dec.last_failures[0][0] == FAILING


def test_safe_decoder_fallback_on_hang(videos):
    with SafeDecoder(HANGING, fallback="pyav", timeout=1.5) as dec:
        start = time.monotonic()
        result = dec.decode(videos["ffv1"])
        assert time.monotonic() - start < 15
        assert result.backend == "pyav" and np.array_equal(result.frames, videos["frames"])
        assert result.failures[0][0] == HANGING and "timed out" in result.failures[0][1]


@pytest.mark.parametrize("crasher, reason", [("SegfaultReader", "died (signal 11)"), ("ExitReader", "died")])
def test_safe_decoder_worker_death(videos, crasher, reason):
    backend = f"tests.helpers_readers:{crasher}"
    with SafeDecoder(backend, fallback=None, timeout=30) as dec:
        with pytest.raises(DecodeError) as info:
            dec.decode(videos["ffv1"])
        assert not isinstance(info.value, DecodeTimeout)
        assert reason in info.value.reason and info.value.backend == backend
        # A fresh worker serves the next call.
        dec.backend = "pyav"
        assert np.array_equal(dec.decode(videos["ffv1"]).frames, videos["frames"])
    with SafeDecoder(backend, fallback="pyav", timeout=30) as dec:  # a crash also triggers the fallback
        result = dec.decode(videos["ffv1"])
        assert result.backend == "pyav" and "died" in result.failures[0][1]


def test_safe_decoder_iter_chunks_partial_failure_not_retried(videos):
    with SafeDecoder("tests.helpers_readers:FailMidwayReader", fallback="pyav", timeout=30) as dec:
        got = []
        with pytest.raises(DecodeError) as info:
            for c in dec.iter_chunks(videos["ffv1"], chunk=2):
                got.append(c)
        assert sum(len(c) for c in got) == 4  # two full chunks, then the failure
        assert "after 4 frames were delivered" in info.value.reason
        # decode() buffers, so there the fallback is used.
        assert dec.decode(videos["ffv1"]).backend == "pyav"


def test_safe_decoder_early_stop_then_reuse(videos):
    with SafeDecoder("pyav", fallback=None, timeout=30) as dec:
        gen = dec.iter_chunks(videos["ffv1"], chunk=2)
        assert np.array_equal(next(gen), videos["frames"][:2])
        gen.close()  # abandons the video mid-stream: the worker is discarded
        assert np.array_equal(dec.decode(videos["ffv1"]).frames, videos["frames"])


def test_safe_decoder_arguments(videos):
    for bad in (0, -1, "10", True):
        with pytest.raises(ValueError):
            SafeDecoder(timeout=bad)
    with pytest.raises(UserError):
        SafeDecoder("ffmpeg")
    with pytest.raises(UserError):
        SafeDecoder("decord", fallback="nope")
    dec = SafeDecoder(timeout=None)
    with pytest.raises(ValueError):
        dec.decode(videos["ffv1"], stride=0)
    with pytest.raises(ValueError):
        list(dec.iter_chunks(videos["ffv1"], size=-3))
    assert dec._proc is None  # argument errors never start a worker
    dec.close()


def test_worker_silences_backend_noise(videos, capfd):
    # In-process, decord prints "ERROR opening: ..." on fd 2 for such a file.
    with pytest.raises(DecodeError):
        DecordReader().read(videos["text"])
    assert "ERROR opening" in capfd.readouterr().err  # the noise exists ...
    with SafeDecoder("decord", fallback="pyav", timeout=30) as dec, pytest.raises(DecodeError):
        dec.decode(videos["text"])
    assert "ERROR opening" not in capfd.readouterr().err  # ... and the worker keeps it off our stderr
