"""The on-disk vector cache (retrieval/vector_cache.py): texts embedded once are read back, not embedded again,
across processes; a cache that cannot be written never stops ingest. The real model."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from retrieval.embedder import Embedder
from retrieval.settings import Settings
from retrieval.store import Store
from retrieval.vector_cache import DiskCachedEmbedder, cache_path

ROOT = Path(__file__).resolve().parent.parent


class Counting:
    """The real embedder, counting the texts that reach it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.texts = inner, inner.name, []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        self.texts += texts
        return self.inner.encode(texts, batch_size)


def test_texts_embedded_once_are_read_back(tmp_path: Path, embedder: Embedder) -> None:
    path = cache_path(tmp_path, "all-MiniLM-L6-v2")
    first = Counting(embedder)
    texts = ["pipeline coverage", "coach the rep", "pipeline coverage", "comp plan"]
    vectors = DiskCachedEmbedder(first, path).encode(texts)
    assert first.texts == ["pipeline coverage", "coach the rep", "comp plan"]  # each new text once
    again = Counting(embedder)
    reread = DiskCachedEmbedder(again, path).encode(["comp plan", "forecast call", "coach the rep"])
    assert again.texts == ["forecast call"]
    assert np.allclose(reread[[0, 2]], vectors[[3, 1]], atol=0) and np.allclose(reread[1], embedder.encode(
        ["forecast call"])[0], atol=1e-6)
    assert reread.dtype == np.float32 and reread.shape == (3, embedder.dimension)


def test_an_unwritable_cache_is_skipped(tmp_path: Path, embedder: Embedder) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    counting = Counting(embedder)
    cached = DiskCachedEmbedder(counting, blocker / "vectors" / "x.sqlite")
    assert cached.encode(["a", "b"]).shape == (2, embedder.dimension)
    assert cached.encode(["a"]).shape == (1, embedder.dimension) and counting.texts == ["a", "b", "a"]


def test_a_second_ingest_into_a_new_index_reads_its_vectors_from_the_cache(tmp_path: Path) -> None:
    """`persona ingest` of one card into two new indexes sharing a models folder. Between the two, every cached
    vector is overwritten with one marker vector: the second index holds only the marker, so it embedded
    nothing itself."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
           "PERSONA_MODELS_DIR": str(tmp_path / "models")}
    card = ROOT / "tests" / "cards" / "instruction-like.yaml"

    def ingest(name: str) -> list[np.ndarray]:
        done = subprocess.run([sys.executable, "-m", "persona", "ingest", str(card), "--data-dir",
                               str(tmp_path / name)], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        store = Store(Settings(data_dir=tmp_path / name))
        [persona] = store.personas()
        return [np.asarray(c.embedding) for c in store.chunks(persona.slug, with_embeddings=True)]

    first = ingest("one")
    assert len(first) > 3 and not np.allclose(first[0], first[1])
    path = cache_path(tmp_path / "models", "all-MiniLM-L6-v2")
    marker = np.zeros(len(first[0]), dtype=np.float32)
    marker[0] = 1.0
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM vectors").fetchone()[0] == len(first)
        db.execute("UPDATE vectors SET vector = ?", (marker.tobytes(),))
    second = ingest("two")
    assert len(second) == len(first) and all(np.allclose(v, marker) for v in second)
