"""A card's coverage thresholds at ingest (:func:`thresholds`), recorded beside its persona: the sidecar's own
``calibration`` for the embedding model when it records one (derived from the card's own dev questions, as
``persona eval`` reports them); else derived from its example questions
(:func:`retrieval.calibration.from_examples`); else the rule for a card without examples
(:data:`retrieval.calibration.BARE`). No card uses another card's thresholds. (A card without boundary
questions of its own is judged against the generic boundary at query time: ``retrieval/service.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ingest.examples import Sidecar
from retrieval.calibration import BARE, BOUNDARY_MARGIN, CONFIDENT_QUANTILE, LOW_QUANTILE, MIN_EXAMPLES, from_examples
from retrieval.types import Calibration, Chunk

CALIBRATION = f"calibration:{LOW_QUANTILE}:{CONFIDENT_QUANTILE}:{BOUNDARY_MARGIN}:{MIN_EXAMPLES}:{BARE}"
"""The rules' signature, in every persona's fingerprint: a changed rule derives the thresholds again."""


def thresholds(sidecar: Sidecar | None, passages: Sequence[Chunk], extra: Sequence[Chunk], vectors: np.ndarray,
               model: str) -> Calibration:
    """The card's coverage thresholds under ``model`` and where they come from. ``vectors`` holds the embeddings of
    ``passages`` then ``extra`` (its sidecar's questions), row for row."""
    own = (sidecar.calibration or {}).get(model) if sidecar is not None else None
    if own is not None:
        return Calibration("card", own.min_score, own.boundary_margin, own.confident_score)
    with_items = {c.section for c in passages if c.kind == "item"}
    ranked = [i for i, c in enumerate(passages) if not (c.kind == "section" and c.section in with_items)]
    row = {passages[i].id: n for n, i in enumerate(ranked)}
    pairs = [(len(passages) + j, row[c.parent]) for j, c in enumerate(extra)
             if c.kind == "example" and c.parent in row]
    derived = from_examples(vectors[ranked], vectors[[i for i, _ in pairs]] if pairs else vectors[:0],
                            np.array([p for _, p in pairs], dtype=int)) if pairs else None
    if derived is not None:
        return Calibration("examples", derived.min_score, derived.boundary_margin, derived.confident_score)
    return Calibration("rule", BARE.min_score, BARE.boundary_margin, BARE.confident_score)
