"""Bodies of ``actiontk run`` (a video dataset's whole pipeline) and ``actiontk demo`` (both pipelines on the
embedded toy data, offline)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from actiontk.errors import UserError
from actiontk.stages import registry
from actiontk.stages.evaluate import SUMMARY_LABELS

# metric → label for the summary tables: evaluate's headline figures and their labels, the top-1s and mAP
SUMMARY_KEYS = {k: SUMMARY_LABELS[k] for k in ("top1_vote", "top1_mean_score", "top1", "mAP")}


def _fmt_metrics(summary: dict[str, Any]) -> str:
    parts = [f"{label} {100 * summary[k]:.1f}%" for k, label in SUMMARY_KEYS.items()
             if summary.get(k) is not None]
    return ", ".join(parts) or "—"


def _stage_table(title: str, results) -> Table:
    table = Table(title=title)
    for col in ("pipeline", "stage", "seconds", "result"):
        table.add_column(col, overflow="fold")
    for res in results:
        for st in res.stages:
            table.add_row(res.dataset, st.stage, f"{st.seconds:.1f}", escape(st.note))
        table.add_row(res.dataset, "[bold]total[/bold]", f"[bold]{res.seconds:.1f}[/bold]",
                      escape(_fmt_metrics(res.summary)))
    return table


def run_run(dataset: str, *, root: Path | None, split: int | None, all_splits: bool, fusion: str | None,
            stages: str | None, cache: Path | None, config: Path | None,
            overrides: dict[str, dict[str, Any]] | None = None) -> None:
    from actiontk.cache.runs import resolve_cache_root
    from actiontk.config import load_preset
    from actiontk.datasets import get_dataset
    from actiontk.report import write_run_reports
    from actiontk.stages.pipeline import VIDEO_STAGES, parse_stages, run_video

    if all_splits and split is not None:
        raise UserError(f"--all-splits runs splits 1, 2 and 3; it cannot be combined with --split {split}",
                        "drop one of the two options")
    split = 1 if split is None else split
    name = dataset.lower()
    chosen = parse_stages(stages, VIDEO_STAGES)
    load_preset(name, config)  # every table of the preset is checked before the first stage starts
    if getattr(get_dataset(name, root or "."), "kind", "video") != "video":
        raise UserError(f"`actiontk run` is the video pipeline; {name!r} holds still images",
                        f"use `actiontk extract {name} ...` then `actiontk train-gap`")
    console = Console(stderr=True)
    cache_root = resolve_cache_root(cache)
    results = []
    for s in ((1, 2, 3) if all_splits else (split,)):
        console.rule(f"{name} split {s}")
        results.append(run_video(name, root, s, cache_root, stages=chosen, fusion=fusion, config=config,
                                 overrides=overrides, formats=("html",), render=write_run_reports,
                                 log=lambda m: console.print(escape(m)), console=console))
    Console().print(_stage_table(f"actiontk run {name}", results))
    for res in results:
        if res.report:
            print(f"split {res.split}: {_fmt_metrics(res.summary)}; report: {res.report}")
    over = results[-1].over_splits
    if over:
        print("over splits 1-3: " + ", ".join(f"{SUMMARY_KEYS.get(k, k)} {100 * over['mean'][k]:.1f} ± "
                                               f"{100 * over['std'][k]:.1f}%" for k in over["mean"]
                                               if k in SUMMARY_KEYS))


# -- the demo -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoProfile:
    """What the demo generates and how long it trains (the stage presets stages/toy*.toml do the rest)."""

    toy: dict[str, int]  # ToyConfig fields
    toy_mpii: dict[str, Any]  # ToyMPIIConfig fields
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage → option overrides
    image_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


PROFILES = {
    # The toy presets as they are (stages/toy.toml, stages/toy-mpii.toml) on the generators' default sizes.
    "full": DemoProfile(toy={}, toy_mpii={}),
    # Smaller data, features at 32 px and narrower, shorter training: the recipe of
    # tests/test_toy_pipeline_accuracy.py for the videos (clips of 8 frames so a 16-frame video has 3 of them).
    "fast": DemoProfile(toy=dict(classes=6, groups=6, clips=2, frames=16, size=64),
                        toy_mpii=dict(classes=6, per_class=30, size=128),
                        overrides={registry.EXTRACT: {"size": 32},
                                   registry.TRAIN_3D: {"channels": 32, "hidden": 32, "epochs": 15,
                                                "clip_len": 8, "clip_stride": 4},
                                   registry.TRAIN_LSTM: {"hidden": 64, "layers": 2, "epochs": 15, "last": 4,
                                                  "clip_len": 8, "clip_stride": 4}},
                        image_overrides={registry.EXTRACT: {"size": 128}, registry.TRAIN_GAP: {"epochs": 30}}),
}


def run_demo(workdir: Path, *, profile: DemoProfile, console: Console | None = None,
             formats: tuple[str, ...] = ("html",)) -> list:
    """Generate the toy sets under ``workdir`` and run both pipelines with their cache in ``workdir/cache``."""
    console = console or Console(stderr=True)
    workdir = workdir.expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cache_root = workdir / "cache"

    def log(message: str) -> None:
        console.print(escape(message))

    console.print("[bold]weights: none[/bold] — the backbones are randomly initialized (seeded), because nothing "
                  "can be downloaded offline; with --weights imagenet the same commands use the papers' features")
    import torch

    threads = torch.get_num_threads()
    if not os.environ.get("OMP_NUM_THREADS"):
        # The toy models are tiny: one thread trains them about as fast as several on an idle machine, and does
        # not stall when another job holds a core (docs/performance.md, "demo"). extract picks its own count.
        torch.set_num_threads(1)
        log("training on 1 torch thread (the toy models are small; set OMP_NUM_THREADS to choose)")
    try:
        return _demo_pipelines(workdir, profile, cache_root, formats, log, console)
    finally:
        torch.set_num_threads(threads)


def _demo_pipelines(workdir: Path, profile: DemoProfile, cache_root: Path, formats, log, console) -> list:
    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.datasets.toy_mpii import ToyMPIIConfig, generate_toy_mpii
    from actiontk.report import write_run_reports
    from actiontk.stages.pipeline import run_images, run_video, timed

    console.rule("toy videos (UCF101 layout) → extract → train-3d → train-lstm (late fusion) → evaluate")
    generated: list = []  # the generation rows, put first in each pipeline's table
    timed(generated, "generate", lambda: generate_toy(workdir / "toy", ToyConfig(**profile.toy)),
           lambda _: "toy videos (UCF101 layout)", lambda _: workdir / "toy")
    video = run_video("toy", workdir / "toy", 1, cache_root, fusion="late", overrides=profile.overrides,
                      formats=formats, render=write_run_reports, log=log, console=console)
    console.rule("toy MPII images → extract (ResNet-101) → train-gap (gap + pose) → evaluate")
    timed(generated, "generate", lambda: generate_toy_mpii(workdir / "toy-mpii", ToyMPIIConfig(**profile.toy_mpii)),
           lambda _: "toy MPII (images, .mat, lists)", lambda _: workdir / "toy-mpii")
    image = run_images("toy-mpii", workdir / "toy-mpii", cache_root, overrides=profile.image_overrides,
                       formats=formats, render=write_run_reports, log=log, console=console)
    video.stages.insert(0, generated[0])
    image.stages.insert(0, generated[1])
    return [video, image]


def predict_held_out(toy_root: Path, cache_root: Path, lstm_run: Path, count: int = 3,
                     log=lambda message: None) -> tuple[str, list]:
    """The demo's last step: ``count`` held-out toy videos (split 1's test videos, one per class) predicted through
    the API that ``actiontk predict`` uses; returns the equivalent command and the results."""
    import shlex

    from actiontk.datasets import get_dataset
    from actiontk.predict.api import load

    test = get_dataset("toy", toy_root).load(1).test
    picked, seen = [], set()
    for sample in test:
        if sample.label not in seen:
            picked.append(sample.path)
            seen.add(sample.label)
        if len(picked) == count:
            break
    run_name = f"train-lstm/{Path(lstm_run).name}"
    command = shlex.join(["actiontk", "predict", run_name, *map(str, picked), "--cache", str(cache_root)])
    with load(run_name, cache=cache_root, log=log) as predictor:
        results = [predictor.predict(path) for path in picked]
    return command, results


def demo(workdir: Path, *, fast: bool) -> None:
    console = Console(stderr=True)
    results = run_demo(workdir, profile=PROFILES["fast" if fast else "full"], console=console)
    out = Console()
    out.print(_stage_table("actiontk demo" + (" --fast" if fast else ""), results))
    for res in results:
        print(f"{res.dataset}: {_fmt_metrics(res.summary)}")
        if res.report:
            print(f"  report: {res.report}")
    video = results[0]
    lstm_run = next((st.run for st in reversed(video.stages) if st.stage == registry.TRAIN_LSTM), None)
    if lstm_run is not None:
        console.rule("held-out toy videos → actiontk predict")
        command, predicted = predict_held_out(workdir.expanduser().resolve() / "toy", workdir.expanduser().resolve()
                                              / "cache", lstm_run, log=lambda m: console.print(escape(m)))
        for r in predicted:
            print(f"{Path(r.source).name}: {r.classes[r.label_vote]} (paper's rule), "
                  f"{r.classes[r.label_mean]} (mean score) {100 * float(r.scores[r.label_mean]):.0f}%")
        print(f"predicted with: {command}")
    total = sum(r.seconds for r in results)
    print(f"done in {total:.0f} s; run it again to see every stage come from the cache "
          f"({len(results)} pipelines under {workdir.expanduser().resolve() / 'cache'})")
