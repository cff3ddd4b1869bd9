"""actiontk evaluate: finding the run, metrics.json, the three-split mean, the HTML/Markdown reports, escaping,
and the HTML page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actiontk import metrics as M
from actiontk.cache import lifecycle
from actiontk.cache.runs import Run, open_run
from actiontk.cli import run as cli_run
from actiontk.datasets.toy import ToyConfig, generate_toy

TINY = ToyConfig(classes=6, groups=3, clips=1, frames=8, size=32)
FAST = ["--epochs", "1", "--batch-size", "4", "--clip-len", "4", "--clip-stride", "4"]
EVIL = '<script>alert("x")</script>'
CLASSES = [EVIL, "Tom & Jerry's \"fight\"", "$x$ [link](http://a.b) *b* | c"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("actiontk: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy") / "toy"
    generate_toy(root, TINY, workers=1)
    return root


@pytest.fixture(scope="module")
def trained(toy_root: Path, tmp_path_factory) -> Path:
    """A real extract -> train-3d -> train-lstm chain on the toy videos (32 px, one epoch each)."""
    from actiontk.stages.extract import ExtractConfig, extract

    cache = tmp_path_factory.mktemp("cache")
    extract(ExtractConfig(size=32, weights="none", batch_size=16, workers=1), cache, dataset="toy", root=toy_root,
            split=1, log=lambda m: None)
    assert cli_run(["train-3d", "--cache", str(cache), *FAST]) == 0
    assert cli_run(["train-lstm", "--cache", str(cache), *FAST, "--last", "2", "--hidden", "16", "--layers", "2"]) == 0
    return cache


def only_run(cache: Path, stage: str) -> Path:
    runs = [p for p in (cache / stage).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


# -- synthetic runs --------------------------------------------------------------------------------------


def make_run(cache: Path, stage: str, *, split: int, config: dict, dataset: str = "toy", root: str = "/nowhere",
             upstream_keys: dict | None = None, files: dict | None = None, log: list | None = None) -> Run:
    run = open_run(cache, stage, 1, config, upstream=upstream_keys or {},
                   inputs={"dataset": dataset, "root": root, "split": split})
    for name, arrays in (files or {}).items():
        np.savez_compressed(run.path / name, **arrays)
    if log:
        (run.path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    lifecycle.mark_complete(run, {})
    return run


def video_files(classes: list[str], rels: list[str], labels: list[int], clip_video: list[int],
                clip_scores: list[list[float]]) -> dict:
    """predictions.npz as train-lstm writes it."""
    clip_video, clip_scores = np.array(clip_video), np.array(clip_scores, np.float32)
    clip_pred = clip_scores.argmax(1)  # these clips' hard votes agree with their mean scores
    voted, mean_pred, mean_scores = M.video_predictions(clip_video, clip_scores, len(rels), clip_pred)
    return {"predictions.npz": dict(
        classes=np.array(classes), clip_video=clip_video, clip_start=np.zeros(len(clip_video), np.int64),
        clip_pred=clip_pred, clip_scores=clip_scores, video_rel=np.array(rels), video_label=np.array(labels),
        video_vote=voted,
        video_mean=mean_pred, video_scores=mean_scores.astype(np.float32), last=2, clip_len=4)}


def accuracy_run(cache: Path, split: int, correct: int, config: dict, up: dict | None = None) -> Run:
    """4 videos of 3 classes, one clip each, ``correct`` of them right."""
    labels = [0, 1, 2, 0]
    scores = [np.eye(3)[lab if i < correct else (lab + 1) % 3] * 0.7 + 0.1 for i, lab in enumerate(labels)]
    files = video_files(["a", "b", "c"], [f"v{i}.avi" for i in range(4)], labels, [0, 1, 2, 3],
                        [s.tolist() for s in scores])
    return make_run(cache, "train-lstm", split=split, config=config, upstream_keys=up, files=files)


@pytest.fixture(scope="module")
def evil_run(toy_root: Path, tmp_path_factory) -> Run:
    """A video run whose class names are hostile, with attention samples on real toy videos."""
    cache = tmp_path_factory.mktemp("evil")
    rels = ["MoveLeft/v_MoveLeft_g01_c01.avi", "MoveRight/v_MoveRight_g01_c01.avi", "MoveUp/v_MoveUp_g01_c01.avi"]
    files = video_files(CLASSES, rels, [0, 1, 2], [0, 0, 1, 1, 2, 2],
                        [[.7, .2, .1], [.6, .3, .1], [.2, .7, .1], [.5, .4, .1], [.1, .3, .6], [.3, .6, .1]])
    rng = np.random.default_rng(0)
    att = rng.dirichlet(np.ones(4), size=(4, 4)).reshape(4, 4, 2, 2).astype(np.float32)  # (N, L, H, W)
    files["attention_samples.npz"] = dict(
        rel=np.array([rels[0], rels[1], rels[2], rels[1]]), start=np.array([0, 0, 0, 4]),
        label=np.array([0, 1, 2, 1]), pred=np.array([0, 0, 2, 1]), video_pred=np.array([0, 1, 1, 1]),
        attention=att, clip_len=4)
    log = [{"epoch": e, "split": s, "loss": 2.0 / e + (s == "val"), "acc": 0.3 * e} for e in (1, 2, 3)
           for s in ("train", "val")]
    return make_run(cache, "train-lstm", split=1, config={"model": {"fusion": "late"}}, root=str(toy_root),
                    files=files, log=log)


# -- finding the run, errors -----------------------------------------------------------------------------


def test_no_training_run_is_a_clear_error(tmp_path: Path, capsys):
    assert cli_run(["evaluate", "--cache", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "no finished training run with predictions" in line and "actiontk train-lstm" in line
    open_run(tmp_path, "train-lstm", 1, {"x": 1}, inputs={"dataset": "toy", "split": 1})  # started, no predictions
    assert cli_run(["evaluate", "--cache", str(tmp_path)]) == 2
    assert "1 unfinished" in one_line_error(capsys)
    assert cli_run(["evaluate", "train-lstm/ffff", "--cache", str(tmp_path)]) == 2
    assert "no training run named 'train-lstm/ffff'" in one_line_error(capsys)


def test_bad_report_format(evil_run: Run, capsys):
    assert cli_run(["evaluate", str(evil_run.path), "--report", "pdf"]) == 2
    assert "unknown --report 'pdf'" in one_line_error(capsys)


def test_unreadable_predictions_are_a_clear_error(tmp_path: Path, capsys):
    run = make_run(tmp_path, "train-lstm", split=1, config={}, files={"predictions.npz": {"scores": np.ones(3)}})
    assert cli_run(["evaluate", str(run.path)]) == 2
    assert "holds neither video nor image predictions (keys: scores)" in capsys.readouterr().err
    good = video_files(["a", "b"], ["v0.avi", "v1.avi"], [0, 1], [0, 1], [[.5, .5], [.5, .5]])["predictions.npz"]
    bad = {**good, "clip_video": np.array([0, 0])}  # video 1 has no clip
    run = make_run(tmp_path, "train-lstm", split=2, config={}, files={"predictions.npz": bad})
    assert cli_run(["evaluate", str(run.path)]) == 2
    assert "videos without clips: [1]" in capsys.readouterr().err
    old = {k: v for k, v in good.items() if k != "clip_pred"}  # written before the paper's hard clip vote
    run = make_run(tmp_path, "train-lstm", split=3, config={}, files={"predictions.npz": old})
    assert cli_run(["evaluate", str(run.path)]) == 2
    assert "has no clip_pred" in capsys.readouterr().err


def test_headline_vote_uses_the_stored_hard_clip_votes(tmp_path: Path):
    # one video, three clips: the stored hard votes say class 0 twice, the mean softmax says class 1
    files = video_files(["a", "b"], ["v0.avi"], [0], [0, 0, 0], [[.4, .6], [.45, .55], [.9, .1]])
    files["predictions.npz"]["clip_pred"] = np.array([0, 0, 1])
    run = make_run(tmp_path, "train-lstm", split=1, config={}, files=files)
    from actiontk.stages.evaluate import load_predictions, summary

    s = summary(load_predictions(run.path / "predictions.npz"))
    assert s["top1_vote"] == 1.0 and s["clip_accuracy"] == pytest.approx(2 / 3)
    assert s["clip_accuracy_mean"] == pytest.approx(1 / 3)


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom actiontk.cli import run\nassert run(['evaluate', '--help']) == 0\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'jinja2', 'h5py') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# -- a real train-lstm run -------------------------------------------------------------------------------


def test_evaluate_a_real_train_lstm_run(trained: Path, capsys):
    run_dir = only_run(trained, "train-lstm")
    assert cli_run(["evaluate", "--cache", str(trained), "--report", "json", "--report", "html,md"]) == 0
    out, err = capsys.readouterr()
    assert f"newest training run with predictions: train-lstm/{run_dir.name}" in " ".join(err.split())
    eval_dir = only_run(trained, "evaluate")
    key = json.loads((run_dir / "run.json").read_text())["key"]
    assert json.loads((eval_dir / "run.json").read_text())["upstream"] == {"train-lstm": key}  # its own run
    metrics_file = eval_dir / "metrics.json"
    assert out == metrics_file.read_text()  # --report json prints exactly metrics.json
    m = json.loads(out)
    stage_summary = json.loads((run_dir / "summary.json").read_text())
    s = m["summary"]
    assert s["top1_vote"] == pytest.approx(stage_summary["video_accuracy_vote"])
    assert s["top1_mean_score"] == pytest.approx(stage_summary["video_accuracy_mean"])
    assert s["clip_accuracy"] == pytest.approx(stage_summary["clip_accuracy"])
    assert set(s) == {"top1_vote", "top1_mean_score", "clip_accuracy", "clip_accuracy_mean", "mean_class_accuracy",
                      "mAP", "top3", "top5"}
    assert s["clip_accuracy_mean"] == pytest.approx(stage_summary["clip_accuracy_mean"])
    assert m["kind"] == "video" and m["counts"] == {"items": 6, "clips": 12, "classes": 6, "classes_with_items": 6}
    assert np.asarray(m["confusion"]).sum() == 6 and len(m["per_class"]) == 6
    report = eval_dir / "report"
    html = (report / "report.html").read_text()
    for needle in ('id="cm-canvas"', 'id="per-class" class="sortable"', 'alt="loss and accuracy per epoch"',
                   "Published figures", f"train-lstm/{run_dir.name}", "extract/", "cubes/", "train-3d/"):
        assert needle in html, needle
    assert html.count('alt="frame ') >= 8  # attention tiles of at least two clips
    md = (report / "report.md").read_text()
    for name in ("confusion.png", "curves.png", "attention-01.png"):
        assert f"]({name})" in md
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_overlays_use_the_decoded_frames(trained: Path):
    from actiontk.report import attention_items, media
    from actiontk.stages.evaluate import evaluate_run, find_run
    from actiontk.video.readers import get_reader

    ev = evaluate_run(find_run(trained, None, log=lambda m: None), log=lambda m: None)
    items, note = attention_items(ev, log=lambda m: None)
    assert note is None and items and all(it.on_frames for it in items)
    a = np.load(ev.run.path / "attention_samples.npz")
    first = items[0]
    i = int(np.flatnonzero(a["rel"] == first.rel)[0])
    root = Path(ev.run.info["inputs"]["root"])
    frames = get_reader("pyav").read(root / first.rel)  # decoded independently, with the other backend
    start = int(a["start"][i])
    expected = media.overlay(media.to_tile(frames[start]), a["attention"][i][0])
    assert np.abs(first.tiles[0].rgb.astype(int) - expected.astype(int)).max() <= 8  # decoders may differ a little
    blank = media.overlay(None, a["attention"][i][0])
    assert np.abs(first.tiles[0].rgb.astype(int) - blank.astype(int)).mean() > 5  # not drawn on grey


def test_explicit_run_and_out(trained: Path, tmp_path: Path, capsys, monkeypatch):
    run_dir = only_run(trained, "train-lstm")
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    out = tmp_path / "reports"
    assert cli_run(["evaluate", f"train-lstm/{run_dir.name[:6]}", "--cache", str(trained), "--out", str(out),
                    "--open"]) == 0
    assert (out / "report.html").is_file() and not (out / "report.md").exists()
    assert opened == [(out / "report.html").resolve().as_uri()]
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert cli_run(["evaluate", str(run_dir), "--report", "html", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in one_line_error(capsys)
    assert cli_run(["evaluate", str(only_run(trained, "cubes"))]) == 2
    assert "is a cubes run" in one_line_error(capsys)


# -- three splits ----------------------------------------------------------------------------------------


def test_mean_and_std_over_three_splits(tmp_path: Path, capsys):
    cubes = {s: make_run(tmp_path, "cubes", split=s, config={"from": "train-3d", "lr": 1}) for s in (1, 2, 3)}
    other_cubes = make_run(tmp_path, "cubes", split=3, config={"from": "train-3d", "lr": 2})
    config = {"model": {"fusion": "early"}}
    r1 = accuracy_run(tmp_path, 1, 2, config, {"cubes": cubes[1].key})
    accuracy_run(tmp_path, 2, 3, config, {"cubes": cubes[2].key})
    accuracy_run(tmp_path, 2, 0, {"model": {"fusion": "late"}}, {"cubes": cubes[2].key})  # another config
    accuracy_run(tmp_path, 3, 1, config, {"cubes": other_cubes.key})  # same config, other upstream config
    assert cli_run(["evaluate", str(r1.path), "--report", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["over_splits"] is None  # split 3 was run with other cubes

    r3 = accuracy_run(tmp_path, 3, 4, config, {"cubes": cubes[3].key})
    assert cli_run(["evaluate", str(r1.path), "--report", "json", "--report", "md", "--out", str(tmp_path / "r")]) == 0
    over = json.loads(capsys.readouterr().out)["over_splits"]
    assert over["runs"] == {"1": r1.short, "2": over["runs"]["2"], "3": r3.short}
    assert [over["per_split"][s]["top1_vote"] for s in "123"] == [0.5, 0.75, 1.0]
    assert over["mean"]["top1_vote"] == pytest.approx(0.75)
    assert over["std"]["top1_vote"] == pytest.approx(0.25)
    assert "| top-1 accuracy (clip voting) | 50.0% | 75.0% | 100.0% | 75.0 ± 25.0% |" in (
        tmp_path / "r" / "report.md").read_text()


# -- escaping --------------------------------------------------------------------------------------------


def test_untrusted_class_names_are_escaped(evil_run: Run, tmp_path: Path):
    assert cli_run(["evaluate", str(evil_run.path), "--report", "html", "--report", "md", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert EVIL not in html and "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html  # as text, in the tables
    assert "Tom &amp; Jerry&#39;s &#34;fight&#34;" in html
    data = re.search(r'<script type="application/json" id="cm-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and json.loads(data)["classes"] == CLASSES  # tojson escapes <, >, &, '
    md = (tmp_path / "report.md").read_text()
    assert "\\<script\\>alert\\(\"x\"\\)\\</script\\>" in md and EVIL not in md
    assert "\\$x\\$ \\[link\\]\\(http://a.b\\) \\*b\\* \\| c" in md


# -- still images (train-gap) ----------------------------------------------------------------------------


def test_image_path_layouts(tmp_path: Path):
    from actiontk.report.media import image_path

    (tmp_path / "mpii" / "images").mkdir(parents=True)
    (tmp_path / "mpii" / "images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "folder" / "cls").mkdir(parents=True)
    (tmp_path / "folder" / "cls" / "b.jpg").write_bytes(b"x")
    assert image_path("mpii", tmp_path / "mpii", "a.jpg") == tmp_path / "mpii" / "images" / "a.jpg"
    assert image_path("images", tmp_path / "folder", "cls/b.jpg") == tmp_path / "folder" / "cls" / "b.jpg"
    assert image_path("mpii", tmp_path / "mpii", "missing.jpg") is None
    assert image_path("images", tmp_path / "folder", "../mpii/images/a.jpg") is None  # leaves the root


def test_image_run(tmp_path: Path, capsys):
    from PIL import Image

    from actiontk.report import attention_items, media
    from actiontk.stages.evaluate import evaluate_run

    root = tmp_path / "mpii"
    (root / "images").mkdir(parents=True)
    rels = ["001.jpg", "002.jpg", "003.jpg", "004.jpg"]
    for i, rel in enumerate(rels):
        Image.fromarray(np.full((60, 90, 3), (60 * i, 200 - 40 * i, 90), np.uint8)).save(root / "images" / rel)
    classes = ["riding a bike", "<b>cooking</b>", "running"]
    scores = np.array([[.8, .1, .1], [.15, .75, .1], [.2, .7, .1], [.1, .2, .7]], np.float32)
    files = {
        "predictions.npz": dict(classes=np.array(classes), image_rel=np.array(rels), image_label=np.array([0, 0, 1, 2]),
                                image_scores=scores),
        "attention_samples.npz": dict(rel=np.array(rels[:2]), label=np.array([0, 0]), pred=np.array([0, 1]),
                                      topdown=np.arange(32, dtype=np.float32).reshape(2, 4, 4) - 8,
                                      bottomup=np.ones((2, 4, 4), np.float32)),
    }
    run = make_run(tmp_path / "cache", "train-gap", split=1, config={"head": "gap"}, dataset="mpii", root=str(root),
                   files=files)
    assert cli_run(["evaluate", "--cache", str(tmp_path / "cache"), "--report", "json", "--report", "html"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["kind"] == "image" and set(m["summary"]) == {"top1", "mean_class_accuracy", "mAP"}
    assert m["summary"]["top1"] == pytest.approx(3 / 4)
    assert m["summary"]["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    # AP: class 0's positives rank 1st and 3rd (5/6), class 1's only positive ranks 2nd (1/2), class 2's 1st (1)
    assert m["summary"]["mAP"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    eval_dir = only_run(tmp_path / "cache", "evaluate")
    html = (eval_dir / "report" / "report.html").read_text()
    for needle in ("top-down (predicted class)", "bottom-up", "GAP-CNN + Pose", "31.6", "&lt;b&gt;cooking"):
        assert needle in html, needle
    ev = evaluate_run(run, log=lambda m: None)
    items, _ = attention_items(ev, log=lambda m: None)
    assert [it.correct for it in items] == [True, False] and all(it.on_frames for it in items)
    image = media.to_tile(media.read_image(root / "images" / rels[0]))
    assert np.array_equal(items[0].tiles[0].rgb, image)
    assert np.array_equal(items[0].tiles[1].rgb, media.overlay(image, files["attention_samples.npz"]["topdown"][0]))


def test_image_layout_without_images_folder(tmp_path: Path):
    from PIL import Image

    from actiontk.report import attention_items
    from actiontk.stages.evaluate import evaluate_run

    root = tmp_path / "folder"
    (root / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "cls" / "x.png")
    files = {
        "predictions.npz": dict(classes=np.array(["cls", "other"]), image_rel=np.array(["cls/x.png"]),
                                image_label=np.array([0]), image_scores=np.array([[.9, .1]])),
        "attention_samples.npz": dict(rel=np.array(["cls/x.png", "cls/gone.png"]), label=np.array([0, 0]),
                                      pred=np.array([0, 1]), topdown=np.ones((2, 2, 2)), bottomup=np.ones((2, 2, 2))),
    }
    run = make_run(tmp_path / "cache", "train-gap", split=1, config={}, dataset="images", root=str(root), files=files)
    items, _ = attention_items(evaluate_run(run, log=lambda m: None), log=lambda m: None)
    assert items[0].on_frames and not items[1].on_frames and "cls/gone.png not found" in items[1].note


# -- the page in a browser -------------------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    exe = "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else shutil.which("chromium")
    if not exe:
        pytest.skip(os.environ.get("ACTIONTK_NO_CHROMIUM")
                    or "no Chromium here (.ci/run installs Debian's chromium package: apt-get install -y chromium)")
    return exe


def load_page(exe: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """(the DOM after the scripts ran, the console messages Chromium logged)."""
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if "CONSOLE" in line]


def test_report_renders_in_chromium(evil_run: Run, tmp_path: Path):
    exe = chromium()
    # the console check can fail: a page with a script error is caught
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    _, console = load_page(exe, broken, tmp_path / "profile0")
    assert any("undefinedFunction" in line for line in console), console

    assert cli_run(["evaluate", str(evil_run.path), "--report", "html", "--out", str(tmp_path / "r")]) == 0
    dom, console = load_page(exe, tmp_path / "r" / "report.html", tmp_path / "profile1")
    assert console == []  # no error, no CSP violation, nothing logged
    assert 'data-ready="1"' in dom  # the report's script ran to its end
    assert "<td>&lt;script&gt;alert(\"x\")&lt;/script&gt;</td>" in dom  # the class name is text in the table
    assert "<script>alert" not in dom


def test_an_evaluate_run_is_listed_and_goes_stale_with_its_training_run(tmp_path: Path):
    import shutil

    from actiontk.stages.evaluate import evaluate_run
    from actiontk.stages.lifecycle import inspect_runs

    scores = np.array([[.8, .2], [.3, .7], [.6, .4]], np.float32)
    files = {"predictions.npz": dict(classes=np.array(["a", "b"]), image_rel=np.array(["1.jpg", "2.jpg", "3.jpg"]),
                                     image_label=np.array([0, 1, 1]), image_scores=scores)}
    from actiontk.stages import registry

    run = open_run(tmp_path / "cache", registry.TRAIN_GAP, registry.get(registry.TRAIN_GAP).schema, {"head": "gap"},
                   inputs={"dataset": "mpii", "root": str(tmp_path), "split": 1})  # current: not stale itself
    np.savez_compressed(run.path / "predictions.npz", **files["predictions.npz"])
    lifecycle.mark_complete(run, {})
    ev = evaluate_run(run, log=lambda m: None)
    assert ev.out.path.parent == tmp_path / "cache" / "evaluate" and (ev.out.path / "metrics.json").is_file()
    assert not (run.path / "metrics.json").exists()  # nothing is written into the training run
    st = {s.run.stage: s for s in inspect_runs(tmp_path / "cache")}["evaluate"]
    assert st.state == "complete" and st.progress == f"top-1 {2 / 3:.3f} mAP {ev.metrics['summary']['mAP']:.3f}"
    assert evaluate_run(run, log=lambda m: None).out.path == ev.out.path  # the same key: the same run
    shutil.rmtree(run.path)
    st = {s.run.stage: s for s in inspect_runs(tmp_path / "cache")}["evaluate"]
    assert st.state == "stale" and "is gone from the cache" in st.why[0] and st.removable


def test_the_entry_point_picks_by_dataset_and_split_or_takes_a_run(trained: Path):
    import io

    from rich.console import Console

    from actiontk.errors import UserError
    from actiontk.stages.evaluate import evaluate, find_run

    lstm = find_run(trained, None, log=lambda m: None)
    messages: list[str] = []
    ev = evaluate(trained, dataset="TOY", split=1, log=messages.append, console=Console(file=io.StringIO()))
    assert ev.run.path == lstm.path and ev.out.stage == "evaluate" and "evaluating the newest" in messages[0]
    assert evaluate(trained, trained=lstm, log=lambda m: None).out.path == ev.out.path  # a Run, as its name
    with pytest.raises(UserError, match="no finished training run of toy split 2 with predictions"):
        evaluate(trained, dataset="toy", split=2, log=lambda m: None)
    with pytest.raises(UserError, match="no finished training run of hmdb51 with predictions"):
        evaluate(trained, dataset="hmdb51", log=lambda m: None)
