"""Clips of consecutive frames over a feature cache run, their collation, and a deterministic epoch sampler.

A video of T frames gives clips of L = ``clip_len`` consecutive frames starting every s = ``clip_stride``
frames: starts 0, s, 2s, ... while ``start + L <= T``. Frames after the last full clip are not covered:
no extra clip is added to reach the end (a clip ending at T would overlap its neighbour by a different
amount than all the others, and the paper's rule is a plain stride). A video shorter than L gives exactly
one clip, padded to L frames by repeating its last frame; such videos are listed in
:attr:`ClipDataset.padded` so the stage can say how many there were.

With ``temporal_center`` every clip has its video's temporal mean (per channel and location, over all the
video's frames) subtracted: what stays is how the maps change over time, the static scene is gone (see
:meth:`ClipDataset.video_mean` and docs/models.md, "Temporal centering").

Only the frames of the clip are read from HDF5 (``reader.read(rel, layer, a, b)``), never the whole video,
and readers open their files lazily in each process, so the dataset works with DataLoader workers.

:class:`ClipSampler` gives the index order of one epoch as a function of (seed, epoch) only, split across
ranks like ``DistributedSampler``: the training engine relies on it for bit-identical resumes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from actiontk.cache.features import FeatureReader
from actiontk.errors import UserError


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from non-negative integers (seed, epoch, rank, ...) with numpy's SeedSequence.

    Mixing (rather than adding, as ``DistributedSampler`` does with ``seed + epoch``) keeps streams of
    nearby seeds unrelated: seed 1 epoch 0 is not seed 0 epoch 1.
    """
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def clip_starts(num_frames: int, clip_len: int, clip_stride: int) -> list[int]:
    """Start frames of the clips of a video: 0, s, 2s, ... while start + L <= T; ``[0]`` when T < L.

    Trailing frames that do not fill a whole clip are left out (no clip is added to reach the end).
    """
    if num_frames < clip_len:
        return [0]
    return list(range(0, num_frames - clip_len + 1, clip_stride))


@dataclass(frozen=True)
class ClipSpec:
    """One clip: which video (``rel`` and its index in the dataset's video list), its label, its first frame."""

    rel: str
    label: int
    video: int
    start: int


class ClipDataset(Dataset):
    """Clips of ``clip_len`` frames every ``clip_stride`` frames over the videos of a feature cache run.

    ``videos`` is the split's list of (rel, label). Item ``i`` is
    ``{"x": {layer: (L, C, H, W)}, "label": int, "video": int, "start": int, **{name: (L, ...)}}``
    where the last entries come from the ``extra`` readers.

    ``extra`` maps a name to another feature run with the same videos (same rel keys and frame counts),
    e.g. attention maps or energies stored as a run of their own; its frames are read with the clip's
    window (and padded the same way). The layer read from an extra reader is the one called ``name`` when
    it has one, otherwise its only layer.

    ``temporal_center`` subtracts the video's temporal mean (:meth:`video_mean`) from the ``x`` maps (not
    from the extra entries).
    """

    def __init__(self, reader: FeatureReader, videos: list[tuple[str, int]], layers: list[str], *, clip_len: int,
                 clip_stride: int, dtype: torch.dtype = torch.float32,
                 extra: dict[str, FeatureReader] | None = None, temporal_center: bool = False):
        if clip_len < 1:
            raise UserError(f"--clip-len must be at least 1, got {clip_len}")
        if clip_stride < 1:
            raise UserError(f"--clip-stride must be at least 1, got {clip_stride}")
        if not layers:
            raise UserError("no feature layers were asked for", "pass at least one layer")
        self.reader = reader
        self.videos = [(str(rel), int(label)) for rel, label in videos]
        self.layers = list(layers)
        self.clip_len = clip_len
        self.clip_stride = clip_stride
        self.dtype = dtype
        self.temporal_center = bool(temporal_center)
        self._means: dict[tuple[int, str], torch.Tensor] = {}
        self._check_layers(reader, self.layers, "the feature cache")

        missing = [rel for rel, _ in self.videos if rel not in reader]
        if missing:
            raise MissingVideoError(_missing_message(missing, len(self.videos), reader))
        self.frames = [reader.num_frames(rel) for rel, _ in self.videos]

        self.extra: dict[str, tuple[FeatureReader, str]] = {}
        for name, other in (extra or {}).items():
            if name in ("x", "label", "video", "start"):
                raise ValueError(f"extra reader name {name!r} clashes with a key of the clip dict")
            self.extra[name] = (other, self._extra_layer(name, other))
            missing = [rel for rel, _ in self.videos if rel not in other]
            if missing:
                raise MissingVideoError(f"extra reader {name!r}: " + _missing_message(missing, len(self.videos), other))
            for (rel, _), frames in zip(self.videos, self.frames, strict=True):
                if other.num_frames(rel) != frames:
                    raise ValueError(f"extra reader {name!r} has {other.num_frames(rel)} frames for {rel!r}, the "
                                     f"feature cache has {frames}: the clip windows would not line up")

        self.clips: list[ClipSpec] = []
        self.padded: list[str] = []
        for v, ((rel, label), frames) in enumerate(zip(self.videos, self.frames, strict=True)):
            if frames < clip_len:
                self.padded.append(rel)
            self.clips.extend(ClipSpec(rel, label, v, s) for s in clip_starts(frames, clip_len, clip_stride))

    @staticmethod
    def _check_layers(reader: FeatureReader, layers: list[str], what: str) -> None:
        known = reader.layers()
        if not known:  # an empty run: there is nothing to check against (and no clip to read)
            return
        unknown = [layer for layer in layers if layer not in known]
        if unknown:
            raise UserError(f"{what} {reader.run_dir} has no layer {', '.join(unknown)}",
                            f"it has {', '.join(known)}")

    @staticmethod
    def _extra_layer(name: str, reader: FeatureReader) -> str:
        known = list(reader.layers())
        if name in known:
            return name
        if len(known) == 1:
            return known[0]
        raise ValueError(f"extra reader {name!r} ({reader.run_dir}) has layers {known}: name it after one of them")

    def __len__(self) -> int:
        return len(self.clips)

    def _window(self, reader: FeatureReader, rel: str, layer: str, start: int, frames: int) -> torch.Tensor:
        stop = min(start + self.clip_len, frames)
        a = reader.read(rel, layer, start, stop)  # (n, ...) float16, only the clip's frames
        x = torch.from_numpy(np.ascontiguousarray(a)).to(self.dtype)
        if len(x) < self.clip_len:  # a video shorter than the clip: repeat its last frame
            pad = x[-1:].expand(self.clip_len - len(x), *x.shape[1:])
            x = torch.cat([x, pad], dim=0)
        return x

    def video_mean(self, video: int, layer: str) -> torch.Tensor:
        """The temporal mean ``(C, H, W)`` of one video's maps of ``layer`` (all its frames), in float32.

        Read once per video and layer and kept (one map each: C*H*W floats, e.g. 100 KB for 512x7x7).
        """
        key = (video, layer)
        mean = self._means.get(key)
        if mean is None:
            a = self.reader.read(self.videos[video][0], layer)  # (T, C, H, W)
            mean = torch.from_numpy(a.astype(np.float32).mean(axis=0))
            self._means[key] = mean
        return mean

    def _maps(self, clip: ClipSpec, layer: str, frames: int) -> torch.Tensor:
        x = self._window(self.reader, clip.rel, layer, clip.start, frames)
        if self.temporal_center:
            x = (x.float() - self.video_mean(clip.video, layer)).to(self.dtype)
        return x

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip = self.clips[i]
        frames = self.frames[clip.video]
        item: dict[str, Any] = {
            "x": {layer: self._maps(clip, layer, frames) for layer in self.layers},
            "label": clip.label,
            "video": clip.video,
            "start": clip.start,
        }
        for name, (reader, layer) in self.extra.items():
            item[name] = self._window(reader, clip.rel, layer, clip.start, frames)
        return item


class MissingVideoError(KeyError):
    """Videos of the split are not in a feature cache. A KeyError whose message prints as written
    (a plain KeyError shows the repr of its argument, quotes and escapes included)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _missing_message(missing: list[str], total: int, reader: FeatureReader) -> str:
    shown = ", ".join(repr(r) for r in missing[:3]) + (", ..." if len(missing) > 3 else "")
    return (f"{len(missing)} of {total} videos are not in the feature cache {reader.run_dir}: {shown} "
            f"(extract them first, or check that the split belongs to this dataset)")


def collate_clips(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack clip dicts: ``{"x": {layer: (B, L, C, H, W)}, "label": (B,), "video": (B,), "start": (B,)}``
    plus every extra entry stacked to (B, L, ...)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    first = batch[0]
    out: dict[str, Any] = {"x": {layer: torch.stack([b["x"][layer] for b in batch]) for layer in first["x"]}}
    for key in ("label", "video", "start"):
        out[key] = torch.tensor([b[key] for b in batch], dtype=torch.long)
    for key in first:
        if key not in out:
            out[key] = torch.stack([b[key] for b in batch])
    return out


class ClipSampler(Sampler[int]):
    """Index order of one epoch as a function of (seed, epoch) only, sliced for this rank.

    With ``shuffle`` the order is a permutation drawn from ``derive_seed(seed, epoch)``; every rank draws the
    same one and takes ``order[rank::world]``. With ``pad`` (training) the order is first extended by its own
    beginning to a multiple of ``world``, as ``DistributedSampler`` does, so every rank gets the same number
    of samples (DDP needs the same number of steps on each rank). Without ``pad`` (evaluation) each sample is
    seen exactly once and ranks may get one sample more or less.
    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 pad: bool = True):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside a world of {world}")
        self.n, self.shuffle, self.seed, self.rank, self.world, self.pad = n, shuffle, seed, rank, world, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        """The whole epoch's order, before it is sliced for a rank."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.pad and self.world > 1 and self.n > 0:
            total = -(-self.n // self.world) * self.world
            while len(order) < total:  # repeat from the start (more than once when n < world)
                order += order[: total - len(order)]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.rank::self.world])

    def __len__(self) -> int:
        if self.pad and self.n > 0:
            return -(-self.n // self.world)
        return len(range(self.rank, self.n, self.world))
