"""Bounded load test on loopback: N requests at concurrency C to /v1/retrieve and /v1/ask.

Starts ``persona serve`` (ingesting seeds/ into a fresh data dir) on a free port, fires the
requests with an async httpx client, samples the server's resident memory (psutil) after every
thousand responses, and prints the figures; ``--json`` prints them as one JSON object.

    python bench/load_test.py --requests 5000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from eval.servers import free_port, running

ROOT = Path(__file__).resolve().parent.parent
SERVER_ENV = {"MALLOC_ARENA_MAX": "2"}  # as `make serve` runs it: fewer glibc arenas for the worker threads
QUESTIONS = [
    "How much pipeline do I need to hit my quota?",
    "What does OTE mean?",
    "Should I coach this rep or manage them out?",
    "How do I run a forecast call?",
    "What is sandbagging and why is it bad?",
    "How should I split territories?",
    "When should I discount to close a deal?",
    "How do I hire a good account executive?",
    "What does a good one-on-one look like?",
    "How do I work with marketing on lead quality?",
    "What are the warning signs of a bad quarter?",
    "How do I handle a rep who misses quota twice?",
    "What tools does a sales team need?",
    "How do I keep my forecast honest?",
    "What should I never promise a customer?",
    "How do I bake sourdough bread?",  # not covered: the honest refusal is part of the load
]


def serve_command(data_dir: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """``persona serve`` on ``port``, ingesting seeds/ into ``data_dir``, as ``make serve`` runs it."""
    env = {"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PERSONA_DATA_DIR": str(data_dir),
           "PERSONA_SEEDS_DIR": str(ROOT / "seeds"), "PERSONA_RATE_LIMIT": "off", **SERVER_ENV}
    return [sys.executable, "-m", "persona", "serve", "--port", str(port)], env


async def run_load(url: str, pid: int, requests: int, concurrency: int) -> dict:
    """Fire ``requests`` requests, ``concurrency`` at a time; count errors, time them, sample RSS."""
    process = psutil.Process(pid)
    plan = itertools.cycle([("/v1/retrieve", "query", {"k": 5}), ("/v1/ask", "question", {})])
    questions = itertools.cycle(QUESTIONS)
    jobs = [(path, {field: next(questions), **extra})
            for (path, field, extra), _ in zip(plan, range(requests), strict=False)]
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss: list[tuple[int, int]] = [(0, process.memory_info().rss)]
    done = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not queue.empty():
            path, body = queue.get_nowait()
            started = time.perf_counter()
            try:
                response = await client.post(path, json=body)
                if response.status_code != 200:
                    errors[f"HTTP {response.status_code}"] = errors.get(f"HTTP {response.status_code}", 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            latencies.append(time.perf_counter() - started)
            done += 1
            if done % 1000 == 0:
                rss.append((done, process.memory_info().rss))

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    first, last = rss[1][1] if len(rss) > 1 else rss[0][1], rss[-1][1]
    return {
        "requests": len(latencies), "concurrency": concurrency, "errors": sum(errors.values()),
        "error_kinds": errors, "seconds": round(elapsed, 1), "requests_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": {"p50": round(statistics.median(ordered) * 1000, 1),
                       "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
                       "p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1)},
        "rss_mib": {str(n): round(b / 2**20, 1) for n, b in rss},
        "rss_growth_first_to_last_thousand": round((last - first) / first, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="persona-load-") as tmp:
        command, env = serve_command(Path(tmp) / "index", port)
        # the first start exports the model and ingests the seed: allow it minutes
        with running(command, f"{url}/healthz", env=env, timeout=600) as server:
            figures = asyncio.run(run_load(url, server.pid, args.requests, args.concurrency))
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['requests']} requests at concurrency {figures['concurrency']} in {figures['seconds']} s "
          f"({figures['requests_per_second']} req/s): {figures['errors']} errors {figures['error_kinds'] or ''}")
    print(f"latency p50 {figures['latency_ms']['p50']} ms, p95 {figures['latency_ms']['p95']} ms, "
          f"p99 {figures['latency_ms']['p99']} ms")
    print(f"server RSS (MiB) after n responses: {figures['rss_mib']}")
    print(f"RSS growth from the first to the last thousand: {figures['rss_growth_first_to_last_thousand']:.1%}")


if __name__ == "__main__":
    main()
