"""Stage: the card's example questions vote for the passages they point at; its boundary is measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.stages.base import State

EXAMPLE_WEIGHT = 0.9
"""An example's cosine counts this much against its passage's own: on a tie the passage's text wins
(chosen on sales-manager-chat-dev: docs/experiments/retrieval-levers.md)."""


@dataclass(frozen=True)
class ExampleMatch:
    """``scored`` -> ``scored``, ``boundary``: each passage scores ``max(its score, weight x its best example's
    cosine)``; ``boundary`` is the query's closest cosine to a question the card does not cover."""

    weight: float = EXAMPLE_WEIGHT
    reads: ClassVar[tuple[str, ...]] = ("scored", "vector", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("scored", "boundary")
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        examples = state.corpus.indexes.examples
        if examples is None or state.vector is None:
            return
        best = examples.best_by_passage(state.vector)
        if best:
            state.scored = [(max(score, self.weight * best[cid]) if cid in best else score, cid, meta)
                            for score, cid, meta in state.scored]
        state.boundary = examples.boundary_score(state.vector)
