"""A matrix of real containers and codecs written with PyAV, whose frames carry their own index.

Used by the decoder tests (``tests/test_video_matrix.py``) and ``bench/decoders.py`` to check that a
backend returns every frame, once, in order, upright: each frame's top half is a 2 x 4 grid of flat
blocks, dark or bright, spelling the frame's index in binary (8 bits), which survives any lossy codec at
the bit rates used here; the bottom half is a moving gradient so that the encoders have motion to code.
:func:`frame_index` reads the index back; :func:`check_frames` compares a decoded video with the truth.

Each :class:`Case` names a container (by extension, or an explicit muxer), a codec, a pixel format and the
quirks users' files have (B-frames, odd sizes, 10-bit, variable frame rate, a rotation in the display
matrix). :func:`encodable` says whether the local FFmpeg build has the encoder, so callers can skip a
case with a reason instead of failing.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BITS = 8  # frame indices 0..255


@dataclass(frozen=True)
class Case:
    name: str
    ext: str  # file extension, which picks the muxer unless ``muxer`` is set
    codec: str
    pix_fmt: str = "yuv420p"
    muxer: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    b_frames: int | None = None  # max B-frames for encoders that take the codec-context setting
    gop: int | None = None
    odd: bool = False  # add one row and one column to the size (encoders that allow odd sizes)
    vfr: bool = False  # irregular frame durations (millisecond time base)
    rotation: int = 0  # display-matrix rotation, degrees counter-clockwise (as PyAV's frame.rotation)
    sizes: tuple[tuple[int, int], ...] = ()  # (H, W) the codec accepts, when it is restricted (H.263)
    note: str = ""


_X264 = {"preset": "veryfast", "bf": "3"}
_X265 = {"preset": "ultrafast", "x265-params": "log-level=error:bframes=3"}

CASES: tuple[Case, ...] = (
    Case("mp4-h264", ".mp4", "libx264", options=_X264, note="B-frames"),
    Case("mp4-hevc", ".mp4", "libx265", options=_X265),
    Case("mp4-hevc-10bit", ".mp4", "libx265", pix_fmt="yuv420p10le", options=_X265),
    Case("avi-mpeg4", ".avi", "mpeg4", b_frames=2, note="XviD/DivX-style MPEG-4 ASP with B-frames"),
    Case("avi-mjpeg", ".avi", "mjpeg", pix_fmt="yuvj420p"),
    Case("mkv-h264", ".mkv", "libx264", options=_X264),
    Case("webm-vp9", ".webm", "libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"}),
    Case("mpg-mpeg2", ".mpg", "mpeg2video", muxer="mpeg", b_frames=2, gop=12, note="MPEG-2 program stream"),
    Case("mpg-mpeg1", ".mpg", "mpeg1video", muxer="mpeg", b_frames=2, gop=12, note="MPEG-1 system stream"),
    Case("vob-mpeg2", ".vob", "mpeg2video", muxer="vob", b_frames=2, gop=12, note="DVD program stream"),
    Case("ts-mpeg2", ".ts", "mpeg2video", muxer="mpegts", b_frames=2, gop=12, note="MPEG transport stream"),
    Case("3gp-h263", ".3gp", "h263", sizes=((96, 128), (144, 176), (288, 352))),
    Case("flv-sorenson", ".flv", "flv"),
    Case("wmv-wmv2", ".wmv", "wmv2"),
    Case("mov-prores", ".mov", "prores_ks", pix_fmt="yuv422p10le", note="10-bit 4:2:2"),
    # SVT-AV1's fastest presets (10-12) smear a block's content across frames at 320x240 and the index blocks
    # become unreadable (an encoder artefact: every decoder agrees); preset 8 keeps them sharp.
    Case("mkv-av1", ".mkv", "libsvtav1", options={"preset": "8", "crf": "20"}),
    Case("mp4-h264-odd", ".mp4", "libx264", pix_fmt="yuv444p", options=_X264, odd=True, note="odd width and height"),
    Case("mkv-h264-vfr", ".mkv", "libx264", options=_X264, vfr=True, note="variable frame rate"),
    Case("mp4-h264-vfr", ".mp4", "libx264", options=_X264, vfr=True, note="variable frame rate"),
    Case("mp4-h264-rot90", ".mp4", "libx264", options=_X264, rotation=90, note="phone video, rotated 90"),
    Case("mov-h264-rot270", ".mov", "libx264", options=_X264, rotation=270, note="rotated 270"),
    Case("mkv-h264-rot90", ".mkv", "libx264", options=_X264, rotation=90, note="rotated 90 (Matroska)"),
)

CASES_BY_NAME = {c.name: c for c in CASES}


def encodable(case: Case) -> str | None:
    """None when the local PyAV/FFmpeg build can write ``case``, else the reason it cannot."""
    import av

    try:
        av.codec.Codec(case.codec, "w")
    except Exception as exc:  # UnknownCodecError and friends
        return f"this FFmpeg build has no {case.codec} encoder ({type(exc).__name__})"
    fmt = case.muxer or {".mkv": "matroska", ".webm": "webm", ".3gp": "3gp", ".wmv": "asf"}.get(case.ext)
    if fmt is not None and fmt not in av.formats_available:
        return f"this FFmpeg build has no {fmt} muxer"
    return None


def frame_size(case: Case, size: tuple[int, int]) -> tuple[int, int]:
    """The coded (H, W) of ``case`` for a requested size (restricted codecs take their nearest size)."""
    if case.sizes:
        return min(case.sizes, key=lambda s: abs(s[0] - size[0]) + abs(s[1] - size[1]))
    return (size[0] + 1, size[1] + 1) if case.odd else size


def make_frame(i: int, h: int, w: int) -> np.ndarray:
    """Frame ``i`` (H, W, 3) uint8: the index's bits as flat blocks on top, a moving gradient below."""
    frame = np.empty((h, w, 3), np.uint8)
    bh, bw = h // 4, w // 4
    frame[: 2 * bh] = 128
    for b in range(BITS):
        r, c = divmod(b, 4)
        frame[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = 224 if (i >> b) & 1 else 32
    y, x = np.mgrid[2 * bh:h, 0:w]
    frame[2 * bh:, :, 0] = (x * 3 + i * 9) % 256
    frame[2 * bh:, :, 1] = (y * 2 + i * 5) % 256
    frame[2 * bh:, :, 2] = 96
    return frame


def frame_index(frame: np.ndarray) -> int:
    """The index :func:`make_frame` wrote into an (upright) frame, read from the blocks' centres."""
    h, w = frame.shape[:2]
    bh, bw = h // 4, w // 4
    value = 0
    for b in range(BITS):
        r, c = divmod(b, 4)
        block = frame[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        if block.mean() > 128:
            value |= 1 << b
    return value


def vfr_times(n: int) -> list[int]:
    """Presentation times in milliseconds of a variable-rate video: 40 ms frames with every 5th held 120 ms."""
    t, out = 0, []
    for i in range(n):
        out.append(t)
        t += 120 if i % 5 == 4 else 40
    return out


def write_case(case: Case, directory: str | Path, *, frames: int = 48, size: tuple[int, int] = (96, 128),
               fps: int = 25) -> Path:
    """Encode ``frames`` index-carrying frames as ``case`` into ``directory``; returns the file's path."""
    import av

    if not 1 <= frames <= 2**BITS:
        raise ValueError(f"frames must be in 1..{2**BITS}, got {frames}")
    h, w = frame_size(case, size)
    path = Path(directory) / f"{case.name}{case.ext}"
    times = vfr_times(frames) if case.vfr else None
    with av.open(str(path), mode="w", format=case.muxer) as container:
        stream = container.add_stream(case.codec, rate=fps)
        stream.height, stream.width, stream.pix_fmt = h, w, case.pix_fmt
        stream.options = dict(case.options)
        ctx = stream.codec_context
        ctx.thread_count = 1  # bytes independent of the machine's cores
        if case.codec not in ("prores_ks", "mjpeg", "libsvtav1"):
            ctx.bit_rate = 4_000_000  # generous: the index blocks must survive
        if case.b_frames is not None:
            ctx.max_b_frames = case.b_frames
        if case.gop is not None:
            ctx.gop_size = case.gop
        if times is not None:
            ctx.time_base = stream.time_base = fractions.Fraction(1, 1000)
        if case.rotation:
            stream.set_display_rotation(case.rotation)
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(make_frame(i, h, w), format="rgb24")
            if times is not None:
                vf.pts, vf.time_base = times[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def expected_shape(case: Case, size: tuple[int, int] = (96, 128)) -> tuple[int, int]:
    """The upright (display) (H, W) of ``case``'s frames: the coded size, swapped by a quarter turn."""
    h, w = frame_size(case, size)
    return (w, h) if case.rotation % 180 == 90 else (h, w)


def check_frames(case: Case, decoded: np.ndarray, frames: int, size: tuple[int, int] = (96, 128), *,
                 stride: int = 1, shape: tuple[int, int] | None = None) -> str | None:
    """None when ``decoded`` (T, H, W, 3) is every ``stride``-th frame of ``case`` once, in order and upright;
    else what is wrong, in a few words (for a bench table or an assertion message). ``size`` is the size the
    case was written at; ``shape`` the (H, W) the frames were decoded to when not the upright written size."""
    want = shape or expected_shape(case, size)
    if decoded.ndim != 4 or decoded.shape[1:3] != tuple(want):
        got = decoded.shape[1:3] if decoded.ndim == 4 else decoded.shape
        turned = tuple(got) == tuple(want[::-1])
        return f"frames are {got[-1]}x{got[0]}, expected {want[1]}x{want[0]}" + (
            " (rotation not applied)" if turned else "")
    k = (case.rotation // 90) % 4
    truth = list(range(0, frames, stride))
    indices = [frame_index(np.rot90(f, -k)) for f in decoded]
    if indices != truth:
        if k and [frame_index(np.rot90(f, 2 - k)) for f in decoded] == truth:
            return "frames upside down (wrong rotation direction)"
        return f"{len(indices)} frames, expected {len(truth)}; indices {_summary(indices)}"
    return None


def _summary(indices: list[int]) -> str:
    """A short picture of a decoded index sequence: runs of consecutive indices, e.g. ``12-47, 47x12``."""
    runs: list[str] = []
    i = 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        k = j
        while k + 1 < len(indices) and indices[k + 1] == indices[j]:
            k += 1
        run = f"{indices[i]}" if i == j else f"{indices[i]}-{indices[j]}"
        runs.append(run + (f", {indices[j]}x{k - j}" if k > j else ""))
        i = k + 1
    text = ", ".join(runs)
    return text if len(text) <= 80 else text[:77] + "..."
