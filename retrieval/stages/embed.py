"""Stage: the query's embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.stages.base import State


@dataclass(frozen=True)
class EmbedQuery:
    """``query`` -> ``vector``, outside the compute slot: concurrent queries batch in the embedder. A vector the
    request brings (a follow-up's searches are embedded together) is kept."""

    reads: ClassVar[tuple[str, ...]] = ("query", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("vector",)
    compute: ClassVar[bool] = False

    def run(self, state: State) -> None:
        if state.vector is None:
            state.vector = state.corpus.embedder.encode([state.query])[0]
