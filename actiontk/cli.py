"""The ``actiontk`` command line: an index of commands wired to the functions that do the work.

Command bodies import their heavy dependencies (torch, h5py, decoders) themselves, so ``actiontk --help``
stays instant. :func:`main` applies the project's error convention: a :class:`~actiontk.errors.UserError`
becomes one line on stderr and exit code 2, a check that found problems exits 1, an interrupt exits 130,
and anything else is an internal error — all without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from actiontk import __version__
from actiontk.options import Expose, config_options, expose

app = typer.Typer(
    name="actiontk",
    help="Action recognition on cached deep features: joint attention (video) and attentional pooling (images).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
datasets_app = typer.Typer(help="List, check and generate datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

_state = {"debug": os.environ.get("ACTIONTK_DEBUG", "") not in ("", "0")}


def _version(value: bool) -> None:
    if value:
        print(f"actiontk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    if debug:
        _state["debug"] = True


# -- datasets -------------------------------------------------------------------------------------------

Root = Annotated[Path, typer.Option("--root", help="The dataset's folder (see `actiontk datasets list`).")]
Split = Annotated[int, typer.Option("--split", help="Official split number (1, 2 or 3).")]


@datasets_app.command("list")
def datasets_list() -> None:
    """Show the supported datasets and where each expects its files."""
    from actiontk.commands.datasets import list_datasets

    list_datasets()


@datasets_app.command("check")
def datasets_check(
    name: Annotated[str, typer.Argument(help="Dataset name: ucf101, hmdb51, toy, folder, images, mpii or toy-mpii.")],
    root: Root,
    split: Split = 1,
    decode: Annotated[bool, typer.Option("--decode", help="Also decode every listed video.")] = False,
    backend: Annotated[str, typer.Option(help="Video decoder: pyav, decord, or module:Class.")] = "pyav",
    timeout: Annotated[float, typer.Option(help="Seconds allowed to decode one video.")] = 120.0,
    workers: Annotated[int | None, typer.Option(help="Parallel decoders (default: CPU count).")] = None,
) -> None:
    """Compare the split lists with the files on disk; exit code 1 when problems are found."""
    from actiontk.commands.datasets import check_dataset

    check_dataset(name, root, split, decode=decode, backend=backend, timeout=timeout, workers=workers)


@datasets_app.command("toy")
def datasets_toy(
    out: Annotated[Path, typer.Argument(help="Empty (or new) folder to write the dataset to.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    classes: Annotated[int, typer.Option(help="Number of motion classes.")] = 8,
    groups: Annotated[int, typer.Option(help="Groups per class (multiple of 3, one third tested per split).")] = 6,
    clips: Annotated[int, typer.Option(help="Clips per group.")] = 2,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 36,
    size: Annotated[int, typer.Option(help="Frame height and width in pixels (even).")] = 112,
    workers: Annotated[int | None, typer.Option(help="Parallel encoder processes (default: CPU count).")] = None,
) -> None:
    """Generate the embedded toy action dataset (real MPEG-4 .avi videos in UCF101's layout)."""
    from actiontk.commands.datasets import make_toy

    make_toy(out, seed=seed, classes=classes, groups=groups, clips=clips, frames=frames, size=size,
             workers=workers)


@datasets_app.command("toy-mpii")
def datasets_toy_mpii(
    out: Annotated[Path, typer.Argument(help="Empty (or new) folder to write the dataset to.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
    classes: Annotated[int, typer.Option(help="Number of pose classes (2-10).")] = 6,
    per_class: Annotated[int, typer.Option("--per-class", help="Labelled images per class (a third in val).")] = 45,
    size: Annotated[int, typer.Option(help="Image height and width in pixels.")] = 160,
    difficulty: Annotated[str, typer.Option(
        help="easy: one large centred figure on a smooth background (learnable from random ResNet features); "
             "hard: a smaller figure anywhere among clutter and bystanders.")] = "easy",
) -> None:
    """Generate the toy still-image action dataset (stick figures) in MPII Human Pose's layout, .mat included."""
    from actiontk.commands.datasets import make_toy_mpii

    make_toy_mpii(out, seed=seed, classes=classes, per_class=per_class, size=size, difficulty=difficulty)


# -- stages ---------------------------------------------------------------------------------------------

Cache = Annotated[Path | None, typer.Option(
    "--cache", help="Cache root (default: $ACTIONTK_CACHE, else the checkout's cache/, else ~/.cache/actiontk).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML preset to use instead of stages/DATASET.toml.")]


EXTRACT = "actiontk.stages.extract:ExtractConfig"
TRAIN = "actiontk.train.engine:TrainConfig"
TRAIN_3D = "actiontk.stages.train_3d:Train3DConfig"
TRAIN_LSTM = "actiontk.stages.train_lstm:TrainLSTMConfig"
TRAIN_GAP = "actiontk.stages.train_gap:TrainGAPConfig"
RUN = "actiontk.stages.pipeline:RunConfig"

# The options of the config dataclasses each command offers (name, type and help come from the field; None =
# take the preset's value). TRAINING: those of TrainConfig every training command offers.
TRAINING = expose(TRAIN, "epochs", "batch_size", "lr", "device", "num_workers", "seed")
Overrides = dict  # the parameter that receives the exposed options (field -> value); they are listed in its place


@app.command()
@config_options(expose(EXTRACT, "backbone", "layers", "size", "resize", "frame_stride", "grid", "weights", "precision",
                       "device", "batch_size", "workers", "backend", "timeout", "videos_per_shard", "clip_len",
                       "clip_stride"))
def extract(
    dataset: Annotated[str, typer.Argument(help="ucf101, hmdb51, toy, folder, images, mpii or toy-mpii.")],
    root: Annotated[Path, typer.Option("--root", help="The dataset's folder.")],
    split: Split = 1,
    overrides: Overrides = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first video that cannot be decoded.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try videos that failed before again.")] = False,
    cache: Cache = None,
    config: ConfigFile = None,
) -> None:
    """Extract per-frame CNN feature maps into the cache (resumable; shards by rank under torchrun)."""
    from actiontk.commands.extract import run_extract

    run_extract(dataset, root, split, cache=cache, config=config, strict=strict, retry_failed=retry_failed,
                overrides=overrides)


# options shared by the training stages that are not config fields
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Use runs of this dataset (default: newest).")]
SplitOpt = Annotated[int | None, typer.Option(
    "--split", help="Split (default: the highest split the upstream run serves).")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", help="Continue the run's last checkpoint.")]


@app.command("train-3d")
@config_options(expose(TRAIN_3D, "levels", "temporal_kernel", "clip_len", "clip_stride", "att_lambda"), TRAINING)
def train_3d(
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    features: Annotated[str | None, typer.Option(help="Extract run to read (default: newest complete).")] = None,
    attention_from: Annotated[str | None, typer.Option(help="train-lstm run whose attention regularizes.")] = None,
    init_from: Annotated[str | None, typer.Option(
        help="train-3d run whose final weights this one starts from (the regularized round of the alternation "
             "continues the previous round).")] = None,
    overrides: Overrides = None,
    resume: Resume = True,
    cache: Cache = None,
    config: ConfigFile = None,
) -> None:
    """Train the deeply supervised 3D convnet per feature level, then write the cubes for train-lstm."""
    from actiontk.commands.train import run_train_3d

    run_train_3d(dataset, split, features=features, attention_from=attention_from, init_from=init_from,
                 resume=resume, cache=cache, config=config, overrides=overrides)


@app.command("train-lstm")
@config_options(expose(TRAIN_LSTM, "fusion", "levels", "hidden", "layers", "clip_len", "clip_stride", "last",
                       "att_lambda"), TRAINING)
def train_lstm(
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    cubes: Annotated[str | None, typer.Option(help="Cubes run to read (default: newest complete).")] = None,
    features: Annotated[str | None, typer.Option(
        help="Read an extract run's maps instead of cubes (the paper's no-temporal-convnet ablation).")] = None,
    overrides: Overrides = None,
    resume: Resume = True,
    cache: Cache = None,
    config: ConfigFile = None,
) -> None:
    """Train the joint attention LSTM on the cubes and write test predictions and attention maps."""
    from actiontk.commands.train import run_train_lstm

    run_train_lstm(dataset, split, cubes=cubes, features=features, resume=resume, cache=cache, config=config,
                   overrides=overrides)


@app.command("train-gap")
@config_options(expose(TRAIN_GAP, "head", "depth", "pose", "pose_weight", "pose_attention", "form", "standardize",
                       "dropout", "width", Expose(TRAIN_GAP, "finetune", "--finetune/--cached"), "backbone",
                       "weights", "resize", "crop"), TRAINING)
def train_gap(
    dataset: DatasetOpt = None,
    root: Annotated[Path | None, typer.Option("--root", help="--finetune: the dataset's folder.")] = None,
    features: Annotated[str | None, typer.Option(help="Extract run to read (default: newest image run).")] = None,
    overrides: Overrides = None,
    resume: Resume = True,
    cache: Cache = None,
    config: ConfigFile = None,
) -> None:
    """Train the attentional pooling head (GAP, rank-1 or mean) on still images and write val predictions."""
    from actiontk.commands.train import run_train_gap

    run_train_gap(dataset, root=root, features=features, resume=resume, cache=cache, config=config,
                  overrides=overrides)


@app.command()
def evaluate(
    run: Annotated[str | None, typer.Argument(help="Training run: its folder or STAGE/KEY prefix (default: the "
                                                   "newest with predictions).")] = None,
    report: Annotated[list[str] | None, typer.Option("--report", help="html, json (to stdout) or md; repeat for "
                                                                      "several.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the reports (default: RUN/report).")] = None,
    open_report: Annotated[bool, typer.Option("--open", help="Open the HTML report in a browser.")] = False,
    cache: Cache = None,
) -> None:
    """Metrics of a training run's test predictions (metrics.json in the run) and reports."""
    from actiontk.commands.evaluate import run_evaluate

    run_evaluate(run, reports=report, out=out, open_report=open_report, cache=cache)


@app.command("run")
@config_options(expose(RUN, "attention_rounds"))
def run_pipeline(
    dataset: Annotated[str, typer.Argument(help="ucf101, hmdb51, toy or folder.")],
    root: Annotated[Path | None, typer.Option("--root", help="The dataset's folder (needed by extract).")] = None,
    split: Annotated[int | None, typer.Option("--split", help="Official split number (1, 2 or 3; default 1).")] = None,
    all_splits: Annotated[bool, typer.Option("--all-splits", help="Run splits 1-3; report mean ± std.")] = False,
    fusion: Annotated[str | None, typer.Option(help="early or late fusion (default: the preset's).")] = None,
    stages: Annotated[str | None, typer.Option(help="Comma-separated subset of extract,train-3d,train-lstm,"
                                                    "evaluate (default: all).")] = None,
    overrides: Overrides = None,
    cache: Cache = None,
    config: ConfigFile = None,
) -> None:
    """The whole video pipeline: extract → train-3d (→ train-lstm → regularized train-3d) → train-lstm → evaluate,
    every stage cached."""
    from actiontk.commands.pipeline import run_run

    run_run(dataset, root=root, split=split, all_splits=all_splits, fusion=fusion, stages=stages, cache=cache,
            config=config, overrides={"run": overrides})


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the toy data, cache and reports go.")] = Path(
        "actiontk-demo"),
    fast: Annotated[bool, typer.Option("--fast", help="Smaller data, features at 32 px, narrower models "
                                       "(goal: under 3 minutes on 2 CPU cores).")] = False,
) -> None:
    """Both pipelines on the embedded toy data, offline: videos (joint attention) and images (GAP)."""
    from actiontk.commands.pipeline import demo as run_demo

    run_demo(workdir, fast=fast)


@app.command()
def predict(
    items: Annotated[list[str] | None, typer.Argument(
        help="[RUN] PATH...: a train-lstm or train-gap run first (its folder or STAGE/KEY; default: the newest "
             "complete one for the inputs' kind), then video or image files, or folders (searched recursively).",
        show_default=False)] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per input.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (one per input) to stdout, or to "
                                                         "--out/predictions.jsonl.")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder for predictions.jsonl, the overlays and index.html (--overlay default: "
                      "./actiontk-predict).")] = None,
    overlay: Annotated[bool, typer.Option("--overlay", help="Write the attention overlays (MP4 per video, PNG per "
                                                            "image) and an index.html showing them.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Frames per backbone pass (default: the "
                                                                        "extract run's).")] = None,
    cache_features: Annotated[bool, typer.Option("--cache-features", help="Also store the inputs' feature maps in "
                                                 "the run's extract run (reused for unchanged files).")] = False,
    cache: Cache = None,
) -> None:
    """Apply a trained run to new videos or images: top-k classes, the video label by the paper's rule and by mean
    score, attention overlays (see docs/predict.md); exit code 1 if any input failed."""
    from actiontk.commands.predict import run_predict

    run_predict(items or [], top_k=top_k, as_json=as_json, out=out, overlay=overlay, device=device,
                batch_size=batch_size, cache_features=cache_features, cache=cache)


@app.command()
def backbones(
    size: Annotated[int, typer.Option("--size", help="Input size in pixels the map sizes are given for.")] = 224,
    probe: Annotated[bool, typer.Option("--probe", help="Dry-run (meta device, no weights) the models not probed "
                                                        "yet, and cache their shapes on disk.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Only these backbones (repeatable).")] = None,
    layers: Annotated[str | None, typer.Option("--layers", help="List every layer name this backbone accepts, "
                                                                "with its map shape at --size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the listing as JSON (for scripts).")] = False,
) -> None:
    """List the backbones --backbone accepts (the curated ones and every torchvision classification and video
    model), their suggested layers with channels and map sizes at --size, and whether their weights are local."""
    from actiontk.commands.backbones import list_backbones, list_layers

    if layers:
        list_layers(layers, size)
    else:
        list_backbones(size, probe=probe, only=only, as_json=as_json)


@app.command()
def status(
    cache: Cache = None,
    gc: Annotated[bool, typer.Option("--gc", help="Remove the partial and stale runs (asks first; never a complete "
                                                  "or running one).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="With --gc: remove without asking (for scripts).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON (for scripts).")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Read every shard and checkpoint through its checksum "
                                                          "(reads the whole cache); exit code 1 if any is "
                                                          "damaged.")] = False,
) -> None:
    """List the cached runs of every stage: dataset, split, settings, state (complete / partial / running /
    stale and why), progress, size and age (see docs/status.md)."""
    from actiontk.commands.status import show_status

    show_status(cache, gc=gc, yes=yes, as_json=as_json, verify=verify)


# -- entry point ----------------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    print(f"actiontk: error: {message}", file=sys.stderr)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (what :func:`main` exits with)."""
    from actiontk.errors import ProblemsFound, UserError

    # Typer >= 0.24 vendors its own click; older releases re-export click's classes. Reach the usage
    # error classes through Typer's public BadParameter so both work.
    bases = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    usage_error, click_exception = bases["UsageError"], bases["ClickException"]

    try:
        # Not app(...): Typer's main turns a KeyboardInterrupt into a silent exit code 130, before the handler
        # below can say where the interrupted run stands.
        command = typer.main.get_command(app)
        with command.make_context("actiontk", list(sys.argv[1:] if argv is None else argv)) as ctx:
            result = command.invoke(ctx)
        return result if isinstance(result, int) else 0
    except UserError as e:
        if _state["debug"]:
            raise
        return _fail(_from_worker(str(e)), e.exit_code)
    except ProblemsFound as e:
        if _state["debug"] and str(e):
            print(f"actiontk: {e}", file=sys.stderr)
        return e.exit_code
    except usage_error as e:
        hint = ""
        if e.ctx is not None:
            hint = f" (see `{e.ctx.command_path} --help`)"
        return _fail(f"{e.format_message()}{hint}", 2)
    except typer.Exit as e:
        return e.exit_code
    except click_exception as e:
        return _fail(e.format_message(), e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        return _fail(_interrupted(), 130)
    except Exception as e:  # a bug, not a user error -- unless the machine ran out of disk or memory
        if _state["debug"]:
            raise
        resource = _out_of_resources(e)
        if resource:
            return _fail(resource, 2)
        return _fail(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", 1)


def _interrupted() -> str:
    """Where an interrupted command leaves its runs: what each has saved, its folder, how to resume."""
    try:
        from actiontk.commands.status import interrupted_runs

        where = interrupted_runs()
    except Exception:  # the message must come out whatever state the cache is in
        where = ""
    return (f"interrupted; {where + ' -- ' if where else ''}finished work is kept, run the same command again to "
            "resume")


def _from_worker(text: str) -> str:
    """The message of an error raised in a DataLoader worker: torch hands it back to the main process as
    'Caught X in DataLoader worker process N.\nOriginal Traceback ...\nmodule.X: MESSAGE'; keep MESSAGE."""
    if "\nOriginal Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _out_of_resources(e: BaseException) -> str | None:
    """A one-line message for running out of disk or memory (every stage writes atomically, so finished work
    is intact and a re-run resumes), or None for anything else."""
    from actiontk.errors import storage_problem

    if (disk := storage_problem(e)) is not None:  # full disk or quota, file-size limit, permission denied
        return disk
    torch = sys.modules.get("torch")
    text = str(e)
    oom = (isinstance(e, MemoryError) or (torch is not None and isinstance(e, getattr(torch, "OutOfMemoryError", ())))
           or (isinstance(e, RuntimeError) and ("out of memory" in text.lower() or "can't allocate memory" in text)))
    if not oom:
        return None
    device = "GPU memory" if "cuda" in text.lower() or "gpu" in text.lower() else "memory"
    return (f"out of {device}: {text.splitlines()[0][:160] if text else type(e).__name__}; finished work is kept "
            "-- lower --batch-size (and --num-workers), then run the same command again to resume")


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
