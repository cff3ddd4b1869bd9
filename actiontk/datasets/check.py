"""``actiontk datasets check``: compare a split's lists with the disk and optionally decode every video."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from collections.abc import Callable

from actiontk.datasets.base import Dataset, Problem, Sample, SplitIndex

DECODE_SIZE = 32  # decode at a tiny size: the check needs frame counts, not pixels


@dataclass
class CheckReport:
    index: SplitIndex
    problems: list[Problem] = field(default_factory=list)
    decoded: int = 0  # videos that decoded
    fallbacks: list[tuple[Sample, str]] = field(default_factory=list)  # decoded only by the fallback backend

    @property
    def ok(self) -> bool:
        return not self.problems

    def class_counts(self) -> list[tuple[str, int, int, int]]:
        """(class, train, test, problems) per class, in the dataset's class order."""
        train = Counter(s.class_name for s in self.index.train)
        test = Counter(s.class_name for s in self.index.test)
        bad = Counter(p.rel.split("/")[0] for p in self.problems if p.rel)
        return [(c, train[c], test[c], bad[c]) for c in self.index.classes]


def extra_videos(ds: Dataset, index: SplitIndex) -> list[Problem]:
    """Video files on disk that no list of the split mentions."""
    listed = {s.rel for s in index.train + index.test + index.unused}
    return [
        Problem("extra", f"on disk but in no list of split {index.split}: {rel}", rel=rel)
        for rel in ds.disk_videos()
        if rel not in listed
    ]


def check(
    ds: Dataset,
    split: int,
    *,
    decode: bool = False,
    backend: str = "pyav",
    timeout: float | None = 120.0,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    index = ds.index(split)
    report = CheckReport(index=index, problems=list(index.problems))
    report.problems += extra_videos(ds, index)
    if decode:
        _decode_all(report, backend=backend, timeout=timeout, workers=workers, progress=progress)
    return report


def _decode_all(report: CheckReport, *, backend, timeout, workers, progress) -> None:
    from actiontk.video import DecodeError, SafeDecoder

    samples = report.index.videos()
    local = threading.local()
    decoders: list[SafeDecoder] = []
    lock = threading.Lock()
    from actiontk.video.readers import other_backend

    fallback = other_backend(backend)

    def one(sample: Sample) -> tuple[Sample, Problem | None, str | None]:
        if not hasattr(local, "decoder"):
            local.decoder = SafeDecoder(backend=backend, fallback=fallback, timeout=timeout)
            with lock:
                decoders.append(local.decoder)
        try:
            result = local.decoder.decode(sample.path, size=DECODE_SIZE)
        except DecodeError as e:
            return sample, Problem("decode", f"{sample.rel}: {e.reason}", rel=sample.rel), None
        n = len(result.frames)
        announced = result.announced_frames  # read in the worker: a hanging file cannot block us here
        if announced is not None and n < announced:
            message = f"{sample.rel}: decoded {n} of the {announced} frames its container announces"
            return sample, Problem("truncated", message, rel=sample.rel), None
        used = None if not result.failures else f"{result.failures[0][0]} failed ({result.failures[0][1]})"
        return sample, None, used

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(one, s) for s in samples]
            for done, fut in enumerate(as_completed(futures), start=1):
                sample, problem, fell_back = fut.result()
                if problem is not None:
                    report.problems.append(problem)
                else:
                    report.decoded += 1
                    if fell_back:
                        report.fallbacks.append((sample, fell_back))
                if progress:
                    progress(done, len(samples))
    finally:
        for d in decoders:
            d.close()
