"""The speed-and-scale benchmark behind ``persona bench``: one run, one machine, ratios against the floor.

Measures, in order:

1. the in-process floor: embed one query and query Chroma, no HTTP, with sentence-transformers (the
   reference) and with the ONNX export (the serving path);
2. ``/v1/retrieve`` and ``/v1/ask`` over HTTP at several concurrency levels against a ``persona
   serve`` started here on a free port (p50/p95/p99, requests per second, errors), and the server's
   resident memory while serving;
3. cold start: process start to the first answered ``/v1/ask`` with an existing index;
4. ingest throughput on a synthetic corpus made from the seed card against raw encode of the same
   texts with the same backend;
5. scale-out: 1 against 2 uvicorn workers sharing one Chroma server.

Targets (issue 8) are checked on the numbers of the same run; see :data:`TARGETS`.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from eval.servers import chroma_server, free_port, rss_mb, running
from ingest.cards import load_card
from ingest.chunking import chunk_card
from ingest.indexer import ingest
from retrieval.embedder import (
    Embedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    cpu_count,
    ensure_onnx,
    onnx_folder,
)
from retrieval.settings import Settings
from retrieval.store import Store

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "sales-manager.yaml"
SETS = ROOT / "eval" / "sets"
PERSONA = [sys.executable, "-m", "persona"]
Log = Callable[[str], None]


@dataclass
class BenchOptions:
    """What to run: corpus size, requests per level, concurrency levels, the scale-out part."""

    cards: int = 200
    requests: int = 400
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 32])
    scale_out: bool = True
    work_dir: Path | None = None
    floor_queries: int = 200
    cold_starts: int = 3
    seed: int = 8


def percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(latencies_ms, dtype=float)
    if values.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {f"p{q}": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


def bench_questions() -> list[str]:
    """The eval sets' questions: realistic queries of realistic lengths."""
    found: list[str] = []
    for path in sorted(SETS.glob("*.yaml")):
        found += [str(q["question"]) for q in yaml.safe_load(path.read_text())["questions"]]
    return found


# -- 1. the floor -------------------------------------------------------------------------------
def floor(embedder: Embedder, store: Store, questions: Sequence[str], n: int) -> dict[str, float]:
    """Encode one query, then one Chroma query: the in-process cost of a retrieval, one at a time."""
    for q in questions[:10]:  # warm up
        store.query("sales-manager", embedder.encode([q])[0], 5)
    encode_ms, total_ms = [], []
    for i in range(n):
        q = questions[i % len(questions)]
        start = time.perf_counter()
        vector = embedder.encode([q])[0]
        middle = time.perf_counter()
        store.query("sales-manager", vector, 5)
        end = time.perf_counter()
        encode_ms.append((middle - start) * 1000)
        total_ms.append((end - start) * 1000)
    return {"encode_p50": round(statistics.median(encode_ms), 2), **percentiles(total_ms)}


# -- 2. HTTP under load -------------------------------------------------------------------------
async def _load(base: str, path: str, questions: Sequence[str], concurrency: int, total: int) -> dict[str, Any]:
    """``total`` requests from ``concurrency`` clients; every query text is new to the server's cache."""
    key = "query" if path == "/v1/retrieve" else "question"
    bodies = [{key: f"{questions[i % len(questions)]} #{path[4]}{concurrency}-{i}"} for i in range(total + concurrency)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        async def worker() -> None:
            for i in counter:
                start = time.perf_counter()
                try:
                    response = await client.post(path, json=bodies[concurrency + i])
                    failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                if failure is None:
                    latencies.append((time.perf_counter() - start) * 1000)
                else:
                    errors[failure] = errors.get(failure, 0) + 1

        for body in bodies[:concurrency]:  # open the connections first
            await client.post(path, json=body)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"path": path, "concurrency": concurrency, "requests": total, **percentiles(latencies),
            "rps": round(total / wall, 1), "errors": sum(errors.values()), "error_kinds": errors}


def load_levels(base: str, questions: Sequence[str], levels: Sequence[int], requests: int, log: Log,
                paths: Sequence[str] = ("/v1/retrieve", "/v1/ask")) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for c in levels:
            row = asyncio.run(_load(base, path, questions, c, max(requests, 4 * c)))
            log(f"  {path} c={c}: p50 {row['p50']} ms, p99 {row['p99']} ms, {row['rps']} rps, {row['errors']} errors")
            rows.append(row)
    return rows


class RssSampler:
    """The highest resident memory of a process, sampled every ``every`` seconds while in use."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every, self.highest = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.highest = max(self.highest, rss_mb(self.pid)[0])

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# -- 3. cold start ------------------------------------------------------------------------------
def cold_start(env: dict[str, str], data_dir: Path) -> float:
    """Seconds from process start to the first 200 on /v1/ask (existing index, no ingest)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    process = subprocess.Popen([*PERSONA, "serve", "--no-ingest", "--port", str(port), "--data-dir", str(data_dir)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("the server exited during cold start")
            try:
                if httpx.post(f"{url}/v1/ask", json={"question": "What is pipeline coverage?"},
                              timeout=30).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                time.sleep(0.01)
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- 4. ingest ----------------------------------------------------------------------------------
def synthetic_cards(n: int, folder: Path, seed: int = 8) -> list[Path]:
    """``n`` cards made from the seed's text: new slugs and titles, sections and their items shuffled."""
    base = yaml.safe_load(SEED.read_text())
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        card = copy.deepcopy(base)
        card["slug"] = f"{base['slug']}-synth-{i:03d}"
        card["title"] = f"{base['title']} {i}"
        rng.shuffle(card["sections"])
        for section in card["sections"]:
            section["markdown"] = _shuffle_items(section["markdown"], rng)
        path = folder / f"{card['slug']}.yaml"
        path.write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
        paths.append(path)
    return paths


def _shuffle_items(markdown: str, rng: random.Random) -> str:
    bullets = re.split(r"\n(?=(?:[-*+]|\d{1,3}[.)])\s)", markdown.strip())
    if len(bullets) > 1:
        rng.shuffle(bullets)
        return "\n".join(bullets) + "\n"
    paragraphs = re.split(r"\n\s*\n", markdown.strip())
    rng.shuffle(paragraphs)
    return "\n\n".join(paragraphs) + "\n"


def ingest_throughput(embedder: Embedder, settings: Settings, cards: int, work: Path, log: Log,
                      group: int = 10) -> dict[str, Any]:
    """Ingest of the synthetic corpus against raw encode of the same texts, interleaved by groups of
    cards so that both meet the same machine load."""
    paths = synthetic_cards(cards, work / "synthetic")
    batch = settings.embed_batch_size
    store = Store(Settings(data_dir=work / "ingest-index", seeds_dir=work / "synthetic"))
    embedder.encode([c.embed_text for c in chunk_card(load_card(paths[0]))][:batch], batch)  # warm
    raw_seconds = ingest_seconds = 0.0
    texts = chunks = 0
    for first in range(0, len(paths), group):
        part = paths[first:first + group]
        part_texts = [c.embed_text for p in part for c in chunk_card(load_card(p))]
        start = time.perf_counter()
        for i in range(0, len(part_texts), batch):
            embedder.encode(part_texts[i:i + batch], batch)
        raw_seconds += time.perf_counter() - start
        start = time.perf_counter()
        report = ingest(part, store, embedder, settings.model, batch_size=batch)
        ingest_seconds += time.perf_counter() - start
        texts += len(part_texts)
        chunks += sum(c.chunks for c in report.changes)
        log(f"  {first + len(part)}/{cards} cards: raw {texts / raw_seconds:.0f} texts/s, "
            f"ingest {chunks / ingest_seconds:.0f} chunks/s")
    raw, rate = texts / raw_seconds, chunks / ingest_seconds
    return {"cards": cards, "chunks": chunks, "raw_texts_per_s": round(raw, 1),
            "ingest_chunks_per_s": round(rate, 1), "ingest_seconds": round(ingest_seconds, 1),
            "ratio": round(rate / raw, 3)}


# -- 5. scale-out -------------------------------------------------------------------------------
def scale_out(env: dict[str, str], settings: Settings, embedder: Embedder, questions: Sequence[str],
              requests: int, work: Path, log: Log) -> list[dict[str, Any]]:
    rows = []
    with chroma_server(work / "chroma-server", log=work / "chroma.log") as url:
        ingest([SEED], Store(Settings(data_dir=settings.data_dir, chroma_url=url)), embedder, settings.model)
        for workers in (1, 2):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            threads = max(1, cpu_count() // workers)
            server_env = {**env, "PERSONA_CHROMA_URL": url, "PERSONA_EMBED_THREADS": str(threads)}
            command = [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--workers",
                       str(workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            with running(command, f"{base}/healthz", env=server_env, log=work / "uvicorn.log"):
                for row in load_levels(base, questions, [1, 16], requests, log, paths=("/v1/retrieve",)):
                    rows.append({"workers": workers, "embed_threads": threads, **row})
    return rows


# -- the run ------------------------------------------------------------------------------------
def run_bench(options: BenchOptions, log: Log = print) -> dict[str, Any]:
    """Run every part and return the results, the target checks and the printed table."""
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="persona-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    questions = bench_questions()
    random.Random(options.seed).shuffle(questions)
    settings = Settings(data_dir=work / "index", seeds_dir=ROOT / "seeds")
    env = {"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PERSONA_DATA_DIR": str(settings.data_dir),
           "PERSONA_SEEDS_DIR": str(settings.seeds_dir), "PYTHONPATH": str(ROOT),
           "PERSONA_RATE_LIMIT": "off",  # the load comes from one client: the per-client limit would refuse it
           "MALLOC_ARENA_MAX": "2"}  # as `make serve` runs the server (README "Security and operations")
    env = {**os.environ, **env}
    results: dict[str, Any] = {"machine": {"cores": cpu_count(), "python": sys.version.split()[0],
                                           "load_average_at_start": os.getloadavg()},
                               "options": {k: str(v) for k, v in vars(options).items()}}

    log("preparing: ONNX export and the seed index ...")
    ensure_onnx(settings.model, settings.models_dir, "onnx")
    onnx = OnnxEmbedder(onnx_folder(settings.models_dir, settings.model))
    reference = SentenceTransformerEmbedder(settings.model)
    ingest([SEED], Store(settings), onnx, settings.model)
    floor_settings = Settings(data_dir=work / "floor-index", seeds_dir=settings.seeds_dir)
    floor_store = Store(floor_settings)
    ingest([SEED], floor_store, onnx, settings.model)

    log("floor (in-process encode + Chroma query) ...")
    results["floor"] = {"sentence-transformers": floor(reference, floor_store, questions, options.floor_queries),
                        "onnx": floor(onnx, floor_store, questions, options.floor_queries)}
    log(f"  {results['floor']}")

    log("HTTP under load (persona serve) ...")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [*PERSONA, "serve", "--no-ingest", "--port", str(port), "--data-dir", str(settings.data_dir)]
    with running(serve, f"{base}/healthz", env=env, log=work / "serve.log") as server:
        results["idle_rss_mb"] = round(rss_mb(server.pid)[0], 1)
        with RssSampler(server.pid) as sampler:
            results["http"] = load_levels(base, questions, options.concurrency, options.requests, log)
        results["serving_rss_mb"] = round(sampler.highest, 1)
        results["serving_peak_rss_mb"] = round(rss_mb(server.pid)[1], 1)

    log("cold start ...")
    results["cold_start_s"] = [round(cold_start(env, settings.data_dir), 3) for _ in range(options.cold_starts)]

    if options.cards > 0:
        log("ingest throughput ...")
        results["ingest"] = ingest_throughput(onnx, settings, options.cards, work, log)
        sample = [c.embed_text for c in chunk_card(load_card(SEED))] * 4
        start = time.perf_counter()
        reference.encode(sample, settings.embed_batch_size)
        rate = len(sample) / (time.perf_counter() - start)
        results["ingest"]["sentence_transformers_raw_texts_per_s"] = round(rate, 1)
    if options.scale_out:
        log("scale-out: 1 vs 2 uvicorn workers on one Chroma server ...")
        results["scale_out"] = scale_out(env, settings, onnx, questions, options.requests, work, log)

    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["targets"] = check_targets(results)
    results["table"] = render(results)
    return results


def _http(results: dict[str, Any], path: str, c: int) -> dict[str, Any] | None:
    return next((r for r in results.get("http", []) if r["path"] == path and r["concurrency"] == c), None)


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 8 with the measured value, the limit and whether it is met."""
    checks = []
    floor_st = results["floor"]["sentence-transformers"]["p50"]
    one = _http(results, "/v1/retrieve", 1)
    sixteen = _http(results, "/v1/retrieve", 16)
    if one:
        checks.append({"target": "/v1/retrieve p50 at c=1 <= 0.6 x floor (sentence-transformers)",
                       "value": f"{one['p50']} ms = {one['p50'] / floor_st:.2f} x {floor_st} ms",
                       "met": one["p50"] <= 0.6 * floor_st})
    if one and sixteen:
        checks.append({"target": "/v1/retrieve rps at c=16 >= 3 x rps at c=1",
                       "value": f"{sixteen['rps']} / {one['rps']} = {sixteen['rps'] / one['rps']:.2f} x",
                       "met": sixteen["rps"] >= 3 * one["rps"]})
        checks.append({"target": "/v1/retrieve p99 at c=16 <= 100 ms, zero errors",
                       "value": f"{sixteen['p99']} ms, {sixteen['errors']} errors",
                       "met": sixteen["p99"] <= 100 and sixteen["errors"] == 0})
    cold = statistics.median(results["cold_start_s"])
    checks.append({"target": "cold start to first /v1/ask <= 2 s", "value": f"{cold:.2f} s (median)",
                   "met": cold <= 2.0})
    checks.append({"target": "serving resident memory <= 350 MB",
                   "value": f"{results['serving_rss_mb']} MB highest sampled under load "
                            f"(kernel's high-water mark {results['serving_peak_rss_mb']} MB)",
                   "met": results["serving_rss_mb"] <= 350})
    if "ingest" in results:
        ing = results["ingest"]
        checks.append({"target": "ingest >= 0.8 x raw encode (same backend)",
                       "value": f"{ing['ingest_chunks_per_s']} / {ing['raw_texts_per_s']} = {ing['ratio']:.2f} x",
                       "met": ing["ratio"] >= 0.8})
    return checks


def render(results: dict[str, Any]) -> str:
    """The results as markdown tables (pasted as-is into the README)."""
    fl = results["floor"]
    machine = results["machine"]
    lines = [f"{machine['cores']} cores; load average (1, 5, 15 min) at start "
             f"{', '.join(f'{v:.1f}' for v in machine['load_average_at_start'])}, at end "
             f"{', '.join(f'{v:.1f}' for v in machine['load_average_at_end'])}", "",
             "| measure | p50 ms | p95 ms | p99 ms | rps | errors |", "|---|---|---|---|---|---|"]
    for name, row in fl.items():
        lines.append(f"| floor in-process, {name} (encode {row['encode_p50']} ms + Chroma) "
                     f"| {row['p50']} | {row['p95']} | {row['p99']} | | |")
    for row in results.get("http", []):
        lines.append(f"| HTTP {row['path']} c={row['concurrency']} | {row['p50']} | {row['p95']} | {row['p99']} "
                     f"| {row['rps']} | {row['errors']} |")
    for row in results.get("scale_out", []):
        lines.append(f"| Chroma server, {row['workers']} worker(s) x {row['embed_threads']} threads, "
                     f"{row['path']} c={row['concurrency']} | {row['p50']} | {row['p95']} | {row['p99']} "
                     f"| {row['rps']} | {row['errors']} |")
    lines += ["", f"cold start (s): {results['cold_start_s']}; resident memory serving: idle "
              f"{results['idle_rss_mb']} MB, highest sampled under load {results['serving_rss_mb']} MB, "
              f"high-water mark {results['serving_peak_rss_mb']} MB"]
    if "ingest" in results:
        ing = results["ingest"]
        lines.append(f"ingest: {ing['cards']} cards, {ing['chunks']} chunks in {ing['ingest_seconds']} s = "
                     f"{ing['ingest_chunks_per_s']} chunks/s; raw ONNX encode {ing['raw_texts_per_s']} texts/s; "
                     f"raw sentence-transformers encode {ing['sentence_transformers_raw_texts_per_s']} texts/s")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |" for t in results["targets"]]
    return "\n".join(lines)
