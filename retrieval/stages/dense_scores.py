"""Stage: candidates scored by their cosine alone (plain dense retrieval, no keywords)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.search import dense_scores
from retrieval.stages.base import State


@dataclass(frozen=True)
class DenseScores:
    """``candidates`` -> ``scored``: the clipped cosine similarity of each candidate."""

    reads: ClassVar[tuple[str, ...]] = ("candidates",)
    writes: ClassVar[tuple[str, ...]] = ("scored",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        state.scored = dense_scores(state.candidates)
