"""Stage: dense candidates fused with BM25 keyword scores (see :func:`retrieval.search.fuse`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.search import fuse
from retrieval.stages.base import State


@dataclass(frozen=True)
class KeywordFusion:
    """``candidates`` + ``query`` -> ``scored``: ``DENSE_WEIGHT * cosine + KEYWORD_WEIGHT * saturated BM25``."""

    reads: ClassVar[tuple[str, ...]] = ("candidates", "query", "sections", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("scored",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        state.scored = fuse(state.candidates, state.corpus.indexes.keywords, state.query, state.sections)

