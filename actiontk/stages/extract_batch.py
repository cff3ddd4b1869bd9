"""The backbone side of ``actiontk extract``: frames of several videos batched together, through the weights'
transform and the backbone (AMP, channels_last on CUDA), optionally grid-pooled, to float16 maps routed back to
their videos."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from actiontk.errors import UserError


class Batcher:
    """Runs the backbone on batches of frames drawn from several videos and routes the maps back."""

    def __init__(self, model, transform, device, precision: str, grid: int | None, batch_size: int):
        import torch

        self.torch = torch
        self.model, self.transform, self.device = model, transform, device
        self.grid, self.batch_size = grid, batch_size
        self.autocast = None
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            self.autocast = (device.type, dtype)
        self.pending: list[tuple[int, np.ndarray]] = []  # (vid, frames (n, H, W, 3) uint8) in arrival order
        self.pending_frames = 0
        self.frames_done = 0

    def add(self, vid: int, frames: np.ndarray) -> None:
        self.pending.append((vid, frames))
        self.pending_frames += len(frames)

    def end(self, vid: int) -> None:
        """The video has no more frames (frames need nothing more; see extract_clips.ClipBatcher)."""

    def drop(self, vid: int) -> None:
        self.pending = [(v, f) for v, f in self.pending if v != vid]
        self.pending_frames = sum(len(f) for _, f in self.pending)

    def has_pending(self, vid: int) -> bool:
        return any(v == vid for v, _ in self.pending)

    def ready(self) -> bool:
        return self.pending_frames >= self.batch_size

    def run(self, flush: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (vid, {layer: (n, C, h, w) float16}) for each full batch (and the remainder when flushing)."""
        while self.pending_frames >= self.batch_size or (flush and self.pending_frames):
            take, parts = self.batch_size, []
            while take and self.pending:
                vid, frames = self.pending[0]
                n = min(take, len(frames))
                parts.append((vid, frames[:n]))
                if n == len(frames):
                    self.pending.pop(0)
                else:
                    self.pending[0] = (vid, frames[n:])
                take -= n
                self.pending_frames -= n
            yield from self._forward(parts)

    def _forward(self, parts: list[tuple[int, np.ndarray]]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        out = self.compute(parts)
        start = 0
        for vid, frames in parts:
            n = len(frames)
            yield vid, {k: v[start:start + n] for k, v in out.items()}
            start += n
        self.frames_done += start

    def compute(self, parts: list[tuple[int, np.ndarray]]) -> dict[str, np.ndarray]:
        torch = self.torch
        groups: dict[tuple[int, int], list[np.ndarray]] = {}
        order = []
        for _, frames in parts:  # frames of different videos may differ in size: transform per shape
            key = frames.shape[1:3]
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append(frames)
        batches = []
        for key in order:
            x = torch.from_numpy(np.concatenate(groups[key]))  # (B, H, W, 3) uint8
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = self.transform(x.permute(0, 3, 1, 2))  # (B, 3, S, S) float, normalized
            batches.append(x)
        x = torch.cat(batches) if len(batches) > 1 else batches[0]
        if len(order) > 1:  # restore arrival order when shapes were grouped
            x = _reorder(torch, x, parts, order)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        pool = None if self.grid is None else \
            (lambda m: torch.nn.functional.adaptive_avg_pool2d(m, self.grid))
        return self.forward_maps(x, pool)

    def forward_maps(self, x, pool=None) -> dict[str, np.ndarray]:
        """The backbone on the batch ``x`` (under the run's precision), each level pooled by ``pool`` when given,
        as float16 arrays, the cache's storage type; a value float16 cannot hold is a one-line error."""
        torch = self.torch
        with torch.inference_mode():
            ctx = torch.autocast(*self.autocast) if self.autocast else contextlib.nullcontext()
            with ctx:
                maps = self.model(x)
            result = {}
            for layer, m in maps.items():
                m = m.float()
                if pool is not None:
                    m = pool(m)
                half = m.to(torch.float16)
                if not bool(torch.isfinite(half).all()):
                    biggest = float(m.abs().max())
                    raise UserError(f"{layer} features do not fit in float16 (largest magnitude {biggest:.3g}, "
                                    "the cache's storage type): the weights give values out of range",
                                    "check the --weights file; the shards finished so far are kept")
                result[layer] = half.contiguous().cpu().numpy()  # (B, C, h, w), or (B, C, t, h, w) for clips
        return result


def _reorder(torch, x, parts, order):
    """Rows of ``x`` are grouped by frame shape (in ``order``); put them back in the order of ``parts``."""
    offsets, pos = {}, 0
    for key in order:
        offsets[key] = pos
        pos += sum(len(f) for _, f in parts if f.shape[1:3] == key)
    index = []
    for _, frames in parts:
        key = frames.shape[1:3]
        index.extend(range(offsets[key], offsets[key] + len(frames)))
        offsets[key] += len(frames)
    return x[torch.as_tensor(index)]
