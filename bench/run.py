"""One ``persona bench`` run: in-process costs, HTTP under load, the cores' limit, cold start, memory, workers.

In order:

1. in-process ``PersonaService.retrieve`` / ``ask`` per query, and the embedder's cost per query in batches
   (one onnxruntime thread, so milliseconds are core-milliseconds);
2. ``persona serve`` (rate limit off, ``MALLOC_ARENA_MAX=2`` as ``make serve``) under the load generator
   (:mod:`bench.load`): every concurrency level for ``/v1/retrieve`` and ``/v1/ask`` with a new question
   per request, then each endpoint's path cost (the same question, embedding cached, at concurrency 1, and at 16
   to see that it does not collapse), then ``GET /v1/personas`` at 1 and 16; the server's RSS is sampled
   throughout;
3. cold start: process start to the first answered ``/v1/ask`` over the existing index;
4. ``persona serve --workers N`` for N = 1 and 2 (:mod:`bench.workers`): each process's memory, and throughput;
5. optionally ingest throughput on synthetic cards (:mod:`bench.scale`).

The limit and the targets are derived from the numbers of the same run (:mod:`bench.report`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import report
from bench.load import LoadPlan, generator, run_load
from bench.load import load_with_cpu as load_with_cpu_of
from bench.questions import bench_questions
from bench.servers import (
    ROOT,
    Served,
    answers,
    free_port,
    persona_server,
    serve_command,
    serve_env,
    stop,
    wait_until_up,
)
from bench.stats import RssSampler
from bench.workers import compare_workers

if TYPE_CHECKING:  # the retrieval stack is imported when the run starts, not with the command line
    from retrieval.settings import Settings

Log = Callable[[str], None]
SEED = ROOT / "seeds" / "sales-manager.yaml"
CROWDED = 16  # the concurrency the targets judge


@dataclass
class BenchOptions:
    """What to run; the defaults are the full run of issue 14 (under five minutes on two cores)."""

    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    seconds: float = 5.0  # per load level
    queries: int = 200  # in-process questions per method
    cold_starts: int = 3
    cards: int = 0  # synthetic cards for the ingest part (0: skipped)
    workers: list[int] = field(default_factory=lambda: [1, 2])  # persona serve --workers N compared (empty: skipped)
    work_dir: Path | None = None
    seed: int = 8


def machine(settings_model: str) -> dict[str, Any]:
    from retrieval.embedder import cpu_count

    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cores": cpu_count(),
            "cpu": cpu_name(), "python": sys.version.split()[0], "model": settings_model,
            "generator": generator(), "load_average_at_start": os.getloadavg()}


def cpu_name() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def prepare(settings: Settings, log: Log) -> None:
    """The ONNX export and the index of the seed card, built in this process before anything is timed."""
    from ingest.indexer import ingest
    from retrieval.embedder import OnnxEmbedder, ensure_onnx, onnx_folder
    from retrieval.store import Store

    log("preparing: ONNX export and the seed index ...")
    ensure_onnx(settings.model, settings.models_dir, "onnx")
    ingest([SEED], Store(settings), OnnxEmbedder(onnx_folder(settings.models_dir, settings.model)), settings.model)


def settle(server: Served) -> None:
    """Wait until the requests a finished run left in flight are served (wrk stops without waiting for them;
    a level would otherwise start behind up to 64 of them): two requests in a row go through the same
    queues, then a short pause."""
    for i in range(2):
        answers(f"{server.url}/v1/retrieve", {"query": f"settle {os.urandom(4).hex()} {i}"})
    time.sleep(0.5)


def load_with_cpu(server: Served, plan: LoadPlan, questions: Sequence[str]) -> dict[str, Any]:
    """One load run's row, with the server's CPU (:func:`bench.load.load_with_cpu`)."""
    return load_with_cpu_of(server.url, server.pid, plan, questions)


def http_levels(server: Served, questions: Sequence[str], options: BenchOptions, log: Log) -> list[dict[str, Any]]:
    """Every endpoint at every concurrency level, a new question per request."""
    rows = []
    for path in report.ENDPOINTS:
        run_load(server.url, LoadPlan(path, 4, requests=40), questions)  # warm: indexes loaded, sessions made
        for c in options.concurrency:
            settle(server)
            row = load_with_cpu(server, LoadPlan(path, c, seconds=options.seconds), questions)
            log(f"  {path} c={c}: p50 {row['p50']} ms, p99 {row['p99']} ms, {row['rps']} requests/s, "
                f"{row['errors']} errors; server {row['server_cpu_ms']} core-ms a request, {row['server_cores']} cores")
            rows.append(row)
    return rows


def path_costs(server: Served, questions: Sequence[str], seconds: float,
               log: Log) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each endpoint with the same question (its embedding cached: the HTTP and search path alone): at concurrency 1,
    where nothing contends, its cost sets the limit; at 16, the same path under load, which must not collapse."""
    costs: dict[str, dict[str, Any]] = {}
    crowded: dict[str, dict[str, Any]] = {}
    for path in report.ENDPOINTS:
        for concurrency, into in ((1, costs), (CROWDED, crowded)):
            settle(server)
            into[path] = row = load_with_cpu(server, LoadPlan(path, concurrency, seconds=seconds, unique=False),
                                             questions)
            log(f"  {path} same question c={concurrency}: {row['rps']} requests/s, p50 {row['p50']} ms; "
                f"server {row['server_cpu_ms']} core-ms a request, {row['server_cores']} cores")
    return costs, crowded


def http_stack(server: Served, seconds: float, log: Log) -> list[dict[str, Any]]:
    """``GET /v1/personas`` at concurrency 1 and 16: the HTTP stack with the least work behind it."""
    rows = []
    for concurrency in (1, CROWDED):
        settle(server)
        rows.append(row := load_with_cpu(server, LoadPlan(report.PERSONAS, concurrency, seconds=seconds), []))
        log(f"  GET {report.PERSONAS} c={concurrency}: {row['rps']} requests/s, p50 {row['p50']} ms")
    return rows


def cold_start(data_dir: Path, seeds_dir: Path, log: Path, persona: str | None = None,
               env: dict[str, str] | None = None) -> tuple[float, dict[str, float] | None]:
    """Seconds from process start to the first 200 on ``/v1/ask`` (to ``persona``; existing index, no ingest), and
    where they went, read from the server's log (``log``): see :func:`start_phases`."""
    port = free_port()
    log.unlink(missing_ok=True)
    wall, start = time.time(), time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(serve_command(data_dir, port),
                                   env={**os.environ, **serve_env(seeds_dir, **(env or {}))},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/v1/ask", process, timeout=120,
                      body={"question": "What is pipeline coverage?", **({"persona": persona} if persona else {})})
        total = time.perf_counter() - start
    finally:
        stop(process)
    return round(total, 3), start_phases(log.read_text(errors="replace"), wall, total)


START_MARKS = {"Started server process": "imports", "Application startup complete": "start-up"}


def start_phases(log: str, started: float, total: float) -> dict[str, float] | None:
    """A cold start in three phases from the server's JSON log lines: ``imports`` (process start to uvicorn's
    "Started server process": the interpreter and the app's imports), ``start-up`` (to "Application startup
    complete": opening the index, loading the personas' indexes and the model) and ``first answer`` (the rest:
    the first request). ``None`` when the log lacks either line."""
    seen: dict[str, float] = {}
    for line in log.splitlines():
        try:
            record = json.loads(line)
            stamp = datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        for mark, phase in START_MARKS.items():
            if str(record.get("message", "")).startswith(mark):
                seen.setdefault(phase, stamp - started)
    if set(seen) != set(START_MARKS.values()):
        return None
    return {"imports": round(seen["imports"], 3), "start-up": round(seen["start-up"] - seen["imports"], 3),
            "first answer": round(total - seen["start-up"], 3)}


def serve_and_load(settings: Settings, questions: Sequence[str], options: BenchOptions, work: Path,
                   log: Log) -> dict[str, Any]:
    """The HTTP part: every level, the path costs, and the server's RSS idle and under load."""
    log(f"HTTP under load ({generator()}) ...")
    with (persona_server(settings.data_dir, seeds_dir=settings.seeds_dir, log=work / "serve.log") as server,
          RssSampler(server.pid) as sampler):
        idle = sampler.samples[0]
        http = http_levels(server, questions, options, log)
        costs, crowded = path_costs(server, questions, options.seconds, log)
        stack = http_stack(server, options.seconds, log)
    return {"http": http, "path_cost": costs, "path_cost_c16": crowded, "personas": stack,
            "rss_mb": {"idle": round(idle, 1), "under_load": sampler.highest}}


def optional_parts(settings: Settings, questions: Sequence[str], options: BenchOptions, work: Path,
                   log: Log) -> dict[str, Any]:
    """``persona serve --workers N`` for each count asked for, and ingest throughput (``cards`` > 0)."""
    found: dict[str, Any] = {}
    counts = [n for n in options.workers if n > 0]
    if counts:
        found["workers"] = compare_workers(settings.data_dir, settings.seeds_dir, questions, counts, options.seconds,
                                           work, log)
    if options.cards > 0:
        from bench.scale import ingest_throughput
        from retrieval.embedder import OnnxEmbedder, onnx_folder

        log("ingest throughput ...")
        onnx = OnnxEmbedder(onnx_folder(settings.models_dir, settings.model))
        found["ingest"] = ingest_throughput(onnx, settings, SEED, options.cards, work, log)
    return found


def run_bench(options: BenchOptions, log: Log = print) -> dict[str, Any]:
    """Run every part and return the results, the target checks and the printed table."""
    from bench.inprocess import embed_cost, service_costs
    from retrieval.settings import Settings

    work = options.work_dir or Path(tempfile.mkdtemp(prefix="persona-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=work / "index", seeds_dir=ROOT / "seeds", rate_limit=None)
    questions = bench_questions(options.seed)
    results: dict[str, Any] = {"machine": machine(settings.model),
                               "options": {k: str(v) for k, v in asdict(options).items()}}
    prepare(settings, log)
    log("in-process PersonaService and embedder ...")
    results["in_process"] = service_costs(settings, questions, options.queries)
    results["embedder"] = embed_cost(settings, questions)
    log(f"  {results['in_process']} {results['embedder']}")
    results |= serve_and_load(settings, questions, options, work, log)
    log("cold start ...")
    starts = [cold_start(settings.data_dir, settings.seeds_dir, work / "cold-start.log")
              for _ in range(options.cold_starts)]
    results["cold_start_s"] = [seconds for seconds, _ in starts]
    phases = [p for _, p in starts if p]
    if phases:
        results["cold_start_phases_s"] = {k: round(statistics.median(p[k] for p in phases), 3) for k in phases[0]}
    results |= optional_parts(settings, questions, options, work, log)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["limit"] = report.limits(results)
    results["targets"] = report.check_targets(results)
    results["table"] = report.render(results)
    return results
