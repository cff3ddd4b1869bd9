"""Disk space for features: how much a set of videos (or images) will take in the feature store, and the check
that refuses to start an extraction that cannot fit."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actiontk.cache.runs import human_bytes
from actiontk.errors import UserError

if TYPE_CHECKING:
    from actiontk.datasets import Sample


def estimate_bytes(samples: list[Sample], layer_shapes: dict[str, tuple[int, ...]], stride: int,
                   image: bool) -> int | None:
    """Rough size of the features of ``samples``: container frame counts of a sample of them, extrapolated.

    Counts come from :func:`estimated_frames`, which ignores a header's count that disagrees with the
    container's duration x rate or cannot fit in the file (a corrupt or hostile header claiming 2e9 frames
    must not block a whole dataset; that video is decoded and judged on its own)."""
    per_frame = sum(int(np.prod(s)) for s in layer_shapes.values()) * 2  # float16
    if image:
        return per_frame * len(samples)
    from actiontk.video.readers import estimated_frames

    picks = random.Random(0).sample(samples, min(16, len(samples)))
    counts: list[int] = []

    def probe() -> None:
        for s in picks:
            with contextlib.suppress(Exception):
                n = estimated_frames(s.path)
                if n:
                    counts.append(n)

    t = threading.Thread(target=probe, daemon=True)  # a hanging file must not block the estimate
    t.start()
    t.join(timeout=15)
    if not counts:
        return None
    frames = float(np.mean(counts)) / stride * len(samples)
    return int(frames * per_frame * 1.02)  # HDF5 metadata: ~2%


def check_disk(run_dir: Path, todo: list[Sample], shapes: dict[str, tuple[int, ...]], stride: int,
               image: bool) -> None:
    """Refuse (a UserError with the ways to shrink the features) when ``todo`` will not fit on ``run_dir``'s disk."""
    need = estimate_bytes(todo, shapes, stride, image)
    if need is None:
        return
    free = shutil.disk_usage(run_dir).free
    if need > free * 0.98:
        raise UserError(
            f"the features need about {human_bytes(need)} but only {human_bytes(free)} is free on {run_dir}",
            "shrink them with --frame-stride 2 or --grid 7, or use --cache on a bigger disk",
        )
