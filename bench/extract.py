"""Benchmark of the ``extract`` stage: is the pipeline as fast as its backbone, and bounded in memory?

Measures, on the same frames (a generated toy dataset in UCF101's layout, in a temporary folder):

(a) backbone only: VGG16 pool4+conv5_3 (or ``--backbone NAME --layers ...``; weights none) at ``--size``, in the
    memory format the stage picks for it (``backbones.memory_format``), batch ``--batch-size``, on frames
    decoded and transformed (``model.preprocess(size)``) beforehand, in memory; after a warm-up. On CUDA
    also with AMP bf16 + channels_last (what the stage does there).
(b) decode only, per backend (decord, pyav): in-process readers, and through ``SafeDecoder`` (one worker
    process, started before the clock; its start-up time is reported on its own).
(c) the whole pipeline: ``actiontk.stages.extract.extract(...)`` into a fresh cache. Two figures:
    *stage*  = frames / wall time of the call (model build, decoder start, HDF5 writes included);
    *steady* = frames after the first batch / time from the end of the first batch's forward to the
    return of the call (excludes the one-time model build, decoder-process start and first-batch warm-up;
    includes everything per-frame: decoding, batching, transform, forward, float16, HDF5, finalising).
(d) a naive loop: per video, decode fully with in-process PyAV, then one frame at a time: transform,
    batch 1, fp32 forward; nothing written.

and the peak RSS of ``actiontk extract`` run as a subprocess on a single long video vs a single short one
(both generated with ``actiontk.video.write_video``), each into a fresh cache.

Every measurement runs in a fresh subprocess (no shared torch state, thread pools or caches between them;
the stage is imported before torch exactly as the CLI does), and (a), (c), (d) are repeated in rotating
order; medians are printed. Each figure comes with the CPU other processes used meanwhile ("foreign",
in cores), read from /proc/stat, so a run disturbed by another job shows it.

    .venv/bin/python bench/extract.py                # 36 videos x 32 frames at 112 px, 3 repeats
    .venv/bin/python bench/extract.py --quick        # a smaller, single-repeat smoke run
    .venv/bin/python bench/extract.py --device cuda  # on a GPU: adds AMP bf16 + channels_last to (a)
    .venv/bin/python bench/extract.py --quick --only a,c --backbone convnext_tiny   # any backbone

(a) also prints the backbone's FLOPs per frame (torch's FlopCounterMode), the GFLOP/s that makes, and beside it
the GFLOP/s of a 2048 x 2048 fp32 matmul on the same device: the distance to the machine's limit.

Results are documented in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpuclock import Clock, own_cpu_seconds  # bench/ is on sys.path when a script here runs

BACKBONE = "vgg16"
LAYERS = ["pool4", "conv5_3"]


# -- helpers shared by parent and workers ----------------------------------------------------------------


def _videos(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.avi"))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# -- workers (each runs in its own subprocess) ---------------------------------------------------------


def work_backbone(spec: dict) -> dict:
    """(a): forward only, on frames decoded and transformed before the clock starts."""
    from actiontk.commands.extract import prefer_passive_openmp

    prefer_passive_openmp()  # the OpenMP wait policy the stage (c) runs under, set before torch is imported
    import numpy as np
    import torch

    from actiontk.models.backbones import build_backbone
    from actiontk.video import get_reader

    device = _device(spec["device"])
    reader = get_reader("decord")
    frames = np.concatenate([reader.read(p) for p in _videos(Path(spec["root"]))])  # (N, H, W, 3) uint8
    from actiontk.models.backbones import is_video, memory_format

    name, layers = spec.get("backbone", BACKBONE), spec.get("layers", LAYERS)
    clip = spec["clip_len"] if is_video(name) else None
    model = build_backbone(name, layers, "none", size=spec["size"], frames=clip).to(device)
    # the memory format the stage runs this backbone in on this device (backbones.memory_format)
    model.use_memory_format(memory_format(name, device))
    transform = model.preprocess(spec["size"])
    bs = spec["batch_size"]
    with torch.inference_mode():  # the stage's own transform, applied beforehand (not timed)
        if clip:  # a video model's items are clips (as the stage's ClipBatcher makes them): fps counts clips
            frames = frames[: len(frames) // clip * clip].reshape(-1, clip, *frames.shape[1:])
            bs = max(1, bs // clip)
            batches = [transform(torch.from_numpy(frames[i:i + bs]).to(device).permute(0, 1, 4, 2, 3))
                       for i in range(0, len(frames), bs)]
        else:
            batches = [transform(torch.from_numpy(frames[i:i + bs]).to(device).permute(0, 3, 1, 2))
                       for i in range(0, len(frames), bs)]
    variants = {"fp32": (None, False)}
    if device.type == "cuda":
        variants["bf16+channels_last"] = (torch.bfloat16, True)
    out = {"frames": int(len(frames)), "threads": torch.get_num_threads(),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
           "flops_per_frame": _flops_per_frame(model, batches[0][:1]), "matmul_gflops": _matmul_peak(device)}
    for name, (dtype, channels_last) in variants.items():
        m = model.to(memory_format=torch.channels_last) if channels_last else model
        xs = [b.contiguous(memory_format=torch.channels_last) for b in batches] if channels_last else batches

        def forward(x, m=m, dtype=dtype):
            amp = torch.autocast(device.type, dtype) if dtype is not None else contextlib.nullcontext()
            with torch.inference_mode(), amp:
                return m(x)

        for x in xs[:2]:  # warm-up: oneDNN / cuDNN primitive creation, allocator growth
            forward(x)
        _sync(device)
        with Clock() as clock:
            for x in xs:
                forward(x)
            _sync(device)
        out[name] = {"fps": len(frames) / clock.wall, "seconds": clock.wall, "cores": clock.cores,
                     "foreign": clock.foreign, "cpu_fps": len(frames) / (clock.cores * clock.wall)}
    return out


def _flops_per_frame(model, x) -> float:
    """FLOPs of one frame's forward, counted by torch's FlopCounterMode (matmuls and convolutions, 2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops()) / len(x)


def _matmul_peak(device, n: int = 2048, reps: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matmul on ``device`` with the current threads: the machine's practical limit."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def work_decode(spec: dict) -> dict:
    """(b): decode every video at native size in 16-frame chunks (as the stage asks), per backend."""
    from actiontk.video import SafeDecoder, get_reader

    paths = _videos(Path(spec["root"]))
    out = {}
    for backend in ("decord", "pyav"):
        rows = {}
        best = []
        for _ in range(spec["repeats"]):
            reader = get_reader(backend)
            with Clock() as clock:
                n = sum(len(c) for p in paths for c in reader.iter_chunks(p, chunk=16))
            best.append((n / clock.wall, clock))
        fps, clock = sorted(best, key=lambda t: t[0])[len(best) // 2]
        rows["in_process"] = {"fps": fps, "frames": n, "foreign": clock.foreign}
        with SafeDecoder(backend=backend, fallback=None, timeout=300) as dec:
            t0 = time.perf_counter()
            for _ in dec.iter_chunks(paths[0], chunk=16):  # starts the worker process
                pass
            start = time.perf_counter() - t0
            best = []
            for _ in range(spec["repeats"]):
                with Clock() as clock:
                    n = sum(len(c) for p in paths for c in dec.iter_chunks(p, chunk=16))
                best.append((n / clock.wall, clock))
        fps, clock = sorted(best, key=lambda t: t[0])[len(best) // 2]
        rows["safe_decoder"] = {"fps": fps, "frames": n, "first_video_with_start_s": start,
                                "foreign": clock.foreign}
        out[backend] = rows
    return out


def work_pipeline(spec: dict) -> dict:
    """(c): the stage itself, instrumented only to timestamp the end of each batch's forward."""
    from actiontk.commands.extract import prefer_passive_openmp

    if spec.get("passive", True):
        prefer_passive_openmp()  # what `actiontk extract` does before anything imports torch
    import actiontk.stages.extract as stage
    from rich.console import Console

    ends: list[tuple[float, int]] = []
    cpu_first: list[float] = []
    from actiontk.models.backbones import is_video
    from actiontk.stages.extract_batch import Batcher
    from actiontk.stages.extract_clips import ClipBatcher

    # the class the stage will use for this backbone: clips for a video model
    batcher_class = ClipBatcher if is_video(spec.get("backbone", BACKBONE)) else Batcher
    compute = batcher_class.compute

    def timed(self, parts):
        out = compute(self, parts)
        ends.append((time.perf_counter(), sum(len(f) for _, f in parts)))
        if len(ends) == 1:
            cpu_first.append(own_cpu_seconds())
        return out

    batcher_class.compute = timed
    cfg = stage.ExtractConfig(backbone=spec.get("backbone", BACKBONE), layers=list(spec.get("layers", LAYERS)),
                              size=spec["size"], weights="none", clip_len=spec["clip_len"],
                              batch_size=spec["batch_size"], workers=spec["workers"], device=spec["device"])
    with tempfile.TemporaryDirectory(dir=spec.get("tmp")) as cache, Clock() as clock:
        t0 = clock.t0
        result = stage.extract(cfg, Path(cache), dataset="toy", root=Path(spec["root"]), split=1, log=lambda m: None,
                               console=Console(stderr=True))
        t_end = time.perf_counter()
        cpu_end = own_cpu_seconds()  # decoder processes have been joined: their CPU time is in
    import torch

    first_end, first_n = ends[0]
    return {
        "frames": result.frames, "videos": result.extracted, "failed": len(result.failed),
        "stage_fps": result.frames / clock.wall, "wall": clock.wall,
        "steady_fps": (result.frames - first_n) / (t_end - first_end) if len(ends) > 1 else float("nan"),
        # frames per CPU-second (this process + decoders) in the steady state: the work done per frame,
        # whatever share of the cores other processes left us
        "steady_cpu_fps": (result.frames - first_n) / max(cpu_end - cpu_first[0], 1e-9) if ends else float("nan"),
        "first_batch_done_s": first_end - t0, "batches": len(ends),
        "partial_batches": sum(n < spec["batch_size"] for _, n in ends[:-1]),
        "cores": clock.cores, "foreign": clock.foreign, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }


def work_naive(spec: dict) -> dict:
    """(d): decode a whole video in-process with PyAV, then frame by frame, batch 1, fp32, nothing kept."""
    import torch

    from actiontk.models.backbones import build_backbone
    from actiontk.video import PyAVReader

    device = _device(spec["device"])
    model = build_backbone(spec.get("backbone", BACKBONE), spec.get("layers", LAYERS), "none",
                           size=spec["size"]).to(device)
    transform = model.preprocess(spec["size"])
    paths = _videos(Path(spec["root"]))
    reader = PyAVReader()
    with torch.inference_mode():
        model(transform(torch.from_numpy(reader.read(paths[0])[:1]).to(device).permute(0, 3, 1, 2)))  # warm-up
    n = 0
    with Clock() as clock:
        for p in paths:
            frames = reader.read(p)
            for frame in frames:
                with torch.inference_mode():
                    x = transform(torch.from_numpy(frame).to(device).permute(2, 0, 1)[None])
                    maps = model(x)
                    for m in maps.values():
                        m.cpu()
                n += 1
        _sync(device)
    return {"fps": n / clock.wall, "frames": n, "wall": clock.wall, "cores": clock.cores, "foreign": clock.foreign,
            "cpu_fps": n / (clock.cores * clock.wall)}


WORKERS = {"backbone": work_backbone, "decode": work_decode, "pipeline": work_pipeline, "naive": work_naive}


def run_worker(kind: str, spec: dict, verbose: bool) -> dict:
    """Run one measurement in a fresh interpreter; its result is the last line of its stdout (JSON)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr or "")
        raise SystemExit(f"the {kind} measurement failed (exit code {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- memory: peak RSS of `actiontk extract` on one long vs one short video -----------------------------------


def _tree_rss(pid: int) -> tuple[int, int, int]:
    """(RSS of pid, RSS of pid and all its descendants, number of descendants), bytes, from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))

    def rss(p: int) -> int:
        try:
            with open(f"/proc/{p}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0

    def cmdline(p: int) -> bytes:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                return f.read()
        except OSError:
            return b""

    # a child that still has the parent's command line is a fork about to exec (multiprocessing's spawn):
    # it briefly shares all of the parent's pages, which would count them twice
    own, total, todo, count, me = rss(pid), 0, [pid], -1, cmdline(pid)
    while todo:
        p = todo.pop()
        if p == pid or cmdline(p) != me:
            total += rss(p)
            count += 1
        todo.extend(children.get(p, []))
    return own, total, count


def _write_long_video(path: Path, frames: int, side: int) -> None:
    import numpy as np

    from actiontk.video import write_video

    yy, xx = np.mgrid[0:side, 0:side]

    def gen():
        for t in range(frames):  # a moving colour gradient with a bit of noise: a realistic bit rate
            r = ((xx + 2 * t) % side) * 255 // side
            g = ((yy + t) % side) * 255 // side
            b = (xx * yy + 7 * t) % 256
            noise = np.random.default_rng(t).integers(0, 24, (side, side))
            yield np.stack([r, g, (b + noise) % 256], -1).astype(np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, gen(), codec="mpeg4")


def _extract_peaks(root: Path, cache: Path, size: int, backend: str) -> dict:
    """Run ``actiontk extract folder`` on ``root``; peak RSS (MiB) sampled every 20 ms from /proc."""
    cmd = [sys.executable, "-m", "actiontk", "extract", "folder", "--root", str(root), "--size", str(size),
           "--weights", "none", "--device", "cpu", "--backend", backend, "--cache", str(cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"main": 0, "main_extracting": 0, "decoders": 0, "tree_extracting": 0}
    while proc.poll() is None:
        own, tree, descendants = _tree_rss(proc.pid)
        peak["main"] = max(peak["main"], own)
        if descendants:  # the decoder process (and multiprocessing's resource tracker) is running
            peak["main_extracting"] = max(peak["main_extracting"], own)
            peak["decoders"] = max(peak["decoders"], tree - own)
            peak["tree_extracting"] = max(peak["tree_extracting"], tree)
        time.sleep(0.02)
    text = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"actiontk extract failed on {root}:\n{text}")
    shutil.rmtree(cache, ignore_errors=True)
    return {k: v / 2**20 for k, v in peak.items()}


def measure_memory(tmp: Path, long_frames: int, short_frames: int, side: int, size: int, repeats: int) -> dict:
    """Peak RSS of ``actiontk extract folder`` on a one-video dataset: a long video vs a short one, per backend.

    Peaks are taken over the extraction phase, i.e. once the stage has started its decoder process (the
    model is built by then): the whole-life peak of the main process is set by building VGG16 (its
    randomly initialised classifier alone is 400 MB, freed once the network is cut), which would hide a
    per-frame leak. The main process and the decoder process are reported apart. Each run is repeated and
    the median peak kept: decord's read-ahead depends on thread scheduling (see docs/performance.md).
    """
    out: dict = {"size": size, "side": side}
    roots = {}
    for name, n in (("short", short_frames), ("long", long_frames)):
        roots[name] = tmp / f"mem_{name}"
        _write_long_video(roots[name] / "clips" / f"{name}.avi", n, side)
        out[f"{name}_frames"] = n
    for backend in ("decord", "pyav"):
        row = {}
        for name, root in roots.items():
            runs = [_extract_peaks(root, tmp / "mem_cache", size, backend) for _ in range(repeats)]
            row[name] = {k: _median([r[k] for r in runs]) for k in runs[0]}
            row[name]["decoders_all"] = [r["decoders"] for r in runs]
        for k in ("main", "main_extracting", "decoders", "tree_extracting"):
            row[f"ratio_{k}"] = row["long"][k] / row["short"][k]
        out[backend] = row
    return out


# -- the parent ------------------------------------------------------------------------------------------


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def _fmt(xs: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in xs)


def report(runs: dict[str, list[dict]], decode: dict, device_type: str) -> dict:
    """Print the medians of what was measured, and the ratios; return them."""
    def med(kind: str, key: str) -> tuple[float, list[float]]:
        xs = [x["fp32"][key] if kind == "backbone" else x[key] for x in runs.get(kind, [])]
        return _median(xs), xs

    def foreign(kind: str) -> str:
        return f"other processes used {med(kind, 'foreign')[0]:.2f} cores"

    ma, a = med("backbone", "fps")
    mcs, c_steady = med("pipeline", "steady_fps")
    mcw, c_stage = med("pipeline", "stage_fps")
    md, d = med("naive", "fps")
    if a:
        print(f"(a) backbone only, fp32           {ma:8.2f} frames/s   [{_fmt(a)}]  {foreign('backbone')}")
        first = runs["backbone"][0]
        gflop = first["flops_per_frame"] / 1e9
        print(f"    {gflop:.2f} GFLOP/frame: {gflop * ma:.1f} GFLOP/s achieved, matmul peak "
              f"{first['matmul_gflops']:.1f} GFLOP/s ({gflop * ma / first['matmul_gflops']:.0%} of it)")
        if device_type == "cuda":
            bf = [x["bf16+channels_last"]["fps"] for x in runs["backbone"]]
            print(f"(a) backbone only, bf16+ch_last   {_median(bf):8.2f} frames/s   [{_fmt(bf)}]")
    for backend, rows in decode.items():
        print(f"(b) decode {backend:6s} in-process     {rows['in_process']['fps']:8.1f} frames/s")
        print(f"(b) decode {backend:6s} SafeDecoder    {rows['safe_decoder']['fps']:8.1f} frames/s   "
              f"(worker start + first video: {rows['safe_decoder']['first_video_with_start_s']:.2f} s)")
    if c_steady:
        first = runs["pipeline"][0]
        print(f"(c) pipeline, steady state        {mcs:8.2f} frames/s   [{_fmt(c_steady)}]  {foreign('pipeline')}")
        print(f"(c) pipeline, whole stage         {mcw:8.2f} frames/s   [{_fmt(c_stage)}]  (first batch done after "
              f"{med('pipeline', 'first_batch_done_s')[0]:.1f} s: model build + decoder start + warm-up)")
        print(f"    {first['frames']} frames in {first['batches']} batches, {first['partial_batches']} partial "
              f"before the last; the stage used {med('pipeline', 'cores')[0]:.2f} cores; OMP_WAIT_POLICY "
              f"{first['omp_wait_policy']} ((a) and (d): {runs['backbone'][0]['omp_wait_policy'] if a else '-'})")
    mbs, b_steady = med("pipeline_before", "steady_fps")
    mbw, b_stage = med("pipeline_before", "stage_fps")
    if b_steady:
        print(f"(c) before (no PASSIVE), steady   {mbs:8.2f} frames/s   [{_fmt(b_steady)}]  "
              f"{foreign('pipeline_before')}")
        print(f"(c) before (no PASSIVE), stage    {mbw:8.2f} frames/s   [{_fmt(b_stage)}]")
    if d:
        print(f"(d) naive loop (PyAV, batch 1)    {md:8.2f} frames/s   [{_fmt(d)}]  {foreign('naive')}")
    print()
    if a and c_steady:
        per_repeat = [c / b for c, b in zip(c_steady, a, strict=True)]
        print(f"(c)/(a) steady state = {mcs / ma:.2f}   (goal >= 0.9)   whole stage: {mcw / ma:.2f}   "
              f"per repeat (steady): [{_fmt(per_repeat)}]")
    if a and b_steady:
        per_repeat = [c / b for c, b in zip(b_steady, a, strict=True)]
        print(f"before: (c)/(a) steady state = {mbs / ma:.2f}   whole stage: {mbw / ma:.2f}   "
              f"per repeat (steady): [{_fmt(per_repeat)}]")
    if a and c_steady:
        cpu_a, cpu_c = med("backbone", "cpu_fps")[0], med("pipeline", "steady_cpu_fps")[0]
        print(f"        per CPU-second: (a) {cpu_a:.2f}, (c) {cpu_c:.2f} frames -> {cpu_c / cpu_a:.2f} "
              f"(the pipeline's extra work per frame, independent of the share of cores it got)")
    if d and c_steady:
        print(f"(c)/(d) steady state = {mcs / md:.2f}x  (goal >= 3x)    whole stage: {mcw / md:.2f}x")
    if d and b_steady:
        print(f"before: (c)/(d) steady state = {mbs / md:.2f}x   whole stage: {mbw / md:.2f}x")
    # _median of nothing is nan, so what was not measured stays nan here
    return {"a_fps": ma, "c_steady_fps": mcs, "c_stage_fps": mcw, "d_fps": md, "c_over_a_steady": mcs / ma,
            "c_over_a_stage": mcw / ma, "c_over_d_steady": mcs / md, "c_over_d_stage": mcw / md,
            "before_steady_fps": mbs, "before_stage_fps": mbw, "before_c_over_a_steady": mbs / ma,
            "before_c_over_d_steady": mbs / md}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=112, help="the stage's --size (default 112)")
    p.add_argument("--backbone", default=BACKBONE, help=f"any backbone --backbone takes (default {BACKBONE})")
    p.add_argument("--clip-len", type=int, default=8, help="a video backbone's clip length (default 8); its "
                                                           "figures count clips, not frames")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: vgg16's pool4,conv5_3, else the "
                                                  "last layer `actiontk backbones` suggests)")
    p.add_argument("--frames", type=int, default=32, help="frames per toy video (default 32)")
    p.add_argument("--videos", type=int, default=36, help="toy videos, rounded up to a multiple of 18 (default 36)")
    p.add_argument("--video-size", type=int, default=112, help="side of the toy videos in pixels (default 112)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="the stage's decoder processes (default 2)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--repeats", type=int, default=3, help="repeats of (a), (c), (d) (default 3)")
    p.add_argument("--long-frames", type=int, default=3000, help="frames of the long video of the memory test")
    p.add_argument("--short-frames", type=int, default=300, help="frames of the short video of the memory test")
    p.add_argument("--before", action="store_true",
                   help="also measure (c) without the OMP_WAIT_POLICY=PASSIVE that `actiontk extract` now sets "
                        "(the behaviour before that change), interleaved with the others")
    p.add_argument("--memory-repeats", type=int, default=3, help="runs per video and backend of the memory test")
    p.add_argument("--only", default="a,b,c,d,memory",
                   help="comma-separated subset of a,b,c,d,memory to measure (default: all)")
    p.add_argument("--quick", action="store_true", help="18 videos x 16 frames, 1 repeat, 1000/100-frame memory test")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    p.add_argument("--verbose", action="store_true", help="show the workers' stderr (progress bars, warnings)")
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._worker:
        kind, spec = args._worker
        print(json.dumps(WORKERS[kind](json.loads(spec))))
        return

    if args.quick:
        args.videos, args.frames, args.repeats = 18, 16, 1
        args.long_frames, args.short_frames, args.memory_repeats = 1000, 100, 1
    import torch

    device = _device(args.device)
    from actiontk.datasets.toy import ToyConfig, generate_toy

    clips = max(1, math.ceil(args.videos / 18))
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                              if not k.startswith("_")}}
    with tempfile.TemporaryDirectory(prefix="actiontk-bench-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "toy"
        info = generate_toy(root, ToyConfig(classes=6, groups=3, clips=clips, frames=args.frames,
                                            size=args.video_size), workers=1)
        if args.layers is None:
            from actiontk.models.zoo import CLS, suggested_layers

            args.layers = ",".join(LAYERS) if args.backbone == BACKBONE else \
                [x for x in suggested_layers(args.backbone) if not x.endswith(CLS)][-1]
        spec = {"root": str(root), "size": args.size, "batch_size": args.batch_size, "device": device.type,
                "backbone": args.backbone, "layers": args.layers.split(","), "clip_len": args.clip_len,
                "workers": args.workers, "repeats": max(1, args.repeats), "tmp": str(tmp)}
        print(f"extract benchmark: {args.backbone} {args.layers.replace(',', '+')}, weights none, --size {args.size}, "
              f"batch "
              f"{args.batch_size}, {device.type} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs); "
              f"{info['videos']} toy videos x {args.frames} frames of {args.video_size}x{args.video_size}; "
              f"{args.repeats} repeat(s)", flush=True)
        only = {x.strip() for x in args.only.split(",")}
        from actiontk.models.backbones import is_video

        if is_video(args.backbone) and "d" in only:
            print("(d) is frame by frame: left out for a video backbone", flush=True)
            only.discard("d")
        order = [k for k, letter in (("backbone", "a"), ("pipeline", "c"), ("naive", "d")) if letter in only]
        if args.before and "c" in only:
            order.insert(order.index("pipeline") + 1, "pipeline_before")
        runs: dict[str, list[dict]] = {k: [] for k in order}
        for r in range(args.repeats if order else 0):
            for kind in order[r % len(order):] + order[:r % len(order)]:  # rotate: load drift hits each alike
                if kind == "pipeline_before":
                    res = run_worker("pipeline", {**spec, "passive": False}, args.verbose)
                else:
                    res = run_worker(kind, spec, args.verbose)
                runs[kind].append(res)
                if args.json:  # after every measurement: a killed run keeps what it measured
                    args.json.write_text(json.dumps({**results, "runs": runs}, indent=2) + "\n")
                fps = res["fp32"]["fps"] if kind == "backbone" else res["fps"] if kind == "naive" \
                    else res["steady_fps"]
                print(f"  repeat {r + 1}: {kind:15s} {fps:7.2f} frames/s  (other processes: "
                      f"{(res['fp32'] if kind == 'backbone' else res)['foreign']:.2f} cores)", flush=True)
        decode = run_worker("decode", spec, args.verbose) if "b" in only else {}
        results.update(runs=runs, decode=decode)
        mem = None
        if "memory" in only and device.type == "cpu":
            mem = measure_memory(tmp, args.long_frames, args.short_frames, args.video_size, 32, args.memory_repeats)
            results["memory"] = mem

    print()
    summary = report(runs, decode, device.type)
    results["summary"] = summary
    if mem:
        print(f"memory: peak RSS while extracting one {mem['long_frames']}-frame vs one {mem['short_frames']}-frame "
              f"{mem['side']}x{mem['side']} video (--size {mem['size']}), median of {args.memory_repeats}:")
        for backend in ("decord", "pyav"):
            row = mem[backend]
            lo, sh = row["long"], row["short"]
            runs_lo, runs_sh = (" ".join(f"{x:.0f}" for x in r["decoders_all"]) for r in (lo, sh))
            print(f"  {backend:6s} main process {row['ratio_main_extracting']:.3f} ({lo['main_extracting']:.0f} vs "
                  f"{sh['main_extracting']:.0f} MiB); decoder process {row['ratio_decoders']:.2f} "
                  f"({lo['decoders']:.0f} vs {sh['decoders']:.0f} MiB; "
                  f"runs {runs_lo} vs {runs_sh}); both {row['ratio_tree_extracting']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
