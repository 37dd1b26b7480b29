"""A real load on loopback through the bench's load generator: `persona serve` (as `make serve` runs it, rate
limit off), thousands of requests to /v1/retrieve and /v1/ask at concurrency 32, zero errors, and resident
memory that stops growing (at most 10% from after the first thousand requests to the end)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.load import LoadPlan, LoadResult, run_load
from bench.questions import bench_questions
from bench.servers import persona_server
from bench.stats import rss_mb
from tests.conftest import ROOT

REQUESTS = int(os.environ.get("PERSONA_LOAD_REQUESTS", "5000"))
WARM = 1000


def load(url: str, requests: int) -> list[LoadResult]:
    """``requests`` split between the two endpoints, 32 at a time, a new question each."""
    return [run_load(url, LoadPlan(path, 32, requests=requests // 2), bench_questions())
            for path in ("/v1/retrieve", "/v1/ask")]


def test_load_zero_errors_and_flat_memory(tmp_path: Path) -> None:
    with persona_server(tmp_path / "index", ingest=True, seeds_dir=ROOT / "seeds") as server:
        runs = load(server.url, WARM)
        first = rss_mb(server.pid)
        runs += load(server.url, REQUESTS - WARM)
        last = rss_mb(server.pid)
    print("load test:", [run.as_dict() for run in runs], f"RSS {first:.1f} -> {last:.1f} MB")
    assert sum(run.requests for run in runs) >= REQUESTS - 4
    assert all(run.errors == 0 for run in runs), [run.error_kinds for run in runs]
    assert (last - first) / first <= 0.10, (first, last)
