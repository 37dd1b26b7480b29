"""The embedders: the ONNX export gives the reference's vectors; batching keeps each caller's rows."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.questions import bench_questions
from ingest.cards import load_card
from ingest.chunking import chunk_card
from retrieval.embedder import (
    SIDE_BY_SIDE_BATCH,
    BatchingEmbedder,
    CachedEmbedder,
    Embedder,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    cpu_count,
    create_embedder,
    ensure_onnx,
    onnx_folder,
    serving_embedder,
)
from retrieval.errors import ModelUnavailable
from retrieval.nonblocking import WouldBlock, no_blocking
from retrieval.settings import DEFAULT_MODEL, Settings

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "seeds" / "sales-manager.yaml"


@pytest.fixture(scope="session")
def models_dir(shared_models: Path) -> Path:
    """The session's ONNX export of the default model, made by the same path `persona ingest` takes."""
    assert ensure_onnx(DEFAULT_MODEL, shared_models, "onnx") == onnx_folder(shared_models, DEFAULT_MODEL)
    return shared_models


@pytest.fixture(scope="session")
def onnx(models_dir: Path) -> OnnxEmbedder:
    chosen = create_embedder(DEFAULT_MODEL, "auto", models_dir)
    assert isinstance(chosen, OnnxEmbedder)
    return chosen


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_matches_sentence_transformers_on_the_seed(onnx: OnnxEmbedder,
                                                        embedder: Embedder) -> None:
    texts = [c.embed_text for c in chunk_card(load_card(SEED))]
    reference, exported = embedder.encode(texts), onnx.encode(texts)
    assert exported.shape == reference.shape == (len(texts), 384)
    assert cosines(reference, exported).min() >= 0.9999
    assert np.allclose(np.linalg.norm(exported, axis=1), 1.0, atol=1e-5)


def test_onnx_matches_sentence_transformers_on_questions_one_at_a_time(
        onnx: OnnxEmbedder, embedder: Embedder) -> None:
    asked = bench_questions()
    assert len(asked) > 100
    one_by_one = np.stack([onnx.encode([q])[0] for q in asked])
    assert cosines(embedder.encode(asked), one_by_one).min() >= 0.9999
    assert cosines(onnx.encode(asked), one_by_one).min() >= 0.9999  # padding in a batch changes nothing


def test_long_text_is_truncated_like_the_reference(onnx: OnnxEmbedder, embedder: Embedder) -> None:
    long = ["pipeline coverage " * 400, "a"]
    assert cosines(embedder.encode(long), onnx.encode(long)).min() >= 0.9999


def test_backend_choice(models_dir: Path, tmp_path: Path) -> None:
    assert isinstance(create_embedder(DEFAULT_MODEL, "sentence-transformers", models_dir), SentenceTransformerEmbedder)
    assert isinstance(create_embedder(DEFAULT_MODEL, "auto", tmp_path), SentenceTransformerEmbedder)
    with pytest.raises(ModelUnavailable, match="persona export-onnx"):
        create_embedder(DEFAULT_MODEL, "onnx", tmp_path)
    assert ensure_onnx(DEFAULT_MODEL, tmp_path, "sentence-transformers") is None


@pytest.mark.parametrize("workers", [1, 2])
def test_batching_gives_each_caller_its_own_rows(onnx: OnnxEmbedder, workers: int) -> None:
    batching = BatchingEmbedder(onnx, max_batch=16, window_ms=5, workers=workers)
    asked = bench_questions()[:48]
    expected = onnx.encode(asked)
    got: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(asked))

    def call(i: int) -> None:
        start.wait()
        texts = [asked[i]] if i % 3 else [asked[i], asked[(i + 1) % len(asked)]]  # some callers send two
        got[i] = batching.encode(texts)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(asked))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, vectors in got.items():
        assert vectors.shape == ((1 if i % 3 else 2), 384)
        assert cosines(vectors[:1], expected[i:i + 1])[0] >= 0.9999
    assert batching.batched_calls == len(asked)
    assert batching.batches < len(asked)  # concurrent calls really were embedded together
    assert batching.encode([]).shape == (0, 384)


def test_serving_runs_one_onnxruntime_thread_per_batch_and_batches_side_by_side(models_dir: Path,
                                                                                tmp_path: Path) -> None:
    os.symlink(models_dir, tmp_path / "models")
    for threads, workers in ((None, cpu_count()), (3, 3)):
        served = serving_embedder(Settings(data_dir=tmp_path, embed_threads=threads))
        assert isinstance(served, CachedEmbedder) and isinstance(served.inner, BatchingEmbedder)
        assert served.inner.workers == workers
        assert served.inner.max_batch == (SIDE_BY_SIDE_BATCH if workers > 1 else 32)
        assert isinstance(served.inner.inner, OnnxEmbedder) and served.inner.inner.threads == 1


def test_batching_passes_errors_to_the_caller_and_keeps_serving(onnx: OnnxEmbedder) -> None:
    class Failing:
        name, dimension = "failing", 384

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            if "boom" in texts:
                raise ValueError("boom")
            return onnx.encode(texts, batch_size)

    batching = BatchingEmbedder(Failing())
    with pytest.raises(ValueError, match="boom"):
        batching.encode(["boom"])
    assert batching.encode(["fine"]).shape == (1, 384)


def test_serving_with_onnx_never_imports_torch(models_dir: Path, tmp_path: Path) -> None:
    """Start-up ingest of unchanged cards, the app's lifespan and an answer: torch stays out."""
    data_dir = tmp_path / "index"
    (data_dir / "models").parent.mkdir(parents=True)
    os.symlink(models_dir, data_dir / "models")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / SEED.name).write_text(SEED.read_text())
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from fastapi.testclient import TestClient
        from persona.cli import run_ingest
        from retrieval.settings import Settings
        from server.app import create_app

        settings = Settings(data_dir=Path({str(data_dir)!r}), seeds_dir=Path({str(seeds)!r}))
        run_ingest(settings, [settings.seeds_dir])   # first ingest embeds, with the ONNX export
        run_ingest(settings, [settings.seeds_dir])   # the start-up check: unchanged, nothing embedded
        with TestClient(create_app(settings)) as client:
            answer = client.post("/v1/ask", json={{"question": "How much pipeline do I need?"}}).json()
            assert answer["citations"], answer
            print("embedder", type(client.app.state.service.embedder.inner.inner).__name__)
        print("torch loaded", "torch" in sys.modules, "sentence_transformers" in sys.modules)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "embedder OnnxEmbedder" in done.stdout
    assert "torch loaded False False" in done.stdout
    assert "unchanged" in done.stderr


def test_cache_embeds_only_texts_not_seen_recently(onnx: OnnxEmbedder) -> None:
    calls: list[list[str]] = []

    class Counting:
        name, dimension = onnx.name, onnx.dimension

        def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            calls.append(list(texts))
            return onnx.encode(texts, batch_size)

    cached = CachedEmbedder(Counting(), size=3)
    first = cached.encode(["a quota", "pipeline", "a quota"])
    assert calls == [["a quota", "pipeline"]]
    again = cached.encode(["pipeline", "forecast", "a quota"])
    assert calls[-1] == ["forecast"]
    assert np.allclose(again[0], first[1]) and np.allclose(again[2], first[0])
    cached.encode(["coaching"])  # evicts the least recently used ("pipeline")
    cached.encode(["pipeline", "a quota"])
    assert calls[-1] == ["pipeline"]
    assert cosines(cached.encode(["forecast"]), onnx.encode(["forecast"]))[0] >= 0.9999
    assert cached.encode([]).shape == (0, 384)


class Gated:
    """The real ONNX embedder, whose first call waits until ``gate`` is set (holds the batcher's one worker)."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner, self.name, self.dimension = inner, inner.name, inner.dimension
        self.gate, self.entered = threading.Event(), threading.Event()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(30)
        return self.inner.encode(texts, batch_size)


def test_submit_returns_a_future_and_a_cancelled_caller_is_skipped(onnx: OnnxEmbedder) -> None:
    gated = Gated(onnx)
    batching = BatchingEmbedder(gated, max_batch=1)
    first = batching.submit(["first"])
    assert gated.entered.wait(30)  # the one worker is busy with it
    gone, waiting = batching.submit(["gone"]), batching.submit(["waiting"])
    assert gone.cancel() and not waiting.done()
    gated.gate.set()
    assert first.result(30).shape == waiting.result(30).shape == (1, 384)
    assert gone.cancelled() and batching.batched_calls == 2  # the cancelled call was never embedded
    assert batching.encode(["still serving"]).shape == (1, 384)


def test_a_cache_miss_on_the_event_loop_raises_with_the_future_of_its_vectors(onnx: OnnxEmbedder) -> None:
    cached = CachedEmbedder(BatchingEmbedder(onnx))
    with no_blocking():
        with pytest.raises(WouldBlock) as miss:
            cached.encode(["what is OTE?", "how do I coach a rep?"])
        assert miss.value.future is not None
        miss.value.future.result(30)  # the batcher's thread has kept the vectors when the future is done
        got = cached.encode(["what is OTE?", "how do I coach a rep?"])  # now from the cache: no wait
    assert np.array_equal(got, onnx.encode(["what is OTE?", "how do I coach a rep?"]))


def test_a_cache_miss_with_nothing_to_await_says_so(onnx: OnnxEmbedder) -> None:
    cached = CachedEmbedder(onnx)  # no batcher: the caller runs the path where it may block
    with no_blocking(), pytest.raises(WouldBlock) as miss:
        cached.encode(["what is OTE?"])
    assert miss.value.future is None
    assert cached.encode(["what is OTE?"]).shape == (1, 384)  # outside no_blocking() it blocks as always
