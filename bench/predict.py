"""``actiontk predict`` against ``actiontk extract`` on one long generated video, in one run.

Prints, for the same backbone settings (the extract run a tiny toy video model was trained on):

- frames/s of ``extract`` on the long video (a ``folder`` dataset holding only it; its own count of frames over its
  own time, backbone build included) and of ``predict`` on the same file (predictor load included), and their
  ratio (goal >= 0.8: the backbone dominates both);
- the peak resident memory (``ru_maxrss``) of a fresh process predicting the video and a 10x longer one, and their
  ratio (goal <= 1.2: frames stream through the backbone and the maps beyond a bounded amount wait on disk), and
  what each adds above a 16-frame video beside what holding the long video's decoded frames would take.

Usage: ``python bench/predict.py [--frames 200] [--size 96] [--workdir DIR]`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIP = {"clip_len": 6, "clip_stride": 4}


def make_video(path: Path, frames: int, size: int) -> None:
    """A long video of the toy generator's moving sprites (clips of 36 frames, concatenated), MPEG-4 in .avi."""
    import numpy as np

    from actiontk.datasets.toy import MOTIONS, ToyConfig, render_clip
    from actiontk.video.writer import write_video

    cfg = ToyConfig(seed=3, classes=6, groups=3, clips=1, frames=36, size=size)
    clips = [render_clip(cfg, MOTIONS[i % 6], 1 + i % 3, 1) for i in range(6)]

    def gen():
        for i in range(frames):
            yield np.ascontiguousarray(clips[(i // 36) % 6][i % 36])

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, gen(), fps=25)


def build(work: Path) -> tuple[Path, Path]:
    """A cache with a tiny trained video model; returns (cache, its train-lstm run)."""
    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.stages.common import resolve_stage_configs
    from actiontk.stages.extract import extract
    from actiontk.stages.train_3d import Train3DConfig, train_3d
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm

    quiet = lambda m: None  # noqa: E731
    cache = work / "cache"
    generate_toy(work / "toy", ToyConfig(seed=0, classes=6, groups=3, clips=1, frames=10, size=64), workers=1)
    extract(extract_config(), cache, dataset="toy", root=work / "toy", split=1, log=quiet)
    c3, t3 = resolve_stage_configs("toy", "train-3d", Train3DConfig, None, {"epochs": 1, "channels": 16, "hidden": 16,
                                                                           **CLIP})
    cubes = train_3d(c3, t3, cache, dataset="toy", split=1, log=quiet).products["cubes"]
    cl, tl = resolve_stage_configs("toy", "train-lstm", TrainLSTMConfig, None,
                                   {"epochs": 1, "hidden": 16, "layers": 2, "last": 3, **CLIP})
    return cache, train_lstm(cl, tl, cache, dataset="toy", split=1, cubes=cubes, log=quiet).run.path


def extract_config():
    from actiontk.stages.extract import ExtractConfig

    return ExtractConfig(backbone="vgg16", layers=["pool4", "conv5_3"], size=64, weights="none", workers=1,
                         batch_size=32)


def child(mode: str, video: str, cache: str, run: str) -> None:
    """One measurement in a fresh process; prints a JSON line."""
    t0 = time.perf_counter()
    if mode == "extract":
        from actiontk.stages.extract import extract

        root = Path(video).parent.parent
        result = extract(extract_config(), Path(cache), dataset="folder", root=root, split=1, log=lambda m: None)
        frames, seconds = result.frames, result.seconds
    else:
        import actiontk

        with actiontk.load(run, cache=cache) as predictor:
            frames = predictor.predict(video).frames
        seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"mode": mode, "frames": frames, "seconds": seconds, "fps": frames / seconds, "rss": rss,
                      "children_rss": kids}))


def measure(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200, help="frames of the 1x video (the long one has 10x)")
    p.add_argument("--size", type=int, default=96, help="frame side in pixels")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--child", nargs=4, metavar=("MODE", "VIDEO", "CACHE", "RUN"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(*a.child)
        return
    work = a.workdir or Path(tempfile.mkdtemp(prefix="bench-predict-"))
    cache, run = build(work)
    short = work / "videos" / "long" / "short.avi"
    long = work / "long" / "long" / "long.avi"  # folder dataset: ROOT/<class>/<file>
    make_video(short, a.frames, a.size)
    make_video(long, 10 * a.frames, a.size)
    tiny = work / "videos" / "long" / "tiny.avi"
    make_video(tiny, 16, a.size)
    ex = measure("extract", str(long), str(cache), str(run))
    pr = measure("predict", str(long), str(cache), str(run))
    one = measure("predict", str(short), str(cache), str(run))
    base = measure("predict", str(tiny), str(cache), str(run))  # the loaded predictor and one clip's work
    print(f"long video: {10 * a.frames} frames of {a.size}x{a.size}; vgg16 pool4+conv5_3 @64px, random weights, "
          f"batch 32, fp32, CPU")
    print(f"extract {ex['fps']:.1f} frames/s, predict {pr['fps']:.1f} frames/s: ratio {pr['fps'] / ex['fps']:.2f} "
          "(goal >= 0.8)")
    print(f"peak RSS predict {a.frames} frames {one['rss'] / 2**20:.0f} MiB, {10 * a.frames} frames "
          f"{pr['rss'] / 2**20:.0f} MiB: ratio {pr['rss'] / one['rss']:.2f} (goal <= 1.2); decoder process "
          f"{one['children_rss'] / 2**20:.0f} / {pr['children_rss'] / 2**20:.0f} MiB")
    # what the video's length adds above a 16-frame video (the model and the libraries are most of the peak; this
    # is the part that would grow with the length if frames or maps were held)
    grow1, grow10 = one["rss"] - base["rss"], pr["rss"] - base["rss"]
    held = 10 * a.frames * a.size * a.size * 3
    print(f"above a 16-frame video ({base['rss'] / 2**20:.0f} MiB): {a.frames} frames +{grow1 / 2**20:.1f} MiB, "
          f"{10 * a.frames} frames +{grow10 / 2**20:.1f} MiB; holding the long video's decoded frames alone would "
          f"add {held / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
