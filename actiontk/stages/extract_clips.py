"""Clips for a video backbone in ``actiontk extract``: the frames of each video cut into clips of ``clip_len``
frames every ``clip_stride`` frames, batched across videos, through the weights' video transform and the
backbone, to one ``(C, t, h, w)`` map per clip.

A video's clips start at frames 0, clip_stride, 2 * clip_stride, ... (after ``--frame-stride``) and end within
the video; a video shorter than one clip gives one clip, its last frame repeated to ``clip_len``. Frames after
the last whole clip are not used (at most ``clip_stride - 1`` of them, the tail a sliding window leaves).
"""

from __future__ import annotations

import numpy as np

from actiontk.stages.extract_batch import Batcher


class ClipBatcher(Batcher):
    """:class:`Batcher` with clips as its items: ``add`` buffers frames per video and queues each clip once its
    frames are in; ``end`` queues the padded clip of a video shorter than one clip. ``batch_size`` counts clips;
    ``frames_done`` counts clips too."""

    def __init__(self, model, transform, device, precision: str, grid: int | None, clips_per_batch: int,
                 clip_len: int, clip_stride: int):
        super().__init__(model, transform, device, precision, grid, max(1, clips_per_batch))
        self.clip_len, self.clip_stride = clip_len, clip_stride
        self.buffers: dict[int, list[np.ndarray]] = {}  # vid -> frames from self.starts[vid] on
        self.starts: dict[int, int] = {}  # vid -> index of the buffer's first frame in the video
        self.clips: dict[int, int] = {}  # vid -> clips queued so far

    def add(self, vid: int, frames: np.ndarray) -> None:
        self.buffers.setdefault(vid, []).append(frames)
        self.starts.setdefault(vid, 0)
        self.clips.setdefault(vid, 0)
        buffered = np.concatenate(self.buffers[vid]) if len(self.buffers[vid]) > 1 else self.buffers[vid][0]
        first = self.clips[vid] * self.clip_stride - self.starts[vid]  # next clip's start within the buffer
        while first + self.clip_len <= len(buffered):
            super().add(vid, buffered[first:first + self.clip_len][None])  # (1, clip_len, H, W, 3)
            self.clips[vid] += 1
            first += self.clip_stride
        keep = min(first, len(buffered))  # frames before the next clip's start are no longer needed
        self.buffers[vid] = [buffered[keep:]]
        self.starts[vid] += keep

    def end(self, vid: int) -> None:
        """The video has no more frames: a video shorter than one clip gets its one, padded clip."""
        rest = self.buffers.pop(vid, [])
        if self.clips.pop(vid, 0) == 0 and rest and sum(len(f) for f in rest):
            frames = np.concatenate(rest)
            pad = np.repeat(frames[-1:], self.clip_len - len(frames), axis=0)
            super().add(vid, np.concatenate([frames, pad])[None])
        self.starts.pop(vid, None)

    def drop(self, vid: int) -> None:
        super().drop(vid)
        for d in (self.buffers, self.starts, self.clips):
            d.pop(vid, None)

    def compute(self, parts: list[tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
        torch = self.torch
        batches = []
        for _, clips in parts:  # (n, clip_len, H, W, 3) uint8; videos may differ in size
            x = torch.from_numpy(np.ascontiguousarray(clips))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            batches.append(self.transform(x.permute(0, 1, 4, 2, 3)))  # (n, T, 3, H, W) -> (n, 3, T, S, S)
        x = torch.cat(batches) if len(batches) > 1 else batches[0]  # (B, C, t, h, w) maps out
        pool = None if self.grid is None else \
            (lambda m: torch.nn.functional.adaptive_avg_pool3d(m, (m.shape[2], self.grid, self.grid)))
        return self.forward_maps(x, pool)
