"""The Python steps of ``bench/device_check.sh`` (see there): toy data, precision, torchrun and AMP-training checks,
and the summary table.

Each step writes ``{"rows": [...]}`` to ``--json``: one row per figure, ``{"check", "value", "bar", "ok"}`` where
``ok`` is True / False for a correctness check (it decides the script's exit code), or None for a figure that
is only reported (speed goals are printed as met / not met but fail nothing: they depend on the machine).

    python bench/device_check.py data --out DIR [--tiny]
    python bench/device_check.py precision --root DIR --cache DIR --device cuda --json OUT
    python bench/device_check.py torchrun --cache DIR --reference DIR --json OUT
    python bench/device_check.py train --work DIR --device cuda [--tiny] --json OUT
    python bench/device_check.py table RESULTS_DIR
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

# The toy videos the extract-based checks share: small on the CPU fallback, the benchmark's size on a GPU.
TOY_TINY = dict(classes=6, groups=3, clips=1, frames=8, size=32)
TOY_GPU = dict(classes=6, groups=3, clips=2, frames=32, size=112)
EXTRACT = dict(backbone="vgg16", layers=["pool4", "conv5_3"], weights="none", workers=1)
SIZE = {"tiny": 32, "gpu": 112}  # extract --size
# Relative error (Frobenius, per video and layer; the median over them) of reduced-precision features against
# fp32 that the check accepts. Features are stored as float16, whose own rounding is ~5e-4.
PRECISION_BAR = {"fp16": 5e-3, "bf16": 3e-2}


def _rows_out(path: Path | None, rows: list[dict]) -> None:
    for r in rows:
        mark = {True: "ok", False: "FAILED", None: ""}[r.get("ok")]
        print(f"{r['check']:45s} {r['value']:>24s}  {r.get('bar', ''):>18s}  {mark}")
    if path is not None:
        path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


def row(check: str, value: str, bar: str = "", ok: bool | None = None) -> dict:
    return {"check": check, "value": value, "bar": bar, "ok": ok}


# -- data ----------------------------------------------------------------------------------------------------


def cmd_data(args) -> None:
    from actiontk.datasets.toy import ToyConfig, generate_toy

    info = generate_toy(args.out, ToyConfig(**(TOY_TINY if args.tiny else TOY_GPU)), workers=1)
    print(f"toy videos: {info['videos']} in {args.out}")


# -- features: reduced precision against fp32, torchrun against one process -----------------------------------


def _extract(root: Path, cache: Path, device: str, precision: str, size: int):
    """The toy preset's extract config with these options, as `actiontk extract toy` resolves it."""
    from actiontk.config import load_preset, resolve
    from actiontk.stages.extract import ExtractConfig, extract

    preset, _ = load_preset("toy")
    cfg = resolve(ExtractConfig, preset.get("extract", {}),
                  {**EXTRACT, "size": size, "device": device, "precision": precision})
    return extract(cfg, cache, dataset="toy", root=root, split=1, log=lambda m: None)


def relative_errors(run_a: Path, run_b: Path) -> list[float]:
    """||a - b|| / ||b|| of every video and layer the two extract runs both hold (float32 arithmetic)."""
    from actiontk.cache.features import FeatureReader

    a, b = FeatureReader(run_a), FeatureReader(run_b)
    errors = []
    for rel in b.videos():
        if rel not in a:
            continue
        for layer in b.layers():
            x, y = a.read(rel, layer).astype(np.float32), b.read(rel, layer).astype(np.float32)
            errors.append(float(np.linalg.norm(x - y) / max(float(np.linalg.norm(y)), 1e-12)))
    return errors


def cmd_precision(args) -> None:
    import torch

    size = SIZE["tiny" if args.device == "cpu" else "gpu"] if args.size is None else args.size
    # fp16 autocast needs CUDA; bf16 autocast runs on both
    precisions = ["bf16", "fp16"] if args.device != "cpu" else ["bf16"]
    ref = _extract(args.root, args.cache, args.device, "fp32", size)
    rows = [row("extract fp32: videos / frames", f"{ref.extracted + ref.cached} / {ref.frames}", "", None)]
    for p in precisions:
        if p == "bf16" and args.device != "cpu" and not torch.cuda.is_bf16_supported():
            rows.append(row(f"features {p} vs fp32", "bf16 unsupported here", "", None))
            continue
        res = _extract(args.root, args.cache, args.device, p, size)
        errors = relative_errors(res.run.path, ref.run.path)
        med, worst = statistics.median(errors), max(errors)
        ok = bool(errors) and math.isfinite(worst) and med <= PRECISION_BAR[p]
        rows.append(row(f"features {p} vs fp32: rel. error median (max)", f"{med:.2e} ({worst:.2e})",
                        f"median <= {PRECISION_BAR[p]:.0e}", ok))
    _rows_out(args.json, rows)


def cmd_torchrun(args) -> None:
    from actiontk.cache.runs import list_runs
    from actiontk.cache.targets import extract_state

    run = list_runs(args.cache, "extract")[0]
    state = extract_state(run)
    rows = [row("torchrun 1 process: extract run", f"{state['state']}, {state['done']}/{state['total']} videos",
                "complete", state["state"] == "complete" and state["done"] == state["total"] > 0)]
    # the same settings in one process (the precision step's run of the precision torchrun resolved to)
    ref = next((r for r in list_runs(args.reference, "extract")
                if r.config.get("precision") == run.config.get("precision")), None)
    if ref is not None:
        errors = relative_errors(run.path, ref.path)
        worst = max(errors) if errors else float("nan")
        rows.append(row(f"torchrun vs one process ({run.config.get('precision')}): max rel. error", f"{worst:.2e}",
                        "<= 1e-2", bool(errors) and worst <= 1e-2))
    _rows_out(args.json, rows)


# -- AMP training of the toy pipeline ------------------------------------------------------------------------


def cmd_train(args) -> None:
    """The recipe of tests/test_toy_pipeline_accuracy.py (the demo's fast profile) through `actiontk run`'s
    stage sequence, on ``--device`` with precision auto (bf16 autocast on CUDA; fp16 where bf16 is unsupported)."""
    import torch

    from actiontk.cache.runs import list_runs
    from actiontk.commands.pipeline import PROFILES
    from actiontk.datasets.toy import ToyConfig, generate_toy
    from actiontk.stages.pipeline import run_video
    from tests.test_toy_pipeline_accuracy import CHANCE, DEEP_SUPERVISION_BAR, VIDEO_BAR

    fast = PROFILES["fast"]
    toy = dict(fast.toy)
    overrides = {k: dict(v) for k, v in fast.overrides.items()}
    if args.tiny:  # the CPU fallback: the same stages on a sliver of data, one epoch each; no accuracy bar
        toy = dict(TOY_TINY)
        for stage in ("train-3d", "train-lstm"):
            overrides[stage].update(epochs=1)
    for stage in ("train-3d", "train-lstm"):
        overrides[stage].update(device=args.device, precision="auto")
    overrides["extract"].update(device=args.device)
    root = args.work / "toy"
    generate_toy(root, ToyConfig(**toy), workers=1)
    cache = args.work / "cache"
    result = run_video("toy", root, 1, cache, stages=("extract", "train-3d", "train-lstm"), fusion="late",
                       overrides=overrides, formats=(), log=lambda m: None)
    precision = "fp32" if args.device == "cpu" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    seconds = {s.stage: s.seconds for s in result.stages}
    lstm = list_runs(cache, "train-lstm")[0]
    summary = json.loads((lstm.path / "summary.json").read_text())
    gate = None if args.tiny else True  # the CPU fallback only shows that every stage runs
    how = "fp32" if precision == "fp32" else f"{precision} autocast"
    rows = [row(f"toy pipeline on {args.device} ({how})", f"{sum(seconds.values()):.0f} s", "", None)]
    for key, bar in (("video_accuracy_vote", VIDEO_BAR), ("video_accuracy_mean", VIDEO_BAR),
                     ("clip_accuracy", 2.5 * CHANCE)):
        value = float(summary[key])
        ok = None if gate is None else (math.isfinite(value) and value >= bar)
        rows.append(row(f"train-lstm {key}", f"{value:.3f}", f">= {bar:.3f}" if gate else "(tiny: none)", ok))
    for run in list_runs(cache, "train-3d"):
        val = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
        acc = [m for m in val if m.get("split") == "val"][-1]["acc"]
        reg = " (attention-regularized)" if "attention" in run.info.get("upstream", {}) else ""
        ok = None if gate is None else acc >= DEEP_SUPERVISION_BAR
        rows.append(row(f"train-3d val clip accuracy{reg}", f"{acc:.3f}",
                        f">= {DEEP_SUPERVISION_BAR:.3f}" if gate else "(tiny: none)", ok))
    _rows_out(args.json, rows)


# -- the summary table ---------------------------------------------------------------------------------------


def _extract_rows(data: dict, device: str) -> list[dict]:
    """(a) backbone fp32 and bf16 + channels_last, (c) the stage, (d) the naive loop, and their ratios."""
    runs = data.get("runs", {})

    def med(kind: str, get) -> float:
        xs = [get(x) for x in runs.get(kind, [])]
        xs = [x for x in xs if x is not None and math.isfinite(x)]
        return statistics.median(xs) if xs else float("nan")

    a32 = med("backbone", lambda x: x["fp32"]["fps"])
    abf = med("backbone", lambda x: x.get("bf16+channels_last", {}).get("fps"))
    c = med("pipeline", lambda x: x["steady_fps"])
    d = med("naive", lambda x: x["fps"])
    # the stage runs bf16 + channels_last on CUDA (precision auto), fp32 on CPU: (c)/(a) compares like with like
    bf16_stage = device != "cpu" and math.isfinite(abf)
    a_stage = abf if bf16_stage else a32
    rows = [row("extract (a) backbone fp32", f"{a32:.1f} frames/s")]
    if math.isfinite(abf):
        rows.append(row("extract (a) backbone bf16 + channels_last", f"{abf:.1f} frames/s"))
        rows.append(row("extract bf16+channels_last / fp32", f"{abf / a32:.2f}x"))
    rows += [row("extract (c) stage, steady state", f"{c:.1f} frames/s"),
             row("extract (d) naive loop (batch 1, fp32)", f"{d:.1f} frames/s")]
    ratio_a, ratio_d = c / a_stage, c / d
    rows.append(row("extract (c)/(a)" + (" [(a) in bf16 + channels_last]" if bf16_stage else ""),
                    f"{ratio_a:.2f}  " + ("met" if ratio_a >= 0.9 else "not met"), "goal >= 0.9"))
    rows.append(row("extract (c)/(d)", f"{ratio_d:.2f}x  " + ("met" if ratio_d >= 3 else "not met"), "goal >= 3x"))
    return rows


def _lstm_rows(data: dict) -> list[dict]:
    rate = data.get("clips_per_s", {})
    rows = [row(f"lstm {name} training", f"{r:.1f} clips/s") for name, r in rate.items()]
    diff = data.get("max_logit_difference", float("nan"))
    rows.append(row("lstm fused vs naive cell: max |logit diff|", f"{diff:.1e}", "<= 1e-3",
                    bool(math.isfinite(diff) and diff <= 1e-3)))
    if "joint" in rate and "lstm" in rate:
        slow = rate["lstm"] / rate["joint"]
        rows.append(row("lstm joint / nn.LSTM slowdown", f"{slow:.2f}x  " + ("met" if slow <= 2.5 else "not met"),
                        "goal <= 2.5x"))
    if "joint" in rate and "naive" in rate:
        speed = rate["joint"] / rate["naive"]
        rows.append(row("lstm joint / naive speedup", f"{speed:.2f}x  " + ("met" if speed >= 3 else "not met"),
                        "goal >= 3x"))
    return rows


def cmd_table(args) -> None:
    """Every step's rows (and its exit status and time) in one table; exit 1 if a step or a check failed."""
    from rich.console import Console
    from rich.table import Table

    results: Path = args.results
    meta = json.loads((results / "meta.json").read_text()) if (results / "meta.json").is_file() else {}
    device = meta.get("device", "cpu")
    table = Table(title=f"bench/device_check.sh -- {meta.get('title', device)}")
    for col in ("step", "check", "value", "bar", "result"):
        table.add_column(col, overflow="fold")
    failed = 0
    for status_file in sorted(results.glob("*.status"), key=lambda p: int(p.read_text().split()[2])):
        name = status_file.stem
        rc, seconds, _order = (int(x) for x in status_file.read_text().split())
        data_file = results / f"{name}.json"
        rows: list[dict] = []
        if rc == 0 and data_file.is_file():
            data = json.loads(data_file.read_text())
            rows = (_extract_rows(data, device) if name == "extract" else _lstm_rows(data) if name == "lstm"
                    else data.get("rows", []))
        if rc != 0:
            why = "timed out" if rc == 124 else f"exit code {rc}"
            rows.insert(0, row("step", f"{why} after {seconds} s", "", False))
        else:
            rows.insert(0, row("step", f"done in {seconds} s", "", None))
        for r in rows:
            mark = {True: "[green]ok[/green]", False: "[red]FAILED[/red]", None: ""}[r.get("ok")]
            failed += r.get("ok") is False
            table.add_row(name, r["check"], r["value"], r.get("bar", ""), mark)
    Console(width=160).print(table)
    print(f"{'all checks passed' if not failed else f'{failed} check(s) FAILED'} ({meta.get('title', device)})")
    sys.exit(1 if failed else 0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("data")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--tiny", action="store_true")
    s = sub.add_parser("precision")
    s.add_argument("--root", type=Path, required=True)
    s.add_argument("--cache", type=Path, required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--size", type=int)
    s.add_argument("--json", type=Path)
    s = sub.add_parser("torchrun")
    s.add_argument("--cache", type=Path, required=True)
    s.add_argument("--reference", type=Path, required=True, help="the precision step's cache")
    s.add_argument("--json", type=Path)
    s = sub.add_parser("train")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--tiny", action="store_true")
    s.add_argument("--json", type=Path)
    s = sub.add_parser("table")
    s.add_argument("results", type=Path)
    args = p.parse_args(argv)
    {"data": cmd_data, "precision": cmd_precision, "torchrun": cmd_torchrun, "train": cmd_train,
     "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
