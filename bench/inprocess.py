"""In-process costs: ``PersonaService.retrieve`` and ``ask`` per query, and the embedder per query in batches.

The service is built and warmed as the server builds and warms it (ONNX export behind the batching and
caching embedders; indexes loaded and the card's sentences embedded); every timed question is new to its
cache, as under load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.stats import summary_ms
from generation.service import PersonaService
from retrieval.embedder import OnnxEmbedder, cpu_count, onnx_folder
from retrieval.settings import Settings
from server.app import one_blas_thread


def timed_ms(call: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    """Milliseconds of ``call(text)`` for each text, one at a time."""
    spent = []
    for text in texts:
        start = time.perf_counter()
        call(text)
        spent.append((time.perf_counter() - start) * 1000)
    return spent


def unique(questions: Sequence[str], n: int, tag: str) -> list[str]:
    """``n`` questions no cache has seen (the ``tag`` differs per use)."""
    return [f"{questions[i % len(questions)]} #{tag}-{i}" for i in range(n)]


def service_costs(settings: Settings, questions: Sequence[str], n: int) -> dict[str, dict[str, float]]:
    """p50, p99 and mean ms of ``retrieve`` and ``ask`` over ``n`` new questions each (after a warm-up), with numpy's
    BLAS on one thread as the server runs it (:func:`server.app.one_blas_thread`)."""
    service = PersonaService(settings)
    with one_blas_thread():
        service.warm_up()  # as the server does at start-up: indexes loaded, the card's sentences embedded
        for text in unique(questions, 10, "warm"):
            service.ask(text)
        return {"retrieve": summary_ms(timed_ms(service.retrieve, unique(questions, n, "inproc-r"))),
                "ask": summary_ms(timed_ms(service.ask, unique(questions, n, "inproc-a")))}


def embed_cost(settings: Settings, questions: Sequence[str], batch: int = 16, batches: int = 20) -> dict[str, Any]:
    """Core-milliseconds the embedder spends per query: one onnxruntime thread, batches of ``batch`` new questions."""
    embedder = OnnxEmbedder(onnx_folder(settings.models_dir, settings.model), settings.model, threads=1)
    embedder.encode(unique(questions, batch, "embed-warm"))
    texts = unique(questions, batch * batches, "embed")
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.encode(texts[i:i + batch], batch)
    per_query = (time.perf_counter() - start) * 1000 / len(texts)
    single = summary_ms(timed_ms(lambda t: embedder.encode([t]), unique(questions, batch, "embed-one")))
    return {"batch": batch, "threads": 1, "ms_per_query": round(per_query, 2), "one_at_a_time_p50": single["p50"],
            "side_by_side": side_by_side(settings, questions, batch, batches)}


def side_by_side(settings: Settings, questions: Sequence[str], batch: int, batches: int) -> dict[str, float]:
    """What the cores deliver to the embedder at once: one embedder per core, each on one onnxruntime thread,
    embedding ``batches`` batches at the same time (as the server's workers do). ``speedup`` is the queries per
    second of all of them over one alone; the limit assumes it equals the cores."""
    workers = cpu_count()
    embedders = [OnnxEmbedder(onnx_folder(settings.models_dir, settings.model), settings.model, threads=1)
                 for _ in range(workers)]
    for n, embedder in enumerate(embedders):
        embedder.encode(unique(questions, batch, f"side-warm-{n}"))
    texts = [unique(questions, batch * batches, f"side-{n}") for n in range(workers)]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for done in [pool.submit(lambda e, t: [e.encode(t[i:i + batch], batch) for i in range(0, len(t), batch)],
                                 e, t) for e, t in zip(embedders, texts, strict=True)]:
            done.result()
    wall_per_query = (time.perf_counter() - start) * 1000 / sum(map(len, texts))
    alone = embed_alone_ms(embedders[0], questions, batch, batches)
    return {"workers": workers, "ms_per_query": round(wall_per_query, 2), "alone_ms_per_query": round(alone, 2),
            "speedup": round(alone / wall_per_query, 2)}


def embed_alone_ms(embedder: OnnxEmbedder, questions: Sequence[str], batch: int, batches: int) -> float:
    """Wall ms per query of one embedder alone, batches of ``batch`` new questions (measured next to the side by
    side run, so both see the same machine)."""
    texts = unique(questions, batch * batches, "alone")
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.encode(texts[i:i + batch], batch)
    return (time.perf_counter() - start) * 1000 / len(texts)
