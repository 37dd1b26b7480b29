"""A card's own coverage thresholds, derived at ingest from its sidecar, or by the rule for a card without one.

The coverage judge (``retrieval/stages/coverage.py``) refuses a question whose evidence (the best passage's
mean of its own cosine and its best example's) is below ``min_score``, or whose closest boundary question
scores more than ``boundary_margin`` above that evidence; from ``confident_score`` on it answers with high
confidence. Thresholds carried from one card to another refused 7-20% of a new card's in-scope questions, so
each card gets its own:

* **With examples** (:func:`from_examples`): the evidence of every example question, held out from its own
  passage's examples (its siblings stay: a real question resembles them too), measures how the card's
  questions score. ``min_score`` is its :data:`LOW_QUANTILE` quantile, ``confident_score`` its
  :data:`CONFIDENT_QUANTILE` quantile; ``boundary_margin`` is :data:`BOUNDARY_MARGIN`. Chosen on the dev cards
  (docs/evaluation.md#every-card): a rule on the examples held up where deriving all three from examples
  against the sidecar's own boundary questions did not (an LLM's boundary questions are near-paraphrases of
  one another, so their evidence against the rest of the boundary is inflated and drives the margin negative).
* **Without** (:data:`BARE`): one rule for every card without examples, chosen across the dev cards with
  the generic boundary ingest gives such a card (``ingest/boundary/generic.yaml``).

Pure functions over unit-normalised vectors (rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_QUANTILE = 0.01
CONFIDENT_QUANTILE = 0.10
BOUNDARY_MARGIN = 0.035
MIN_EXAMPLES = 20
"""Fewer example questions than this derive nothing: the card is judged by :data:`BARE`."""


@dataclass(frozen=True)
class Thresholds:
    """The three thresholds of the coverage judgement."""

    min_score: float
    boundary_margin: float
    confident_score: float


BARE = Thresholds(0.27, 0.09, 0.33)
"""A card without example questions: its evidence is its best passage's cosine alone, and its boundary the
generic one. Chosen across the dev cards: the most off-topic questions refused with at most 5% of in-scope
ones refused (docs/evaluation.md#every-card)."""


def held_out_support(passages: np.ndarray, examples: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each example question's evidence as the pipeline measures it (``retrieval/stages/examples.py``): over the
    passages, the best mean of the passage's own cosine (clipped to [0, 1]) and its best example's cosine,
    the question itself left out of its passage's examples (a passage without examples: its cosine)."""
    own = np.clip(examples @ passages.T, 0.0, 1.0)
    similar = examples @ examples.T
    np.fill_diagonal(similar, -1.0)
    best = np.full(own.shape, -1.0, dtype=np.float32)
    for passage in np.unique(targets):
        best[:, passage] = similar[:, targets == passage].max(axis=1)
    return np.where(best > -1.0, (own + best) / 2, own).max(axis=1)


def from_examples(passages: np.ndarray, examples: np.ndarray, targets: np.ndarray) -> Thresholds | None:
    """The card's thresholds from its example questions (``targets``: each one's passage row), or ``None`` when it
    has fewer than :data:`MIN_EXAMPLES`."""
    if len(examples) < MIN_EXAMPLES:
        return None
    support = held_out_support(passages, examples, targets)
    low, confident = np.quantile(support, [LOW_QUANTILE, CONFIDENT_QUANTILE])
    return Thresholds(round(float(low), 3), BOUNDARY_MARGIN, round(float(max(confident, low)), 3))
