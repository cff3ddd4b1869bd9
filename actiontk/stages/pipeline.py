"""Whole pipelines: ``actiontk run`` (a video dataset, extract → train-3d → train-lstm → evaluate) and the
image pipeline of ``actiontk demo`` (extract → train-gap → evaluate).

The video pipeline trains the *regularized* 3D convnet of "Action Recognition with Joint Attention on Multi-Level
Deep Features" (Sec. 3.2): its loss pulls the maps' energy toward the joint LSTM's attention, which only a
trained LSTM provides. The paper gives no schedule; ours alternates (``attention_rounds`` = R, default 1):

    train-3d (λ term off) → cubes → train-lstm → train-3d regularized by that LSTM's attention → cubes → … → train-lstm

R = 0 is the unregularized 3D convnet (the paper's ablation row). With ``warm_start`` (default) a regularized round
continues from the previous round's convnet instead of a fresh initialization. Every round is its own cached run.

Every stage is the same function its own command calls, so every stage is cached: a stage whose run is
complete returns at once, and a killed pipeline resumes where it stopped. Each stage is handed the run
the previous one produced (not "the newest in the cache"), so a pipeline never mixes runs of another
configuration that happen to be newer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actiontk.errors import UserError
from actiontk.stages import registry

VIDEO_STAGES = (registry.EXTRACT, registry.TRAIN_3D, registry.TRAIN_LSTM, registry.EVALUATE)
IMAGE_STAGES = (registry.EXTRACT, registry.TRAIN_GAP, registry.EVALUATE)


@dataclass
class RunConfig:
    """Options of the video pipeline itself (the ``[run]`` table of a preset)."""

    attention_rounds: int = 1
    """Rounds of the alternation train-lstm → train-3d regularized by that LSTM's attention (0: the λ term is
    never on). The paper gives no schedule; 1 is our choice."""
    warm_start: bool = True
    """A regularized round starts from the previous round's 3D-convnet weights (our choice: the paper gives no
    schedule); false trains it from a fresh initialization."""

    def __post_init__(self) -> None:
        if isinstance(self.attention_rounds, bool) or not isinstance(self.attention_rounds, int) \
                or self.attention_rounds < 0:
            raise UserError(f"--attention-rounds must be an integer >= 0, got {self.attention_rounds!r}")


# Writes an evaluated run's reports in the given formats: (the first report's path, whether it was rendered now).
# The command layer passes :func:`actiontk.report.write_run_reports`; the stages do not import the report package,
# which is built on them.
Renderer = Callable[..., "tuple[Path | None, bool]"]


@dataclass
class StageResult:
    stage: str
    seconds: float
    run: Path | None = None
    note: str = ""


@dataclass
class PipelineResult:
    dataset: str
    split: int
    stages: list[StageResult] = field(default_factory=list)
    summary: dict[str, float | None] = field(default_factory=dict)
    over_splits: dict[str, Any] | None = None
    report: Path | None = None

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def parse_stages(text: str | None, allowed: Sequence[str]) -> list[str]:
    """``--stages extract,train-3d`` → the stages to run, in pipeline order; None → all of them."""
    if not text:
        return list(allowed)
    asked = [s.strip().lower() for s in text.replace(" ", ",").split(",") if s.strip()]
    unknown = [s for s in asked if s not in allowed]
    if unknown:
        raise UserError(f"unknown stage {unknown[0]!r} in --stages", f"choose from {', '.join(allowed)}")
    return [s for s in allowed if s in asked]


def _configs(preset: str, section: str, model_cls, config: Path | None, overrides: dict[str, Any]):
    from actiontk.stages.common import resolve_stage_configs

    return resolve_stage_configs(preset, section, model_cls, config, overrides)


def timed(results: list[StageResult], stage: str, fn: Callable[[], Any], note: Callable[[Any], str],
           run_of: Callable[[Any], Path | None]) -> Any:
    start = time.perf_counter()
    value = fn()
    results.append(StageResult(stage, time.perf_counter() - start, run_of(value), note(value)))
    return value


def _evaluate(results: list[StageResult], run, formats: Sequence[str], render: Renderer | None,
              log) -> tuple[dict, dict | None, Path | None]:
    from actiontk.stages.evaluate import evaluate_run

    start = time.perf_counter()
    ev = evaluate_run(run, log=log)
    report, note = None, "metrics.json + report"
    if formats:
        if render is None:
            raise ValueError(f"reports {', '.join(formats)} asked for without a renderer to write them")
        report, rendered = render(ev, formats, log=log)
        if not rendered:
            note = "metrics.json; report unchanged"
    results.append(StageResult(registry.EVALUATE, time.perf_counter() - start, report, note))
    return ev.metrics["summary"], ev.metrics.get("over_splits"), report


def run_video(dataset: str, root: Path | None, split: int, cache_root: Path, *, stages: Sequence[str] = VIDEO_STAGES,
              fusion: str | None = None, config: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
              formats: Sequence[str] = (), render: Renderer | None = None, log: Callable[[str], None] = print,
              console=None) -> PipelineResult:
    """The video pipeline on one split; ``overrides`` maps a stage name to its option overrides, ``render``
    writes the reports in ``formats`` (none: metrics.json only)."""
    from actiontk.config import load_preset, resolve
    from actiontk.stages.extract import ExtractConfig, extract
    from actiontk.stages.train_3d import Train3DConfig, train_3d
    from actiontk.stages.train_lstm import TrainLSTMConfig, train_lstm

    overrides = overrides or {}
    name = dataset.lower()
    out = PipelineResult(name, split)
    features = cubes = lstm = None
    if registry.EXTRACT in stages:
        if root is None:
            raise UserError("extract needs the dataset's folder", f"actiontk run {name} --root DIR --split {split}")
        preset, source = load_preset(name, config)
        cfg = resolve(ExtractConfig, preset.get(registry.EXTRACT, {}), overrides.get(registry.EXTRACT, {}),
                      source=str(source or "options"))
        result = timed(out.stages, registry.EXTRACT,
                        lambda: extract(cfg, cache_root, dataset=name, root=root, split=split, log=log,
                                        console=console),
                        lambda r: f"{r.extracted} extracted, {r.cached} cached, {len(r.failed)} failed",
                        lambda r: r.run.path)
        features = result.run  # each stage gets the Run the previous one made, not a path to look up again
    lstm_over = {**overrides.get(registry.TRAIN_LSTM, {}), **({"fusion": fusion} if fusion else {})}
    lstm_cfg, lstm_tcfg = _configs(name, registry.TRAIN_LSTM, TrainLSTMConfig, config, lstm_over)

    def lstm_on(cubes_run, label: str):
        return timed(out.stages, label,
                     lambda: train_lstm(lstm_cfg, lstm_tcfg, cache_root, dataset=name, split=split, cubes=cubes_run,
                                        log=log, console=console).run,
                     lambda r: f"{lstm_cfg.fusion} fusion", lambda r: r.path)

    if registry.TRAIN_3D in stages:
        cfg, tcfg = _configs(name, registry.TRAIN_3D, Train3DConfig, config, overrides.get(registry.TRAIN_3D, {}))
        preset, source = load_preset(name, config)
        run_cfg = resolve(RunConfig, preset.get("run", {}), overrides.get("run", {}),
                          source=f"{source} [run]" if source else "options")
        attention = previous = None
        for r in range(run_cfg.attention_rounds + 1):
            if r > 0:  # the LSTM of the previous round's cubes provides the attention
                attention = lstm_on(cubes, f"train-lstm (attention for round {r})")
            label = registry.TRAIN_3D if r == 0 else f"train-3d (round {r}, attention-regularized)"
            init = previous if (r > 0 and run_cfg.warm_start) else None
            made = timed(out.stages, label,
                         lambda att=attention, init=init: train_3d(
                             cfg, tcfg, cache_root, dataset=name, split=split, features=features,
                             attention_from=att, init_from=init, log=log, console=console),
                         lambda r_: f"cubes {r_.products[registry.CUBES].short}", lambda r_: r_.run.path)
            previous, cubes = made.run, made.products[registry.CUBES]
    if registry.TRAIN_LSTM in stages:
        lstm = lstm_on(cubes, registry.TRAIN_LSTM)
    if registry.EVALUATE in stages:
        if lstm is None:
            from actiontk.stages import upstream

            lstm, _ = upstream.pick_run(cache_root, registry.TRAIN_LSTM, dataset=name, split=split, run=None,
                                        next_step=f"actiontk run {name} --split {split}",
                                        log=log)
        out.summary, out.over_splits, out.report = _evaluate(out.stages, lstm, formats, render, log)
    return out


def run_images(dataset: str, root: Path, cache_root: Path, *, stages: Sequence[str] = IMAGE_STAGES,
               config: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None,
               formats: Sequence[str] = (), render: Renderer | None = None, log: Callable[[str], None] = print,
               console=None) -> PipelineResult:
    """The still-image pipeline (cached mode): extract → train-gap → evaluate; ``render`` as for :func:`run_video`."""
    from actiontk.config import load_preset, resolve
    from actiontk.stages.extract import ExtractConfig, extract
    from actiontk.stages.train_gap import TrainGAPConfig, train_gap

    overrides = overrides or {}
    name = dataset.lower()
    out = PipelineResult(name, 1)
    features = gap = None
    if registry.EXTRACT in stages:
        preset, source = load_preset(name, config)
        cfg = resolve(ExtractConfig, preset.get(registry.EXTRACT, {}), overrides.get(registry.EXTRACT, {}),
                      source=str(source or "options"))
        result = timed(out.stages, "extract (images)",
                        lambda: extract(cfg, cache_root, dataset=name, root=root, split=1, log=log, console=console),
                        lambda r: f"{r.extracted} extracted, {r.cached} cached, {len(r.failed)} failed",
                        lambda r: r.run.path)
        features = result.run
    if registry.TRAIN_GAP in stages:
        cfg, tcfg = _configs(name, registry.TRAIN_GAP, TrainGAPConfig, config, overrides.get(registry.TRAIN_GAP, {}))
        gap = timed(out.stages, registry.TRAIN_GAP,
                     lambda: train_gap(cfg, tcfg, cache_root, dataset=name, features=features, log=log,
                                       console=console).run,
                     lambda r: f"head {cfg.head}{' + pose' if cfg.pose else ''}", lambda r: r.path)
    if registry.EVALUATE in stages and gap is not None:
        out.summary, out.over_splits, out.report = _evaluate(out.stages, gap, formats, render, log)
    return out
