"""Stage: the card's example questions and the passages' tuned vectors rank the passages; coverage evidence
and the boundary are measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from retrieval.stages.base import State

EXAMPLE_WEIGHT = 0.6
"""A passage ranks by ``(cos to its tuned vector + weight x cos to its best example) / (1 + weight)``
(chosen on sales-manager-chat-dev: docs/experiments/retrieval-levers.md)."""


@dataclass(frozen=True)
class ExampleMatch:
    """``scored`` -> ``scored``, ``support``, ``boundary``.

    A passage with examples scores ``(cos(query, tuned) + weight x best example's cos) / (1 + weight)``
    (its own cosine stands in for a tuned vector it lacks); a passage without examples keeps its own
    cosine. ``support``, the evidence that the card covers the query, is the best passage's mean of its
    own cosine and its best example's: the card's text and a question people ask about it must both
    be near. ``boundary`` is the query's closest cosine to a question the card does not cover.
    """

    weight: float = EXAMPLE_WEIGHT
    reads: ClassVar[tuple[str, ...]] = ("scored", "vector", "corpus")
    writes: ClassVar[tuple[str, ...]] = ("scored", "support", "boundary")
    compute: ClassVar[bool] = True

    def run(self, state: State) -> None:
        examples = state.corpus.indexes.examples
        if examples is None or state.vector is None:
            return
        best = examples.best_by_passage(state.vector)
        if best:
            tuned = examples.tuned_by_passage(state.vector)
            scored = []
            support = 0.0
            for score, cid, meta in state.scored:
                if cid in best:
                    scored.append(((tuned.get(cid, score) + self.weight * best[cid]) / (1 + self.weight), cid, meta))
                    support = max(support, (score + best[cid]) / 2)
                else:
                    scored.append((score, cid, meta))
                    support = max(support, score)
            state.scored = scored
            state.support = support
        state.boundary = examples.boundary_score(state.vector)
