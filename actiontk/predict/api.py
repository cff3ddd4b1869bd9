"""The Python API of ``actiontk predict``: :func:`load` a trained run, then :meth:`Predictor.predict` videos, images
or frames.

::

    import actiontk

    predictor = actiontk.load()                  # the newest complete train-lstm or train-gap run
    result = predictor.predict("clip.mp4")       # a path, or frames as a uint8 array
    result.label_vote, result.top_k(3)           # the paper's video label, the 3 best classes by mean score

A video goes through the pipeline of "Action Recognition with Joint Attention on Multi-Level Deep Features"
(Sec. 3): its frames are decoded at the extract run's frame stride and streamed through the backbone in batches
(never all frames at once: the maps pooled to the grid are small, and beyond a bounded amount they wait in a
temporary file, :mod:`actiontk.predict.buffer`), then the 3D convnet turns each level's maps into cubes exactly as
``train-3d`` wrote them (temporal centering, chunks of 64 frames with a halo of 2), and the joint attention LSTM
reads clips of ``clip_len`` steps every ``clip_stride`` frames, as ``train-lstm`` did for its test predictions.
A still image goes through the extract run's backbone and the GAP head of the generalized attentional pooling
method (Secs. III-IV), or through the fine-tuned network with the run's centre crop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actiontk.cache.runs import Run, list_runs, resolve_cache_root, run_by_name
from actiontk.datasets.base import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from actiontk.errors import UserError
from actiontk.predict import rebuild
from actiontk.predict.buffer import DEFAULT_MEMORY, FrameBuffer
import contextlib

DECODE_CHUNK = 16  # frames per decoded chunk, as extract's decoders send them
CUBE_CHUNK = 64  # frames per 3D-convnet pass, as train-3d's write_cubes (LevelConv3D.cubes_chunked's default)
CLIP_BATCH = 16  # clips per LSTM pass
CACHE_PREFIX = "predict/"  # rel of an input's features in the extract run (--cache-features)


class InputError(Exception):
    """One input could not be predicted (unreadable, undecodable, of the wrong kind): the reason, one line."""


# -- results ----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """The prediction of one video or image.

    Every run: ``classes`` (K names), ``scores`` (K,) — a video's mean clip softmax (the mean-score rule, ours) or an
    image's softmax — and ``label`` (the headline label: for a video the paper's rule, for an image the argmax).
    Videos: ``label_vote`` (the majority of the clips' labels, each clip labelled by the hard vote of its last L2
    steps, "Action Recognition with Joint Attention on Multi-Level Deep Features", Sec. 3.5; ties ours),
    ``label_mean`` (argmax of ``scores``), ``clip_starts`` (N,), ``clip_scores`` (N, K), ``clip_labels`` (N,),
    ``step_scores`` (N, L, K) per-step softmax, ``attention`` (N, L, h, w) the LSTM's attention per clip and step,
    ``frame_attention`` (T, h, w) per sampled frame (overlapping clips averaged), ``frame_scores`` (T, K) per
    sampled frame (NaN where no clip covers it), ``frames`` T and ``frame_stride``. Images: ``topdown`` (h, w) the
    predicted class's top-down map, ``bottomup`` (h, w) the class-agnostic map (None for the mean-pool head) and
    ``attention`` (h, w) their product, the map GAP's score averages.
    """

    kind: str
    classes: list[str]
    scores: np.ndarray
    label: int
    source: str | None = None
    run: str = ""
    label_vote: int | None = None
    label_mean: int | None = None
    clip_starts: np.ndarray | None = None
    clip_scores: np.ndarray | None = None
    clip_labels: np.ndarray | None = None
    step_scores: np.ndarray | None = None
    attention: np.ndarray | None = None
    frame_attention: np.ndarray | None = None
    frame_scores: np.ndarray | None = None
    topdown: np.ndarray | None = None
    bottomup: np.ndarray | None = None
    frames: int = 1
    frame_stride: int = 1
    seconds: float = 0.0
    cached_features: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def label_name(self) -> str:
        return self.classes[self.label]

    @property
    def clips(self) -> int:
        return 0 if self.clip_starts is None else len(self.clip_starts)

    def top_k(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best classes by ``scores``, best first, with their probabilities."""
        order = np.argsort(-self.scores, kind="stable")[:max(1, k)]
        return [(self.classes[i], float(self.scores[i])) for i in order]

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        """What ``actiontk predict --json`` writes for this input (no arrays beyond the top k)."""
        out: dict[str, Any] = {"input": self.source, "kind": self.kind, "run": self.run,
                               "top_k": [{"class": c, "prob": round(p, 6)} for c, p in self.top_k(k)],
                               "label": self.label_name}
        if self.kind == "video":
            out.update({"label_vote": self.classes[self.label_vote], "label_mean": self.classes[self.label_mean],
                        "clips": self.clips, "frames": self.frames, "frame_stride": self.frame_stride})
        out["seconds"] = round(self.seconds, 3)
        return out


# -- finding the run ---------------------------------------------------------------------------------------------


def kind_of(path: Path) -> str | None:
    """``video``, ``image`` or None, by the file's extension."""
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_EXTENSIONS else "image" if suffix in IMAGE_EXTENSIONS else None


STAGE_OF = {"video": rebuild.VIDEO_STAGE, "image": rebuild.IMAGE_STAGE}


def looks_like_run(text: str, cache_root: Path) -> bool:
    """Whether ``text`` names a run rather than an input: a folder holding run.json, or ``STAGE/KEY`` of a
    predicting stage that is not a file or folder here."""
    p = Path(text).expanduser()
    if p.is_dir() and (p / "run.json").is_file():
        return True
    if p.exists():
        return False
    stage = text.split("/", 1)[0]
    return stage in rebuild.PREDICTOR_STAGES and "/" in text


def find_run(cache_root: Path, run: str | Path | Run | None, kinds: tuple[str, ...] = ("video", "image"),
             log: Callable[[str], None] | None = None) -> Run:
    """The train-lstm or train-gap run to predict with: named (a Run, its folder, or ``STAGE/KEY``) or the newest
    complete one of a stage serving ``kinds``."""
    from actiontk.stages import registry

    if isinstance(run, Run):
        chosen = run
    elif run is not None:
        chosen = run_by_name(cache_root, str(run), rebuild.PREDICTOR_STAGES, "train-lstm or train-gap run")
    else:
        stages = [STAGE_OF[k] for k in kinds]
        candidates = [r for s in stages for r in list_runs(cache_root, s) if registry.is_complete(r)]
        candidates.sort(key=lambda r: r.info.get("created", ""), reverse=True)
        if not candidates:
            what = " or ".join(stages)
            raise UserError(f"no complete {what} run in {cache_root}",
                            "train one first (`actiontk run`, `actiontk train-gap`, or `actiontk demo`), or pass "
                            "--cache")
        chosen = candidates[0]
    if chosen.stage not in rebuild.PREDICTOR_STAGES:
        raise UserError(f"{chosen.short} is a run of {chosen.stage}; predict applies a trained train-lstm or train-gap "
                        "run", "name one of those (`actiontk status` lists them)")
    if not registry.is_complete(chosen):
        raise UserError(f"{chosen.short} is not complete", "finish its training first (`actiontk status` says why)")
    return chosen


def load(run: str | Path | Run | None = None, *, cache: str | Path | None = None, device: str = "auto",
         batch_size: int | None = None, kind: str | None = None,
         log: Callable[[str], None] | None = None) -> Predictor:
    """A :class:`Predictor` for a trained run.

    ``run``: a ``train-lstm`` (videos) or ``train-gap`` (images) run — its folder, ``STAGE/KEY`` as ``actiontk status``
    shows it, or None for the newest complete one (of ``kind`` = ``"video"`` or ``"image"`` when given). ``cache``:
    the cache root (default: ``$ACTIONTK_CACHE``, as the commands). ``device``: auto, cpu, cuda or cuda:N.
    ``batch_size``: frames per backbone pass (default: the extract run's).
    """
    cache_root = resolve_cache_root(cache)
    if kind is not None and kind not in STAGE_OF:
        raise UserError(f"kind must be video or image, got {kind!r}")
    chosen = find_run(cache_root, run, (kind,) if kind else ("video", "image"), log)
    return Predictor(chosen, cache_root, device=device, batch_size=batch_size, log=log)


# -- the predictor -------------------------------------------------------------------------------------------------


class Predictor:
    """A trained run, rebuilt once, applied to any number of inputs (see :func:`load`)."""

    def __init__(self, run: Run, cache_root: Path, *, device: str = "auto", batch_size: int | None = None,
                 log: Callable[[str], None] | None = None, memory_bytes: int = DEFAULT_MEMORY):
        from actiontk.runtime import resolve_device

        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        self.run, self.cache_root = run, cache_root
        self.kind = "video" if run.stage == rebuild.VIDEO_STAGE else "image"
        self.device = resolve_device(device)
        self.classes = rebuild.classes_of(run)
        self.memory_bytes = memory_bytes
        self._log = log or (lambda message: None)
        self._decoder = None
        K = len(self.classes)
        if self.kind == "video":
            self.video = rebuild.video_models(cache_root, run, self.device, K)
            self.spec = self.video.features
            self.upstream = self.video.upstream
        else:
            self.image = rebuild.image_models(cache_root, run, self.device, K)
            self.spec = self.image.features
            self.upstream = self.image.upstream
        self.extractor = None
        if self.spec is not None:
            self.extractor = rebuild.FeatureExtractor(self.spec, self.device, batch_size or self._extract_batch())
            if self.extractor.identity_note:
                self._log(self.extractor.identity_note)
        self.frame_stride = self.spec.frame_stride if self.spec is not None else 1

    def _extract_batch(self) -> int:
        import json

        try:
            return int(json.loads((self.spec.run.path / "config.json").read_text())["resolved"]["batch_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return 32

    # -- public --------------------------------------------------------------------------------------------------

    def describe(self) -> str:
        """One line: the run and what it reads."""
        what = "videos" if self.kind == "video" else "images"
        extra = ""
        if self.spec is not None:
            extra = f" ({self.spec.backbone} {'+'.join(self.spec.layers)} @{self.spec.size}px"
            extra += f", frame stride {self.spec.frame_stride})" if self.kind == "video" else ")"
        return f"{self.run.short}: {what}, {len(self.classes)} classes{extra}, on {self.device}"

    def accepts(self, path: str | Path) -> bool:
        """Whether ``path``'s extension is of the kind this run predicts."""
        return kind_of(Path(path)) == self.kind

    def predict(self, x: str | Path | np.ndarray | Any, *, progress: Callable[[int], None] | None = None,
                cache_features: bool = False) -> Result:
        """Predict one input: a path (video or image file), uint8 frames ``(T, H, W, 3)`` of a video (the run's
        frame stride is applied to them), or an image as an ``(H, W, 3)`` uint8 array or a PIL image.

        ``progress(frames)`` is called as sampled frames go through the backbone. ``cache_features`` writes a
        file's maps into the extract run (and reads them back on a later call for the same unchanged file).
        Raises :class:`InputError` when the input cannot be read or decoded.
        """
        start = time.perf_counter()
        if isinstance(x, (str, Path)):
            path = Path(x).expanduser()
            if not path.is_file():
                raise InputError(f"no such file: {path}")
            result = self._predict_video_file(path, progress, cache_features) if self.kind == "video" \
                else self._predict_image(self.read_image(path), path, cache_features)
            result.source = str(x)
        else:
            arr = x if isinstance(x, np.ndarray) else np.asarray(getattr(x, "convert", lambda _: x)("RGB"))
            if arr.dtype != np.uint8 or arr.shape[-1] != 3 or arr.ndim not in (3, 4):
                raise InputError(f"expected uint8 frames (T, H, W, 3) or an image (H, W, 3), got {arr.dtype} "
                                 f"{arr.shape}")
            if self.kind == "video":
                frames = arr if arr.ndim == 4 else arr[None]
                frames = frames[::self.frame_stride]
                chunks = (frames[i:i + DECODE_CHUNK] for i in range(0, len(frames), DECODE_CHUNK))
                result = self._predict_video(chunks, progress, None, None)
            else:
                if arr.ndim != 3:
                    raise InputError(f"{self.run.short} predicts still images: give one (H, W, 3) image, got frames "
                                     f"{arr.shape}")
                from PIL import Image

                result = self._predict_image(Image.fromarray(arr), None, False)
        result.run = self.run.short
        result.seconds = time.perf_counter() - start
        return result

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding -------------------------------------------------------------------------------------------------

    def decoder(self):
        """The run's own decoders (primary and fallback, in a killable worker process), made on first use."""
        if self._decoder is None:
            from actiontk.video import SafeDecoder
            from actiontk.video.readers import other_backend

            backend = self.spec.backend or "pyav"
            self._decoder = SafeDecoder(backend=backend, fallback=other_backend(backend), timeout=self.spec.timeout)
        return self._decoder

    def frames(self, path: str | Path, stride: int = 1, chunk: int = DECODE_CHUNK) -> Iterator[np.ndarray]:
        """A video's upright frames as the run's decoders give them, ``chunk`` at a time, decoded ahead in a thread
        (at most a few chunks held). Raises :class:`InputError` when every decoder fails."""
        from actiontk.video import DecodeError

        out: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()

        def work() -> None:
            try:
                for c in self.decoder().iter_chunks(path, stride=stride, chunk=chunk):
                    while not stop.is_set():
                        try:
                            out.put(("chunk", c), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                out.put(("end", None))
            except DecodeError as e:
                out.put(("fail", e.reason))
            except Exception as e:  # a bug in a reader: this input fails, the next one goes on
                out.put(("fail", f"internal error while decoding: {type(e).__name__}: {e}"))

        thread = threading.Thread(target=work, daemon=True, name="predict-decode")
        thread.start()
        try:
            while True:
                kind, data = out.get()
                if kind == "chunk":
                    yield data
                elif kind == "end":
                    return
                else:
                    raise InputError(f"cannot decode: {data}")
        finally:
            stop.set()
            while thread.is_alive():
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.1)
            thread.join()

    def read_image(self, path: Path):
        from actiontk.data.images import load_rgb

        try:
            return load_rgb(path)
        except Exception as e:  # PIL raises OSError, ValueError, DecompressionBombError...
            raise InputError(f"cannot read image: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    # -- videos ------------------------------------------------------------------------------------------------

    def _cache_entry(self, path: Path):
        """(FeatureReader, rel) when this unchanged file's maps are in the extract run, else (None, rel)."""
        from actiontk.cache import features as store

        rel = CACHE_PREFIX + str(path.resolve()).lstrip("/")
        index = store.load_index(self.spec.run.path)
        entry = index.videos.get(rel)
        if entry is not None and entry.get("fingerprint") == store.fingerprint(path):
            return store.FeatureReader(self.spec.run.path, index), rel
        return None, rel

    def _predict_video_file(self, path: Path, progress, cache_features: bool) -> Result:
        reader, rel = self._cache_entry(path) if cache_features else (None, None)
        if reader is not None:
            result = self._predict_video(None, progress, None, (reader, rel))
            result.cached_features = True
            return result
        writer = _CacheWriter(self.spec, path, rel) if cache_features else None
        try:
            result = self._predict_video(self.frames(path, stride=self.frame_stride), progress, writer, None)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is not None:
            writer.finish()
        return result

    def _predict_video(self, chunks, progress, writer, cached) -> Result:
        import torch

        v = self.video
        spec = v.features
        layers = v.levels
        maps = {lv: FrameBuffer(self.memory_bytes // max(1, 2 * len(layers))) for lv in layers}
        sums: dict[str, np.ndarray] = {}
        try:
            def store(batch: dict[str, np.ndarray]) -> None:
                if writer is not None:
                    writer.append(batch)
                for lv in layers:
                    maps[lv].append(batch[lv])
                    if v.temporal_center:
                        s = batch[lv].astype(np.float64).sum(0)
                        sums[lv] = s if lv not in sums else sums[lv] + s
                if progress is not None:
                    progress(len(maps[layers[0]]))

            if cached is not None:
                reader, rel = cached
                total = reader.num_frames(rel)
                for a in range(0, total, self.extractor.batch_size):
                    b = min(total, a + self.extractor.batch_size)
                    store({lv: reader.read(rel, lv, a, b) for lv in layers})
            else:
                pending: list[np.ndarray] = []
                count = 0
                for chunk in chunks:
                    pending.append(chunk)
                    count += len(chunk)
                    if count >= self.extractor.batch_size:
                        frames = np.concatenate(pending) if len(pending) > 1 else pending[0]
                        n = (len(frames) // self.extractor.batch_size) * self.extractor.batch_size
                        store(self._maps(frames[:n], layers))
                        pending, count = ([frames[n:]], len(frames) - n) if n < len(frames) else ([], 0)
                if count:
                    store(self._maps(np.concatenate(pending), layers))
            T = len(maps[layers[0]])
            if T == 0:
                raise InputError("no frames decoded")
            with torch.inference_mode():
                source = self._cubes(maps, sums, T) if v.conv3d is not None else maps
                result = self._clips(source, T)
            result.frame_stride = spec.frame_stride
            return result
        finally:
            for buf in maps.values():
                buf.close()

    def _maps(self, frames: np.ndarray, layers: list[str]) -> dict[str, np.ndarray]:
        return self.extractor.maps(frames)  # every layer of the extract run (a --cache-features entry holds all)

    def _cubes(self, maps: dict[str, FrameBuffer], sums: dict[str, np.ndarray], T: int) -> dict[str, FrameBuffer]:
        """Each level's cubes as train-3d's write_cubes computes them: the whole video's maps (temporal mean
        subtracted when the run centers them) through :meth:`LevelConv3D.cubes_chunked`'s chunks of 64 frames,
        each with a halo of 2 frames either side, kept in float16 (the cache's type)."""
        import torch

        from actiontk.models.conv3d import TEMPORAL_HALO

        v = self.video
        out = {}
        for lv in v.levels:
            level = v.conv3d.levels[lv]
            buf = FrameBuffer(self.memory_bytes // max(1, 2 * len(v.levels)))
            mean = None
            if v.temporal_center:
                mean = torch.from_numpy((sums[lv] / T).astype(np.float32)).to(self.device)
            for start in range(0, T, CUBE_CHUNK if T > CUBE_CHUNK else T):
                stop = min(T, start + CUBE_CHUNK) if T > CUBE_CHUNK else T
                lo, hi = (max(0, start - TEMPORAL_HALO), min(T, stop + TEMPORAL_HALO)) if T > CUBE_CHUNK else (0, T)
                x = torch.from_numpy(maps[lv].read(lo, hi)).to(self.device).float()[None]  # (1, n, C, h, w)
                if mean is not None:
                    x = x - mean
                y = level.cubes(x)[0, start - lo:stop - lo]
                buf.append(y.to(torch.float16).cpu().numpy())
            out[lv] = buf
            maps[lv].close()  # the maps of this level are no longer needed
        return out

    def _clips(self, source: dict[str, FrameBuffer], T: int) -> Result:
        """The LSTM on the clips of ``clip_len`` steps every ``clip_stride`` frames (train-lstm's test clips)."""
        import torch

        from actiontk.data.clips import clip_starts
        from actiontk.metrics import vote
        from actiontk.models.joint_lstm import clip_scores, clip_vote

        v = self.video
        K = len(self.classes)
        h, w = v.grid
        starts = clip_starts(T, v.clip_len, v.clip_stride)
        batch = CLIP_BATCH
        scores, preds, steps, atts = [], [], [], []
        frame_att = np.zeros((T, h * w), np.float64)
        frame_sc = np.zeros((T, K), np.float64)
        hits = np.zeros(T)
        try:
            for b0 in range(0, len(starts), batch):
                group = starts[b0:b0 + batch]
                xs = []
                for lv in v.levels:
                    windows = []
                    for s in group:
                        a = torch.from_numpy(np.ascontiguousarray(source[lv].read(s, s + v.clip_len))).float()
                        if len(a) < v.clip_len:  # a video shorter than a clip: its last frame repeated
                            a = torch.cat([a, a[-1:].expand(v.clip_len - len(a), *a.shape[1:])])
                        windows.append(a)
                    xs.append(torch.stack(windows).to(self.device))
                logits, att = v.lstm(xs)  # (B, L, K), (B, L, h*w)
                scores.append(clip_scores(logits, last=v.last).float().cpu().numpy())
                preds.append(clip_vote(logits, last=v.last)[0].cpu().numpy())
                step = torch.softmax(logits.float(), -1).cpu().numpy()
                steps.append(step)
                att_np = att.float().cpu().numpy()
                atts.append(att_np)
                for i, s in enumerate(group):
                    n = min(v.clip_len, T - s)
                    frame_att[s:s + n] += att_np[i, :n]
                    frame_sc[s:s + n] += step[i, :n]
                    hits[s:s + n] += 1
        finally:
            for buf in source.values():
                buf.close()
        clip_sc = np.concatenate(scores)
        clip_pr = np.concatenate(preds).astype(np.int64)
        covered = hits > 0
        frame_att[~covered] = 1.0 / (h * w)
        frame_att[covered] /= hits[covered, None]
        frame_sc[~covered] = np.nan
        frame_sc[covered] /= hits[covered, None]
        mean = clip_sc.mean(0)
        voted = vote(clip_pr, clip_sc, K)
        return Result(kind="video", classes=self.classes, scores=mean, label=voted, label_vote=voted,
                      label_mean=int(mean.argmax()), clip_starts=np.asarray(starts, np.int64), clip_scores=clip_sc,
                      clip_labels=clip_pr, step_scores=np.concatenate(steps),
                      attention=np.concatenate(atts).reshape(len(starts), v.clip_len, h, w),
                      frame_attention=frame_att.reshape(T, h, w).astype(np.float32),
                      frame_scores=frame_sc.astype(np.float32), frames=T)

    # -- images -----------------------------------------------------------------------------------------------

    def _predict_image(self, img, path: Path | None, cache_features: bool) -> Result:
        import torch

        m = self.image
        cached = False
        with torch.inference_mode():
            if m.finetune:
                import torchvision.transforms.functional as TF

                from actiontk.data.pose import center_crop_transform
                from actiontk.models.backbones import IMAGENET_MEAN, IMAGENET_STD

                try:
                    t = center_crop_transform((img.height, img.width), m.resize, m.crop)
                except ValueError as e:
                    raise InputError(f"image too small for the run's crop: {e}") from None
                x = TF.normalize(TF.to_tensor(t.apply_image(img)), IMAGENET_MEAN, IMAGENET_STD)[None]
            else:
                maps = None
                rel = None
                if path is not None and cache_features:
                    reader, rel = self._cache_entry(path)
                    if reader is not None:
                        maps = {m.layer: reader.read(rel, m.layer)}
                        cached = True
                if maps is None:
                    maps = self.extractor.maps(np.asarray(img)[None])
                    if path is not None and cache_features:
                        writer = _CacheWriter(self.spec, path, rel)
                        writer.append(maps)
                        writer.finish()
                x = torch.from_numpy(maps[m.layer].astype(np.float32))  # as CachedMaps hands them to the head
            out = m.net(x.to(self.device).float())
            probs = out.logits.float().softmax(-1)[0].cpu().numpy()
            pred = int(probs.argmax())
            top = out.topdown.float()[0, pred].cpu().numpy()
            bottom = out.bottomup.float()[0].cpu().numpy() if out.bottomup is not None else None
        att = top * bottom if bottom is not None else top
        return Result(kind="image", classes=self.classes, scores=probs, label=pred, topdown=top, bottomup=bottom,
                      attention=att, cached_features=cached)


class _CacheWriter:
    """``--cache-features``: one input's maps written into its extract run, under ``predict/<absolute path>``,
    through the run's own shard writer (the writer lock is held meanwhile, so no extraction writes at once)."""

    def __init__(self, spec: rebuild.FeatureSpec, path: Path, rel: str):
        from actiontk.cache import features as store
        from actiontk.cache.runs import lock_writer

        self.store, self.run = store, spec.run
        self.lock = lock_writer(spec.run.path, 0, what="an extraction or a predict --cache-features")
        shapes = {layer: spec.map_shape(layer) for layer in spec.layers}
        self.writer = store.ShardWriter(spec.run.path, shapes, rank=0, videos_per_shard=1,
                                        attrs={"run_key": spec.run.key})
        self.slot = self.writer.start(rel, fingerprint=store.fingerprint(path), label=-1, class_name="",
                                      frame_stride=spec.frame_stride)

    def append(self, maps: dict[str, np.ndarray]) -> None:
        self.slot.append(maps)

    def finish(self) -> None:
        try:
            self.slot.finish(backend="predict")
            self.writer.close()
            self.store.write_manifest(self.run.path)
        finally:
            self.lock.release()

    def abort(self) -> None:
        try:
            self.writer.abort()
        finally:
            self.lock.release()
