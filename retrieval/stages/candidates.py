"""Stage: the nearest chunks by cosine, from the in-memory vectors or (large personas) Chroma."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.search import CANDIDATES
from retrieval.stages.base import State


@dataclass(frozen=True)
class DenseCandidates:
    """``vector`` -> ``candidates``: at least ``n`` of them whatever ``k`` is, so rankings do not depend on k."""

    n: int = CANDIDATES
    reads: ClassVar[tuple[str, ...]] = ("vector", "k", "sections", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("candidates",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        assert state.vector is not None
        n = max(state.k, self.n)
        dense = state.corpus.indexes.dense
        state.candidates = (dense.search(state.vector, n, state.sections) if dense is not None
                            else state.corpus.store.query(state.info.slug, state.vector, n, state.sections))
