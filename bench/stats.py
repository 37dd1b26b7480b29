"""The bench's one percentile rule and its one memory sampler.

Percentiles are nearest-rank, the rule wrk applies to its own latency histogram: the value at rank
``round(p / 100 * n + 0.5)`` of the sorted sample, with C's ``round`` (halves away from zero). In-process
timings and the fallback load generator use it too, so every p50 and p99 in the table means the same thing.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Sequence
from typing import Any

MB = 1_000_000


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``values`` (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.floor(p / 100 * len(ordered) + 0.5 + 0.5)))
    return float(ordered[rank - 1])


def summary_ms(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and mean of latencies in milliseconds, rounded to 0.01 ms."""
    mean = sum(values_ms) / len(values_ms) if values_ms else float("nan")
    return {"p50": round(percentile(values_ms, 50), 2), "p99": round(percentile(values_ms, 99), 2),
            "mean": round(mean, 2)}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` now, in MB (10^6 bytes)."""
    import psutil

    return psutil.Process(pid).memory_info().rss / MB


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process ``pid`` and its live children (``persona serve --workers N``'s
    workers) have used so far, in seconds."""
    import psutil

    total = 0.0
    for process in tree(pid):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def tree(pid: int) -> list[Any]:
    """Process ``pid`` and its children, recursively (``psutil.Process`` objects)."""
    import psutil

    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def rss_by_process(pid: int) -> dict[int, float]:
    """The resident memory of process ``pid`` and of each of its children now, in MB, by process id."""
    import psutil

    found = {}
    for process in tree(pid):
        with contextlib.suppress(psutil.Error):
            found[process.pid] = process.memory_info().rss / MB
    return found


def uss_mb(pid: int) -> float:
    """The memory only process ``pid`` holds (its unique set size: what it costs beyond what others share), in MB."""
    import psutil

    return psutil.Process(pid).memory_full_info().uss / MB


class RssSampler:
    """The resident memory of a process, sampled every ``every`` seconds while the block runs."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every = pid, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def highest(self) -> float:
        return round(max(self.samples, default=0.0), 1)

    def sample(self) -> float:
        """Take one sample now (also recorded); MB."""
        value = rss_mb(self.pid)
        self.samples.append(value)
        return value

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class TreeRssSampler(RssSampler):
    """:class:`RssSampler` over process ``pid`` and its children (``persona serve --workers N``): each sample is their
    total, and :attr:`by_process` keeps each process's highest sample."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(pid, every)
        self.by_process: dict[int, float] = {}

    def sample(self) -> float:
        found = rss_by_process(self.pid)
        for pid, mb in found.items():
            self.by_process[pid] = max(self.by_process.get(pid, 0.0), mb)
        total = sum(found.values())
        self.samples.append(total)
        return total
