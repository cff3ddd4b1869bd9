"""Which video backend should be the default? Correctness and speed of PyAV and decord over the containers
and codecs users have, measured in one run.

    python bench/decoders.py [--frames 120] [--size 240 320] [--repeat 3] [--cases mp4-h264,ts-mpeg2]

It writes every case of :mod:`actiontk.video.matrix` that the local FFmpeg build can encode (mp4 H.264 and
HEVC, 10-bit HEVC, avi MPEG-4 with B-frames and MJPEG, mkv, webm VP9, mpg MPEG-1/2, vob, ts, 3gp H.263, flv,
wmv, mov ProRes 10-bit, AV1, odd sizes, variable frame rate, rotated) into a temporary folder, with frames
that carry their own index, then for each case:

* correct: does the backend return every frame once, in order and upright? For decord both raw
  (``verify=False``) and through the reader API, whose verification refuses wrong frames (the caller then
  falls back to PyAV, so "refused" is safe, and costs a second decode);
* frames/s of each backend at native size (best of ``--repeat`` in-process decodes; ``-`` when the backend
  cannot decode the file) and the ratio pyav/decord (> 1: PyAV faster), raw and through the reader API
  with verification, where a refused decord decode is followed by PyAV's (what extract pays with decord
  as the primary backend);
* the largest difference between the two backends' frames where both are correct (0: bit-identical).

Each figure comes with the CPU that other processes used meanwhile ("foreign", in cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cpuclock import Clock  # noqa: E402

from actiontk.video.matrix import CASES, check_frames, encodable, write_case  # noqa: E402
from actiontk.video.readers import DecodeError, DecordReader, PyAVReader, VideoReader  # noqa: E402


def timed_read(reader: VideoReader, path: Path, repeat: int) -> tuple[np.ndarray | None, float | None, str]:
    """(frames, best frames/s, error) of ``repeat`` whole-video decodes."""
    best, frames = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        try:
            frames = reader.read(path)
        except DecodeError as exc:
            return None, None, exc.reason
        fps = len(frames) / (time.perf_counter() - t0)
        best = fps if best is None else max(best, fps)
    return frames, best, ""


def verified_rate(path: Path, repeat: int) -> tuple[float | None, float | None]:
    """Best frames/s of (PyAV through the reader API, decord through the reader API with PyAV decoding the
    whole video again when decord's frames are refused): what extract gets with each as the primary."""
    best: list[float | None] = [None, None]
    for _ in range(repeat):
        for k, primary in enumerate((PyAVReader(), DecordReader())):
            t0 = time.perf_counter()
            try:
                n = len(primary.read(path))
            except DecodeError:
                try:
                    n = len(PyAVReader().read(path))
                except DecodeError:
                    continue
            fps = n / (time.perf_counter() - t0)
            best[k] = fps if best[k] is None else max(best[k], fps)
    return best[0], best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120, help="frames per clip (at most 256)")
    ap.add_argument("--size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    ap.add_argument("--repeat", type=int, default=3, help="decodes per backend and clip (best kept)")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = ap.parse_args()
    wanted = {c for c in args.cases.split(",") if c}
    cases = [c for c in CASES if not wanted or c.name in wanted]
    size = tuple(args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Clock() as clock:
        for case in cases:
            reason = encodable(case)
            if reason:
                rows.append((case.name, f"skipped: {reason}"))
                continue
            path = write_case(case, tmp, frames=args.frames, size=size)
            pa, pa_fps, pa_err = timed_read(PyAVReader(verify=False), path, args.repeat)
            de, de_fps, de_err = timed_read(DecordReader(verify=False), path, args.repeat)
            try:
                verified = DecordReader().read(path)
                dv = "yes" if check_frames(case, verified, args.frames, size) is None else "NO (wrong frames!)"
            except DecodeError as exc:
                dv = "refused" if "verif" in exc.reason else "error"
            pa_ok = pa_err or check_frames(case, pa, args.frames, size) or "yes"
            de_ok = ("error" if de_err else check_frames(case, de, args.frames, size)) or "yes"
            diff = "-"
            if pa_ok == "yes" and de_ok == "yes":
                diff = str(int(np.abs(pa.astype(np.int16) - de).max()))
            ratio = f"{pa_fps / de_fps:.2f}" if pa_fps and de_fps else "-"
            pv_fps, dv_fps = verified_rate(path, args.repeat)
            vratio = f"{pv_fps / dv_fps:.2f}" if pv_fps and dv_fps else "-"
            rows.append((case.name, pa_ok, de_ok, dv, f"{pa_fps:.0f}" if pa_fps else "-",
                         f"{de_fps:.0f}" if de_fps else "-", ratio, diff,
                         f"{pv_fps:.0f}" if pv_fps else "-", f"{dv_fps:.0f}" if dv_fps else "-", vratio))
            print(f"  {case.name}: pyav {pa_ok[:60]}; decord {de_ok[:60]}", file=sys.stderr)
    header = ("case", "pyav correct", "decord correct (raw)", "decord verified", "pyav fr/s", "decord fr/s",
              "pyav/decord", "max |pyav-decord|", "pyav verified fr/s", "decord verified+fallback fr/s",
              "pyav/decord verified")
    print(f"{args.frames} frames of {size[1]}x{size[0]} per clip, best of {args.repeat}; "
          f"foreign CPU {clock.foreign:.2f} cores over {clock.wall:.0f} s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |" if len(row) > 2 else f"| {row[0]} | {row[1]} |")
    for col, what in ((6, "raw decoders"), (10, "through the reader API (verified, decord falling back to PyAV)")):
        timed = [r for r in rows if len(r) > 2 and r[col] != "-"]
        if timed:
            ratios = np.array([float(r[col]) for r in timed])
            print(f"pyav/decord frames/s, {what}, over {len(timed)} clips: median {np.median(ratios):.2f}, "
                  f"geometric mean {np.exp(np.log(ratios).mean()):.2f}, min {ratios.min():.2f}, "
                  f"max {ratios.max():.2f}")
    full = [r for r in rows if len(r) > 2]
    print(f"correct: pyav {sum(r[1] == 'yes' for r in full)}/{len(full)}, decord raw "
          f"{sum(r[2] == 'yes' for r in full)}/{len(full)}, decord verified: "
          f"{sum(r[3] == 'yes' for r in full)} correct, {sum(r[3] == 'refused' for r in full)} refused (PyAV "
          f"fallback), {sum(r[3].startswith('NO') for r in full)} wrong")


if __name__ == "__main__":
    main()
