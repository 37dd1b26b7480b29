"""Dense retrieval over one persona's chunks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.store import Match
from retrieval.types import Hit


def to_hits(matches: Sequence[Match]) -> list[Hit]:
    """Chroma matches -> hits with a score in [0, 1]: cosine similarity, negatives clipped to 0."""
    hits = []
    for rank, match in enumerate(matches, start=1):
        meta = match.metadata
        score = float(np.clip(1.0 - match.distance, 0.0, 1.0))
        hits.append(Hit(
            id=match.id,
            persona=str(meta.get("persona", "")),
            kind=meta.get("kind", "section"),
            section=str(meta.get("section", "")),
            item=meta.get("item") or None,
            text=str(meta.get("text", "")),
            score=round(score, 6),
            rank=rank,
        ))
    return hits
