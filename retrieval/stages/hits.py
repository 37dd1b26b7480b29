"""Stage: the best ``k`` scored candidates as ranked hits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.search import top_hits
from retrieval.stages.base import State


@dataclass(frozen=True)
class TopK:
    """``scored`` -> ``hits``: sorted by score (ties in candidate order), cut at ``k``, ranked from 1."""

    reads: ClassVar[tuple[str, ...]] = ("scored", "k")
    writes: ClassVar[tuple[str, ...]] = ("hits",)
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        state.hits = top_hits(state.scored, state.k)
