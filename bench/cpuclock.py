"""CPU accounting shared by the benchmarks: wall time, this process tree's CPU, and the CPU that other
processes used meanwhile ("foreign", in cores) -- a figure measured beside other jobs is only worth
reporting with that number next to it."""

from __future__ import annotations

import os
import resource
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> float:
    """Machine-wide busy CPU time (all cores) since boot, from /proc/stat (0 where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (decoder processes)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class Clock:
    """Wall time, this process's CPU (cores) and everybody else's CPU (foreign cores) over a section."""

    def __enter__(self) -> Clock:
        self.t0, self.own0, self.busy0 = time.perf_counter(), own_cpu_seconds(), cpu_busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        own = own_cpu_seconds() - self.own0
        busy = cpu_busy_seconds() - self.busy0
        self.cores = own / self.wall if self.wall else 0.0
        self.foreign = max(0.0, busy - own) / self.wall if self.wall else 0.0
