"""`persona bench` as a user runs it, shortened: every row of the table and of the JSON is there, no request
fails, and every target is checked (speed targets are the bench's output, not asserted here). Also the
one load generator, wrk and its fallback, against a real server, and the one percentile rule."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import LoadPlan, parse_wrk, run_sockets, run_wrk, wrk_script
from bench.questions import bench_questions
from bench.servers import uvicorn_server
from bench.stats import percentile
from generation.service import PersonaService
from retrieval.settings import Settings
from server.app import create_app
from tests.conftest import ROOT

ENDPOINTS = ("/v1/retrieve", "/v1/ask")
LEVELS = (1, 16)


def test_bench_prints_every_row_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    env.pop("PERSONA_RATE_LIMIT", None)  # the bench turns the rate limit off for its server itself
    levels = [arg for c in LEVELS for arg in ("-c", str(c))]
    done = subprocess.run([sys.executable, "-m", "persona", "bench", *levels, "--seconds", "2", "--queries", "10",
                           "--cold-starts", "1", "--data-dir", str(tmp_path / "work"), "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = {(r["path"], r["concurrency"]): r for r in results["http"]}
    assert set(rows) == {(p, c) for p in ENDPOINTS for c in LEVELS}
    for row in [*rows.values(), *results["path_cost"].values()]:
        assert row["errors"] == 0, row
        assert row["requests"] > 0 and 0 < row["p50"] <= row["p99"] and row["rps"] > 0
    assert set(results["in_process"]) == {"retrieve", "ask"} and results["embedder"]["ms_per_query"] > 0
    assert set(results["path_cost"]) == set(results["limit"]) == set(results["path_cost_c16"]) == set(ENDPOINTS)
    assert [r["concurrency"] for r in results["path_cost"].values()] == [1, 1]  # the limit's path cost: at c=1
    assert [r["concurrency"] for r in results["personas"]] == [1, 16]
    workers = {w["workers"]: w for w in results["workers"]}
    assert set(workers) == {1, 2} and all(r["errors"] == 0 for w in workers.values() for r in w["runs"])
    assert sorted(p["role"] for p in workers[2]["processes"]).count("worker") == 2
    assert all(p["idle_mb"] > 0 and p["uss_mb"] > 0 for w in workers.values() for p in w["processes"])
    assert len(results["cold_start_s"]) == 1 and results["rss_mb"]["under_load"] > 0
    phases = results["cold_start_phases_s"]  # read from the server's own log lines
    assert list(phases) == ["imports", "start-up", "first answer"] and all(v > 0 for v in phases.values())
    side = results["embedder"]["side_by_side"]
    assert side["workers"] >= 1 and side["speedup"] > 0
    targets = {t["target"]: t["met"] for t in results["targets"]}
    assert len(targets) == 11 and targets["no errors"] is True
    assert "/v1/retrieve cached path: requests/s at c=16 >= 0.9 x c=1" in targets
    for label in ("in-process PersonaService.retrieve", "in-process PersonaService.ask", "embedder per query",
                  "HTTP /v1/retrieve c=1", "HTTP /v1/ask c=16", "path cost /v1/ask (same question, c=1)",
                  "cached path /v1/retrieve (same question, c=16)", "HTTP GET /v1/personas c=16", "limit /v1/retrieve",
                  "/v1/ask c=16 / limit", "side by side", "cold start", "imports", "persona serve --workers 2",
                  "| `/v1/ask`, a new question each time |", "| target | measured | met |"):
        assert label in done.stdout, label


@pytest.fixture(scope="module")
def base_url(seeded_settings: Settings, service: PersonaService) -> Iterator[str]:
    settings = seeded_settings.model_copy(update={"rate_limit": None})
    with uvicorn_server(create_app(settings, service=service)) as url:
        yield url


@pytest.mark.parametrize("path", ENDPOINTS)
def test_the_fallback_generator_sends_exactly_the_requests_asked_for(base_url: str, path: str) -> None:
    result = asyncio.run(run_sockets(base_url, LoadPlan(path, 4, requests=24), bench_questions()))
    assert (result.requests, result.errors, result.generator) == (24, 0, "sockets")
    assert 0 < result.p50 <= result.p99 and result.rps > 0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make test installs it)")
def test_wrk_runs_the_script_and_its_results_are_read(base_url: str) -> None:
    result = run_wrk(base_url, LoadPlan("/v1/retrieve", 4, requests=24), bench_questions())
    assert result.requests >= 24 and result.errors == 0 and result.generator == "wrk"
    assert 0 < result.p50 <= result.p99


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make test installs it)")
def test_both_generators_get_a_path_without_a_body(base_url: str) -> None:
    plan = LoadPlan("/v1/personas", 2, requests=12)
    assert plan.method == "GET" and LoadPlan("/v1/ask", 1).method == "POST"
    for result in (run_wrk(base_url, plan, []), asyncio.run(run_sockets(base_url, plan, []))):
        assert result.requests >= 12 and result.errors == 0


def test_the_wrk_script_makes_each_question_new_or_repeats_one() -> None:
    questions = ['Say "hi"', "plain"]
    assert '" #" .. tag' in wrk_script(LoadPlan("/v1/ask", 1, seconds=1), questions)
    assert '[==[Say \\"hi\\"]==]' in wrk_script(LoadPlan("/v1/ask", 1, seconds=1), questions)
    assert "[==[plain]==]" not in wrk_script(LoadPlan("/v1/ask", 1, seconds=1, unique=False), questions)


def test_wrk_errors_are_counted_by_kind() -> None:
    line = ('BENCH-WRK {"requests": 10, "duration_us": 2000000, "p50_us": 1500, "p99_us": 9000, "mean_us": 2000.5, '
            '"connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0}')
    result = parse_wrk(f"Running 2s test\n{line}\n", LoadPlan("/v1/ask", 2, seconds=2))
    assert (result.p50, result.p99, result.rps, result.errors) == (1.5, 9.0, 5.0, 3)
    assert result.error_kinds == {"read": 1, "status": 2}


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (51, 100, 100)
    assert percentile([7.0], 99) == 7.0 and percentile([3, 1, 2], 50) == 2
