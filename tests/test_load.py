"""A real load on loopback through the bench's load generator: `persona serve` (as `make serve` runs it, rate
limit off), thousands of requests to /v1/retrieve and /v1/ask at concurrency 32, zero errors, and resident
memory that stops growing.

Resident memory is sampled every 500 requests. A sample lands near one of two levels, about 50 MB apart,
depending on whether glibc has just returned freed memory (measured over 10,000 requests: 345-419 MB after the
first thousand, no trend). So the check compares the highest of four samples just after warm-up with the highest
of the last four: a leak raises both levels. The end may be at most 10% higher."""

from __future__ import annotations

import os
from pathlib import Path

from bench.load import LoadPlan, LoadResult, run_load
from bench.questions import bench_questions
from bench.servers import persona_server
from bench.stats import rss_mb
from tests.conftest import ROOT

REQUESTS = int(os.environ.get("PERSONA_LOAD_REQUESTS", "5000"))
STEP = 500  # requests between samples, split between the two endpoints
WARM = 2  # samples taken during warm-up (the first 1,000 requests) and left out


def load(url: str, requests: int) -> list[LoadResult]:
    """``requests`` split between the two endpoints, 32 at a time, a new question each."""
    return [run_load(url, LoadPlan(path, 32, requests=requests // 2), bench_questions())
            for path in ("/v1/retrieve", "/v1/ask")]


def test_load_zero_errors_and_flat_memory(tmp_path: Path) -> None:
    runs: list[LoadResult] = []
    samples: list[float] = []
    with persona_server(tmp_path / "index", ingest=True, seeds_dir=ROOT / "seeds") as server:
        for _ in range(REQUESTS // STEP):
            runs += load(server.url, STEP)
            samples.append(rss_mb(server.pid))
    early, late = max(samples[WARM:WARM + 4]), max(samples[-4:])
    print("load test:", [run.as_dict() for run in runs], "RSS samples (MB):", [round(s, 1) for s in samples])
    assert sum(run.requests for run in runs) >= REQUESTS - 2 * (REQUESTS // STEP)
    assert all(run.errors == 0 for run in runs), [run.error_kinds for run in runs]
    assert (late - early) / early <= 0.10, (early, late, samples)
