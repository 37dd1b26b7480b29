"""Exact dense search over one persona's stored vectors, held in memory.

The vectors are read from the store once per published version of a persona (the same read that
builds the keyword index) and searched with one matrix product: for a card's few hundred chunks
that is microseconds, where a round trip through Chroma's query costs milliseconds, and it is
exact rather than approximate. Chroma stays the store of record; personas larger than
``EXACT_LIMIT`` chunks are searched through Chroma's HNSW index instead (see ``PersonaService``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.store import Match, StoredChunk

EXACT_LIMIT = 50_000  # chunks per persona searched in memory (50,000 x 384 floats = 77 MB)


@dataclass(frozen=True)
class DenseIndex:
    """A persona's chunk vectors (rows L2-normalised) with their ids and metadata."""

    ids: list[str]
    metadata: list[dict[str, Any]]
    vectors: np.ndarray
    sections: np.ndarray

    @classmethod
    def build(cls, chunks: Sequence[StoredChunk]) -> DenseIndex:
        missing = [c.id for c in chunks if c.embedding is None]
        if missing:
            raise ValueError(f"chunks without a stored vector: {', '.join(missing[:5])}")
        dimension = len(chunks[0].embedding) if chunks else 0
        vectors = np.asarray([c.embedding for c in chunks], dtype=np.float32).reshape(len(chunks), dimension)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        sections = np.asarray([str(c.metadata.get("section", "")) for c in chunks], dtype=object)
        return cls([c.id for c in chunks], [c.metadata for c in chunks], vectors, sections)

    def search(self, vector: np.ndarray, n: int, sections: Sequence[str] | None = None) -> list[Match]:
        """The ``n`` chunks nearest to ``vector`` by cosine (as Chroma's cosine distance, 1 - cos)."""
        if not self.ids or n < 1:
            return []
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        if sections:
            similarity = np.where(np.isin(self.sections, list(sections)), similarity, -np.inf)
        n = min(n, int(np.isfinite(similarity).sum()))
        if n == 0:
            return []
        top = np.argpartition(-similarity, n - 1)[:n]
        top = top[np.argsort(-similarity[top], kind="stable")]
        return [Match(self.ids[i], self.metadata[i], float(1.0 - similarity[i])) for i in top]
